"""Checkpoints in `<workdir>/checkpoints`, written by orbax's CheckpointManager.

A checkpoint holds the whole train state (parameters, batch-norm statistics, optimiser state, the
plateau schedule's state, step and RNG key) and the grain iterator's state, so running
the same command again continues the same data stream from the same step. Orbax writes each
checkpoint under a temporary name and renames it when complete, so a run killed mid-save keeps its
previous checkpoint.

Which checkpoints stay is orbax's preservation policy: the last `max_to_keep`, whatever they
followed, and besides them the one with the lowest validation top-1 error, which orbax records
with each checkpoint saved after an evaluation (`save(..., metrics=...)`). `best_step()` names it,
and every command that reads a run takes `step='best'` (`check_step`).

Each checkpoint also holds `meta`: the run's config (`settings.RunConfig.source`) and its
dataset's class names, so a workdir alone says what network it holds (`read_meta`); evaluation,
prediction and export need nothing else.
"""

import contextlib
import logging
import os
import threading
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

from alexnet_jax.errors import ConfigError

# The metric orbax ranks checkpoints by, as the loop names it in its logs and metrics.jsonl.
BEST_METRIC = 'eval_top1_error'


def _error(metrics: dict) -> float:
  """The ranked value of a checkpoint's metrics; one saved without an evaluation ranks last."""
  return metrics.get(BEST_METRIC, float('inf'))


_READ_ONLY_NOTICES = ('Given directory is read only', 'CheckpointManagerOptions.read_only=True')


@contextlib.contextmanager
def _quiet_read_only_notices():
  """orbax warns, at every read-only open, that it is read-only: expected when reading a run."""
  notices = logging.Filter()
  notices.filter = lambda record: not str(record.msg).startswith(_READ_ONLY_NOTICES)
  logger = logging.getLogger('absl')
  logger.addFilter(notices)
  try:
    yield
  finally:
    logger.removeFilter(notices)


# orbax numbers each save with a process-wide counter and reads the current number back while the
# save starts (orbax.checkpoint's OperationIdGenerator): two managers starting saves at once (a
# sweep's runs side by side) get the same number and trip over each other's signals. One save
# starts at a time; the writing itself still overlaps.
_SAVE_START = threading.Lock()


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
    policies = ocp.checkpoint_managers
    keep = policies.AnyPreservationPolicy(
        [
            # The last K whether or not an evaluation came before them: a run resumes from them.
            policies.LatestN(n=max_to_keep),
            # The best evaluated one; the latest of equals, as best_step() says. Checkpoints
            # without an evaluation are kept only as the last K, not forever.
            policies.BestN(
                get_metric_fn=_error, reverse=True, n=1, keep_checkpoints_without_metrics=False
            ),
        ]
    )
    with _quiet_read_only_notices() if read_only else contextlib.nullcontext():
      self.manager = self._manager(read_only, keep)

  def _manager(self, read_only: bool, keep) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            # best_fn makes orbax write the metrics given to save() beside each checkpoint; which
            # checkpoints stay is decided by `keep` alone.
            best_fn=_error,
            best_mode='min',
            preservation_policy=None if read_only else keep,
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
      self,
      step: int,
      state: Any,
      data_state: dict | None,
      meta: dict | None = None,
      metrics: dict | None = None,
      **kwargs,
  ) -> None:
    """Starts an asynchronous save; the training step goes on while it is written. `metrics`:
    those of the evaluation just made (at least BEST_METRIC), or None if none was. `kwargs` go to
    orbax's `CheckpointManager.save`."""
    with _SAVE_START:
      self._start_save(step, state, data_state, meta, metrics, **kwargs)

  def _start_save(self, step, state, data_state, meta, metrics, **kwargs) -> None:
    self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state or {}),
            meta=ocp.args.JsonSave(meta or {}),
        ),
        # {} rather than None: orbax warns at every save without metrics once it tracks them.
        metrics=metrics or {},
        **kwargs,
    )

  def evaluated_steps(self) -> dict[int, float]:
    """{step: validation top-1 error} of the checkpoints here saved after an evaluation."""
    errors = {}
    for step in self.all_steps():
      metrics = self.manager.metrics(step) or {}
      if BEST_METRIC in metrics:
        errors[step] = metrics[BEST_METRIC]
    return errors

  def best_step(self) -> int | None:
    """The checkpoint with the lowest validation top-1 error (the latest of equals, the one the
    preservation policy keeps); None if no checkpoint here was saved after an evaluation."""
    errors = self.evaluated_steps()
    return min(errors, key=lambda s: (errors[s], -s)) if errors else None

  def check_step(self, step: int | str | None) -> int:
    """The step of an existing checkpoint that `step` names: a number, 'best' (`best_step`), or
    None or 'latest' (the latest); ConfigError naming those there."""
    found = self.all_steps()
    if not found:
      raise ConfigError(
          f'{os.path.dirname(self.directory)} holds no checkpoint ({self.directory} is missing or '
          'empty). Pass the --workdir of a run that saved one, or train it first: python -m '
          'alexnet_jax.main --config=... --workdir=DIR.'
      )
    if isinstance(step, str) and step.strip().isdigit():  # a command's flag
      step = int(step)
    if step is None or step == 'latest':
      return found[-1]
    if step == 'best':
      best = self.best_step()
      if best is None:
        raise ConfigError(
            f'No checkpoint in {self.directory} was saved after an evaluation, so none is best by '
            f'validation top-1 error; it has steps {found}. Pass one of them as --step, or leave '
            '--step out for the latest (a run evaluated every --config.eval_every_steps saves '
            'its evaluated steps).'
        )
      return best
    if isinstance(step, bool) or not isinstance(step, int):
      raise ConfigError(
          f'step={step!r} names no checkpoint: pass a step number (this run has {found}), '
          "'best' (the lowest validation top-1 error) or 'latest'."
      )
    if step not in found:
      raise ConfigError(
          f'{self.directory} has no checkpoint of step {step}; it has steps {found}. Pass one '
          "of them as --step, 'best', or leave --step out for the latest."
      )
    return step

  def meta(self, step: int | str | None = None) -> dict:
    """The `meta` of a checkpoint (the latest by default); {} for one written before meta was."""
    step = self.check_step(step)
    try:
      meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, FileNotFoundError):
      return {}
    return dict(meta['meta'] or {}) if meta else {}

  def read_meta(self, step: int | str | None = None) -> dict:
    """The `meta` of a checkpoint (the latest by default): {'config': ..., 'class_names': ...}."""
    step = self.check_step(step)
    meta = self.meta(step)
    if 'config' not in meta:
      raise ConfigError(
          f'The checkpoint of step {step} in {self.directory} does not record its config (it was '
          'written by an older alexnet_jax). Pass the config it was trained with as --config, '
          'or resume the run with this version for one more checkpoint.'
      )
    return meta

  def restore(self, abstract_state: Any, step: int | str | None = None) -> tuple[Any, dict]:
    """Restores into the shapes, dtypes and shardings of `abstract_state` (see jax.eval_shape);
    `step` as `check_step` takes it."""
    step = self.check_step(step)
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


def _read(workdir: str, read: Callable[['Checkpointer'], Any]) -> Any:
  """`read(checkpointer)` of `workdir`'s checkpoints, opened read-only; None where it has none."""
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    return None
  checkpointer = Checkpointer(workdir, max_to_keep=None, read_only=True)
  try:
    if checkpointer.latest_step() is None:
      return None
    return read(checkpointer)
  finally:
    checkpointer.close()


def latest_meta(workdir: str, step: int | str | None = None) -> dict | None:
  """The `meta` of the latest checkpoint in `workdir` (or `step`'s); None where it has none."""
  return _read(workdir, lambda checkpointer: checkpointer.meta(step))


def latest_step(workdir: str) -> int | None:
  """The step of the latest complete checkpoint in `workdir`; None where it has none."""
  return _read(workdir, Checkpointer.latest_step)


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a tree of arrays, for restoring into."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)), tree
  )
