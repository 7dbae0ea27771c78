"""What the tests that start processes share: a command of this checkout in a subprocess, and
two local JAX processes that find each other on a free port."""

import json
import os
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module: str, *args: str, env: dict | None = None, timeout: int = 300):
  """`python -m module args` from this checkout (its code first on the path), output captured."""
  return _run(['-m', module, *args], env, timeout)


def run_for_json(module: str, *args: str, output, env: dict | None = None, timeout: int = 300):
  """`run_module` of a command that writes its result to `--output=output`: (the finished
  process, the JSON it wrote), after asserting that it succeeded."""
  out = run_module(module, *args, f'--output={output}', env=env, timeout=timeout)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(output) as f:
    return out, json.load(f)


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
  """127.0.0.1:PORT with a port nothing listens on (the OS's pick), for an address that must stay
  unanswered. For a coordinator that will listen there, `start_processes` holds the port instead
  (`_reserved_port`): a port freed here may be taken by another process before JAX binds it."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return f'127.0.0.1:{s.getsockname()[1]}'


def _reserved_port() -> socket.socket:
  """A socket bound to a port of the OS's pick on 127.0.0.1, with SO_REUSEPORT, not listening.

  While it is open no other process can take the port: the kernel never hands out a bound port
  to bind(0) or connect(), and an explicit bind without SO_REUSEPORT fails. JAX's coordinator (a
  gRPC server, which sets SO_REUSEPORT) can bind it all the same, and, as the only socket there
  that listens, receives every connection."""
  s = socket.socket()
  s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
  s.bind(('127.0.0.1', 0))
  return s


def _wait_until_listening(address: str, coordinator: subprocess.Popen) -> None:
  """Returns once something accepts connections at `address`, or `coordinator` has exited (its
  own output then says why), or 300 s have passed (the callers' timeouts take over)."""
  host, port = address.rsplit(':', 1)
  for _ in range(3000):
    if coordinator.poll() is not None:
      return
    try:
      socket.create_connection((host, int(port)), timeout=1).close()
      return
    except OSError:  # refused: the coordinator is not up yet
      time.sleep(0.1)


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
  variables besides this checkout on the path and no XLA_FLAGS (device counts come from `env`).

  The coordinator's port stays reserved (`_reserved_port`) until process 0 listens on it, so no
  other process can take it in between."""
  reservation = _reserved_port()
  address = f'127.0.0.1:{reservation.getsockname()[1]}'
  full_env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS='', **(env or {}))
  procs = []
  try:
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
    _wait_until_listening(address, procs[0])
  except BaseException:
    for p in procs:
      p.kill()
      p.communicate()
    raise
  finally:
    reservation.close()
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
