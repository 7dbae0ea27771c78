"""The base class of our TFDS builders (the built-in dataset and your own images)."""

import sys

from etils import epath
import tensorflow_datasets as tfds
from tensorflow_datasets.core import utils as _tfds_utils


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A GeneratorBasedBuilder whose code is the file that defines it.

  TFDS' default `code_path` lazily imports the `importlib_resources` backport for builders defined
  inside a package; that package is not among TFDS' declared requirements, and these builders look
  up no resources, so it points at the defining module's file directly.
  """

  @_tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(sys.modules[cls.__module__].__file__)
