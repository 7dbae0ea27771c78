"""What the tests that start processes share: a command of this checkout in a subprocess, and
two local JAX processes that find each other on a free port."""

import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module: str, *args: str, env: dict | None = None, timeout: int = 300):
  """`python -m module args` from this checkout (its code first on the path), output captured."""
  full_env = dict(os.environ, **(env or {}))
  full_env['PYTHONPATH'] = REPO + os.pathsep + full_env.get('PYTHONPATH', '')
  return subprocess.run(
      [sys.executable, '-m', module, *args],
      cwd=REPO,
      env=full_env,
      capture_output=True,
      text=True,
      timeout=timeout,
  )


def two_processes(script: str, *args: str, timeout: int) -> list[tuple[int, str]]:
  """`python -c script ADDRESS PROCESS_ID *args` as processes 0 and 1 of one JAX cluster on
  127.0.0.1; each one's (exit status, stdout and stderr)."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    address = f'127.0.0.1:{s.getsockname()[1]}'
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS='')
  procs = [
      subprocess.Popen(
          [sys.executable, '-c', script, address, str(i), *args],
          cwd=REPO,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      for i in range(2)
  ]
  outputs = [p.communicate(timeout=timeout)[0] for p in procs]
  return [(p.returncode, out) for p, out in zip(procs, outputs, strict=True)]
