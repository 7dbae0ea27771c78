"""SIGTERM and SIGINT stop a run after its step, with a checkpoint of it: the handlers (where they
are installed, what a second signal does), the processes of a multi-process run agreeing on the
step, and the command stopped and run again ending where an uninterrupted run ends."""

import os
import signal
import subprocess
import threading
import time

import jax
import numpy as np
import pytest

from alexnet_jax import checkpointing
from alexnet_jax import history
from alexnet_jax import inference
from alexnet_jax import stopping
from tests import commands

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _handlers():
  return {s: signal.getsignal(s) for s in stopping.SIGNALS}


def test_the_first_signal_is_noted_a_second_interrupts_and_the_handlers_are_put_back():
  import alexnet_jax.sweep  # pylint: disable=g-import-not-at-top,unused-import
  import alexnet_jax.train  # pylint: disable=g-import-not-at-top,unused-import

  before = _handlers()
  # Python's own: importing the loop and the sweep installed nothing.
  assert before == {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
  with pytest.raises(KeyboardInterrupt):
    with stopping.listening() as stop:
      assert all(signal.getsignal(s) != before[s] for s in stopping.SIGNALS)
      signal.raise_signal(signal.SIGINT)
      assert stop.signum == signal.SIGINT
      assert stop.agreed(sync_point=False) == signal.SIGINT  # one process: after any step
      signal.raise_signal(signal.SIGINT)  # Ctrl-C again: no more waiting for the step
  assert _handlers() == before


def test_no_handler_is_installed_from_another_thread_or_for_an_ignored_signal():
  before, inside = _handlers(), {}

  def run():
    with stopping.listening():
      inside.update(_handlers())

  thread = threading.Thread(target=run)
  thread.start()
  thread.join()
  assert inside == before  # Python lets only the main thread set handlers

  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a job started with `&`
  try:
    with stopping.listening():
      assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
      assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
  finally:
    signal.signal(signal.SIGINT, previous)
  assert _handlers() == before


AGREEING = r"""
import os, signal, sys
import jax
from alexnet_jax import sharding, stopping
sharding.initialize_processes(sys.argv[1], 2, int(sys.argv[2]))
with stopping.listening() as stop:
  for step in range(1, 20):
    if jax.process_index() == 1 and step == 2:
      os.kill(os.getpid(), signal.SIGTERM)  # only this process is told, as a preempted VM
    agreed = stop.agreed(sync_point=step % 5 == 0)
    if agreed:
      break
print('stopped', step, agreed, stop.signum, flush=True)
"""


@pytest.mark.slow
def test_processes_stop_at_the_same_sync_point_when_one_is_told():
  results = commands.two_processes(AGREEING, timeout=120)
  lines = []
  for code, out in results:
    assert code == 0, out[-3000:]
    lines.append([line for line in out.splitlines() if line.startswith('stopped')][-1])
  term = int(signal.SIGTERM)
  # Both at step 5, the first sync point after the signal; process 0 on process 1's signal.
  assert lines == [f'stopped 5 {term} 0', f'stopped 5 {term} {term}']


def _stoppable(tiny_command, workdir, env):
  return subprocess.Popen(
      # Evaluated at the end only and never checkpointed before: the one checkpoint is SIGTERM's.
      tiny_command(workdir, '--config.eval_every_steps=60', '--config.checkpoint_every_steps=1000'),
      cwd=REPO,
      env=env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
  )


@pytest.mark.slow
def test_sigterm_saves_the_step_and_the_same_command_finishes_the_run_exactly(
    tiny_command, command_env, evaluated_run, tmp_path
):
  workdir = tmp_path / 'stopped'
  proc = _stoppable(tiny_command, workdir, command_env)
  deadline = time.monotonic() + 300
  while not any(r.get('step', 0) >= 3 for r in history.read(str(workdir))):  # it has trained
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.monotonic() < deadline, 'no step logged in 300 s'
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  checkpointer = checkpointing.Checkpointer(str(workdir), None, read_only=True)
  (stopped_at,) = checkpointer.all_steps()
  checkpointer.close()
  assert 3 <= stopped_at < 60
  assert f'Stopped at step {stopped_at} on SIGTERM' in stderr
  assert 'Traceback' not in stderr, stderr[-3000:]

  again = _stoppable(tiny_command, workdir, command_env)
  _, stderr = again.communicate(timeout=300)
  assert again.returncode == 0, stderr[-3000:]
  assert f'Resumed from the checkpoint at step {stopped_at}' in stderr
  # The reference: the same run uninterrupted, which evaluated and saved more often; neither
  # changes what it computes (only the plateau schedule reads evaluations).
  resumed, reference = inference.load(str(workdir)), inference.load(evaluated_run)
  assert reference.run.optim.schedule != 'plateau'
  assert resumed.step == reference.step == 60
  leaves = jax.tree.leaves_with_path(reference.params)
  for (path, want), got in zip(leaves, jax.tree.leaves(resumed.params), strict=True):
    assert np.array_equal(np.asarray(want), np.asarray(got)), jax.tree_util.keystr(path)
