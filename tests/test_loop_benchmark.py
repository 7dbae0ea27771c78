"""The loop benchmark: the real loop is timed over exactly the steps it says, the bare step too."""

import math
import statistics

import jax
import pytest

from alexnet_jax.tools import loop_benchmark
from alexnet_jax import train
from tests import commands
from tests import test_benchmark

pytestmark = pytest.mark.slow  # it trains, twice


def test_loop_and_bare_step_times(tiny_data_dir, monkeypatch, tiny_config):
  # On all the test process's devices: the command's test below runs the same run's programs,
  # which it then finds in the compilation cache.
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
  config.num_train_steps = 8
  loop = loop_benchmark.loop_step_time(config, warmup=2, timed=3)
  assert runs == [8]  # the config's run, as it would start,
  assert seen == [(s, s) for s in range(1, 6)]  # stopped after the warm-up and timed steps
  assert 0 < loop < 60 and math.isfinite(loop)
  times = loop_benchmark.bare_step_times(config, window=2, windows=3)
  assert len(times) == 3 and all(0 < t < 60 for t in times)


def test_the_command_reports_both_times_and_their_ratio(tiny_data_dir, tmp_path, compilation_cache):
  """The run of the test above (its length sets the learning-rate schedule), on as many simulated
  CPU devices as the test process has: the compilation cache's key includes the CPU's device
  count, so the command finds that test's programs there instead of compiling them again."""
  output = tmp_path / 'loop.json'
  out, result = commands.run_for_json(
      'alexnet_jax.tools.loop_benchmark',
      '--config=configs/quickstart.py:tiny',
      f'--config.data_dir={tiny_data_dir}',
      '--config.num_train_steps=8',
      '--warmup=1',
      '--steps=2',
      '--window=1',
      '--windows=1',
      output=output,
      env=dict(compilation_cache, JAX_NUM_CPU_DEVICES=str(jax.device_count())),
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
  limit = result['limit']
  assert out.stdout.splitlines() == [
      f'bare step: {bare:.1f} ms/step (median of 2 windows of 1)',
      f'real loop: {loop:.1f} ms/step (2 steps after 1)',
      f"loop steps/s / bare steps/s: {result['loop_over_bare_steps_per_s']:.3f}",
      f"float32 limit {limit['flops_per_s'] / 1e12:.3f} TFLOP/s ({limit['by']}): the bare step "
      f"makes {100 * result['bare_share_of_limit']:.0f}% of it, the loop "
      f"{100 * result['loop_share_of_limit']:.0f}%",
  ]
  # The limit is the fastest of the libraries' matmuls, and each share is the step's FLOPs over
  # its time and that limit: the bare step's share over the loop's is the ratio of their speeds.
  assert limit['by'].split()[0] in ('xla', 'numpy', 'torch') and limit['flops_per_s'] > 0
  assert result['bare_share_of_limit'] / result['loop_share_of_limit'] == pytest.approx(loop / bare)
  # The tiny network's step: 16 images at 67 px, the multiply-adds counted by hand in
  # tests/test_benchmark.py, x 2 FLOPs, x 3 for forward and backward.
  step_flops = 3 * 2 * sum(test_benchmark.TINY_MACS_67.values()) * 16
  assert result['bare_share_of_limit'] == pytest.approx(
      step_flops / (bare / 1e3) / limit['flops_per_s']
  )
