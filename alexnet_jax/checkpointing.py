"""Checkpoints in `<workdir>/checkpoints`, written by orbax's CheckpointManager.

A checkpoint holds the whole train state (parameters, batch-norm statistics, optimiser state, the
plateau schedule's state, step and RNG key) and the grain iterator's state, so running
the same command again continues the same data stream from the same step. Orbax writes each
checkpoint under a temporary name and renames it when complete, so a run killed mid-save keeps its
previous checkpoint; `max_to_keep` bounds the disk used.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from alexnet_jax.errors import ConfigError


class Checkpointer:
  """Saves and restores (train state, data iterator state) pairs by step."""

  def __init__(self, workdir: str, max_to_keep: int):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=('state', 'data'),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_state: dict | None) -> None:
    """Starts an asynchronous save; the training step goes on while it is written."""
    self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state or {})
        ),
    )

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
