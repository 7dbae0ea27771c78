"""The loop benchmark: the real loop is timed over exactly the steps it says, the bare step too."""

import math
import statistics

import pytest

from alexnet_jax.tools import loop_benchmark
from alexnet_jax import train
from tests import commands

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


def test_the_command_reports_both_times_and_their_ratio(tiny_data_dir, tmp_path, compilation_cache):
  output = tmp_path / 'loop.json'
  out, result = commands.run_for_json(
      'alexnet_jax.tools.loop_benchmark',
      '--config=configs/quickstart.py:tiny',
      f'--config.data_dir={tiny_data_dir}',
      '--warmup=1',
      '--steps=2',
      '--window=1',
      '--windows=1',
      output=output,
      env=compilation_cache,
  )
  config = result['config']
  assert (config['dataset'], config['batch_size'], config['image_size']) == (
      'synthetic_shapes/tiny',
      16,
      67,
  )
  # One window before the loop and one after; the bare time is their median.
  windows = result['bare_window_ms']
  assert len(windows) == 2 and all(w > 0 for w in windows)
  assert result['bare_ms_per_step'] == pytest.approx(statistics.median(windows))
  bare, loop = result['bare_ms_per_step'], result['loop_ms_per_step']
  assert loop > 0 and result['loop_over_bare_steps_per_s'] == pytest.approx(bare / loop)
  assert out.stdout.splitlines() == [
      f'bare step: {bare:.1f} ms/step (median of 2 windows of 1)',
      f'real loop: {loop:.1f} ms/step (2 steps after 1)',
      f"loop steps/s / bare steps/s: {result['loop_over_bare_steps_per_s']:.3f}",
  ]
