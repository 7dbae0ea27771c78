"""glibc malloc settings under which XLA:CPU reuses its buffers' memory from one step to the next.

Each run of a compiled program on XLA:CPU mallocs its temporaries (605 MB for the paper's float32
step at batch 32) and frees them when it ends. glibc serves blocks that large with a fresh mmap (in
the main arena above M_MMAP_THRESHOLD, which glibc caps at 32 MB; in a thread's own arena above 64
MB, whatever the settings) and unmaps them on free. So every step the kernel maps, zero-fills and
faults in one new 4 KB page per 4 KB of temporaries (155,000 of them), on the step's critical path.
On import the package sets:

- M_ARENA_MAX = 1: every thread allocates from the main arena, where the next two settings hold;
- M_MMAP_MAX = 0: large blocks come from the heap, where a freed block is handed out again;
- M_TRIM_THRESHOLD = -1: the heap's free top is never given back to the system.

Measured on a 2-core EPYC VM (the paper's float32 step, batch 32), with `python -m
alexnet_jax.benchmark --batch_sizes=32 --dtypes=float32 --torch=none --steps=2 --windows=7
--warmup=1`, three runs each, alternating with runs under `MALLOC_ARENA_MAX=8` (which leaves glibc
as it is): 1039 vs 1262 ms per step (medians of the runs' medians). `tests/test_host_memory.py`
counts the page faults of a smaller program both ways. PyTorch's CPU tensors come from malloc too,
and gain as much in a process with these settings, so the speed benchmark runs PyTorch in a process
of its own, with ALEXNET_JAX_MALLOC=glibc: as PyTorch runs outside this package.

What it costs: the process keeps its peak heap for its lifetime (memory it frees is reused by the
process, not returned to the system), and all threads share one allocator lock.

When it applies: Linux with glibc; not opted out with ALEXNET_JAX_MALLOC=glibc; no LD_PRELOADed
allocator (jemalloc or tcmalloc bring their own policy); none of glibc's malloc variables set
(MALLOC_ARENA_MAX, MALLOC_MMAP_MAX_, MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_,
MALLOC_TOP_PAD_, or glibc.malloc in GLIBC_TUNABLES: the user's own settings win); and JAX computes
on the CPU: not when JAX_PLATFORMS names another platform first, or, with JAX_PLATFORMS unset, when
a GPU or TPU plugin is installed (there the big buffers live on the device, and one arena would
serialise the input pipeline's threads). It must run before JAX starts its backend's threads: a
thread that has an arena keeps it, which is why `alexnet_jax/__init__.py` calls `apply()`.
"""

import ctypes
import importlib.util
import os
import pkgutil
import platform
from typing import Callable, Mapping

# mallopt(3) parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
OPT_OUT = 'ALEXNET_JAX_MALLOC'  # =glibc: leave malloc as glibc set it
USER_VARIABLES = ('MALLOC_ARENA_MAX', 'MALLOC_MMAP_MAX_', 'MALLOC_TRIM_THRESHOLD_',
                  'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TOP_PAD_')
ACCELERATOR_MODULES = ('libtpu',)

_applied = False


def _mallopt() -> Callable[[int, int], int] | None:
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return None
  return getattr(ctypes.CDLL(None), 'mallopt', None)


def accelerator_installed() -> bool:
  """A JAX GPU or TPU plugin is importable (checked without starting JAX's backends)."""
  try:
    import jax_plugins  # noqa: F401  (namespace package of the CUDA and ROCm plugins)
    if any(True for _ in pkgutil.iter_modules(jax_plugins.__path__)):
      return True
  except ImportError:
    pass
  return any(importlib.util.find_spec(name) is not None for name in ACCELERATOR_MODULES)


def reason_to_skip(environ: Mapping[str, str] = os.environ,
                   accelerator: Callable[[], bool] = accelerator_installed) -> str | None:
  """Why `apply` leaves malloc alone here, or None if it applies."""
  if environ.get(OPT_OUT, '') == 'glibc':
    return f'{OPT_OUT}=glibc'
  set_by_user = [name for name in USER_VARIABLES if name in environ]
  if set_by_user or 'glibc.malloc' in environ.get('GLIBC_TUNABLES', ''):
    return f'malloc is configured by the user ({", ".join(set_by_user) or "GLIBC_TUNABLES"})'
  if 'malloc' in environ.get('LD_PRELOAD', ''):
    return 'another allocator is preloaded (LD_PRELOAD)'
  platforms = environ.get('JAX_PLATFORMS', '')
  if platforms:
    if platforms.split(',')[0].strip() != 'cpu':
      return f'JAX_PLATFORMS={platforms} computes elsewhere than on the CPU'
  elif accelerator():
    return 'a JAX GPU or TPU plugin is installed'
  return None


def apply(environ: Mapping[str, str] = os.environ,
          mallopt: Callable[[int, int], int] | None = None) -> bool:
  """Sets SETTINGS unless `reason_to_skip` says otherwise; True if they were set."""
  global _applied
  real = mallopt is None  # a test's stand-in must not mark this process as set
  mallopt = mallopt or _mallopt()
  if mallopt is None or reason_to_skip(environ) is not None:
    return False
  done = all(mallopt(param, value) == 1 for param, value in SETTINGS)
  if real:
    _applied = done
  return done


def applied() -> bool:
  return _applied
