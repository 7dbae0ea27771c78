"""What our commands share: flags parsed into one-paragraph errors, quiet logs, tables.

`main` (one run) and `sweep` (many) both take `--config=FILE[:ARG]`, `--workdir=DIR` and
`--config.FIELD=VALUE` overrides; the tools that read a trained workdir (evaluate, predict,
features) take plain flags. A mistake in any of them should read as a sentence naming the fix,
not as absl's or ml_collections' traceback.
"""

import logging as std_logging
import os
import re
import sys
from typing import Callable

from absl import flags
from absl import logging

from alexnet_jax import configs
from alexnet_jax.system import runtime


class QuietLibraries(std_logging.Filter):
  """Keeps our INFO lines and clu's progress and metric lines; libraries speak from WARNING up."""

  _SPEAK_AT_INFO = ('alexnet_jax', '/clu/')

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or any(
        part in record.pathname for part in self._SPEAK_AT_INFO
    )


class OursAtInfo(std_logging.Filter):
  """The terminal of a training command: our INFO lines (the loop's short progress lines among
  them); every library from WARNING up."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or 'alexnet_jax' in record.pathname


class ShortLines(std_logging.Formatter):
  """A log record as a person reads it: the message, after 'Warning: ' or 'Error: ' from WARNING
  up; absl's prefix (level, date, time, thread, file:line) stays in the log file."""

  def format(self, record: std_logging.LogRecord) -> str:
    text = super().format(record)
    if record.levelno >= std_logging.WARNING:
      text = f'{record.levelname.capitalize()}: {text}'
    return text


def log_to_workdir(workdir: str, process_index: int = 0) -> None:
  """What a training command does once its workdir is known: the terminal shows `OursAtInfo`
  (in `ShortLines`, as `begin` set), and every record `QuietLibraries` keeps goes, with absl's full prefix, to
  `<workdir>/log.txt` (`log.N.txt` for process N > 0), appended to across restarts. A workdir
  that cannot be made is left to the trainer, which says so in one paragraph."""
  name = 'log.txt' if process_index == 0 else f'log.{process_index}.txt'
  try:
    os.makedirs(workdir, exist_ok=True)
    file = std_logging.FileHandler(os.path.join(workdir, name), mode='a', encoding='utf-8')
  except OSError:
    return
  file.setFormatter(logging.PythonFormatter())
  file.addFilter(QuietLibraries())
  std_logging.getLogger().addHandler(file)
  terminal = logging.get_absl_handler()
  for old in [f for f in terminal.filters if isinstance(f, QuietLibraries)]:
    terminal.removeFilter(old)
  terminal.addFilter(OursAtInfo())


def define_compilation_cache_flag() -> None:
  """--compilation_cache, for the commands that train (main, sweep); `begin` passes it on."""
  flags.DEFINE_string(
      'compilation_cache',
      None,
      "Directory of JAX's persistent compilation cache, or 'off'. Default: "
      f'${runtime.CACHE_VARIABLE}, else ~/.cache/alexnet_jax/jax ($XDG_CACHE_HOME). A second '
      'start of the same command then compiles nothing (alexnet_jax/system/runtime.py).',
  )


def begin(argv: list[str], usage: str | None = None) -> None:
  """What every command does first: no stray arguments, quiet library logs in short lines, the
  process tuned."""
  check_no_arguments(argv, usage)
  logging.get_absl_handler().addFilter(QuietLibraries())
  logging.get_absl_handler().setFormatter(ShortLines())
  cache = flags.FLAGS['compilation_cache'].value if 'compilation_cache' in flags.FLAGS else None
  runtime.tune_process(cache_dir=cache)


def fail(message: str, code: int = 2):
  sys.stderr.write(f'\nError: {message}\n')
  sys.exit(code)


def check_no_arguments(argv: list[str], usage: str | None = None) -> None:
  if len(argv) > 1:
    fail(
        f'unexpected arguments {" ".join(argv[1:])!r}. Everything is a flag: '
        + (usage or '--config=FILE, --workdir=DIR and --config.FIELD=VALUE overrides.')
    )


def plain_flags_parser(usage: str) -> Callable[[list[str]], list[str]]:
  """absl's parser for a command without a config: a bad, unknown or missing flag is one
  paragraph that ends in the command's usage."""

  def parse(argv: list[str]) -> list[str]:
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      fail(f'Bad command line: {" ".join(str(e).split()).rstrip(".")}. Usage: {usage}')

  return parse


def define_reading_flags(batch_size: bool = True, data_dir: bool = True) -> None:
  """--data_dir and --batch_size, as every command that reads a trained workdir's data has them."""
  if data_dir:
    flags.DEFINE_string('data_dir', None, "Read the dataset from here, not the run's data_dir.")
  if batch_size:
    flags.DEFINE_integer(
        'batch_size', None, "Images per batch (default: the run's eval_batch_size)."
    )


def run_plain_command(main: Callable, usage: str, required: tuple[str, ...] = ('workdir',)):
  """absl's app.run of `main(argv, FLAGS)` with `plain_flags_parser(usage)` and `required` flags."""
  from absl import app  # pylint: disable=g-import-not-at-top

  flags.mark_flags_as_required(list(required))
  app.run(lambda argv: main(argv, flags.FLAGS), flags_parser=plain_flags_parser(usage))


def step_flag(value: str | None) -> int | str | None:
  """--step: None (the latest checkpoint), a step number, or a name the checkpointer resolves."""
  if value is None or value in ('', 'latest'):
    return None
  return int(value) if value.isdigit() else value


def listed(values: list[str] | None) -> list[str]:
  """A repeated flag whose values may also be comma-separated lists (`--workdir=A,B --workdir=C`);
  a value that is an existing path is kept whole, commas and all."""
  return [
      item
      for value in values or ()
      for item in ([value] if os.path.exists(value) else value.split(','))
      if item
  ]


def table(header: list[str], rows: list[list]) -> str:
  """Rows of cells as aligned text columns, under a header."""
  cells = [[str(c) for c in row] for row in [header, *rows]]
  widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(header))]
  return '\n'.join('  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


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
