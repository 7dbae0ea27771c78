"""Files a command writes all at once or not at all: a crash or a bad input never leaves half a
result, or a result beside an earlier one's leftovers. Orbax does the same for checkpoints."""

import contextlib
import json
import os
import shutil
import tempfile
from typing import Sequence

from alexnet_jax.errors import ConfigError


def write_json(path: str, value) -> None:
  """Written under a temporary name and renamed: a crash never leaves half a file."""
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=1)
  os.replace(tmp, path)


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
def staged(directory: str, replaces: Sequence[str] = ()):
  """A scratch directory whose files move into `directory` when the block ends without an error;
  after an error, `directory` is as it was (not even created). Files named in `replaces` that the
  block did not write are removed from `directory`, so no earlier result stays beside new ones."""
  directory = os.path.abspath(directory)
  check_writable(directory)
  parent = os.path.dirname(directory)
  first_new = None
  path = parent
  while not os.path.exists(path):
    first_new, path = path, os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  stage = tempfile.mkdtemp(prefix=f'.{os.path.basename(directory)}.tmp-', dir=parent)
  done = False
  try:
    yield stage
    os.makedirs(directory, exist_ok=True)
    written = sorted(os.listdir(stage))
    for name in written:
      os.replace(os.path.join(stage, name), os.path.join(directory, name))
    for name in set(replaces) - set(written):
      if os.path.isfile(os.path.join(directory, name)):
        os.remove(os.path.join(directory, name))
    done = True
  finally:
    shutil.rmtree(stage, ignore_errors=True)
    if not done and first_new is not None:
      shutil.rmtree(first_new, ignore_errors=True)
