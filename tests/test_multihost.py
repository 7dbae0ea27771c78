"""Two processes on 127.0.0.1 (gloo collectives, 2 CPU devices each) train like one process, and
no process waits forever for another: one that never joins, or dies mid-run, ends the run."""

import os
import time

import jax
import numpy as np
import pytest

from alexnet_jax import history
from alexnet_jax import train
from tests import commands

pytestmark = pytest.mark.slow  # two training processes, then a third run in this one

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = r"""
import sys
import jax
jax.config.update('jax_num_cpu_devices', 2)
from alexnet_jax import sharding
sharding.initialize_processes(sys.argv[1], 2, int(sys.argv[2]))
import numpy as np
from alexnet_jax.configs import quickstart
from alexnet_jax import train
config = quickstart.get_config('tiny')
config.data_dir = sys.argv[3]
config.strategy = sys.argv[5]
state, _ = train.train_and_evaluate(config, sys.argv[4])
assert jax.process_count() == 2 and jax.device_count() == 4, (jax.process_count(), jax.devices())
if jax.process_index() == 0:
  # Parameters replicated or sharded over both processes: gather them to every host first.
  from jax.experimental import multihost_utils
  params = multihost_utils.process_allgather(state.params, tiled=True)
  flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(params)}
  np.savez(sys.argv[4] + '/params.npz', **flat)
"""


def run_two_processes(data_dir, workdir, strategy):
  results = commands.two_processes(WORKER, data_dir, workdir, strategy, timeout=300)
  for code, out in results:
    assert code == 0, out[-3000:]
  return np.load(os.path.join(workdir, 'params.npz'))


def test_two_processes_match_one_process_with_the_same_global_batch(
    tiny_data_dir, tmp_path, tiny_config
):
  two = run_two_processes(tiny_data_dir, str(tmp_path / 'two'), 'data')
  config = tiny_config()  # dropout, augmentation and plateau state all in play
  one, _ = train.train_and_evaluate(config, str(tmp_path / 'one'), jax.devices()[:4])
  assert int(one.step) == config.num_train_steps
  flat = {
      jax.tree_util.keystr(p): np.asarray(v)
      for p, v in jax.tree_util.tree_leaves_with_path(one.params)
  }
  assert sorted(flat) == sorted(two.files)
  for name, value in flat.items():
    np.testing.assert_allclose(two[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
  # Both processes wrote their parts of one checkpoint into the shared directory...
  assert sorted(os.listdir(tmp_path / 'two' / 'checkpoints')) == ['3', '6']
  # ...and only process 0 wrote TensorBoard events.
  events = [f for f in os.listdir(tmp_path / 'two') if f.startswith('events.out.tfevents')]
  assert len(events) == 1, events


def _main_flags(workdir, data_dir, *flags: str) -> list[str]:
  return [
      '--config=configs/quickstart.py:tiny',
      f'--workdir={workdir}',
      f'--config.data_dir={data_dir}',
      *flags,
  ]


def test_a_process_that_never_joins_is_named_and_the_run_ends(tiny_data_dir, tmp_path):
  address = commands.free_address()  # nothing listens there, and no other process comes
  workdir = tmp_path / 'run'
  joining = (f'--coordinator_address={address}', '--num_processes=2', '--initialization_timeout=5')
  alone = commands.run_module(
      'alexnet_jax.main',
      *_main_flags(workdir, tiny_data_dir, *joining, '--process_id=0'),
      timeout=180,  # JAX's own wait, without ours, is 300 s
  )
  assert alone.returncode == 2, alone.stderr[-3000:]
  assert (
      f'Process 0 waited 5 seconds at the coordinator address {address}, and process 1 did not join'
      in alone.stderr
  ), alone.stderr[-3000:]
  assert 'Traceback' not in alone.stderr
  assert not os.path.exists(workdir)  # it stopped before touching anything

  # Process 1, whose coordinator (process 0) never started.
  unanswered = commands.run_module(
      'alexnet_jax.main',
      *_main_flags(workdir, tiny_data_dir, *joining, '--process_id=1'),
      timeout=180,
  )
  assert unanswered.returncode == 2, unanswered.stderr[-3000:]
  assert f'Process 1 could not reach the coordinator at {address}' in unanswered.stderr
  assert 'Traceback' not in unanswered.stderr


def test_when_a_process_dies_mid_run_the_other_ends_instead_of_waiting(
    tiny_data_dir, compilation_cache, tmp_path
):
  workdir = tmp_path / 'run'
  procs = commands.start_processes(
      commands.MAIN_OF_TWO,
      *_main_flags(
          workdir,
          tiny_data_dir,
          # A run that would go on for an hour, never evaluating or saving.
          '--config.num_train_steps=100000',
          '--config.eval_every_steps=100000',
          '--config.checkpoint_every_steps=100000',
          '--heartbeat_timeout=10',
      ),
      env=dict(compilation_cache, JAX_NUM_CPU_DEVICES='2'),
      log_dir=str(tmp_path),
  )
  try:
    deadline = time.monotonic() + 300
    while not any(r['step'] >= 3 for r in history.read(str(workdir))):  # both are training
      assert all(p.poll() is None for p in procs), (tmp_path / 'process_0.log').read_text()[-3000:]
      assert time.monotonic() < deadline, 'no step logged in 300 s'
      time.sleep(0.1)
    procs[1].kill()  # SIGKILL: no handler runs, no goodbye, as when a host is lost
    # Process 0 waits in the step's collectives for a partner that is gone; JAX's coordination
    # service declares it dead after --heartbeat_timeout (10 s) and aborts process 0. 90 s is
    # nine times that, and under the 100 s default it would not have sufficed.
    procs[0].wait(timeout=90)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  log = (tmp_path / 'process_0.log').read_text()
  assert procs[0].returncode != 0, log[-3000:]
  assert 'stopped sending heartbeats' in log, log[-3000:]  # JAX's words for what happened


@pytest.mark.parametrize(
    'flags,phrases',
    [
        # Was JAX's bare ValueError (a traceback, status 1) before sharding.initialize_processes
        # checked it.
        (('--num_processes=2', '--process_id=2'), ['--process_id=2', '0 to num_processes - 1']),
        (('--num_processes=2',), ['--coordinator_address needs', '--process_id']),
        (
            ('--num_processes=2', '--process_id=0', '--heartbeat_timeout=0'),
            ['--heartbeat_timeout=0', 'positive whole number of seconds'],
        ),
        # Without an address outside a cluster, each process would train alone into one workdir.
        (
            ('--num_processes=2', '--process_id=1', 'no address'),
            ['without --coordinator_address', 'same --coordinator_address'],
        ),
    ],
)
def test_a_bad_combination_of_process_flags_is_one_paragraph(tmp_path, flags, phrases):
  """Refused before joining anything (no wait at the unanswered address, no data read), in one
  paragraph without a traceback."""
  workdir = tmp_path / 'run'
  address = () if 'no address' in flags else (f'--coordinator_address={commands.free_address()}',)
  out = commands.run_module(
      'alexnet_jax.main',
      *_main_flags(workdir, tmp_path / 'no_data', *address),
      '--initialization_timeout=5',
      *(f for f in flags if f != 'no address'),
      timeout=120,
  )
  assert out.returncode == 2, out.stderr[-3000:]
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]
  message = out.stderr.strip().split('Error: ', 1)[-1]
  assert '\n' not in message, message
  for phrase in phrases:
    assert phrase in message, message
  assert not os.path.exists(workdir)
