"""Shared fixtures: the built-in dataset's `tiny` split, prepared once per test session, and the
tiny recipe on it (`configs/quickstart.py:tiny`, the one definition of it).

The test process is tuned as our commands tune theirs (`runtime.tune_process()`, before JAX starts)
and simulates 8 CPU devices, so sharding tests can build meshes; single-device tests ask for the
`one_device` fixture.
"""

from alexnet_jax.system import runtime

runtime.tune_process()

import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 8)

import atexit  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

# One persistent compilation cache for the whole test session: both xdist workers, their
# subprocesses and notebook kernels. Tests build fresh jitted functions for the same few tiny
# programs again and again, and XLA:CPU compiles dominate the suite's time. The cache is keyed by
# the program and the compile options, so a hit returns the same executable a fresh compile would.
# The first process to load this file (xdist's controller, or the only process) makes the
# directory and removes it at exit; the workers it starts inherit the variable.
_CACHE_VARIABLE = 'ALEXNET_JAX_TEST_COMPILATION_CACHE'
_CACHE_DIR = os.environ.get(_CACHE_VARIABLE)
if not _CACHE_DIR:
  _CACHE_DIR = os.environ[_CACHE_VARIABLE] = tempfile.mkdtemp(prefix='alexnet_jax_test_cache_')
  atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
jax.config.update('jax_compilation_cache_dir', _CACHE_DIR)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.2)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

import pytest  # noqa: E402

from alexnet_jax.configs import quickstart  # noqa: E402
from alexnet_jax.data import datasets  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  datasets.ensure_prepared('synthetic_shapes/tiny', data_dir)
  return data_dir


@pytest.fixture
def one_device():
  return jax.devices()[:1]


@pytest.fixture(scope='session')
def tiny_config(tiny_data_dir):
  """A function returning a fresh `quickstart.py:tiny` config, on the session's tiny data unless
  given another TFDS data_dir."""

  def make(data_dir: str | None = None):
    config = quickstart.get_config('tiny')
    config.data_dir = data_dir or tiny_data_dir
    return config

  return make


@pytest.fixture(scope='session')
def plateau_config(tiny_config):
  """The paper's schedule, evaluated every step with patience 1, so the plateau state moves."""

  def make(data_dir: str | None = None, strategy: str = 'data', steps: int = 6):
    config = tiny_config(data_dir)
    config.strategy = strategy
    config.optim.schedule = 'plateau'
    config.optim.learning_rate = 0.01
    config.eval_every_steps = 1
    config.num_train_steps = steps
    return config

  return make


@pytest.fixture(scope='session')
def compilation_cache():
  """Environment variables that point subprocesses and notebook kernels at the test process's
  compilation cache: their tiny runs compile the same few programs (every seed, and each
  experiment's `paper` run) as the tests in this process."""
  return {
      'JAX_COMPILATION_CACHE_DIR': _CACHE_DIR,
      'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0.2',
      'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0',
  }


@pytest.fixture(scope='session')
def tiny_command(tiny_data_dir):
  """A function of (workdir, *flags) returning the argv of `python -m alexnet_jax.main` for a
  60-step tiny run (one device) on the session's tiny data, with those flags besides."""

  def argv(workdir, *flags: str) -> list[str]:
    return [
        sys.executable,
        '-m',
        'alexnet_jax.main',
        f'--workdir={workdir}',
        '--config=configs/quickstart.py:tiny',
        f'--config.data_dir={tiny_data_dir}',
        '--config.num_train_steps=60',
        *flags,
    ]

  return argv


@pytest.fixture(scope='session')
def command_env(compilation_cache):
  """The environment of a command run from this checkout, sharing the compilation cache."""
  env = dict(os.environ, **compilation_cache)
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  return env


@pytest.fixture(scope='session')
def evaluated_run(tiny_command, command_env, tmp_path_factory):
  """The workdir of `tiny_command` evaluated every 6 steps and checkpointed every 4, keeping 2:
  test_checkpointing checks which checkpoints it kept and resumes copies of it, test_stopping
  compares a run stopped and resumed with its parameters. Its best evaluation comes before its
  last checkpoints (step 24's 0.875, which step 54 only equals)."""
  workdir = str(tmp_path_factory.mktemp('evaluated') / 'run')
  flags = ('--config.eval_every_steps=6', '--config.checkpoint_every_steps=4')
  out = subprocess.run(
      tiny_command(workdir, *flags, '--config.keep_checkpoints=2'),
      cwd=REPO,
      env=command_env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir
