"""The training step of each framework, ready to time, and the check that they compute the same
step: what `tools.benchmark` runs.

`jax_runner` times the FULL training step the trainer uses (`steps.make_train_step`: forward,
backward, section 5's SGD update, metrics) of the paper's model (`configs/alexnet.py`: 1000
classes, two towers, LRN, dropout 0.5, 224x224; `model_config`) on a synthetic batch that already
sits on the devices (`synthetic_batch`); `torch_runner` the same network in PyTorch
(`torch_reference`) on the same batch, from the same weights (`initial_params`), with the same
optimiser. PyTorch runs in a process of its own (`torch_process_runner`), as it runs outside this
package: without the malloc settings `runtime.tune_process` makes here, which speed up its
allocations as well. Each runner reports its compile time and peak memory (`Runner.row`).

The check (`check_same_step`), before any timing: the same weights, the same batch (`CHECK_BATCH`
images), dropout off, float32 at full precision (no TF32) -> the first step's loss must agree to
1e-4 relative and every parameter's update to 1e-3 relative (L2 norms), plus the float32 rounding
of the weight itself: a bias of 1 that moves by 1e-7 has an update known only to a few bits.

Float32 on a GPU: JAX's default precision runs float32 matmuls and convolutions in TF32; torch is
set to do the same (`allow_tf32`) for the timed rows. bfloat16: ours is `model.dtype='bfloat16'`
(float32 parameters, bfloat16 convs and matmuls, LRN in float32), torch's is
`torch.autocast(dtype=torch.bfloat16)` + channels_last.

This module imports no TensorFlow, tfds, grain, ml_collections or clu writer (the GPU machines have
none of them); `steps` needs clu's pure-Python `clu.metrics` only. torch and `torch_reference` are
imported inside the functions that run torch.
"""

import contextlib
import dataclasses
import math
import multiprocessing
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alexnet_jax.errors import ConfigError
from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import sharding
from alexnet_jax import steps
from alexnet_jax.system import runtime

LOSS_TOLERANCE = 1e-4  # relative, first step's loss, float32
UPDATE_TOLERANCE = 1e-3  # relative, each parameter's first update, float32
# The check's batch. With random labels the first step's gradients cancel more as the batch grows:
# at batch 32 (224px) both frameworks' float32 updates of conv1 differ from a float64 torch step by
# more than UPDATE_TOLERANCE, which would drown a real difference; at batch 4 they agree well
# within it (docs/benchmark_history.md).
CHECK_BATCH = 4
PAPER_OPTIM = optim.OptimConfig()  # section 5: lr 0.01, momentum 0.9, weight decay 5e-4


@dataclasses.dataclass(frozen=True)
class Settings:
  """One benchmark run; every field has a command-line flag of the same name."""

  batch_sizes: tuple[int, ...] = (128,)
  dtypes: tuple[str, ...] = ('float32', 'bfloat16')
  strategies: tuple[str, ...] = ('data',)
  image_sizes: tuple[int, ...] = (224,)
  steps: int = 5  # per timed window
  windows: int = 5
  warmup: int = 2
  torch: tuple[str, ...] | None = None  # None: eager, plus compile on a GPU; (): no torch
  channels_last: bool = False  # torch float32 in channels_last too (bfloat16 always is)
  torch_threads: int = 0  # torch CPU threads; 0: torch's default (one per physical core)
  width: float = 1.0  # the paper's model; tests shrink it
  num_classes: int = 1000
  peak_matmul_size: int = 0  # 0: 8192 on a GPU, 2048 on a CPU
  check: bool = True
  seed: int = 0


# --- Runners: each times its own step, windows interleaved with the others ---


@dataclasses.dataclass
class Runner:
  row: dict  # the table row so far (framework, batch, dtype, ...)
  step: Callable[[int], None]  # runs n steps and waits for the device
  window_ms: list = dataclasses.field(default_factory=list)


def model_config(
    settings: Settings, dtype: str, dropout_rate: float = 0.5, **axes
) -> models.ModelConfig:
  """configs/alexnet.py's model (the dataclass defaults are the paper's) at this width/dtype."""
  return models.ModelConfig(
      num_classes=settings.num_classes,
      width=settings.width,
      dtype=dtype,
      dropout_rate=dropout_rate,
      **axes,
  )


def synthetic_batch(
    batch: int, image_size: int, num_classes: int, seed: int = 0
) -> dict[str, np.ndarray]:
  """Pixels uniform in [-128, 128) (mean-subtracted 0..255 as in section 2), random labels."""
  rng = np.random.default_rng(seed)
  return {
      'image': rng.uniform(-128, 128, (batch, image_size, image_size, 3)).astype(np.float32),
      'label': rng.integers(0, num_classes, batch).astype(np.int32),
  }


def abstract_model(model_cfg: models.ModelConfig, image_size: int) -> models.AlexNet:
  return nnx.eval_shape(lambda: models.AlexNet(model_cfg, image_size, rngs=nnx.Rngs(params=0)))


def initial_params(settings: Settings, image_size: int) -> dict:
  """Section 5's initialisation, N(0, 0.01) weights and biases 1 or 0, drawn with numpy: the
  weights both frameworks start from. (XLA:CPU would compile a random draw for each layer's
  shape, a start-up cost numpy does not have.)"""
  rng = np.random.default_rng(settings.seed)
  shapes = nnx.to_pure_dict(
      nnx.state(abstract_model(model_config(settings, 'float32'), image_size), nnx.Param)
  )
  return {
      layer: {
          'kernel': rng.normal(0, 0.01, v['kernel'].shape).astype(np.float32),
          'bias': np.full(v['bias'].shape, float(layer in models.POSITIVE_BIAS_LAYERS), np.float32),
      }
      for layer, v in shapes.items()
  }


def model_with_params(
    model_cfg: models.ModelConfig, image_size: int, params: dict
) -> models.AlexNet:
  """An AlexNet holding `params` (our nested dict), without drawing an initialisation."""
  graphdef, variables = nnx.split(abstract_model(model_cfg, image_size))
  nnx.replace_by_pure_dict(variables, jax.tree.map(jnp.asarray, params))
  return nnx.merge(graphdef, variables)


def jax_state(model_cfg, image_size, params, layout, seed):
  """A TrainState holding `params` (the shared weights) and the jitted step, as the trainer's."""
  model = model_with_params(model_cfg, image_size, params)
  opt_cfg = optim.OptimConfig()  # section 5, as configs/alexnet.py
  tx = optim.create_optimizer(opt_cfg, 1)
  graphdef, state = steps.create_train_state(model, tx, optim.create_plateau(opt_cfg), seed)
  if layout is not None:
    state = layout.place_state(state)
  fn = steps.make_train_step(graphdef, tx, optim.learning_rate_schedule(opt_cfg, 1), layout)
  return state, fn


def jax_runner(
    settings: Settings,
    image_size: int,
    batch: int,
    dtype: str,
    strategy: str,
    params: dict,
    data: dict,
    devices,
) -> Runner:
  """Our train step under `strategy`; ConfigError (a skip reason) if the devices do not fit."""
  layout = sharding.Layout.create(sharding.MeshConfig(strategy), towers=2, devices=devices)
  if strategy == 'owt' and layout.data_size < 2:
    # owt on a one-device data axis computes what data parallelism does: nothing new to time.
    raise ConfigError(
        'owt splits the fc layers over the devices of the data axis; with '
        f'{layout.data_size} device it is plain data parallelism.'
    )
  if batch % layout.data_size:
    raise ConfigError(
        f'batch {batch} does not split over the {layout.data_size} devices of the ' 'data axis.'
    )
  cfg = model_config(settings, dtype, **layout.model_axes())
  state, fn = jax_state(cfg, image_size, params, layout, settings.seed)
  placed = jax.device_put(data, layout.batch_sharding())
  start = time.perf_counter()
  compiled = fn.lower(state, placed).compile()
  compile_s = time.perf_counter() - start
  holder = {'state': state}

  def step(n):
    state = holder['state']
    for _ in range(n):
      state, _, _ = compiled(state, placed)
    holder['state'] = jax.block_until_ready(state)

  step(settings.warmup)
  mem = compiled.memory_analysis()
  program = (
      mem.argument_size_in_bytes
      + mem.output_size_in_bytes
      - mem.alias_size_in_bytes
      + mem.temp_size_in_bytes
  )
  device = devices[0]
  stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
  if stats and 'peak_bytes_in_use' in stats:
    peak, source = stats['peak_bytes_in_use'], 'memory_stats peak_bytes_in_use (process high-water)'
  else:
    peak = program
    source = 'compiled memory_analysis (arguments + outputs - donated + temporaries), per device'
  row = {
      'framework': 'jax',
      'mode': 'jit',
      'strategy': strategy,
      'devices': len(devices),
      'compile_s': compile_s,
      'peak_mb': peak / 2**20,
      'peak_source': source,
      'program_mb': program / 2**20,
  }
  return Runner(row, step)


def torch_device(torch) -> str:
  """Where torch runs: 'cuda' where JAX runs on a GPU and torch sees one, else 'cpu'."""
  return 'cuda' if jax.devices()[0].platform == 'gpu' and torch.cuda.is_available() else 'cpu'


def torch_runner(
    settings: Settings,
    image_size: int,
    dtype: str,
    mode: str,
    params: dict,
    data: dict,
    device: str | None = None,
) -> Runner:
  """torch_reference's step, eager or torch.compile'd; bfloat16 via autocast + channels_last.

  `device` ('cuda' or 'cpu'): None asks JAX which platform it runs on.
  """
  import torch
  from alexnet_jax.tools import torch_reference

  device = device or torch_device(torch)
  if device == 'cuda':  # float32 as JAX runs it on a GPU: TF32 matmuls and convolutions
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick, as XLA autotunes
    torch.cuda.reset_peak_memory_stats()
  channels_last = dtype == 'bfloat16' or settings.channels_last
  net = torch_reference.build(model_config(settings, 'float32'), image_size)
  torch_reference.load_params(net, params)
  memory_format = torch.channels_last if channels_last else torch.preserve_format
  net = net.to(device, memory_format=memory_format)
  opt = torch_reference.make_optimizer(
      net, PAPER_OPTIM.learning_rate, PAPER_OPTIM.momentum, PAPER_OPTIM.weight_decay
  )
  images = torch_reference.to_nchw(data['image'], device, channels_last)
  labels = torch.from_numpy(data['label'].astype(np.int64)).to(device)
  model = torch.compile(net) if mode == 'compile' else net
  autocast = torch.bfloat16 if dtype == 'bfloat16' else None

  def step(n):
    for _ in range(n):
      torch_reference.train_step(model, opt, images, labels, autocast)
    if device == 'cuda':
      torch.cuda.synchronize()  # on a CPU every op has finished when it returns

  start = time.perf_counter()
  step(1)
  compile_s = time.perf_counter() - start if mode == 'compile' else None
  step(max(settings.warmup - 1, 0))
  if device == 'cuda':
    peak, source = torch.cuda.max_memory_allocated(), 'torch.cuda.max_memory_allocated'
  else:
    peak, source = None, 'not measured for torch on a CPU'
  row = {
      'framework': 'torch',
      'mode': mode + ('+channels_last' if channels_last else ''),
      'strategy': '-',
      'devices': 1,
      'compile_s': compile_s,
      'peak_mb': None if peak is None else peak / 2**20,
      'peak_source': source,
  }
  return Runner(row, step)


def _torch_worker(conn, threads: int, runner_args: tuple) -> None:
  """The torch process: builds `torch_runner(*runner_args)` with `threads` (0: torch's default),
  then runs `n` steps per message until None."""
  try:
    if threads:
      import torch

      torch.set_num_threads(threads)
    runner = torch_runner(*runner_args)
  except Exception as e:  # e.g. torch.compile without a C++ compiler: the parent skips the row
    conn.send(f'{type(e).__name__}: {e}'.splitlines()[0])
    return
  conn.send(
      dict(
          runner.row,
          pid=os.getpid(),
          malloc='alexnet_jax settings' if runtime.malloc_applied() else 'glibc defaults',
      )
  )
  try:
    while (n := conn.recv()) is not None:
      runner.step(n)
      conn.send(True)
  except EOFError:
    return  # the benchmark process is gone, and with it the steps to run: end quietly


def torch_process_runner(
    settings: Settings, image_size: int, dtype: str, mode: str, params: dict, data: dict
) -> tuple[Runner, Callable[[], None]]:
  """`torch_runner` in a process of its own; returns the runner and a function that ends it.

  PyTorch runs as it does outside this package: this process's malloc settings
  (`runtime.tune_process`, which speed up torch's allocations as well as XLA's) and thread pools stay out
  of its way, and its spinning OpenMP threads out of ours. The windows are still interleaved:
  each `step` waits for the process to finish its steps.
  """
  import torch

  device = torch_device(torch)  # asked here: the child never starts a JAX backend
  context = multiprocessing.get_context('spawn')
  parent, child = context.Pipe()
  # The child unpickles the worker and Settings by this module's importable name (it is never
  # __main__, whichever command started it). The child imports the package and never calls
  # runtime.tune_process(): glibc's malloc stays as it is outside our commands.
  # Not a daemon: torch.compile may start compile workers of its own.
  process = context.Process(
      target=_torch_worker,
      args=(
          child,
          settings.torch_threads,
          (settings, image_size, dtype, mode, params, data, device),
      ),
  )
  process.start()

  def receive():
    while not parent.poll(1.0):
      if not process.is_alive():
        raise RuntimeError(f'the torch process exited with code {process.exitcode}')
    return parent.recv()

  row = receive()
  if isinstance(row, str):  # the child's error, 'Type: message'
    process.join()
    raise RuntimeError(row)

  def step(n):
    parent.send(n)
    receive()

  def close():
    # A worker that already exited has closed its pipe: there is nothing to tell it.
    with contextlib.suppress(OSError):
      parent.send(None)
    process.join(timeout=60)
    if process.is_alive():
      process.terminate()

  return Runner(row, step), close


# --- The check: both frameworks compute the same step ---


def check_same_step(settings: Settings, image_size: int, params: dict, data: dict) -> dict:
  """One float32 step of each, dropout off, full precision: loss and parameter updates agree?"""
  import torch
  from alexnet_jax.tools import torch_reference

  device = torch_device(torch)
  cfg = model_config(settings, 'float32', dropout_rate=0.0)
  with jax.default_matmul_precision('highest'):
    state, fn = jax_state(cfg, image_size, params, None, settings.seed)
    state, metrics, _ = fn(state, {k: jnp.asarray(v) for k, v in data.items()})
    loss_jax = float(metrics.loss.compute())
  ours = torch_reference.torch_layout(jax.tree.map(np.asarray, state.params))

  tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
  try:
    net = torch_reference.build(cfg, image_size)
    torch_reference.load_params(net, params)
    net = net.to(device)
    opt = torch_reference.make_optimizer(
        net, PAPER_OPTIM.learning_rate, PAPER_OPTIM.momentum, PAPER_OPTIM.weight_decay
    )
    labels = torch.from_numpy(data['label'].astype(np.int64)).to(device)
    loss_torch = float(
        torch_reference.train_step(net, opt, torch_reference.to_nchw(data['image'], device), labels)
    )
    theirs = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
  finally:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32

  # An update far smaller than its weight (a bias of 1 moving by 1e-7) is only known to the float32
  # rounding of the weight: allow that rounding on top of the relative tolerance.
  before = torch_reference.torch_layout(params)
  update_rel, over_allowance = {}, {}
  for key in before:
    ours_update, their_update = ours[key] - before[key], theirs[key] - before[key]
    diff = float(np.linalg.norm(ours_update - their_update))
    scale = float(np.linalg.norm(their_update))
    rounding = 2 * float(np.finfo(np.float32).eps) * float(np.linalg.norm(theirs[key]))
    update_rel[key] = 0.0 if diff == 0.0 else (diff / scale if scale > 0 else math.inf)
    over_allowance[key] = diff / (UPDATE_TOLERANCE * scale + rounding + 1e-30)
  loss_rel = abs(loss_jax - loss_torch) / max(abs(loss_torch), 1e-30)
  worst = max(over_allowance, key=over_allowance.get)
  passed = loss_rel <= LOSS_TOLERANCE and over_allowance[worst] <= 1.0
  return {
      'image_size': image_size,
      'batch': int(data['label'].shape[0]),
      'passed': passed,
      'loss_jax': loss_jax,
      'loss_torch': loss_torch,
      'loss_rel_diff': loss_rel,
      'worst_parameter': worst,
      'worst_update_rel_diff': update_rel[worst],
      'worst_update_diff_over_allowance': over_allowance[worst],
      'update_rel_diff': update_rel,
      'tolerances': {
          'loss': f'relative {LOSS_TOLERANCE}',
          'update': f'|ours - torch| <= {UPDATE_TOLERANCE} |torch update| + 2 eps32'
          ' |weight| (L2 norms per parameter)',
      },
      'precision': 'float32, no TF32 (jax highest; torch allow_tf32=False), dropout 0',
  }
