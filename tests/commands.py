"""What the tests that start processes share: a command of this checkout in a subprocess, and
two local JAX processes that find each other on a free port."""

import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module: str, *args: str, env: dict | None = None, timeout: int = 300):
  """`python -m module args` from this checkout (its code first on the path), output captured."""
  return _run(['-m', module, *args], env, timeout)


def run_script(script: str, *args: str, env: dict | None = None, timeout: int = 300):
  """`python -c script args`, as `run_module` runs a module."""
  return _run(['-c', script, *args], env, timeout)


def _run(argv: list[str], env: dict | None, timeout: int):
  full_env = dict(os.environ, **(env or {}))
  full_env['PYTHONPATH'] = REPO + os.pathsep + full_env.get('PYTHONPATH', '')
  return subprocess.run(
      [sys.executable, *argv],
      cwd=REPO,
      env=full_env,
      capture_output=True,
      text=True,
      timeout=timeout,
  )


def free_address() -> str:
  """127.0.0.1:PORT with a port nothing listens on (the OS's pick), for a JAX coordinator."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return f'127.0.0.1:{s.getsockname()[1]}'


# `python -m alexnet_jax.main` as one of two processes, for `start_processes`: the arguments after
# ADDRESS and PROCESS_ID are main's flags.
MAIN_OF_TWO = r"""
import sys
from alexnet_jax import main
address, process_id, *flags = sys.argv[1:]
sys.argv = ['alexnet_jax.main', f'--coordinator_address={address}', '--num_processes=2',
            f'--process_id={process_id}', *flags]
main.run()
"""


def start_processes(
    script: str, *args: str, env: dict | None = None, log_dir: str | None = None
) -> list[subprocess.Popen]:
  """`python -c script ADDRESS PROCESS_ID *args` as processes 0 and 1 of one JAX cluster on
  127.0.0.1, started. Each one's stdout and stderr go together to its stdout, a pipe, or with
  `log_dir` to LOG_DIR/process_I.log (nothing blocks on a full pipe nobody reads). `env`:
  variables besides this checkout on the path and no XLA_FLAGS (device counts come from `env`)."""
  address = free_address()
  full_env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS='', **(env or {}))
  procs = []
  for i in range(2):
    log = open(os.path.join(log_dir, f'process_{i}.log'), 'w') if log_dir else None
    procs.append(
        subprocess.Popen(
            [sys.executable, '-c', script, address, str(i), *args],
            cwd=REPO,
            env=full_env,
            stdout=log or subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    )
    if log:
      log.close()  # the process has its own copy
  return procs


def two_processes(
    script: str, *args: str, timeout: int, env: dict | None = None
) -> list[tuple[int, str]]:
  """`start_processes`, waited for: each one's (exit status, stdout and stderr)."""
  procs = start_processes(script, *args, env=env)
  try:
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:  # one that timed out, or whose partner did, must not outlive the test
      if p.poll() is None:
        p.kill()
        p.communicate()
  return [(p.returncode, out) for p, out in zip(procs, outputs, strict=True)]
