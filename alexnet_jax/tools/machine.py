"""The machine the benchmarks run on: its fastest matmul (the limit a step is measured against)
and what it is (CPU, devices, library versions).

- `measure_peak_flops`: the MFU column's peak, MEASURED with a large `jnp.dot` in the row's dtype
  (median of repeats; `tools.benchmark` takes float32's rate where that is faster, as on CPUs
  without fast bfloat16 matmuls). The vendor's data-sheet peak is recorded next to it, for
  reference only.
- `machine_limits`: the "% of limit" column's limit, the fastest matmul of XLA, numpy and torch
  measured in this run, in the row's dtype or float32.
- `cpu_name`, `machine_info`: what a result's JSON says about the machine.

This module imports no TensorFlow; torch only where it is installed (`import_torch`).
"""

import os
import platform
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import models

# Dense bfloat16 tensor-core peaks from the vendor's data sheets (SXM parts), for reference only.
VENDOR_BF16_PEAK = {'H100': 989.4e12, 'H200': 989.4e12, 'A100': 312e12}


def import_torch():
  """The torch module, or None where PyTorch is not installed."""
  try:
    import torch

    return torch
  except ImportError:
    return None


# --- Its fastest matmul ---


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
  torch = import_torch()
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


# --- What the machine is ---


def cpu_name() -> str:
  """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
  try:
    with open('/proc/cpuinfo') as f:
      names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
  except OSError:  # no /proc (not Linux): what the platform module knows
    names = []
  return names[0] if names else platform.processor() or platform.machine() or 'unknown'


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
  torch = import_torch()
  if torch is not None:
    info['torch'] = torch.__version__
    info['torch_threads'] = torch.get_num_threads()
    if torch.cuda.is_available():
      info['torch_device'] = torch.cuda.get_device_name(0)
  return info
