"""Which checkpoints stay (the last K and the best evaluated one), naming one by 'best', and
resuming a workdir only under a config of the same network and data."""

import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from alexnet_jax import checkpointing
from alexnet_jax.errors import ConfigError
from alexnet_jax import history
from alexnet_jax import settings
from alexnet_jax import train
from alexnet_jax.trained import inference


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


def _listing(workdir):
  return sorted(
      (os.path.relpath(os.path.join(d, f), workdir), os.path.getsize(os.path.join(d, f)))
      for d, _, files in os.walk(workdir)
      for f in files
  )


@pytest.mark.slow
def test_resuming_under_another_network_is_refused_unless_allowed(
    evaluated_run, tiny_config, tmp_path
):
  workdir = str(tmp_path / 'run')
  shutil.copytree(evaluated_run, workdir)
  before = _listing(workdir)
  config = tiny_config()  # the command's config, in Python
  config.num_train_steps, config.eval_every_steps, config.checkpoint_every_steps = 60, 6, 4
  config.keep_checkpoints = 2

  changed = config.copy_and_resolve_references()
  changed.model.norm = 'none'
  with pytest.raises(ConfigError) as refused:
    train.train_and_evaluate(changed, workdir, jax.devices()[:1])
  message = str(refused.value)
  assert "model.norm: 'lrn' there, 'none' now" in message
  assert '--workdir' in message and '--config.allow_config_change=True' in message
  assert '\n' not in message
  assert _listing(workdir) == before  # no events file, history or checkpoint touched

  # How long it trains, how often it evaluates and where the data lives may change.
  other = config.copy_and_resolve_references()
  other.num_train_steps, other.eval_every_steps = 100, 10
  other.data_dir = str(tmp_path / 'moved')
  checkpointer = checkpointing.Checkpointer(workdir, 2)
  train.check_resumable(checkpointer, settings.from_config(other))
  checkpointer.close()

  changed.allow_config_change = True
  changed.num_train_steps = 61
  state, _ = train.train_and_evaluate(changed, workdir, jax.devices()[:1])
  assert int(state.step) == 61
  stored, _ = inference.stored_config(workdir, 61)
  assert stored.model.norm == 'none'  # the new checkpoint records the config it continued with


def test_what_may_change_on_resume(tiny_config):
  recorded = json.loads(json.dumps(tiny_config().to_dict()))  # as checkpoints store it: lists...
  current = tiny_config()
  current.num_train_steps, current.eval_every_steps, current.data_dir = 100, 10, '/elsewhere'
  current.mesh.data, current.keep_checkpoints = 2, 7
  fixed = settings.differences(recorded, current, ignoring=settings.CHANGEABLE_ON_RESUME)
  assert fixed == []  # ...compare equal to the configs' tuples (augment.mean_rgb and others)
  assert [f.split(':')[0] for f in settings.differences(recorded, current, ignoring=())] == [
      'data_dir',
      'eval_every_steps',
      'keep_checkpoints',
      'mesh.data',
      'num_train_steps',
  ]
  current.model.norm, current.optim.learning_rate, current.augment.flip = 'none', 0.1, False
  current.batch_size = 32
  fixed = settings.differences(recorded, current, ignoring=settings.CHANGEABLE_ON_RESUME)
  assert [f.split(':')[0] for f in fixed] == [
      'augment.flip',
      'batch_size',
      'model.norm',
      'optim.learning_rate',
  ]


def test_a_checkpoint_without_a_recorded_config_resumes_with_a_warning(
    tmp_path, tiny_config, caplog
):
  checkpointer = _save_all(str(tmp_path), [None], keep=3, meta=None)  # as older versions wrote
  run = settings.from_config(tiny_config())
  with caplog.at_level(logging.WARNING):
    train.check_resumable(checkpointer, run)
  assert 'does not record its config' in caplog.text
  checkpointer.close()

  recorded = _save_all(str(tmp_path / 'new'), [None], keep=3, meta={'config': run.source})
  other = tiny_config()
  other.seed = 1
  with pytest.raises(ConfigError, match='seed: 0 there, 1 now'):
    train.check_resumable(recorded, settings.from_config(other))
  other.allow_config_change = True
  train.check_resumable(recorded, settings.from_config(other))
  recorded.close()
