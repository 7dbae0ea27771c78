"""Checkpoints in `<workdir>/checkpoints`, written by orbax's CheckpointManager.

A checkpoint holds the whole train state (parameters, batch-norm statistics, optimiser state, the
plateau schedule's state, step and RNG key) and the grain iterator's state, so running
the same command again continues the same data stream from the same step. Orbax writes each
checkpoint under a temporary name and renames it when complete, so a run killed mid-save keeps its
previous checkpoint; `max_to_keep` bounds the disk used.

Each checkpoint also holds `meta`: the run's config (`settings.RunConfig.source`) and its
dataset's class names, so a workdir alone says what network it holds (`read_meta`); evaluation,
prediction and export need nothing else.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from alexnet_jax.errors import ConfigError


class Checkpointer:
  """Saves and restores (train state, data iterator state) pairs by step."""

  def __init__(self, workdir: str, max_to_keep: int | None, read_only: bool = False):
    """`read_only`: for reading a run (evaluate, predict, export); creates and deletes nothing."""
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    if read_only and not os.path.isdir(self.directory):
      raise ConfigError(
          f'{os.path.abspath(workdir)} holds no checkpoint ({self.directory} does not exist). '
          'Pass the --workdir of a run that saved one, or train it first: python -m '
          'alexnet_jax.main --config=... --workdir=DIR.'
      )
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else max_to_keep,
            create=not read_only,
            read_only=read_only,
        ),
        item_names=('state', 'data', 'meta'),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(
      self, step: int, state: Any, data_state: dict | None, meta: dict | None = None, **kwargs
  ) -> None:
    """Starts an asynchronous save; the training step goes on while it is written. `kwargs` go
    to orbax's `CheckpointManager.save` (e.g. `metrics`)."""
    self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state or {}),
            meta=ocp.args.JsonSave(meta or {}),
        ),
        **kwargs,
    )

  def check_step(self, step: int | None) -> int:
    """`step` if a checkpoint of it exists (None: the latest); ConfigError naming those there."""
    found = self.all_steps()
    if not found:
      raise ConfigError(
          f'{os.path.dirname(self.directory)} holds no checkpoint ({self.directory} is missing or '
          'empty). Pass the --workdir of a run that saved one, or train it first: python -m '
          'alexnet_jax.main --config=... --workdir=DIR.'
      )
    if step is None:
      return found[-1]
    if step not in found:
      raise ConfigError(
          f'{self.directory} has no checkpoint of step {step}; it has steps {found}. Pass one '
          'of them as --step, or leave --step out for the latest.'
      )
    return step

  def read_meta(self, step: int | None = None) -> dict:
    """The `meta` of a checkpoint (the latest by default): {'config': ..., 'class_names': ...}."""
    step = self.check_step(step)
    try:
      meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, FileNotFoundError):
      meta = None
    if not meta or not meta['meta'] or 'config' not in meta['meta']:
      raise ConfigError(
          f'The checkpoint of step {step} in {self.directory} does not record its config (it was '
          'written by an older alexnet_jax). Pass the config it was trained with as --config, '
          'or resume the run with this version for one more checkpoint.'
      )
    return meta['meta']

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores into the shapes, dtypes and shardings of `abstract_state` (see jax.eval_shape)."""
    step = self.latest_step() if step is None else step
    try:
      restored = self.manager.restore(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
          ),
      )
    except (ValueError, KeyError) as e:
      raise ConfigError(
          f'The checkpoint at {self.directory} (step {step}) does not fit this config: {e}. It was '
          'written by a run with a different model; use a new --workdir, or restore the config '
          'that wrote it.'
      ) from None
    return restored['state'], restored['data']

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a tree of arrays, for restoring into."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)), tree
  )
