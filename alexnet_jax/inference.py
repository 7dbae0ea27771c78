"""A trained workdir, used: load it from its checkpoint alone, evaluate it, predict image files,
extract any layer's features.

Every checkpoint records the run's config and class names (`checkpointing`), so `load(workdir)`
needs nothing else. The commands in `alexnet_jax.tools` (evaluate, predict, features, export) are
flags around the functions here.
"""

import dataclasses

from alexnet_jax import analysis
from alexnet_jax import checkpointing
from alexnet_jax import settings
from alexnet_jax.errors import ConfigError


def stored_config(workdir: str, step: int | None = None):
  """The ConfigDict the run in `workdir` was trained with, from its checkpoint (the latest, or
  `step`'s), and its class names."""
  checkpointer = checkpointing.Checkpointer(workdir, max_to_keep=None, read_only=True)
  try:
    meta = checkpointer.read_meta(step)
  finally:
    checkpointer.close()
  return settings.config_from_dict(meta['config']), tuple(meta.get('class_names', ()))


def load(workdir: str, step: int | None = None, **overrides) -> analysis.Trained:
  """The network of the run in `workdir` at its latest checkpoint (or `step`'s).

  `overrides` replace top-level config fields that do not change the network, e.g.
  `data_dir=...` for data that moved, `eval_batch_size=...`.
  """
  config, class_names = stored_config(workdir, step)
  for field, value in overrides.items():
    if field not in config:
      raise ConfigError(f'{field!r} is not a config field; the run has {sorted(config)}.')
    config[field] = value
  trained = analysis.restore(config, workdir, step)
  return dataclasses.replace(trained, class_names=class_names)
