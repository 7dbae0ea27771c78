"""Datasets built into `alexnet_jax`.

Importing this package registers the `synthetic_shapes` TFDS builder, so that
`tfds.builder('synthetic_shapes/tiny')` and `tfds.data_source('synthetic_shapes', ...)` work as
for any TFDS dataset. Its images are drawn by `shapes_drawing` (numpy only).

`image_folder` turns your own images (a folder per class, or a CSV of labels) into a prepared TFDS
dataset (`python -m alexnet_jax.tools.prepare --folder=...`); it is not imported here: a prepared
dataset is read back without it.
"""

from __future__ import annotations

import importlib.util
import sys

import tensorflow_datasets as tfds

from alexnet_jax.data.datasets import synthetic_shapes  # noqa: F401  (registers the builder)
from alexnet_jax.errors import ConfigError

# Datasets that prepare themselves offline on first use (no download, no manual files).
BUILT_IN = ('synthetic_shapes',)

_NEEDS_TF_MSG = (
    'Preparing the TFDS dataset {name!r} (drawing/downloading it and writing '
    'its ArrayRecord files under {data_dir}) needs TensorFlow, which is not '
    'installed. Install it with `pip install tensorflow-cpu` (the CPU build is '
    'enough), or prepare the dataset once on a machine that has it and copy '
    'the data directory over. Reading an already prepared dataset with '
    '`tfds.data_source` does not need TensorFlow.'
)


def ensure_prepared(name: str, data_dir: str | None = None) -> None:
  """Prepares TFDS dataset `name` in ArrayRecord format unless it already is.

  `name` may carry a config and version (`'synthetic_shapes/tiny'`, `'imagenet2012'`);
  `data_dir=None` means TFDS' default (`~/tensorflow_datasets`, or `$TFDS_DATA_DIR`). Raises a
  ConfigError, saying what to do, when the dataset is not prepared and TensorFlow (which preparing
  needs) is not installed, or when it is prepared but not as ArrayRecord, the random-access format
  `tfds.data_source` reads.
  """
  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared():
    formats = builder.info.available_file_formats()
    if tfds.core.FileFormat.ARRAY_RECORD not in formats:
      found = sorted(f.value for f in formats)
      raise ConfigError(
          f'Dataset {name!r} is already prepared at {builder.data_dir} '
          f'but not as ArrayRecord (found {found}), which '
          'tfds.data_source needs. Delete that directory and prepare it '
          'again.'
      )
    return
  if importlib.util.find_spec('tensorflow') is None:
    raise ConfigError(_NEEDS_TF_MSG.format(name=name, data_dir=builder.data_dir_root))
  if not sys.stderr.isatty():
    # A log file, not a terminal: tqdm's bars would leave their redraws ('\x1b[A') in it.
    tfds.disable_progress_bar()
  builder.download_and_prepare(file_format='array_record')
