"""A run resumed on other hardware: started on 4 devices with strategy `data` and finished on 2
with `towers`, or started by two processes and finished by one (in tests/test_multihost.py, whose
two processes start it; it uses the helpers here), ends where the same run uninterrupted ends (to
float tolerance: see `assert_matches`).

The parts run in this process, each on a subset of its 8 devices: `main` parses flags and calls
`train.train_and_evaluate`, as they do, and the second call builds its state, data iterator and
schedule from the workdir's checkpoint alone, as a new process would. A command stopped and run again:
tests/test_stopping.py."""

import logging

import jax
import numpy as np
import pytest

from alexnet_jax import history
from alexnet_jax import optim
from alexnet_jax import settings
from alexnet_jax import train
from alexnet_jax.trained import inference

pytestmark = pytest.mark.slow  # training runs, each a few seconds of compiling

FIRST, TOTAL = 3, 6  # steps of the first part, and of the whole run (tiny's length)


@pytest.fixture(scope='module')
def uninterrupted(tiny_config, tmp_path_factory):
  """The tiny run trained straight through on 4 devices, data-parallel: its workdir. Stopping
  after FIRST steps changes nothing it computes: the schedule is the same function of the step
  for a run of FIRST steps as for one of TOTAL (a test below checks it), and tiny evaluates and
  saves at step FIRST anyway."""
  workdir = str(tmp_path_factory.mktemp('uninterrupted') / 'run')
  config = tiny_config()
  assert config.num_train_steps == TOTAL and config.strategy == 'data'
  train.train_and_evaluate(config, workdir, jax.devices()[:4])
  return workdir


def test_the_schedule_does_not_depend_on_where_the_first_part_ends(tiny_config):
  """What makes the uninterrupted run the right reference: the first part trains under the
  schedule of a FIRST-step run, the rest under that of a TOTAL-step run; tiny's cosine decays over
  max(num_train_steps, warmup + 1) steps, so both are the same function up to TOTAL."""
  run = settings.from_config(tiny_config())
  short = optim.learning_rate_schedule(run.optim, FIRST)
  whole = optim.learning_rate_schedule(run.optim, TOTAL)
  steps = np.arange(TOTAL + 1)
  np.testing.assert_array_equal(np.asarray(short(steps)), np.asarray(whole(steps)))
  assert float(whole(TOTAL)) > 0  # the steps after the first part do learn


def finish(config, workdir: str, devices, caplog) -> str:
  """`config` trained to TOTAL steps in `workdir` on `devices`: what it logged."""
  config.num_train_steps = TOTAL
  caplog.clear()
  # On absl's logger: in the full suite a test run before in the same worker leaves absl's logger
  # above INFO, which caplog's level for the root logger does not undo.
  with caplog.at_level(logging.INFO, logger='absl'):
    train.train_and_evaluate(config, workdir, devices)
  return caplog.text


def assert_resumed_at_first(workdir: str, first_records: list[dict], log: str) -> None:
  """The second part resumed from the first part's checkpoint, not from the start: it says so,
  and the history kept the first part's records as they were (a fresh start rewrites them)."""
  assert f'Resumed from the checkpoint at step {FIRST}' in log, log[-3000:]
  assert [r for r in history.read(workdir) if r['step'] <= FIRST] == first_records


def assert_matches(workdir: str, reference: str) -> None:
  """Parameters after TOTAL steps equal the reference's to float tolerance.

  The second part runs on other devices (or processes), so XLA adds the gradients' parts up in
  another order and the last bits differ: measured here, at most 3e-8 (a few float32 ulps of
  weights near 0.3) after TOTAL steps, under 1/500 of what rtol 1e-4, atol 1e-6 (the sharding
  tests' tolerance) allow. The last TOTAL - FIRST steps moved every layer by at least 7e-5, so a
  second part that did not train, or trained on other batches, fails it."""
  resumed, want = inference.load(workdir), inference.load(reference)
  at_first = inference.load(reference, step=FIRST)
  assert resumed.step == want.step == TOTAL
  leaves = jax.tree.leaves_with_path(want.params)
  for (path, value), got, before in zip(
      leaves, jax.tree.leaves(resumed.params), jax.tree.leaves(at_first.params), strict=True
  ):
    name = jax.tree_util.keystr(path)
    value = np.asarray(value)
    assert np.abs(value - np.asarray(before)).max() > 50 * 1e-6, name  # the test can fail
    np.testing.assert_allclose(np.asarray(got), value, rtol=1e-4, atol=1e-6, err_msg=name)


def test_4_devices_data_parallel_resume_on_2_devices_with_towers(
    tiny_config, uninterrupted, tmp_path, caplog
):
  workdir = str(tmp_path / 'run')
  config = tiny_config()
  config.num_train_steps = FIRST
  train.train_and_evaluate(config, workdir, jax.devices()[:4])
  first_records = history.read(workdir)
  config.strategy = 'towers'
  log = finish(config, workdir, jax.devices()[:2], caplog)
  assert "strategy: 'data' there, 'towers' now" in log, log[-3000:]
  assert_resumed_at_first(workdir, first_records, log)
  assert_matches(workdir, uninterrupted)
