"""Process tuning, in one explicit call: `tune_process()`.

Importing `alexnet_jax` changes nothing in the process. Our commands (`python -m alexnet_jax.main`
and every `alexnet_jax.tools` command) call `tune_process()` first; a notebook calls it in its first
cell, before anything computes with JAX. It returns, and logs, what it set, and warns about any
setting that comes too late to take effect.

What it sets, each only where the user has not set it already:

1. XLA:CPU flags, appended to XLA_FLAGS (`CPU_FLAGS`; XLA reads XLA_FLAGS once, when JAX starts
   its backend, so they must come first):
   - `xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT`: jaxlib 0.10 hands
     convolutions, dots and some fusions to YNNPACK by default. For AlexNet's step YNNPACK's
     convolution gradients were slower than XLA's Eigen convolutions (conv1's kernel gradient, a
     55x55 window with dilation 4 over 3 channels, most of all) and its forward convolutions no
     faster, while its matrix products beat Eigen's for fc6/fc7. So YNNPACK keeps the dots only.
   - `xla_cpu_copy_insertion_use_region_analysis=true`: the train step donates its state, so
     each new weight can overwrite the old one; without region analysis XLA:CPU could not prove
     that safe for a weight read by both the forward and the backward pass, and copied it first
     (fc6's and fc7's kernels are 218 MB). `tests/test_runtime.py` checks a two-layer step
     compiles without a copy.
   An unknown flag in XLA_FLAGS aborts the process, so they are added only for the jaxlib
   versions they were measured on (`MEASURED_JAXLIB`).
2. glibc malloc (`MALLOC_SETTINGS`): each run of a compiled program on XLA:CPU mallocs its
   temporaries (hundreds of MB for the paper's step) and frees them at the end. glibc serves blocks
   that large with a fresh mmap and unmaps them on free, so every step the kernel maps, zero-fills
   and faults in a new page per 4 KB of temporaries. M_ARENA_MAX=1 (every thread allocates from
   the main arena), M_MMAP_MAX=0 (large blocks come from the heap, where a freed block is handed
   out again) and M_TRIM_THRESHOLD=-1 (the heap's free top is kept) make the next step reuse the
   memory. Cost: the process keeps its peak heap, and all threads share one allocator lock. It
   must precede JAX's threads: a thread that has an arena keeps it. Left alone on non-glibc
   systems, with ALEXNET_JAX_MALLOC=glibc, with the user's own MALLOC_* or GLIBC_TUNABLES, with an
   LD_PRELOADed allocator, and where JAX computes elsewhere than on the CPU (JAX_PLATFORMS, or an
   installed GPU/TPU plugin: there the big buffers live on the device, and one arena would
   serialise the input pipeline's threads).
3. Quiet start-up (`QUIET`): TensorFlow (imported by clu's metric writers and by TFDS when it
   prepares data) prints a oneDNN banner and CPU-feature notes at start. TF_ENABLE_ONEDNN_OPTS=0
   and TF_CPP_MIN_LOG_LEVEL=1 keep them out, so the first lines a user sees are ours; we run no
   TensorFlow math, so its oneDNN kernels change nothing for us. Warnings and errors still show.

4. JAX's persistent compilation cache (`set_compilation_cache`): compiled programs are stored in
   `$XDG_CACHE_HOME/alexnet_jax/jax` (default `~/.cache/alexnet_jax/jax`), so a second start of
   the same command, a resumed run, or the next seed of a sweep loads its executables instead of
   compiling them (the paper's train step takes seconds to compile on a CPU, more on a GPU with
   autotuning). Every program is kept, however fast its compile, so the second start compiles
   nothing. `ALEXNET_JAX_COMPILATION_CACHE=DIR` moves it, `=off` turns it off (as does
   `--compilation_cache` of `main` and `sweep`); a directory the user gave JAX
   (`JAX_COMPILATION_CACHE_DIR`, `jax.config`) is left as it is. The cache is keyed by the program,
   the compile options, XLA_FLAGS and the jax/jaxlib versions, so a hit is the executable a fresh
   compile would make; JAX never lets a cache error stop a run.

What 1 and 2 were measured to do to the step, and with which command, is in docs/performance.md
("What made the float32 step faster"; the dated figures in docs/benchmark_history.md, "Process
tuning"); the first and second start with the cache, in docs/performance.md ("Start-up: the second
start compiles nothing").
"""

import ctypes
import dataclasses
import importlib.metadata
import importlib.util
import logging
import os
import pkgutil
import platform
import sys
import warnings
from typing import Callable, Mapping, MutableMapping

# --- 1. XLA flags ---

MEASURED_JAXLIB = ('0.10.',)  # version prefixes whose XLA:CPU has these flags and was measured
CPU_FLAGS = {
    'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_DOT',
    'xla_cpu_copy_insertion_use_region_analysis': 'true',
}

# --- 2. malloc ---

# mallopt(3) parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
MALLOC_SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
MALLOC_OPT_OUT = 'ALEXNET_JAX_MALLOC'  # =glibc: leave malloc as glibc set it
MALLOC_USER_VARIABLES = (
    'MALLOC_ARENA_MAX',
    'MALLOC_MMAP_MAX_',
    'MALLOC_TRIM_THRESHOLD_',
    'MALLOC_MMAP_THRESHOLD_',
    'MALLOC_TOP_PAD_',
)
ACCELERATOR_MODULES = ('libtpu',)

# --- 3. quiet start-up ---

QUIET = {'TF_ENABLE_ONEDNN_OPTS': '0', 'TF_CPP_MIN_LOG_LEVEL': '1'}

# --- 4. compilation cache ---

CACHE_VARIABLE = 'ALEXNET_JAX_COMPILATION_CACHE'  # a directory, or 'off'
CACHE_OFF = ('off', 'none', 'false', '0')

_malloc_applied = False
_cache_dir_set = None  # the directory set_compilation_cache chose, once it has


@dataclasses.dataclass(frozen=True)
class Configured:
  """What `tune_process` did: the flags and variables it set, and why it left things alone."""

  xla_flags: tuple[str, ...] = ()
  malloc: str = 'not asked'  # 'set', or why not
  compilation_cache: str = 'not asked'  # the directory, or why none
  environment: tuple[str, ...] = ()
  too_late: tuple[str, ...] = ()

  def summary(self) -> str:
    parts = [
        f'XLA flags {" ".join(self.xla_flags) if self.xla_flags else "unchanged"}',
        f'malloc {self.malloc}',
        f'compilation cache {self.compilation_cache}',
    ]
    if self.environment:
      parts.append('set ' + ', '.join(self.environment))
    return 'Process tuning: ' + '; '.join(parts) + '.'


def jax_backend_started() -> bool:
  """Whether JAX has started a backend in this process (checked without starting one)."""
  if 'jax' not in sys.modules:
    return False
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

  return xla_bridge.backends_are_initialized()


def _jaxlib_version() -> str:
  try:
    return importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return ''


def add_xla_flags(
    environ: MutableMapping[str, str] = os.environ, jaxlib_version: str | None = None
) -> list[str]:
  """Appends each of CPU_FLAGS to environ['XLA_FLAGS'] unless the user set it; returns them."""
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if not version.startswith(MEASURED_JAXLIB):
    return []
  flags = environ.get('XLA_FLAGS', '')
  user_set = {token.split('=', 1)[0].lstrip('-') for token in flags.split()}
  added = [f'--{name}={value}' for name, value in CPU_FLAGS.items() if name not in user_set]
  if added:
    environ['XLA_FLAGS'] = ' '.join([flags.strip()] + added).strip()
  return added


def _mallopt() -> Callable[[int, int], int] | None:
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return None
  return getattr(ctypes.CDLL(None), 'mallopt', None)


def accelerator_installed() -> bool:
  """A JAX GPU or TPU plugin is importable (looked up without importing it or starting JAX)."""
  # The CUDA and ROCm plugins are modules of the `jax_plugins` namespace package.
  plugins = importlib.util.find_spec('jax_plugins')
  if plugins is not None and any(pkgutil.iter_modules(plugins.submodule_search_locations or [])):
    return True
  return any(importlib.util.find_spec(name) is not None for name in ACCELERATOR_MODULES)


def malloc_reason_to_skip(
    environ: Mapping[str, str] = os.environ,
    accelerator: Callable[[], bool] = accelerator_installed,
) -> str | None:
  """Why `set_malloc` leaves malloc alone here, or None if it applies."""
  if environ.get(MALLOC_OPT_OUT, '') == 'glibc':
    return f'{MALLOC_OPT_OUT}=glibc'
  set_by_user = [name for name in MALLOC_USER_VARIABLES if name in environ]
  if set_by_user or 'glibc.malloc' in environ.get('GLIBC_TUNABLES', ''):
    return f'configured by the user ({", ".join(set_by_user) or "GLIBC_TUNABLES"})'
  if 'malloc' in environ.get('LD_PRELOAD', ''):
    return 'another allocator is preloaded (LD_PRELOAD)'
  platforms = environ.get('JAX_PLATFORMS', '')
  if platforms:
    if platforms.split(',')[0].strip() != 'cpu':
      return f'JAX_PLATFORMS={platforms} computes elsewhere than on the CPU'
  elif accelerator():
    return 'a JAX GPU or TPU plugin is installed'
  return None


def set_malloc(
    environ: Mapping[str, str] = os.environ,
    mallopt: Callable[[int, int], int] | None = None,
) -> str:
  """Sets MALLOC_SETTINGS unless `malloc_reason_to_skip` says otherwise: 'set', or why not."""
  global _malloc_applied
  real = mallopt is None  # a test's stand-in must not mark this process as set
  if real and _malloc_applied:
    return 'already set'
  mallopt = mallopt or _mallopt()
  if mallopt is None:
    return 'left alone (not glibc)'
  reason = malloc_reason_to_skip(environ)
  if reason is not None:
    return f'left alone ({reason})'
  done = all(mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS)
  if real:
    _malloc_applied = _malloc_applied or done
  return 'set (arena 1, no mmap, no trim)' if done else 'left alone (mallopt refused)'


def malloc_applied() -> bool:
  """Whether `tune_process` set glibc's malloc in this process."""
  return _malloc_applied


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> str:
  """`$XDG_CACHE_HOME/alexnet_jax/jax`, `~/.cache/alexnet_jax/jax` without it."""
  root = environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(root, 'alexnet_jax', 'jax')


def set_compilation_cache(
    environ: Mapping[str, str] = os.environ, directory: str | None = None
) -> str:
  """Points JAX's persistent compilation cache at a directory (module docstring, 4).

  `directory` (a command's --compilation_cache) wins over ALEXNET_JAX_COMPILATION_CACHE, which
  wins over the default; 'off' in either turns the cache off. Returns the directory, or why none.
  """
  import jax  # pylint: disable=g-import-not-at-top  (importing jax starts no backend)

  global _cache_dir_set
  chosen = directory if directory is not None else environ.get(CACHE_VARIABLE, '')
  if chosen.strip().lower() in CACHE_OFF:
    if directory is not None:  # an explicit 'off' also turns off a directory set before
      jax.config.update('jax_compilation_cache_dir', None)
    return 'off'
  current = jax.config.jax_compilation_cache_dir
  if not chosen and current:
    return current if current == _cache_dir_set else f'{current} (set by the user)'
  path = os.path.abspath(os.path.expanduser(chosen or default_cache_dir(environ)))
  _cache_dir_set = path
  jax.config.update('jax_compilation_cache_dir', path)
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in environ:
    # JAX keeps only programs that took a second to compile; the loop's small ones (the metric
    # merges, the evaluation's sums) would be compiled again at every start.
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  return path


def tune_process(
    environ: MutableMapping[str, str] = os.environ,
    *,
    xla_flags: bool = True,
    malloc: bool = True,
    quiet: bool = True,
    compilation_cache: bool = True,
    cache_dir: str | None = None,
) -> Configured:
  """Tunes this process for training on XLA:CPU (see the module docstring); returns what it did.

  `cache_dir`: a directory for the compilation cache, or 'off' (a command's flag); None: the
  environment's or the default. Call it first, before anything computes with JAX. A setting that can no longer take effect
  (JAX's backend already started, TensorFlow already imported) is still made, and a
  RuntimeWarning says so. Calling it again adds nothing.
  """
  too_late = []
  started = jax_backend_started()
  added = add_xla_flags(environ) if xla_flags else []
  if added and started:
    too_late.append('XLA flags (XLA read XLA_FLAGS when JAX started its backend)')
  malloc_state = set_malloc(environ) if malloc else 'not asked'
  if malloc_state.startswith('set') and started:
    too_late.append("malloc settings (JAX's threads already have their arenas)")
  environment = []
  if quiet:
    for name, value in QUIET.items():
      if name not in environ:
        environ[name] = value
        environment.append(f'{name}={value}')
    if environment and 'tensorflow' in sys.modules:
      too_late.append('quiet TensorFlow (it is already imported)')
  cache = set_compilation_cache(environ, cache_dir) if compilation_cache else 'not asked'
  configured = Configured(tuple(added), malloc_state, cache, tuple(environment), tuple(too_late))
  if too_late:
    warnings.warn(
        'alexnet_jax.system.runtime.tune_process() came too late for: '
        + '; '.join(too_late)
        + '. Call it first, before JAX computes anything (in a notebook: the first cell, then '
        'restart the kernel).',
        RuntimeWarning,
        stacklevel=2,
    )
  logging.getLogger('alexnet_jax').info(configured.summary())
  return configured
