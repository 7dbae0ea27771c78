"""The loop benchmark: the real loop is timed over exactly the steps it says, the bare step too."""

import math

import pytest

from alexnet_jax.tools import loop_benchmark
from alexnet_jax import train

pytestmark = pytest.mark.slow  # it trains, twice


def test_loop_and_bare_step_times(tiny_data_dir, monkeypatch, one_device, tiny_config):
  config = tiny_config()
  runs, seen = [], []
  real = train.train_and_evaluate

  def recording(config, workdir, devices=None, step_callback=None):
    runs.append(config.num_train_steps)

    def callback(step, state):
      seen.append((step, int(state.step)))  # the loop hands over each step's own state
      step_callback(step, state)

    return real(config, workdir, devices, step_callback=callback)

  monkeypatch.setattr(train, 'train_and_evaluate', recording)
  loop = loop_benchmark.loop_step_time(config, warmup=2, timed=3, devices=one_device)
  assert runs == [5]  # warm-up + timed steps, nothing more
  assert seen == [(s, s) for s in range(1, 6)]
  assert 0 < loop < 60 and math.isfinite(loop)
  times = loop_benchmark.bare_step_times(config, window=2, windows=3, devices=one_device)
  assert len(times) == 3 and all(0 < t < 60 for t in times)
