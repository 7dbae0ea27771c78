r"""How to train a sweep's members together on this machine: the options, timed side by side.

    python -m alexnet_jax.tools.member_benchmark --config=configs/ablation.py --members=4

Each option trains `--members` networks of the config (their own initialisation, their own batch)
with the trainer's step (`steps.train_step`, the device half of the augmentation included):
- `one after another`: one compiled step, called for each member in turn (what a sweep does
  today with `parallel=1`);
- `vmap`: the members' states stacked on a leading axis and the step mapped over it
  (`jax.vmap`), one program; XLA turns each convolution into a grouped one;
- `unrolled`: the M steps written side by side in one program, each on its own member's arrays.

It prints, for each, ms per step of all members, member-steps per second, the ratio to one after
another (above 1: faster) and the share of the machine's float32 limit (`machine.machine_limits`,
measured in the same run) that the members' model FLOPs reach. Medians of `--windows` windows.
"""

import functools
import json
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from alexnet_jax import configs
from alexnet_jax import optim
from alexnet_jax import settings
from alexnet_jax import sharding
from alexnet_jax import steps
from alexnet_jax.data import device_augment
from alexnet_jax.system import cli
from alexnet_jax.tools import flops
from alexnet_jax.tools import machine

FLAGS = flags.FLAGS
OPTIONS = ('one after another', 'vmap', 'unrolled')


def _batch(run: settings.RunConfig, rng: np.random.Generator) -> dict:
  """A device-augmented batch as the pipeline sends it (`device_augment.KEYS`)."""
  size, rows = run.data.image_size, run.data.batch_size
  return {
      'image': rng.integers(0, 256, (rows, size, size, 3), dtype=np.uint8),
      'label': rng.integers(0, run.model.num_classes, rows).astype(np.int32),
      'flip': rng.random(rows) < 0.5,
      'shift': rng.normal(0, 1, (rows, 3)).astype(np.float32),
      'window': np.zeros((rows, 2), np.int32),
  }


def _stacked(trees):
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _member(tree, i: int):
  return jax.tree.map(lambda leaf: leaf[i], tree)


def options(run: settings.RunConfig, members: int) -> dict:
  """{option: (step of all members, their states, their batches)}: each step returns the new
  states, in the form it takes them (a list, or stacked)."""
  tx, plateau = optim.create_optimizer(run.optim, 1000), optim.create_plateau(run.optim)
  states = []
  for seed in range(members):
    graphdef, state = steps.create_train_state(
        steps.create_model(run.model, run.data.image_size, seed), tx, plateau, seed
    )
    states.append(state)
  step = functools.partial(
      steps.train_step,
      graphdef=graphdef,
      tx=tx,
      schedule=optim.learning_rate_schedule(run.optim, 1000),
      distribute=lambda per_shard, *_, grads: sharding.undistributed(per_shard),
      preprocess=device_augment.for_data(run.data),
  )
  rng = np.random.default_rng(0)
  batches = [jax.device_put(_batch(run, rng)) for _ in range(members)]

  def one_after_another(states, batches):
    return [jitted(s, b)[0] for s, b in zip(states, batches)]

  def unrolled(stacked, batches):
    return _stacked([step(_member(stacked, i), _member(batches, i))[0] for i in range(members)])

  jitted = jax.jit(step, donate_argnums=0)
  return {
      'one after another': (
          one_after_another,
          [jax.tree.map(jnp.copy, s) for s in states],
          batches,
      ),
      'vmap': (
          jax.jit(lambda s, b: jax.vmap(step)(s, b)[0], donate_argnums=0),
          _stacked(states),
          _stacked(batches),
      ),
      'unrolled': (jax.jit(unrolled, donate_argnums=0), _stacked(states), _stacked(batches)),
  }


def members_of(option: str, states, members: int) -> list:
  """The members' states of an option's output, as a list."""
  return (
      list(states)
      if option == 'one after another'
      else [_member(states, i) for i in range(members)]
  )


def measure(run: settings.RunConfig, members: int, window: int, windows: int) -> dict:
  """{option: seconds per step of all members (median window)} on the default device."""
  seconds = {}
  for name, (fn, state, batch) in options(run, members).items():
    state = jax.block_until_ready(fn(state, batch))  # compiles
    times = []
    for _ in range(windows):
      start = time.perf_counter()
      for _ in range(window):
        state = fn(state, batch)
      jax.block_until_ready(state)
      times.append((time.perf_counter() - start) / window)
    seconds[name] = statistics.median(times)
  return seconds


def table(run: settings.RunConfig, members: int, seconds: dict, limit: float) -> list[dict]:
  per_step = flops.train_flops_per_image(run.model, run.data.image_size) * run.data.batch_size
  base = seconds['one after another']
  return [
      {
          'option': name,
          'ms_per_step_of_all_members': 1e3 * s,
          'member_steps_per_s': members / s,
          'vs_one_after_another': base / s,
          'share_of_limit': members * per_step / s / limit,
      }
      for name, s in seconds.items()
  ]


def main(argv):
  cli.begin(argv)
  run = settings.from_config(FLAGS.config)
  device = jax.devices()[0]
  seconds = measure(run, FLAGS.members, FLAGS.window, FLAGS.windows)
  xla = {'float32': machine.measure_peak_flops('float32', 1024, device)}
  limit = machine.machine_limits(('float32',), 1024, xla, device)['float32']
  rows = table(run, FLAGS.members, seconds, limit['flops_per_s'])
  print(
      f'{FLAGS.members} members, batch {run.data.batch_size} each, {run.data.image_size}px, '
      f'width {run.model.width}, {device.platform}; float32 limit '
      f"{limit['flops_per_s'] / 1e12:.3f} TFLOP/s ({limit['by']})"
  )
  print('| option | ms per step of all | member-steps/s | vs one after another | % of limit |')
  print('| --- | --- | --- | --- | --- |')
  for r in rows:
    print(
        f"| {r['option']} | {r['ms_per_step_of_all_members']:.1f} | "
        f"{r['member_steps_per_s']:.1f} | {r['vs_one_after_another']:.2f}x | "
        f"{100 * r['share_of_limit']:.0f}% |"
    )
  if FLAGS.output:
    with open(FLAGS.output, 'w') as f:
      json.dump({'members': FLAGS.members, 'limit': limit, 'rows': rows}, f, indent=1)


def run_command() -> None:
  config_flags.DEFINE_config_file(
      'config', configs.path('ablation'), 'The config whose members are trained (its scale).'
  )
  flags.DEFINE_integer('members', 4, 'Networks trained together.')
  flags.DEFINE_integer('window', 5, 'Steps per timed window.')
  flags.DEFINE_integer('windows', 5, 'Timed windows per option (the median is reported).')
  flags.DEFINE_string('output', None, 'Also write the table as JSON to this file.')
  app.run(main, flags_parser=cli.parse_flags)


if __name__ == '__main__':
  run_command()
