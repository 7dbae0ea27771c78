"""Which checkpoints stay (the last K and the best evaluated one), and naming one by 'best'."""

import jax
import numpy as np
import pytest

from alexnet_jax import checkpointing
from alexnet_jax import history
from alexnet_jax import inference
from alexnet_jax.errors import ConfigError


def _save_all(workdir, errors, keep, meta=None):
  """Checkpoints of steps 1, 2, ... of a tiny tree, each with its error (None: no evaluation)."""
  checkpointer = checkpointing.Checkpointer(workdir, keep)
  for step, error in enumerate(errors, start=1):
    metrics = None if error is None else {checkpointing.BEST_METRIC: error}
    checkpointer.save(step, {'w': np.full(3, step, np.float32)}, {}, meta, metrics=metrics)
  checkpointer.wait()
  return checkpointer


def test_the_best_evaluated_checkpoint_is_kept_besides_the_last_k(tmp_path):
  # Step 3 is the best (5 equals it later, and wins the tie as the later one); 6 and 7 are the
  # last two, 6 saved without an evaluation.
  errors = [0.5, None, 0.3, None, 0.3, None, 0.6]
  checkpointer = _save_all(str(tmp_path), errors, keep=2)
  assert checkpointer.all_steps() == [5, 6, 7]
  assert checkpointer.best_step() == 5
  assert checkpointer.check_step('best') == 5
  checkpointer.close()

  # A later run (a new manager on the same directory) ranks the kept ones as this one did.
  checkpointer = checkpointing.Checkpointer(str(tmp_path), 2)
  checkpointer.save(8, {'w': np.zeros(3, np.float32)}, {}, metrics=None)
  checkpointer.save(9, {'w': np.zeros(3, np.float32)}, {}, metrics={'eval_top1_error': 0.2})
  checkpointer.wait()
  assert checkpointer.all_steps() == [8, 9]  # 9 is both the best and among the last two
  checkpointer.close()
  reader = checkpointing.Checkpointer(str(tmp_path), None, read_only=True)
  assert reader.evaluated_steps() == {9: pytest.approx(0.2)}
  restored, _ = reader.restore({'w': jax.ShapeDtypeStruct((3,), np.float32)}, 'best')
  np.testing.assert_array_equal(restored['w'], np.zeros(3))
  reader.close()


def test_step_names_are_checked_against_the_checkpoints_there(tmp_path):
  checkpointer = _save_all(str(tmp_path), [None, None], keep=3)
  assert checkpointer.check_step('2') == checkpointer.check_step('latest') == 2
  assert checkpointer.check_step(None) == 2
  with pytest.raises(ConfigError, match=r'saved after an evaluation.*it has steps \[1, 2\]'):
    checkpointer.check_step('best')
  with pytest.raises(ConfigError, match=r'no checkpoint of step 7; it has steps \[1, 2\]'):
    checkpointer.check_step(7)
  with pytest.raises(ConfigError, match=r"step='bets' names no checkpoint.*'best'"):
    checkpointer.check_step('bets')
  checkpointer.close()


@pytest.mark.slow
def test_a_run_keeps_its_best_evaluation_and_its_last_checkpoints(evaluated_run):
  workdir = evaluated_run  # 60 steps, evaluated every 6, checkpointed every 4, keeping 2
  # The reference: the history's evaluations (an independent record) and the save rule written
  # out again: every checkpoint_every_steps, the last step, and each evaluation below all earlier.
  evals = {r['step']: r['eval_top1_error'] for r in history.read(workdir) if 'eval_top1_error' in r}
  assert sorted(evals) == list(range(6, 61, 6))
  saved, lowest = set(range(4, 61, 4)) | {60}, 1.0
  for step, error in sorted(evals.items()):
    if error < lowest:
      saved.add(step)
      lowest = error
  evaluated = {s: evals[s] for s in saved if s in evals}
  best = min(evaluated, key=lambda s: (evaluated[s], -s))
  last = sorted(saved)[-2:]

  checkpointer = checkpointing.Checkpointer(workdir, None, read_only=True)
  assert checkpointer.all_steps() == sorted({best, *last})
  assert checkpointer.best_step() == best
  assert best not in last  # else this run would not tell the best from the last ones
  checkpointer.close()
  config, _ = inference.stored_config(workdir, step='best')  # what the commands after training read
  assert config.eval_every_steps == 6
