r"""Does the training loop keep what the step wins? The real loop against the bare step.

    python -m alexnet_jax.tools.loop_benchmark --config=configs/quickstart.py --steps=60

Runs, in one process and on the same devices:
- the *bare* step: `steps.make_train_step` (with the device half of the augmentation where
  `device_augment` is on, as the loop runs it) on one batch of the real pipeline that already sits
  on the devices, timed in windows of `--window` steps (the median window is reported);
- the *loop*: `train.train_and_evaluate` itself, with its data pipeline (TFDS ArrayRecord, grain,
  augmentation, host-to-device prefetch), metrics, progress reports and logging: the config's
  run, started as it would start, stopped after `--warmup` steps and then `--steps` timed steps;
  its evaluations and checkpoints are pushed past its end.

and prints steps/s of each and their ratio: 1.0 means the loop loses nothing; and the share of the
machine's float32 limit (its fastest matmul, measured in the same run) that each makes. The loop
is timed between two points where the host waits for the step in flight (`block_until_ready` on
the state, inside `step_callback`), so queued-up asynchronous work is counted. The bare step is
timed before and after the loop, so drift on a shared machine shows in its windows.
"""

import contextlib
import json
import statistics
import tempfile
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from alexnet_jax import configs
from alexnet_jax.data import device_augment
from alexnet_jax.data import pipeline
from alexnet_jax import optim
from alexnet_jax import settings
from alexnet_jax import sharding
from alexnet_jax import steps
from alexnet_jax.system import runtime
from alexnet_jax import train
from alexnet_jax.tools import flops
from alexnet_jax.tools import machine

FLAGS = flags.FLAGS


def _define_flags():
  # Defined only when run as a command, so importing this module next to main.py (tests,
  # notebooks) does not define --config twice.
  config_flags.DEFINE_config_file(
      'config',
      configs.path('quickstart'),
      'Training config to measure (default: the installed quickstart).',
  )
  flags.DEFINE_integer('steps', 60, 'Timed steps of the loop.')
  flags.DEFINE_integer(
      'warmup', 10, 'Loop steps before timing starts (compilation, pipeline fill).'
  )
  flags.DEFINE_integer('window', 10, 'Steps per timed window of the bare step.')
  flags.DEFINE_integer('windows', 5, 'Timed windows of the bare step (before and after the loop).')
  flags.DEFINE_string('output', None, 'Also write the result as JSON to this file.')


def bare_step_times(config, window: int, windows: int, devices=None) -> list[float]:
  """Seconds per step of each timed window: the trainer's step on a device-resident batch."""
  run = settings.from_config(config)
  layout = sharding.Layout.create(run.mesh, run.model.towers, devices)
  model = steps.create_model(run.model, run.data.image_size, run.loop.seed, **layout.model_axes())
  total = max(run.loop.num_train_steps, 1)
  tx = optim.create_optimizer(run.optim, total)
  graphdef, state = steps.create_train_state(
      model, tx, optim.create_plateau(run.optim), run.loop.seed
  )
  state = layout.place_state(state)
  preprocess = device_augment.for_data(run.data) if run.data.device_augment else None
  train_fn = steps.make_train_step(
      graphdef, tx, optim.learning_rate_schedule(run.optim, total), layout, preprocess
  )
  # The loop's own first batch (uint8 crops and their draws, or float32 images): the same input.
  pipeline.get_info(run.data)
  stream = pipeline.create_train_dataset(run.data, jax.process_index(), jax.process_count())
  batch = layout.global_batch(next(iter(stream)))
  for _ in range(2):  # compile and settle
    state, _, _ = train_fn(state, batch)
  jax.block_until_ready(state)
  times = []
  for _ in range(windows):
    start = time.perf_counter()
    for _ in range(window):
      state, _, _ = train_fn(state, batch)
    jax.block_until_ready(state)
    times.append((time.perf_counter() - start) / window)
  return times


class _Timed(Exception):
  """Raised from the step callback once the timed steps are done: the run stops there."""


def loop_step_time(config, warmup: int, timed: int, devices=None) -> float:
  """Seconds per step of `train_and_evaluate` between steps `warmup` and `warmup + timed`.

  The run keeps the config's length (so it starts as that run would, e.g. decoding a split it
  will read whole before its first step) and is stopped after the timed steps; its evaluations
  and checkpoints are pushed past its end."""
  config = config.copy_and_resolve_references()
  run = settings.from_config(config)
  total = train.num_train_steps(run.loop, run.data.batch_size, pipeline.get_info(run.data))
  config.num_train_steps = max(total, warmup + timed)
  config.eval_every_steps = config.num_train_steps
  config.checkpoint_every_steps = config.num_train_steps
  config.profile_steps = 0
  marks = {}

  def mark(step, state):
    if step in (warmup, warmup + timed):
      jax.block_until_ready(state.params)
      marks[step] = time.perf_counter()
    if step == warmup + timed:
      raise _Timed()

  # The run ends where `mark` raises _Timed, after the timed steps: the way it is meant to end.
  with tempfile.TemporaryDirectory() as workdir, contextlib.suppress(_Timed):
    train.train_and_evaluate(config, workdir, devices, step_callback=mark)
  return (marks[warmup + timed] - marks[warmup]) / timed


def compare(config, warmup: int, timed: int, window: int, windows: int) -> dict:
  """Bare-step windows before and after the loop (so drift on a shared machine shows), the loop."""
  before = bare_step_times(config, window, windows)
  loop = loop_step_time(config, warmup, timed)
  after = bare_step_times(config, window, windows)
  bare = statistics.median(before + after)
  # The machine's float32 limit, measured in the same run (its fastest 1024^3 matmul: XLA's,
  # numpy's or torch's), and the model FLOPs of one step (forward and backward of every conv
  # and fc layer).
  device = jax.devices()[0]
  xla = {'float32': machine.measure_peak_flops('float32', 1024, device)}
  limit = machine.machine_limits(('float32',), 1024, xla, device)['float32']
  run = settings.from_config(config)
  step_flops = flops.train_flops_per_image(run.model, run.data.image_size) * run.data.batch_size
  return {
      'config': {
          'dataset': config.dataset,
          'batch_size': config.batch_size,
          'image_size': config.image_size,
          'strategy': config.strategy,
          'data_workers': config.data_workers,
          'data_threads': config.data_threads,
          'prefetch_batches': config.prefetch_batches,
          'device_augment': config.get('device_augment', True),
      },
      'devices': [str(d) for d in jax.devices()],
      'bare_ms_per_step': 1e3 * bare,
      'bare_window_ms': [1e3 * t for t in before + after],
      'loop_ms_per_step': 1e3 * loop,
      'loop_over_bare_steps_per_s': bare / loop,
      'limit': limit,
      'bare_share_of_limit': step_flops / bare / limit['flops_per_s'],
      'loop_share_of_limit': step_flops / loop / limit['flops_per_s'],
  }


def main(argv):
  del argv
  runtime.tune_process()
  result = compare(FLAGS.config, FLAGS.warmup, FLAGS.steps, FLAGS.window, FLAGS.windows)
  print(
      f"bare step: {result['bare_ms_per_step']:.1f} ms/step (median of "
      f'{2 * FLAGS.windows} windows of {FLAGS.window})'
  )
  print(
      f"real loop: {result['loop_ms_per_step']:.1f} ms/step ({FLAGS.steps} steps after "
      f'{FLAGS.warmup})'
  )
  print(f"loop steps/s / bare steps/s: {result['loop_over_bare_steps_per_s']:.3f}")
  limit = result['limit']
  print(
      f"float32 limit {limit['flops_per_s'] / 1e12:.3f} TFLOP/s ({limit['by']}): the bare step "
      f"makes {100 * result['bare_share_of_limit']:.0f}% of it, the loop "
      f"{100 * result['loop_share_of_limit']:.0f}%"
  )
  if FLAGS.output:
    with open(FLAGS.output, 'w') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=lambda argv: FLAGS(configs.resolve_config_flags(argv)))
