"""runtime.tune_process: XLA flags and malloc settings only where they should be, in effect when
called first, a warning when called too late, and nothing at all on import."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.system import runtime

FLAG = 'xla_cpu_experimental_ynn_fusion_type'


def run_python(code: str, **environ) -> subprocess.CompletedProcess:
  """`code` in a fresh interpreter, without the malloc and XLA settings of this test process."""
  env = {
      k: v
      for k, v in os.environ.items()
      if k not in runtime.MALLOC_USER_VARIABLES + (runtime.MALLOC_OPT_OUT, 'XLA_FLAGS')
      and k not in runtime.QUIET
  }
  env.update(environ, JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300
  )


def run_ok(code: str, **environ) -> subprocess.CompletedProcess:
  """`run_python`, which must exit 0."""
  out = run_python(code, **environ)
  assert out.returncode == 0, out.stderr[-2000:]
  return out


# --- XLA flags ---


def test_appends_to_the_users_other_flags():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  added = runtime.add_xla_flags(env, jaxlib_version='0.10.2')
  assert env['XLA_FLAGS'] == (
      '--xla_force_host_platform_device_count=8 '
      f'--{FLAG}=LIBRARY_FUSION_TYPE_DOT '
      '--xla_cpu_copy_insertion_use_region_analysis=true'
  )
  assert len(added) == 2
  assert runtime.add_xla_flags(env, jaxlib_version='0.10.2') == []  # a second call adds nothing
  assert env['XLA_FLAGS'].count(FLAG) == 1


def test_never_overrides_a_flag_the_user_set():
  env = {'XLA_FLAGS': f'--{FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION'}
  runtime.add_xla_flags(env, jaxlib_version='0.10.2')
  assert env['XLA_FLAGS'].split()[0] == f'--{FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION'
  assert env['XLA_FLAGS'].count(FLAG) == 1


def test_unmeasured_jaxlib_keeps_xla_defaults():
  # An unknown flag in XLA_FLAGS aborts the process, so versions we have not checked get none.
  env = {}
  assert runtime.add_xla_flags(env, jaxlib_version='0.11.0') == []
  assert 'XLA_FLAGS' not in env


def _measured_jaxlib() -> bool:
  return runtime._jaxlib_version().startswith(runtime.MEASURED_JAXLIB)


def test_this_process_has_the_flags_exactly_where_they_were_measured():
  """conftest configured this process before JAX started, as every command does: the flags are
  there on a measured jaxlib, and absent on any other (an unknown flag aborts the process)."""
  flags = os.environ.get('XLA_FLAGS', '')
  assert [name in flags for name in runtime.CPU_FLAGS] == [_measured_jaxlib()] * 2, flags


def _compiled_on_the_cpu(fn, *args, **jit_kwargs):
  """`fn`'s result on args and its compiled program's text, compiled for XLA:CPU (whatever the
  default backend: the flags are XLA:CPU's)."""
  cpu = jax.devices('cpu')[0]
  with jax.default_device(cpu):
    args = jax.device_put(args, cpu)
    compiled = jax.jit(fn, **jit_kwargs).lower(*args).compile()
    return compiled(*args), compiled.as_text()


def test_convolutions_leave_ynnpack_in_this_process():
  """Where the flags were added, XLA:CPU's convolutions stay out of YNNPACK fusions; on every
  jaxlib the convolution computes the sum of shifted products written out in numpy. The shape
  matters: jaxlib 0.10.2 without the flags hands this NHWC convolution to YNNPACK (checked in a
  process without them), while one of 3 channels on an 8x8 map it never does."""
  rng = np.random.default_rng(0)
  x, w = rng.normal(size=(2, 16, 16, 32)), rng.normal(size=(3, 3, 32, 32)) / 10
  conv = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  out, program = _compiled_on_the_cpu(conv, x.astype(np.float32), w.astype(np.float32))
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  naive = sum(
      np.einsum('nhwc,co->nhwo', padded[:, i : i + 16, j : j + 16], w[i, j])
      for i in range(3)
      for j in range(3)
  )
  np.testing.assert_allclose(np.asarray(out), naive, rtol=1e-4, atol=1e-4)
  assert 'convolution' in program
  if _measured_jaxlib():  # elsewhere no flag was added, and XLA's default fusions stand
    assert '__ynn_fusion' not in program, program[-2000:]


def test_donated_weights_read_twice_are_updated_in_place():
  """The step donates its state; a weight read by the forward and the backward pass (w2 here,
  like every AlexNet layer but conv1) must be overwritten in place, not copied first, where the
  flags were added; on every jaxlib the update is the SGD step written out in numpy."""
  rng = np.random.default_rng(1)
  w1, w2 = rng.normal(size=(64, 32)) / 8, rng.normal(size=(32, 8)) / 6
  x = rng.normal(size=(4, 64))

  def step(params, x):
    grads = jax.grad(lambda p: jnp.sum(jnp.tanh(x @ p['w1']) @ p['w2']))(params)
    return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)

  params = {'w1': w1.astype(np.float32), 'w2': w2.astype(np.float32)}
  new, program = _compiled_on_the_cpu(step, params, x.astype(np.float32), donate_argnums=0)
  hidden = np.tanh(x @ w1)
  ones = np.ones((4, 8))
  want = {
      'w1': w1 - 0.1 * x.T @ ((ones @ w2.T) * (1 - hidden**2)),
      'w2': w2 - 0.1 * hidden.T @ ones,
  }
  for name in want:
    np.testing.assert_allclose(np.asarray(new[name]), want[name], rtol=1e-5, atol=1e-5)
  assert 'ENTRY' in program
  copies = [line for line in program.splitlines() if ' copy(' in line]
  if _measured_jaxlib():  # elsewhere XLA's default copy insertion may copy: no flag was added
    assert not copies, copies


# --- malloc ---


def recording_mallopt():
  calls = []
  return calls, lambda param, value: calls.append((param, value)) or 1


def test_sets_arena_mmap_and_trim_settings():
  calls, mallopt = recording_mallopt()
  was_applied = runtime.malloc_applied()
  assert runtime.set_malloc({'JAX_PLATFORMS': 'cpu'}, mallopt).startswith('set')
  assert calls == [(-8, 1), (-4, 0), (-1, -1)]  # mallopt(3): M_ARENA_MAX, M_MMAP_MAX, M_TRIM
  assert runtime.malloc_applied() == was_applied  # a stand-in mallopt changes nothing real


@pytest.mark.parametrize(
    'environ',
    [
        {'ALEXNET_JAX_MALLOC': 'glibc'},
        {'MALLOC_ARENA_MAX': '4'},
        {'MALLOC_TRIM_THRESHOLD_': '0'},
        {'GLIBC_TUNABLES': 'glibc.malloc.mmap_max=0'},
        {'LD_PRELOAD': '/usr/lib/libjemalloc.so.2'},
        {'JAX_PLATFORMS': 'cuda,cpu'},
    ],
)
def test_leaves_malloc_alone_when_told_otherwise(environ):
  calls, mallopt = recording_mallopt()
  assert runtime.set_malloc(environ, mallopt).startswith('left alone')
  assert calls == []
  assert runtime.malloc_reason_to_skip(environ, accelerator=lambda: False)


def test_an_installed_jax_plugin_is_found_without_importing_it(tmp_path):
  """A module in the `jax_plugins` namespace (how the CUDA and ROCm plugins install) counts as an
  accelerator; this CPU environment has none. Looked up in fresh processes, never imported."""
  code = (
      'import sys; from alexnet_jax.system import runtime; print(runtime.accelerator_installed(), '
      '"jax_plugins.fake_gpu" in sys.modules)'
  )
  plugin = tmp_path / 'jax_plugins' / 'fake_gpu'
  plugin.mkdir(parents=True)
  (plugin / '__init__.py').write_text('raise RuntimeError("imported")\n')
  without, with_plugin = run_ok(code), run_ok(code, PYTHONPATH=str(tmp_path))
  assert without.stdout.split() == ['False', 'False'], without.stdout
  assert with_plugin.stdout.split() == ['True', 'False'], with_plugin.stdout


def test_accelerator_plugins_keep_glibc_defaults_unless_jax_is_told_to_use_the_cpu():
  assert runtime.malloc_reason_to_skip({}, accelerator=lambda: True)
  assert runtime.malloc_reason_to_skip({'JAX_PLATFORMS': 'cpu'}, accelerator=lambda: True) is None
  assert runtime.malloc_reason_to_skip({}, accelerator=lambda: False) is None


# The page faults of calls of a program whose 64 MB result is allocated at each call and freed
# after it, as XLA:CPU does with a step's temporaries, counted over the second 30 of 60 calls: by
# then the tuned heap has grown to the few blocks in flight (`delete` frees a result as soon as the
# runtime lets go of it, asynchronously), while glibc's defaults fault in a fresh block every call.
FAULTS = """
import resource, sys
from alexnet_jax.system import runtime
if sys.argv[1] == 'tune_process':
  runtime.tune_process()
import jax, jax.numpy as jnp
fn = jax.jit(lambda v: v + 1)
x = jnp.zeros((4096, 4096), jnp.float32)
def calls(n):
  for _ in range(n):
    result = fn(x)
    result.block_until_ready()
    result.delete()
calls(30)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
calls(30)
print(runtime.malloc_applied(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_in_30_calls(mode: str) -> tuple[bool, float]:
  out = run_ok(FAULTS.replace('sys.argv[1]', repr(mode)))
  applied, faults = out.stdout.split()
  return applied == 'True', float(faults)


def test_freed_buffers_are_handed_out_again_not_faulted_in_afresh():
  """Configured, the 64 MB blocks are reused; not configured (a library import), every call
  maps a fresh block and faults in each of its 4 KB pages again. Without glibc, tune_process() must
  leave malloc alone."""
  block = 64 * 2**20 // 4096
  applied, tuned = _faults_in_30_calls('tune_process')
  not_applied, default = _faults_in_30_calls('import only')
  assert not not_applied
  if runtime._mallopt() is None:
    assert not applied
    return
  assert applied
  assert default > 25 * block, default / block  # the reference: about a fresh block per call
  assert tuned < default / 4, (tuned / block, default / block)


# --- tune_process ---


def test_importing_the_package_changes_nothing_in_the_process():
  """No XLA flag, no malloc setting, no environment variable beyond what the libraries we import
  set themselves (measured in a second process that imports only them)."""
  changed = (
      'changed = sorted(k for k in set(before) | set(os.environ) '
      'if before.get(k) != os.environ.get(k))\n'
  )
  ours = run_python(
      'import os\nbefore = dict(os.environ)\n'
      'import alexnet_jax, alexnet_jax.models, alexnet_jax.train, alexnet_jax.main, '
      'alexnet_jax.tools.benchmark, alexnet_jax.configs.alexnet, alexnet_jax.sweeps.sweep, '
      'alexnet_jax.sweeps.results, alexnet_jax.sweeps.plots, alexnet_jax.trained.analysis\n'
      'from alexnet_jax.system import runtime\n'
      + changed
      + 'print(changed, runtime.malloc_applied(), os.environ.get("XLA_FLAGS"))\n'
  )
  libraries = run_python(
      'import os\nbefore = dict(os.environ)\n'
      'import absl.flags, clu.metrics, clu.parameter_overview, flax, grain, '
      'jax, ml_collections, optax, orbax.checkpoint, simplejpeg, '
      'tensorflow_datasets, pandas, matplotlib.figure\n' + changed + 'print(changed, False, None)\n'
  )
  assert ours.returncode == 0 and libraries.returncode == 0, ours.stderr[-2000:]
  assert ours.stdout.split('\n')[-2] == libraries.stdout.split('\n')[-2], (
      ours.stdout,
      libraries.stdout,
  )


# tune_process() in a fresh process that believes its jaxlib is sys.argv[1]'s version: both branches
# of the XLA flags run on any jaxlib (no backend starts, so XLA never reads the flags).
AS_IF_JAXLIB = (
    'import sys\n'
    'from alexnet_jax.system import runtime\n'
    'runtime._jaxlib_version = lambda: sys.argv[1]\n'
)


def run_as_if(version: str, code: str) -> subprocess.CompletedProcess:
  return run_ok(AS_IF_JAXLIB.replace('sys.argv[1]', repr(version)) + code)


def test_configure_says_what_it_set_and_sets_it():
  code = (
      'import os\n'
      'c = runtime.tune_process()\n'
      'print(c.summary())\n'
      'print(os.environ.get("XLA_FLAGS", "") or "-", runtime.malloc_applied(), '
      'os.environ["TF_ENABLE_ONEDNN_OPTS"])\n'
  )
  for version, measured in (('0.10.2', True), ('0.11.0', False)):
    out = run_as_if(version, code)
    summary, state = out.stdout.strip().split('\n')[-2:]
    assert summary.startswith('Process tuning: XLA flags'), summary
    flags = ' '.join(f'--{name}={value}' for name, value in runtime.CPU_FLAGS.items())
    if measured:
      assert f'XLA flags {flags};' in summary and state.startswith(f'{flags} '), out.stdout
    else:
      assert 'XLA flags unchanged;' in summary and state.startswith('- '), out.stdout
    if runtime._mallopt() is not None:
      assert 'malloc set' in summary and ' True ' in state
    else:
      assert 'malloc left alone (not glibc)' in summary and ' False ' in state
    assert state.endswith(' 0')
    assert 'RuntimeWarning' not in out.stderr


def test_configure_again_after_jax_started_adds_nothing_and_does_not_warn():
  """A notebook's first cell run a second time: the process is already tuned, nothing is late."""
  code = (
      'import warnings\n'
      'from alexnet_jax.system import runtime\n'
      'first = runtime.tune_process()\n'
      'import jax\n'
      'jax.numpy.ones(1).block_until_ready()\n'
      'with warnings.catch_warnings(record=True) as caught:\n'
      '  warnings.simplefilter("always")\n'
      '  second = runtime.tune_process()\n'
      'print(len(caught), second.xla_flags, second.malloc, bool(first.xla_flags))\n'
  )
  out = run_ok(code)
  caught, rest = out.stdout.strip().split('\n')[-1].split(' ', 1)
  assert caught == '0', out.stdout
  assert rest.startswith('() '), out.stdout  # no XLA flag added twice
  if runtime._mallopt() is not None:
    assert 'already set' in rest, out.stdout


def test_configure_after_jax_started_warns_that_it_is_too_late():
  """Each setting that comes too late is named: the XLA flags where this jaxlib gets them (both
  versions tried, whatever jaxlib runs the suite), malloc where glibc's can be set."""
  code = (
      'import json, os, warnings, jax\n'
      'jax.numpy.ones(1).block_until_ready()\n'
      'def late(**kw):\n'
      '  with warnings.catch_warnings(record=True) as caught:\n'
      '    warnings.simplefilter("always")\n'
      '    runtime.tune_process(dict(os.environ), compilation_cache=False, **kw)\n'
      '  return [str(w.message) for w in caught]\n'
      'print(json.dumps({"flags": late(malloc=False), "malloc": late(xla_flags=False)}))\n'
  )
  for version, measured in (('0.10.2', True), ('0.11.0', False)):
    out = run_as_if(version, code)
    caught = json.loads(out.stdout.strip().split('\n')[-1])
    if measured:
      (message,) = caught['flags']
      assert message.startswith(
          'alexnet_jax.system.runtime.tune_process() came too late for: XLA flags'
      )
      assert 'Call it first' in message and 'malloc' not in message, message
    else:
      assert caught['flags'] == [], caught  # no flag added, nothing late
    if runtime._mallopt() is not None:
      (message,) = caught['malloc']
      assert 'too late for: malloc settings' in message and 'Call it first' in message, message
    else:
      assert caught['malloc'] == [], caught


def test_commands_print_our_lines_first_not_tensorflows():
  """No oneDNN banner or absl pre-initialisation notice before a command's own output."""
  out = run_python(
      'import sys; from alexnet_jax import main; sys.argv = ["main", "--help"]; ' 'main.run()'
  )
  # absl's --help prints the usage and exits 1; a command that crashed would print a traceback.
  assert out.returncode == 1, out.stderr[-2000:]
  assert out.stdout.lstrip().startswith('USAGE: main [flags]'), out.stdout[-2000:]
  assert 'Traceback' not in out.stderr, out.stderr[-2000:]
  assert 'oneDNN' not in out.stderr and 'InitializeLog' not in out.stderr, out.stderr[:2000]


# --- compilation cache ---

# Counts JAX's own compile and cache events (jax.monitoring) around a small training-like start.
STARTS = """
import collections, json, sys
import jax, jax.numpy as jnp
events = collections.Counter()
jax.monitoring.register_event_listener(lambda name, **kw: events.update([name]))
from alexnet_jax.system import runtime
c = runtime.tune_process(cache_dir=None if sys.argv[1] == '-' else sys.argv[1])
step = jax.jit(lambda w, x: w - 0.1 * jax.grad(lambda w: jnp.sum(jnp.tanh(x @ w) ** 2))(w))
w = step(jnp.ones((64, 64)), jnp.ones((8, 64)))
jnp.sum(w).block_until_ready()
print(json.dumps({'dir': c.compilation_cache, 'misses': events['/jax/compilation_cache/cache_misses'],
                  'hits': events['/jax/compilation_cache/cache_hits']}))
"""


def _start(tmp_path, cache_dir='-', **environ):
  code = STARTS.replace('sys.argv[1]', repr(cache_dir))
  environ.setdefault('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  # The test process's own cache (conftest) must not reach the child.
  environ.setdefault('JAX_COMPILATION_CACHE_DIR', '')
  out = run_ok(code, **environ)
  return json.loads(out.stdout.strip().split('\n')[-1])


def test_a_second_start_compiles_nothing(tmp_path):
  first, second = _start(tmp_path), _start(tmp_path)
  assert first['dir'] == str(tmp_path / 'xdg' / 'alexnet_jax' / 'jax')
  assert first['misses'] >= 2 and first['hits'] == 0  # the step and the sum, at least
  assert second['misses'] == 0 and second['hits'] == first['misses'], (first, second)
  assert any((tmp_path / 'xdg' / 'alexnet_jax' / 'jax').iterdir())


@pytest.mark.slow
def test_the_cache_moves_and_turns_off(tmp_path):
  moved = tmp_path / 'elsewhere'
  for where in ({'cache_dir': str(moved)}, {runtime.CACHE_VARIABLE: str(moved)}):
    assert _start(tmp_path, **where)['dir'] == str(moved)
  assert _start(tmp_path, cache_dir=str(moved))['misses'] == 0  # stored there, found there
  assert not (tmp_path / 'xdg').exists()
  for off in ({'cache_dir': 'off'}, {runtime.CACHE_VARIABLE: 'off'}):
    result = _start(tmp_path, **off)
    assert result['dir'] == 'off' and result['hits'] == 0, result
  assert not (tmp_path / 'xdg').exists()


def test_a_cache_the_user_gave_jax_is_kept(tmp_path):
  theirs = tmp_path / 'theirs'
  # Their own threshold too (JAX's default keeps only compiles of a second or more).
  result = _start(
      tmp_path,
      JAX_COMPILATION_CACHE_DIR=str(theirs),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
  )
  assert result['dir'] == f'{theirs} (set by the user)'
  assert any(theirs.iterdir()) and not (tmp_path / 'xdg').exists()
