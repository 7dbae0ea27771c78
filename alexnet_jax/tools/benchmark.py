r"""How fast does the paper's training step run, here, against PyTorch on the same machine?

    python -m alexnet_jax.tools.benchmark --batch_sizes=32,128 --dtypes=float32,bfloat16 \
        --output=bench.json

Times the FULL training step the trainer uses (`steps.make_train_step`: forward, backward, section
5's SGD update, metrics) of the paper's model (`configs/alexnet.py`: 1000 classes, two towers, LRN,
dropout 0.5, 224x224) on a synthetic batch that already sits on the devices, and the same network
in PyTorch (`torch_reference`) on the same batch, from the same weights, with the same optimiser.
PyTorch runs in a process of its own (`torch_process_runner`), as it runs outside this package:
without the malloc settings `runtime.configure` makes here, which speed up its allocations as well.

What each row reports:
- ms/step: the MEDIAN over `--windows` timed windows of `--steps` steps each, after `--warmup`
  steps; the host waits for the devices only at the end of each window (`block_until_ready`,
  `torch.cuda.synchronize()`). The frameworks' windows are interleaved (jax, torch, jax, ...), so
  load from other processes hits both alike. img/s = batch / (ms/step).
- compile s: JAX: `lower` + `compile` wall time (the command turns the persistent compilation
  cache off, so this is a real compile); torch.compile: the first step's wall time.
- peak MB: GPU: the allocator's peak (`Device.memory_stats()['peak_bytes_in_use']`, the process's
  high-water mark, read after the row's warm-up; torch: `max_memory_allocated` after a reset). CPU:
  the compiled program's `memory_analysis()` (arguments + outputs - donated + temporaries); none for
  torch on CPU. The JSON says which (`peak_source`).
- MFU: model FLOPs / s over a peak this run MEASURES with a large `jnp.dot` in the row's dtype
  (median of repeats; float32's rate where that is faster, as on CPUs without fast bfloat16
  matmuls). Model FLOPs are COUNTED from the layer shapes (`count_macs`): 2 FLOPs per
  multiply-add, x3 for forward + backward (the usual convention; it counts conv1's input gradient,
  which no one computes, and ignores LRN, pooling and the optimiser).
- % of limit: the same model FLOP/s over the MACHINE's limit (`machine_limits`): the fastest
  matmul of XLA, numpy and torch measured in this run, in the row's dtype or float32. It is
  printed with the images/s it allows, the most this step could reach here.
- ratio: torch eager's ms/step over the row's, same batch, dtype and image size (>1: faster than
  torch eager). Reported only when the check below passed.

The check, before any timing: the same weights, the same batch (`CHECK_BATCH` images), dropout
off, float32 at full precision (no TF32) -> the first step's loss must agree to 1e-4 relative
and every parameter's update to 1e-3 relative (L2 norms), plus the float32 rounding of the weight
itself: a bias of 1 that moves by 1e-7 has an update known only to a few bits.

Float32 on a GPU: JAX's default precision runs float32 matmuls and convolutions in TF32; torch is
set to do the same (`allow_tf32`) for the timed rows. bfloat16: ours is `model.dtype='bfloat16'`
(float32 parameters, bfloat16 convs and matmuls, LRN in float32), torch's is
`torch.autocast(dtype=torch.bfloat16)` + channels_last.

This module imports no TensorFlow, tfds, grain, ml_collections or clu writer (the GPU machines have
none of them); `steps` needs clu's pure-Python `clu.metrics` only.
"""

import dataclasses
import importlib
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alexnet_jax import runtime
from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import sharding
from alexnet_jax import steps
from alexnet_jax.errors import ConfigError

TORCH_MODES = ('eager', 'compile')
LOSS_TOLERANCE = 1e-4  # relative, first step's loss, float32
UPDATE_TOLERANCE = 1e-3  # relative, each parameter's first update, float32
# The check's batch. With random labels the first step's gradients cancel more as the batch grows:
# at batch 32 (224px) both frameworks' float32 updates of conv1 differ from a float64 torch step by
# more than UPDATE_TOLERANCE, which would drown a real difference; at batch 4 they agree well
# within it (BENCHMARKS.md).
CHECK_BATCH = 4
FLOP_CONVENTION = (
    'model FLOPs = 3 (forward + backward) x 2 (FLOPs per multiply-add) x counted '
    'multiply-adds of the conv and fc layers (count_macs) x batch'
)
# Dense bfloat16 tensor-core peaks from the vendor's data sheets (SXM parts), for reference only.
PAPER_OPTIM = optim.OptimConfig()  # section 5: lr 0.01, momentum 0.9, weight decay 5e-4
VENDOR_BF16_PEAK = {'H100': 989.4e12, 'H200': 989.4e12, 'A100': 312e12}


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


# --- Counting ---


def count_macs(config: models.ModelConfig, image_size: int) -> dict[str, int]:
  """Multiply-adds per image of each conv and fc layer of the network `config` builds (Figure 2).

  conv: out_h * out_w * k * k * (input channels per group) * output channels, where a tower-local
  layer (conv2, conv4, conv5) sees 1/towers of its input; fc: in * out. The channels, conv1's
  padding and fc6's input (pool5's maps, or `adaptive_avg_pool`'s bins) are the model's own
  (`models.conv_channels`, `models.feature_sizes`), so torchvision's net and ablations count right.
  """
  sizes = models.feature_sizes(image_size, config.pool, config.conv1_padding)
  macs, channels_in = {}, 3
  for (name, kernel, _, _, crosses), channels in zip(
      models.CONV_LAYERS, models.conv_channels(config)[0]
  ):
    per_group = channels_in if (crosses or name == 'conv1') else channels_in // config.towers
    macs[name] = sizes[name] ** 2 * kernel * kernel * per_group * channels
    channels_in = channels
  pooled = config.adaptive_avg_pool or sizes['pool5']
  fc_units = models.scaled(models.FC_UNITS, config.width)
  macs['fc6'] = pooled**2 * channels_in * fc_units
  macs['fc7'] = fc_units * fc_units
  macs['fc8'] = fc_units * config.num_classes
  return macs


def train_flops_per_image(config: models.ModelConfig, image_size: int) -> int:
  return 3 * 2 * sum(count_macs(config, image_size).values())


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure_peak_flops(dtype: str, size: int, device=None, repeats: int = 5) -> dict:
  """FLOP/s of a size^3 `jnp.dot` in `dtype` on one device: median of `repeats` timed batches."""
  device = device or jax.devices()[0]
  key = jax.random.key(0)
  a = jax.device_put(jax.random.normal(key, (size, size), models.DTYPES[dtype]), device)
  b = jax.device_put(
      jax.random.normal(jax.random.fold_in(key, 1), (size, size), models.DTYPES[dtype]), device
  )
  dot = jax.jit(jnp.dot)
  per_batch = 10 if device.platform == 'gpu' else 1

  def run():
    out = [dot(a, b) for _ in range(per_batch)]
    jax.block_until_ready(out)

  run()
  seconds = _median_seconds(run, repeats) / per_batch
  flops = 2 * size**3 / seconds
  source = (
      f'measured: jnp.dot of two {size}x{size} {dtype} matrices on {device.device_kind}, '
      f'median of {repeats} repeats'
  )
  if dtype == 'float32' and device.platform == 'gpu':
    source += " (JAX's default precision: TF32 tensor cores)"
  result = {'flops_per_s': flops, 'source': source}
  vendor = [v for k, v in VENDOR_BF16_PEAK.items() if k in device.device_kind]
  if dtype == 'bfloat16' and vendor:
    result['vendor_flops_per_s'] = vendor[0]
  return result


def _library_matmul(library: str, dtype: str, size: int, on_gpu: bool):
  """A function running one size^3 matmul of `library` (numpy or torch) in `dtype`, or None."""
  rng = np.random.default_rng(0)
  a, b = (rng.standard_normal((size, size), np.float32) for _ in range(2))
  if library == 'numpy':
    if dtype != 'float32' or on_gpu:  # numpy has no bfloat16 matmul, and runs on the host
      return None
    return lambda: a @ b
  torch = _import_torch()
  if torch is None:
    return None
  device = 'cuda' if on_gpu and torch.cuda.is_available() else 'cpu'
  if on_gpu and device == 'cpu':
    return None
  ta, tb = (torch.from_numpy(m).to(device, getattr(torch, dtype)) for m in (a, b))

  def run():
    out = ta @ tb
    if device == 'cuda':
      torch.cuda.synchronize()
    return out

  return run


def machine_limits(dtypes, size: int, xla_peaks: dict, device, repeats: int = 5) -> dict:
  """The machine's fastest matmul per dtype: the best of XLA's (`xla_peaks`), numpy's and torch's
  size^3 matmul, each the median of `repeats`, in that dtype or in float32 where that is faster.

  MFU against XLA's own dot flatters a step that XLA also runs: this limit is what the machine's
  best library gets, so the fraction says how far the step is from the hardware, not from XLA.
  """
  on_gpu = device.platform == 'gpu'
  rates = {}
  for dtype in dict.fromkeys(tuple(dtypes) + ('float32',)):
    rates[dtype] = {'xla': xla_peaks[dtype]['flops_per_s']}
    for library in ('numpy', 'torch'):
      fn = _library_matmul(library, dtype, size, on_gpu)
      if fn is not None:
        fn()
        rates[dtype][library] = 2 * size**3 / _median_seconds(fn, repeats)
  limits = {}
  for dtype in dtypes:
    candidates = {f'{lib} {d}': r for d in {dtype, 'float32'} for lib, r in rates[d].items()}
    best = max(candidates, key=candidates.get)
    limits[dtype] = {
        'flops_per_s': candidates[best],
        'by': best,
        'rates': candidates,
        'source': f'the fastest of XLA, numpy and torch multiplying two {size}x{size} matrices '
        f'(median of {repeats}), in ' + (dtype if dtype == 'float32' else f'{dtype} or float32'),
    }
  return limits


# --- Machine ---


def cpu_name() -> str:
  """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or 'unknown'


def machine_info() -> dict:
  cpu = cpu_name()
  device = jax.devices()[0]
  import flax, optax  # noqa: E401  (versions only)

  info = {
      'cpu': cpu,
      'cpu_cores': os.cpu_count(),
      'platform': device.platform,
      'device_kind': device.device_kind,
      'device_count': jax.device_count(),
      'python': platform.python_version(),
      'jax': jax.__version__,
      'flax': flax.__version__,
      'optax': optax.__version__,
      'XLA_FLAGS': os.environ.get('XLA_FLAGS', ''),
  }
  torch = _import_torch()
  if torch is not None:
    info['torch'] = torch.__version__
    info['torch_threads'] = torch.get_num_threads()
    if torch.cuda.is_available():
      info['torch_device'] = torch.cuda.get_device_name(0)
  return info


def _import_torch():
  try:
    import torch

    return torch
  except ImportError:
    return None


# --- Runners: each times its own step, windows interleaved with the others ---


@dataclasses.dataclass
class Runner:
  row: dict  # the table row so far (framework, batch, dtype, ...)
  step: Callable[[int], None]  # runs n steps and waits for the device
  window_ms: list = dataclasses.field(default_factory=list)


def _model_config(
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
      nnx.state(abstract_model(_model_config(settings, 'float32'), image_size), nnx.Param)
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


def _jax_state(model_cfg, image_size, params, layout, seed):
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
  cfg = _model_config(settings, dtype, **layout.model_axes())
  state, fn = _jax_state(cfg, image_size, params, layout, settings.seed)
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


def _torch_device(torch) -> str:
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

  device = device or _torch_device(torch)
  if device == 'cuda':  # float32 as JAX runs it on a GPU: TF32 matmuls and convolutions
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick, as XLA autotunes
    torch.cuda.reset_peak_memory_stats()
  channels_last = dtype == 'bfloat16' or settings.channels_last
  net = torch_reference.build(_model_config(settings, 'float32'), image_size)
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


def _torch_worker(
    conn,
    settings: dict,
    image_size: int,
    dtype: str,
    mode: str,
    params: dict,
    data: dict,
    device: str,
) -> None:
  """The torch process: builds the runner, then runs `n` steps per message until None."""
  settings = Settings(**settings)
  try:
    if settings.torch_threads:
      import torch

      torch.set_num_threads(settings.torch_threads)
    runner = torch_runner(settings, image_size, dtype, mode, params, data, device)
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
  except EOFError:  # the benchmark process is gone
    pass


def torch_process_runner(
    settings: Settings, image_size: int, dtype: str, mode: str, params: dict, data: dict
) -> tuple[Runner, Callable[[], None]]:
  """`torch_runner` in a process of its own; returns the runner and a function that ends it.

  PyTorch runs as it does outside this package: this process's malloc settings
  (`runtime.configure`, which speed up torch's allocations as well as XLA's) and thread pools stay out
  of its way, and its spinning OpenMP threads out of ours. The windows are still interleaved:
  each `step` waits for the process to finish its steps.
  """
  import torch

  device = _torch_device(torch)  # asked here: the child never starts a JAX backend
  context = multiprocessing.get_context('spawn')
  parent, child = context.Pipe()
  # By the importable module's name, not __main__'s, so the child can unpickle it however this
  # module was started; Settings goes as a dict for the same reason. The child imports the
  # package and never calls runtime.configure(): glibc's malloc stays as it is outside our commands.
  worker = importlib.import_module('alexnet_jax.tools.benchmark')._torch_worker
  # Not a daemon: torch.compile may start compile workers of its own.
  process = context.Process(
      target=worker,
      args=(child, dataclasses.asdict(settings), image_size, dtype, mode, params, data, device),
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
    try:
      parent.send(None)
    except OSError:
      pass
    process.join(timeout=60)
    if process.is_alive():
      process.terminate()

  return Runner(row, step), close


# --- The check: both frameworks compute the same step ---


def check_same_step(settings: Settings, image_size: int, params: dict, data: dict) -> dict:
  """One float32 step of each, dropout off, full precision: loss and parameter updates agree?"""
  import torch
  from alexnet_jax.tools import torch_reference

  device = _torch_device(torch)
  cfg = _model_config(settings, 'float32', dropout_rate=0.0)
  with jax.default_matmul_precision('highest'):
    state, fn = _jax_state(cfg, image_size, params, None, settings.seed)
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


# --- The run ---


def validate(settings: Settings) -> None:
  problems = []
  try:
    models.validate(_model_config(settings, 'float32'))
  except ValueError as e:
    problems.append(f'--width and --num_classes: {str(e).rstrip(".")}')
  if not settings.batch_sizes or min(settings.batch_sizes) < 1:
    problems.append('--batch_sizes must list positive batch sizes, e.g. 32,128')
  bad = [d for d in settings.dtypes if d not in models.DTYPES]
  if bad or not settings.dtypes:
    problems.append(f'--dtypes must be among {tuple(models.DTYPES)}, not {bad}')
  bad = [s for s in settings.strategies if s not in sharding.STRATEGIES]
  if bad or not settings.strategies:
    problems.append(f'--strategies must be among {sharding.STRATEGIES}, not {bad}')
  if settings.torch is not None:
    bad = [m for m in settings.torch if m not in TORCH_MODES]
    if bad:
      problems.append(f'--torch must be among {TORCH_MODES + ("none",)}, not {bad}')
  small = [s for s in settings.image_sizes if s < models.min_image_size()]
  if small or not settings.image_sizes:
    problems.append(
        f'--image_sizes must be at least {models.min_image_size()} (five layers of '
        f'pooling), not {small}'
    )
  if min(settings.steps, settings.windows) < 1 or settings.warmup < 0:
    problems.append('--steps and --windows must be >= 1 and --warmup >= 0')
  if problems:
    raise ConfigError('Benchmark flags: ' + '; '.join(problems) + '.')


def torch_modes(settings: Settings) -> tuple[str, ...]:
  """The torch variants to time; ConfigError if torch was asked for and is missing."""
  torch = _import_torch()
  if settings.torch is None:
    if torch is None:
      return ()
    return ('eager', 'compile') if _torch_device(torch) == 'cuda' else ('eager',)
  if settings.torch and torch is None:
    raise ConfigError(
        "--torch needs PyTorch, which is not installed: pip install -e '.[bench]' "
        '(on a CPU-only machine: pip install torch --index-url '
        'https://download.pytorch.org/whl/cpu), or pass --torch=none.'
    )
  return settings.torch


def run(settings: Settings, devices=None, log: Callable[[str], None] = print) -> dict:
  """Runs every variant and returns the result (what --output writes as JSON)."""
  validate(settings)
  devices = list(devices or jax.devices())
  modes = torch_modes(settings)
  if modes and settings.torch_threads:
    import torch

    torch.set_num_threads(settings.torch_threads)
  platform_name = devices[0].platform
  peak_size = settings.peak_matmul_size or (8192 if platform_name == 'gpu' else 2048)
  peaks = {
      d: measure_peak_flops(d, peak_size, devices[0])
      for d in dict.fromkeys(settings.dtypes + ('float32',))
  }
  xla_rates = {d: dict(p) for d, p in peaks.items()}  # each dtype's own rate, before the max below
  for dtype, peak in peaks.items():
    # A peak is the fastest the device multiplied matrices in this run: where float32 beats the
    # row's dtype (a CPU without fast bfloat16 matmuls), float32's rate is the peak.
    if peaks['float32']['flops_per_s'] > peak['flops_per_s']:
      peaks[dtype] = dict(
          peak,
          flops_per_s=peaks['float32']['flops_per_s'],
          source=f"{peaks['float32']['source']}, faster than the {dtype} matmul "
          f"({peak['flops_per_s'] / 1e12:.3g} TFLOP/s)",
      )
  limits = machine_limits(settings.dtypes, peak_size, xla_rates, devices[0])
  peaks = {d: peaks[d] for d in settings.dtypes}
  result = {
      'machine': machine_info(),
      'settings': dataclasses.asdict(settings),
      'torch_modes': list(modes),
      'flop_convention': FLOP_CONVENTION,
      'peak': peaks,
      'machine_limit': limits,
      'macs_per_image': {},
      'checks': [],
      'rows': [],
      'skipped': [],
  }
  result['machine']['benchmark_devices'] = len(devices)
  for image_size in settings.image_sizes:
    macs = count_macs(_model_config(settings, 'float32'), image_size)
    result['macs_per_image'][str(image_size)] = macs
    flops_per_image = 3 * 2 * sum(macs.values())
    params = initial_params(settings, image_size)
    check = None
    if modes and settings.check:
      check_batch = synthetic_batch(
          min(CHECK_BATCH, *settings.batch_sizes), image_size, settings.num_classes, settings.seed
      )
      check = check_same_step(settings, image_size, params, check_batch)
      result['checks'].append(check)
      log(_check_line(check))
    for batch in sorted(settings.batch_sizes):
      data = synthetic_batch(batch, image_size, settings.num_classes, settings.seed)
      for dtype in settings.dtypes:
        variant = {'batch': batch, 'dtype': dtype, 'image_size': image_size}
        runners = []
        for strategy in settings.strategies:
          try:
            runners.append(
                jax_runner(settings, image_size, batch, dtype, strategy, params, data, devices)
            )
          except ConfigError as e:
            result['skipped'].append(
                dict(variant, framework='jax', strategy=strategy, reason=str(e))
            )
        closers = []
        for mode in modes:
          try:
            runner, close = torch_process_runner(settings, image_size, dtype, mode, params, data)
            runners.append(runner)
            closers.append(close)
          except Exception as e:  # e.g. torch.compile without a C++ compiler: skip, say why
            result['skipped'].append(
                dict(
                    variant,
                    framework='torch',
                    mode=mode,
                    reason=f'{type(e).__name__}: {e}'.splitlines()[0],
                )
            )
        try:
          for _ in range(settings.windows):
            for runner in runners:
              start = time.perf_counter()
              runner.step(settings.steps)
              runner.window_ms.append((time.perf_counter() - start) / settings.steps * 1e3)
        finally:  # end the torch processes whatever happens
          for close in closers:
            close()
        rows = []
        for runner in runners:
          ms = statistics.median(runner.window_ms)
          row = dict(
              variant,
              **runner.row,
              ms_per_step=ms,
              window_ms=runner.window_ms,
              images_per_s=batch / ms * 1e3,
          )
          peak = peaks[dtype]['flops_per_s'] * row['devices']
          row['mfu'] = flops_per_image * batch / (ms / 1e3) / peak
          limit = limits[dtype]['flops_per_s'] * row['devices']
          row['of_machine_limit'] = flops_per_image * batch / (ms / 1e3) / limit
          row['machine_limit_images_per_s'] = limit / flops_per_image
          rows.append(row)
        eager = [r for r in rows if r['framework'] == 'torch' and r['mode'].startswith('eager')]
        for row in rows:
          row['ratio_vs_torch_eager'] = None
          if eager and check is not None and check['passed']:
            row['ratio_vs_torch_eager'] = eager[0]['ms_per_step'] / row['ms_per_step']
          log(format_row(row))
        result['rows'].extend(rows)
  return result


# --- Output ---

COLUMNS = (
    'framework',
    'mode',
    'batch',
    'dtype',
    'strategy',
    'img/s',
    'ms/step',
    'compile s',
    'peak MB',
    'MFU %',
    '% of limit',
    'vs torch eager',
)


def _cells(row: dict) -> list[str]:
  fmt = lambda v, f: '-' if v is None else format(v, f)
  ratio = row['ratio_vs_torch_eager']
  return [
      row['framework'],
      row['mode'],
      str(row['batch']),
      row['dtype'],
      row['strategy'],
      fmt(row['images_per_s'], '.1f'),
      fmt(row['ms_per_step'], '.1f'),
      fmt(row['compile_s'], '.1f'),
      fmt(row['peak_mb'], '.0f'),
      fmt(100 * row['mfu'], '.1f'),
      fmt(100 * row['of_machine_limit'], '.1f'),
      '-' if ratio is None else f'{ratio:.2f}x',
  ]


def _check_line(check: dict) -> str:
  return (
      f"check {check['image_size']}px, batch {check['batch']}, float32, dropout off: loss "
      f"jax {check['loss_jax']:.7g} torch {check['loss_torch']:.7g} (rel diff "
      f"{check['loss_rel_diff']:.1e}); parameter updates: worst {check['worst_parameter']}, "
      f"rel diff {check['worst_update_rel_diff']:.1e}, "
      f"{check['worst_update_diff_over_allowance']:.2f} of the allowance: "
      + ('PASSED' if check['passed'] else 'FAILED, so no ratios are reported')
  )


def format_row(row: dict) -> str:
  return ' '.join(f'{k}={v}' for k, v in zip(COLUMNS, _cells(row)))


def format_table(result: dict) -> str:
  """A markdown table of the rows, then the peak, the checks and the skipped variants."""
  lines = []
  for size in dict.fromkeys(r['image_size'] for r in result['rows']):
    lines += [
        f'\n{size}x{size} images',
        '| ' + ' | '.join(COLUMNS) + ' |',
        '| ' + ' | '.join('---' for _ in COLUMNS) + ' |',
    ]
    lines += [
        '| ' + ' | '.join(_cells(r)) + ' |' for r in result['rows'] if r['image_size'] == size
    ]
  for dtype, peak in result['peak'].items():
    vendor = peak.get('vendor_flops_per_s')
    lines.append(
        f"MFU peak {dtype}: {peak['flops_per_s'] / 1e12:.3g} TFLOP/s ({peak['source']})"
        + (f'; vendor data sheet: {vendor / 1e12:.4g} TFLOP/s' if vendor else '')
    )
  for dtype, limit in result['machine_limit'].items():
    rates = ', '.join(f'{k} {v / 1e12:.3g}' for k, v in sorted(limit['rates'].items()))
    sizes = sorted({r['image_size'] for r in result['rows']})
    per_image = {size: 3 * 2 * sum(result['macs_per_image'][str(size)].values()) for size in sizes}
    lines.append(
        f"machine limit {dtype}: {limit['flops_per_s'] / 1e12:.3g} TFLOP/s ({limit['by']}; "
        f'{limit["source"]}; TFLOP/s: {rates}), so at most '
        + ', '.join(
            f"{limit['flops_per_s'] / f:.1f} images/s at {s}px" for s, f in per_image.items()
        )
        + ' per device for this step; "% of limit" is each row\'s share of it.'
    )
  lines.append(f"FLOPs: {result['flop_convention']}.")
  sources = sorted({r['peak_source'] for r in result['rows'] if r['peak_mb'] is not None})
  if sources:
    lines.append('peak MB: ' + '; '.join(sources) + '.')
  lines += [_check_line(check) for check in result['checks']]
  if not result['checks']:
    lines.append('no torch check was run: no ratios.')
  for skip in result['skipped']:
    name = skip.get('strategy') or skip.get('mode')
    lines.append(
        f"skipped {skip['framework']} {name} batch {skip['batch']} {skip['dtype']}: "
        f"{skip['reason']}"
    )
  return '\n'.join(lines)


# --- Command line ---

FLAGS = flags.FLAGS


def _define_flags():
  # Defined only when run as a command, so that tests and notebooks can import this module next
  # to the other commands (whose flags share names such as --output).
  flags.DEFINE_list('batch_sizes', ['128'], 'Global batch sizes.')
  flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes (model.dtype).')
  flags.DEFINE_list(
      'strategies', ['data'], 'Strategies (sharding.py); skipped when the devices ' 'do not fit.'
  )
  flags.DEFINE_list('image_sizes', ['224'], 'Image sizes.')
  flags.DEFINE_integer('steps', 5, 'Steps per timed window.')
  flags.DEFINE_integer('windows', 5, 'Timed windows; ms/step is their median.')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
  flags.DEFINE_list(
      'torch', ['auto'], 'eager, compile, none, or auto (eager; also compile on a ' 'GPU).'
  )
  flags.DEFINE_bool('channels_last', False, 'torch float32 in channels_last too (bfloat16 always).')
  flags.DEFINE_integer(
      'torch_threads',
      0,
      "torch CPU threads (0: torch's default, one per "
      "physical core). On a CPU shared with other processes torch's spinning "
      "OpenMP threads lose far more than XLA's: time on an idle machine.",
  )
  flags.DEFINE_float('width', 1.0, 'Channel multiplier (the paper: 1.0).')
  flags.DEFINE_integer('num_classes', 1000, 'Classes (the paper: 1000).')
  flags.DEFINE_integer(
      'peak_matmul_size',
      0,
      'Side of the matmul that measures peak FLOP/s (0: ' '8192 on a GPU, 2048 on a CPU).',
  )
  flags.DEFINE_bool('check', True, 'Check that both frameworks compute the same step first.')
  flags.DEFINE_string('output', None, 'Also write the result as JSON to this file.')


def settings_from_flags() -> Settings:
  try:
    ints = lambda xs: tuple(int(x) for x in xs)
    batch_sizes, image_sizes = ints(FLAGS.batch_sizes), ints(FLAGS.image_sizes)
  except ValueError as e:
    raise ConfigError(f'--batch_sizes and --image_sizes take integers, e.g. 32,128 ({e}).')
  torch = tuple(FLAGS.torch)
  torch = None if torch == ('auto',) else tuple(m for m in torch if m != 'none')
  return Settings(
      batch_sizes=batch_sizes,
      dtypes=tuple(FLAGS.dtypes),
      strategies=tuple(FLAGS.strategies),
      image_sizes=image_sizes,
      steps=FLAGS.steps,
      windows=FLAGS.windows,
      warmup=FLAGS.warmup,
      torch=torch,
      channels_last=FLAGS.channels_last,
      torch_threads=FLAGS.torch_threads,
      width=FLAGS.width,
      num_classes=FLAGS.num_classes,
      peak_matmul_size=FLAGS.peak_matmul_size,
      check=FLAGS.check,
  )


def main(argv):
  del argv
  # No persistent compilation cache: "compile s" is the time XLA takes to compile the step.
  runtime.configure(compilation_cache=False)
  # Share the GPU with torch: JAX would otherwise take 75% of its memory at start.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  try:
    result = run(settings_from_flags())
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(format_table(result))
  if FLAGS.output:
    with open(FLAGS.output, 'w') as f:
      json.dump(result, f, indent=1)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
