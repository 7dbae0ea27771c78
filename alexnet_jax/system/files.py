"""Files a command writes all at once or not at all: a crash or a bad input never leaves half a
result, or a result beside an earlier one's leftovers. Orbax does the same for checkpoints."""

import contextlib
import json
import os
import shutil
import uuid
from typing import Callable, Sequence

from alexnet_jax.errors import ConfigError


@contextlib.contextmanager
def written(path: str, mode: str = 'w'):
  """A file opened under a temporary name beside `path` and renamed to it when the block ends
  without an error: a crash never leaves half a file, and an error leaves `path` as it was."""
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    with open(tmp, mode) as f:
      yield f
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json(path: str, value) -> None:
  """`value` as JSON in `path`, `written` all at once."""
  with written(path) as f:
    json.dump(value, f, indent=1)


def check_writable(directory: str, flag: str = '--output', holds: str = 'the results') -> None:
  """ConfigError unless `directory` can be created (or written) here, before any work starts; the
  message names the `flag` that chose it and what it `holds`."""
  existing = os.path.abspath(directory)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
    raise ConfigError(
        f'Cannot write to {directory!r}: {existing} is not a directory you can write to. Pass '
        f'a {flag} in a writable directory; {holds} go there.'
    )


@contextlib.contextmanager
def staged(
    directory: str,
    replaces: Sequence[str] = (),
    whole: bool = False,
    before_publishing: Callable[[], None] | None = None,
    flag: str = '--output',
    holds: str = 'the results',
):
  """A scratch directory beside `directory` whose contents become `directory`'s when the block
  ends without an error; after an error, `directory` and its parents are as they were (those the
  block needed are not even created). The package's one stage-then-rename writer of directories.

  By default the files move into `directory`, which may hold others (a run's workdir); files named
  in `replaces` that the block did not write are removed, so no earlier result stays beside new
  ones. With `whole`, the scratch directory becomes `directory` by one rename: an earlier one is
  moved aside first and deleted after, so `directory` always holds one whole result (for a moment
  none). `before_publishing` runs just before the files move (a check that nothing appeared there
  meanwhile); `flag` and `holds` name the directory in the error if it cannot be written.
  """
  directory = os.path.abspath(directory)
  check_writable(directory, flag, holds)
  parent = os.path.dirname(directory)
  first_new = None
  path = parent
  while not os.path.exists(path):
    first_new, path = path, os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  # Not mkdtemp: its 0700 would become a whole directory's permissions. One file system with
  # `directory`, so the renames are atomic.
  stage = _beside(directory, 'tmp')
  os.mkdir(stage)
  done = False
  try:
    yield stage
    if before_publishing is not None:
      before_publishing()
    if whole:
      _rename_whole(stage, directory)
    else:
      os.makedirs(directory, exist_ok=True)
      written_names = sorted(os.listdir(stage))
      for name in written_names:
        os.replace(os.path.join(stage, name), os.path.join(directory, name))
      for name in set(replaces) - set(written_names):
        if os.path.isfile(os.path.join(directory, name)):
          os.remove(os.path.join(directory, name))
    done = True
  finally:
    shutil.rmtree(stage, ignore_errors=True)
    if not done and first_new is not None:
      shutil.rmtree(first_new, ignore_errors=True)


def _beside(path: str, tag: str) -> str:
  """A new hidden name in `path`'s directory."""
  return os.path.join(
      os.path.dirname(path), f'.{os.path.basename(path)}.{tag}-{uuid.uuid4().hex[:12]}'
  )


def _rename_whole(stage: str, directory: str) -> None:
  if os.path.isdir(directory) and os.listdir(directory):
    old = _beside(directory, 'old')
    os.replace(directory, old)
    os.replace(stage, directory)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(stage, directory)  # also onto an empty directory
