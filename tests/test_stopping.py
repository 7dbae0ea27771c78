"""SIGTERM and SIGINT stop a run after its step, with a checkpoint of it: the handlers (where they
are installed, what a second signal does, the OS's disposition put back as it was, C handlers
included), the processes of a multi-process run agreeing on the step, and the command, a single
run or a sweep's runs side by side, stopped and run again ending where an uninterrupted one ends."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from alexnet_jax import checkpointing
from alexnet_jax import history
from alexnet_jax import stopping
from alexnet_jax.trained import inference
from tests import commands

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _handlers():
  return {s: signal.getsignal(s) for s in stopping.SIGNALS}


def test_the_first_signal_is_noted_a_second_interrupts_and_the_handlers_are_put_back():
  found = _handlers()  # whatever earlier tests in this process left
  import alexnet_jax.sweeps.sweep  # pylint: disable=g-import-not-at-top,unused-import
  import alexnet_jax.train  # pylint: disable=g-import-not-at-top,unused-import

  assert _handlers() == found  # importing the loop and the sweep installed nothing
  # Python's own SIGINT handler, which a second Ctrl-C must reach (KeyboardInterrupt).
  signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    before = _handlers()
    with pytest.raises(KeyboardInterrupt):
      with stopping.listening() as stop:
        assert all(signal.getsignal(s) != before[s] for s in stopping.SIGNALS)
        signal.raise_signal(signal.SIGINT)
        assert stop.signum == signal.SIGINT
        assert stop.agreed(sync_point=False) == signal.SIGINT  # one process: after any step
        signal.raise_signal(signal.SIGINT)  # Ctrl-C again: no more waiting for the step
    assert _handlers() == before
  finally:
    signal.signal(signal.SIGINT, found[signal.SIGINT])


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


def test_a_block_in_another_thread_shares_the_request_the_main_thread_installed():
  seen = {}
  with stopping.listening() as outer:

    def run():  # a sweep's run side by side
      with stopping.listening() as inner:
        seen['same'] = inner is outer

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    signal.raise_signal(signal.SIGTERM)
  assert seen == {'same': True}
  assert outer.signum == signal.SIGTERM


# The OS's disposition of a signal, read and written with libc's sigaction, as C code sets it
# (JAX's preemption notifier, a launcher's wrapper): Python's signal.getsignal never sees it. The
# handler's address comes first in struct sigaction; 512 bytes hold the whole struct anywhere.
DISPOSITIONS = r"""
import ctypes, json, signal
libc = ctypes.CDLL(None)
libc.sigaction.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)

def handler(signum):
  action = ctypes.create_string_buffer(512)
  assert libc.sigaction(signum, None, action) == 0
  return ctypes.c_void_p.from_buffer(action).value or 0

def set_handler(signum, address):
  action = ctypes.create_string_buffer(512)
  assert libc.sigaction(signum, None, action) == 0
  ctypes.c_void_p.from_buffer(action).value = address
  assert libc.sigaction(signum, action, None) == 0
"""

C_HANDLERS = DISPOSITIONS + r"""
from alexnet_jax import stopping
# A C function that is harmless as a handler (getpid(15)) for SIGTERM, and SIGINT ignored, both
# behind Python's back.
getpid = ctypes.cast(libc.getpid, ctypes.c_void_p).value
set_handler(signal.SIGTERM, getpid)
set_handler(signal.SIGINT, 1)  # SIG_IGN
seen = {'python': [int(signal.getsignal(s)) if not callable(signal.getsignal(s)) else 'callable'
                   for s in (signal.SIGTERM, signal.SIGINT)]}
with stopping.listening() as stop:
  seen['inside'] = [handler(signal.SIGTERM) == getpid, handler(signal.SIGINT)]
  signal.raise_signal(signal.SIGTERM)
  seen['first'] = stop.signum
  signal.raise_signal(signal.SIGTERM)  # the second goes to getpid: this process lives on
  seen['after_second'] = handler(signal.SIGTERM) == getpid
seen['after'] = [handler(signal.SIGTERM) == getpid, handler(signal.SIGINT)]
print(json.dumps(seen))
"""


def test_a_handler_set_from_c_is_put_back_and_receives_the_second_signal():
  out = commands.run_script(C_HANDLERS, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]  # a second SIGTERM under SIG_DFL would kill it
  seen = json.loads(out.stdout.splitlines()[-1])
  assert seen == {
      'python': [int(signal.SIG_DFL), 'callable'],  # Python believes the defaults
      'inside': [False, 1],  # ours replaced the C handler; the ignored SIGINT stayed ignored
      'first': int(signal.SIGTERM),
      'after_second': True,
      'after': [True, 1],
  }


# The run the SIGTERM test below stops and resumes: tiny_command's (60 steps), evaluated at its
# end only and never checkpointed before, so a stopped run's one checkpoint is SIGTERM's.
RUN = {'num_train_steps': 60, 'eval_every_steps': 60, 'checkpoint_every_steps': 1000}
STOPPABLE = tuple(f'--config.{k}={v}' for k, v in RUN.items() if k != 'num_train_steps')

DISTRIBUTED = DISPOSITIONS + r"""
import socket, sys
import jax
from alexnet_jax import sharding, train
from alexnet_jax.configs import quickstart
with socket.socket() as s:
  s.bind(('127.0.0.1', 0))
  address = f'127.0.0.1:{s.getsockname()[1]}'
sharding.initialize_processes(address, 1, 0)
before = handler(signal.SIGTERM)  # JAX's preemption notifier, a C++ handler
config = quickstart.get_config('tiny')
config.data_dir = sys.argv[1]
config.update(json.loads(sys.argv[3]))
train.train_and_evaluate(config, sys.argv[2])
print(json.dumps({'before': before, 'after': handler(signal.SIGTERM),
                  'python': int(signal.getsignal(signal.SIGTERM))}))
"""


@pytest.fixture(scope='module')
def uninterrupted(tiny_data_dir, compilation_cache, tmp_path_factory):
  """RUN trained straight through by DISTRIBUTED, in a process that joined a JAX cluster of one
  first: (what it saw of the SIGTERM handlers, its workdir). One process, as the command's, and
  a cluster of one changes nothing the run computes (the SIGTERM test, which compares a command
  stopped and resumed with its parameters bit for bit, would fail if it did)."""
  workdir = str(tmp_path_factory.mktemp('uninterrupted') / 'run')
  out = commands.run_script(
      DISTRIBUTED, tiny_data_dir, workdir, json.dumps(RUN), env=compilation_cache, timeout=300
  )
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.splitlines()[-1]), workdir


@pytest.mark.slow
def test_jax_distributed_sigterm_handler_is_still_there_after_the_training_loop(uninterrupted):
  seen, _ = uninterrupted
  assert seen['python'] == signal.SIG_DFL  # Python never saw JAX's handler...
  assert seen['before'] not in (0, 1)  # ...but there is one: the comparison means something
  assert seen['after'] == seen['before']


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


# A command (`python -c PAUSED MARKERS STEP MODULE ARGS...` runs `python -m MODULE ARGS...`) whose
# training loops each stop before their STEP-th step's end until the process has a stop request:
# each writes a file into MARKERS when it gets there, so the test signals every loop mid-run, at
# that step, and no loop can end before the signal comes.
PAUSED = r"""
import os, runpy, sys, threading, time
from alexnet_jax import stopping
markers, pause_at, module, *argv = sys.argv[1:]
steps, agreed = {}, stopping.StopRequest.agreed

def pausing(self, sync_point):  # the loop asks this once per step, after the step
  step = steps[threading.get_ident()] = steps.get(threading.get_ident(), 0) + 1
  if step == int(pause_at):
    open(os.path.join(markers, str(threading.get_ident())), 'w').close()
    while not self.signum:  # noted by the handler, in the main thread
      time.sleep(0.01)
  return agreed(self, sync_point)

stopping.StopRequest.agreed = pausing
sys.argv = [module, *argv]
runpy.run_module(module, run_name='__main__', alter_sys=True)
"""
PAUSE_AT = 3


def _paused(argv: list[str], markers, env) -> subprocess.Popen:
  """`argv` (`python -m MODULE ...`) with its loops paused at PAUSE_AT (PAUSED)."""
  assert argv[1] == '-m', argv
  os.makedirs(markers)
  return subprocess.Popen(
      [sys.executable, '-c', PAUSED, str(markers), str(PAUSE_AT), *argv[2:]],
      cwd=REPO,
      env=env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
  )


def _signal_when_paused(proc, markers, loops: int) -> None:
  """SIGTERM to `proc` once its `loops` training loops have all reached PAUSE_AT."""
  for _ in range(3000):  # 300 s at most, against a hang
    if len(os.listdir(markers)) == loops:
      proc.send_signal(signal.SIGTERM)
      return
    if proc.poll() is not None:
      pytest.fail(f'It ended before step {PAUSE_AT}: {proc.communicate()[1][-3000:]}')
    time.sleep(0.1)
  proc.kill()
  pytest.fail(f'No step {PAUSE_AT} in 300 s: {proc.communicate()[1][-3000:]}')


@pytest.mark.slow
def test_sigterm_saves_the_step_and_the_same_command_finishes_the_run_exactly(
    tiny_command, command_env, uninterrupted, tmp_path
):
  workdir = tmp_path / 'stopped'
  proc = _paused(tiny_command(workdir, *STOPPABLE), tmp_path / 'markers', command_env)
  _signal_when_paused(proc, tmp_path / 'markers', loops=1)
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  checkpointer = checkpointing.Checkpointer(str(workdir), None, read_only=True)
  (stopped_at,) = checkpointer.all_steps()
  checkpointer.close()
  assert stopped_at == PAUSE_AT  # the step it was in when the signal came
  assert f'Stopped at step {stopped_at} on SIGTERM' in stderr
  assert 'Traceback' not in stderr, stderr[-3000:]

  again = subprocess.Popen(
      tiny_command(workdir, *STOPPABLE),
      cwd=REPO,
      env=command_env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
  )
  _, stderr = again.communicate(timeout=300)
  assert again.returncode == 0, stderr[-3000:]
  assert f'Resumed from the checkpoint at step {stopped_at}' in stderr
  # The reference: the same run uninterrupted (`uninterrupted`), with the same config.
  resumed, reference = inference.load(str(workdir)), inference.load(uninterrupted[1])
  assert resumed.run.source == reference.run.source
  assert resumed.step == reference.step == RUN['num_train_steps']
  leaves = jax.tree.leaves_with_path(reference.params)
  for (path, want), got in zip(leaves, jax.tree.leaves(resumed.params), strict=True):
    assert np.array_equal(np.asarray(want), np.asarray(got)), jax.tree_util.keystr(path)


# Two runs side by side, one device each, long enough to be signalled mid-run; each saves only
# when it stops or finishes, so its one checkpoint before the end is the signal's.
SWEEP_RUNS = ('no_lrn/seed_0', 'paper/seed_0')
SWEEP_STEPS = 12


def _sweep(parent, data_dir, env, markers=None):
  """The sweep's command; with `markers`, its runs paused at PAUSE_AT (`_paused`)."""
  argv = [
      sys.executable,
      '-m',
      'alexnet_jax.tools.sweep',
      '--config=normalisation:tiny',
      f'--workdir={parent}',
      f'--config.data_dir={data_dir}',
      '--config.sweep.seeds=(0,)',
      '--config.sweep.parallel=2',
      f'--config.num_train_steps={SWEEP_STEPS}',
      f'--config.eval_every_steps={SWEEP_STEPS}',
      '--config.checkpoint_every_steps=1000',
  ]
  env = dict(env, JAX_NUM_CPU_DEVICES='2')
  if markers is not None:
    return _paused(argv, markers, env)
  return subprocess.Popen(
      argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
  )


def _finished(proc) -> str:
  """The stderr of a sweep once it has exited; killed first if it has not within 300 s."""
  try:
    return proc.communicate(timeout=300)[1]
  except subprocess.TimeoutExpired:
    proc.kill()
    pytest.fail(f'The sweep did not end within 300 s: {proc.communicate()[1][-3000:]}')
  finally:
    if proc.poll() is None:  # the test failed while it ran
      proc.kill()
      proc.communicate()


@pytest.mark.slow
def test_sigterm_stops_every_run_of_a_sweep_side_by_side_and_the_sweep_resumes_them(
    tiny_data_dir, command_env, tmp_path
):
  """Every run of the side-by-side sweep saves the step it was in, and the same command resumes
  each from there (that a resumed run ends bit for bit where an uninterrupted one does is
  checked for a single run above, and in tests/test_train.py)."""
  parent = tmp_path / 'stopped'
  proc = _sweep(parent, tiny_data_dir, command_env, markers=tmp_path / 'markers')
  _signal_when_paused(proc, tmp_path / 'markers', loops=len(SWEEP_RUNS))
  stderr = _finished(proc)
  assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  assert 'Traceback' not in stderr, stderr[-3000:]
  stopped_at, logged = {}, {}
  for run in SWEEP_RUNS:
    checkpointer = checkpointing.Checkpointer(str(parent / run), None, read_only=True)
    (stopped_at[run],) = checkpointer.all_steps()  # each run saved the step it was in
    checkpointer.close()
    assert stopped_at[run] == PAUSE_AT, stopped_at
    logged[run] = [r for r in history.read(str(parent / run)) if r['step'] <= stopped_at[run]]
    assert not os.path.exists(parent / run / history.DONE_FILE)
  saved = ', '.join(f'{run} at step {stopped_at[run]}' for run in SWEEP_RUNS)
  assert f'\nThe sweep stopped on SIGTERM: {saved} saved in {parent}. Run the same' in stderr

  again = _sweep(parent, tiny_data_dir, command_env)
  stderr = _finished(again)
  assert again.returncode == 0, stderr[-3000:]
  for run in SWEEP_RUNS:
    # Resumed, not started over: the records up to the saved step are those written before the
    # signal, wall-clock times and all, which a fresh start would have written anew.
    assert [r for r in history.read(str(parent / run)) if r['step'] <= stopped_at[run]] == (
        logged[run]
    )
    assert inference.load(str(parent / run)).step == SWEEP_STEPS
    assert os.path.exists(parent / run / history.DONE_FILE)
