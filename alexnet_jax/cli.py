"""What our commands share: config flags parsed into one-paragraph errors, and quiet logs.

`main` (one run) and `sweep` (many) both take `--config=FILE[:ARG]`, `--workdir=DIR` and
`--config.FIELD=VALUE` overrides; a mistake in any of them should read as a sentence naming the
fix, not as absl's or ml_collections' traceback.
"""

import logging as std_logging
import re
import sys

from absl import flags

from alexnet_jax import configs


class QuietLibraries(std_logging.Filter):
  """Keeps our INFO lines and clu's progress and metric lines; libraries speak from WARNING up."""

  _SPEAK_AT_INFO = ('alexnet_jax', '/clu/')

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or any(
        part in record.pathname for part in self._SPEAK_AT_INFO
    )


def fail(message: str, code: int = 2):
  sys.stderr.write(f'\nError: {message}\n')
  sys.exit(code)


def check_no_arguments(argv: list[str]) -> None:
  if len(argv) > 1:
    fail(
        f'unexpected arguments {" ".join(argv[1:])!r}. Everything is a flag: '
        '--config=FILE, --workdir=DIR and --config.FIELD=VALUE overrides.'
    )


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with config errors (unknown field, wrong type) as one paragraph."""
  values = flags.FLAGS
  try:
    argv = configs.resolve_config_flags(argv)
    argv = values(argv)
    values.config.get('dataset')  # a config file that failed to load raises only when used
    return argv
  except OSError as e:
    problem = f'Cannot load the config file: {" ".join(str(e).split())}.'
  except ImportError as e:
    problem = (
        f'The config file could not import {e.name or "a module"!r}: {e}. A config file '
        'imports only installed packages (its recipes from alexnet_jax.configs).'
    )
  except (AttributeError, KeyError) as e:  # ml_collections: a field that does not exist
    problem = f'The config has no field {str(e).strip(chr(34)).strip(chr(39))!r}.'
  except (flags.Error, TypeError, ValueError) as e:  # absl or ml_collections: a bad value
    text = ' '.join(str(e).split())
    if 'Traceback' in text:  # ml_collections quotes the config file's traceback: keep its error
      last = list(re.finditer(r'\b\w*(Error|Exception): ', text))[-1]
      text = 'the config file says: ' + text[last.end() :]
    problem = f'Bad command line: {text.rstrip(".")}.'
  fail(
      f'{problem} Every config field is listed, with its type and meaning, in '
      'configs/alexnet.py; override one with --config.FIELD=VALUE (e.g. --config.batch_size=64, '
      '--config.model.norm=batchnorm).'
  )
