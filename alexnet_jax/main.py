r"""Trains and evaluates AlexNet: `python -m alexnet_jax.main --config=CONFIG --workdir=DIR`.

CONFIG is a config file, with an optional argument (`configs/quickstart.py:tiny`); a name such as
`quickstart` or `alexnet:runlocal` means that file of the installed `alexnet_jax.configs`, so the
command works without a clone. Any config field can be overridden on the command line, e.g.
`--config.batch_size=64` or `--config.model.norm=batchnorm`. Running the same command again
resumes from the latest checkpoint in DIR. All the logic lives in `alexnet_jax.train`, which
notebooks import directly; this file tunes the process (`runtime.configure`) and parses flags.
"""

import logging as std_logging
import re
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from alexnet_jax import configs
from alexnet_jax import runtime
from alexnet_jax import sharding
from alexnet_jax import steps
from alexnet_jax import train
from alexnet_jax.errors import ConfigError

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and TensorBoard events.')
config_flags.DEFINE_config_file(
    'config',
    None,
    'A config file, e.g. configs/alexnet.py, with an optional argument '
    '(configs/quickstart.py:tiny), or the name of an installed one (quickstart, alexnet:runlocal).',
    lock_config=True,
)
flags.DEFINE_string(
    'coordinator_address',
    None,
    'Multi-process runs: host:port of process 0. '
    'Without it, SLURM, Open MPI and TPU pods are detected automatically.',
)
flags.DEFINE_integer('num_processes', None, 'Multi-process runs: how many processes in all.')
flags.DEFINE_integer('process_id', None, 'Multi-process runs: this process, 0 to num_processes-1.')
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries(std_logging.Filter):
  """Keeps our INFO lines and clu's progress and metric lines; libraries speak from WARNING up."""

  _SPEAK_AT_INFO = ('alexnet_jax', '/clu/')

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or any(
        part in record.pathname for part in self._SPEAK_AT_INFO
    )


def main(argv):
  if len(argv) > 1:
    sys.stderr.write(
        f'\nError: unexpected arguments {" ".join(argv[1:])!r}. Everything is a flag: '
        '--config=FILE, --workdir=DIR and --config.FIELD=VALUE overrides.\n'
    )
    sys.exit(2)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  runtime.configure()
  try:
    sharding.initialize_processes(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  except ConfigError as e:
    sys.stderr.write(f'\nError: {e}\n')
    sys.exit(2)
  logging.info(
      'JAX process %d of %d, local devices: %s',
      jax.process_index(),
      jax.process_count(),
      jax.local_devices(),
  )
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except ConfigError as e:
    sys.stderr.write(f'\nError: {e}\n')
    sys.exit(2)
  except steps.TrainingDiverged as e:
    sys.stderr.write(f'\nError: {e}\n')
    sys.exit(3)


def run():
  app.run(main, flags_parser=_parse_flags)


def _parse_flags(argv):
  """absl's parser, with config errors (unknown field, wrong type) as one paragraph."""
  try:
    argv = configs.resolve_config_flags(argv)
    argv = FLAGS(argv)
    FLAGS.config.get('dataset')  # a config file that failed to load raises only when used
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
  sys.stderr.write(
      f'\nError: {problem} Every config field is listed, with its type and meaning, in '
      'configs/alexnet.py; override one with --config.FIELD=VALUE (e.g. --config.batch_size=64, '
      '--config.model.norm=batchnorm).\n'
  )
  sys.exit(2)


if __name__ == '__main__':
  run()
