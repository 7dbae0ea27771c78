"""Two processes on 127.0.0.1 (gloo collectives, 2 CPU devices each) train like one process, a
run they start one process finishes, and no process waits forever for another: one that never
joins, or dies mid-run, ends the run."""

import concurrent.futures
import os
import time

import jax
import numpy as np
import pytest

from alexnet_jax import history
from alexnet_jax import train
from tests import commands
from tests import test_resume_hardware as resume

pytestmark = pytest.mark.slow  # two training processes, then runs in this one

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tiny run (strategy `data`) as two processes tuned as main's are: its parameters gathered,
# then the first steps of another run (argv[6] of them), which one process finishes. The second
# run's programs are the first's (the schedule is the same function for either length:
# test_resume_hardware checks it), found in the compilation cache, as DYING's processes find them.
WORKER = r"""
import sys
from alexnet_jax.system import runtime
runtime.tune_process()
import jax
jax.config.update('jax_num_cpu_devices', 2)
from alexnet_jax import sharding
sharding.initialize_processes(sys.argv[1], 2, int(sys.argv[2]))
import numpy as np
from alexnet_jax.configs import quickstart
from alexnet_jax import train
config = quickstart.get_config('tiny')
config.data_dir = sys.argv[3]
state, _ = train.train_and_evaluate(config, sys.argv[4])
assert jax.process_count() == 2 and jax.device_count() == 4, (jax.process_count(), jax.devices())
if jax.process_index() == 0:
  # Parameters replicated or sharded over both processes: gather them to every host first.
  from jax.experimental import multihost_utils
  params = multihost_utils.process_allgather(state.params, tiled=True)
  flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(params)}
  np.savez(sys.argv[4] + '/params.npz', **flat)
config.num_train_steps = int(sys.argv[6])
train.train_and_evaluate(config, sys.argv[5])
"""


@pytest.fixture(scope='module')
def two_processes(tiny_data_dir, compilation_cache, tmp_path_factory):
  """WORKER's two workdirs: (the whole run, with params.npz; the other's first FIRST steps)."""
  root = tmp_path_factory.mktemp('two_processes')
  whole, first = str(root / 'whole'), str(root / 'first')
  results = commands.two_processes(
      WORKER, tiny_data_dir, whole, first, str(resume.FIRST), env=compilation_cache, timeout=300
  )
  for code, out in results:
    assert code == 0, out[-3000:]
  return whole, first


@pytest.fixture(scope='module')
def one_process(tiny_config, tmp_path_factory):
  """The same run in this process, on 4 devices (the same global batch): (its final parameters
  by name, its workdir)."""
  config = tiny_config()  # dropout, augmentation and plateau state all in play
  assert config.num_train_steps == resume.TOTAL and config.strategy == 'data'
  workdir = str(tmp_path_factory.mktemp('one_process') / 'run')
  one, _ = train.train_and_evaluate(config, workdir, jax.devices()[:4])
  assert int(one.step) == config.num_train_steps
  flat = {
      jax.tree_util.keystr(p): np.asarray(v)
      for p, v in jax.tree_util.tree_leaves_with_path(one.params)
  }
  return flat, workdir


def test_two_processes_match_one_process_with_the_same_global_batch(two_processes, one_process):
  whole, _ = two_processes
  two = np.load(os.path.join(whole, 'params.npz'))
  flat, _ = one_process
  assert sorted(flat) == sorted(two.files)
  for name, value in flat.items():
    np.testing.assert_allclose(two[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
  # Both processes wrote their parts of one checkpoint into the shared directory...
  assert sorted(os.listdir(os.path.join(whole, 'checkpoints'))) == ['3', '6']
  # ...and only process 0 wrote TensorBoard events.
  events = [f for f in os.listdir(whole) if f.startswith('events.out.tfevents')]
  assert len(events) == 1, events


def test_two_processes_start_a_run_and_one_finishes_it(
    two_processes, one_process, tiny_config, caplog
):
  """A run resumed on other hardware (tests/test_resume_hardware.py): started by the two
  processes on 2 devices each, finished by this one on 2."""
  _, workdir = two_processes
  first_records = history.read(workdir)
  log = resume.finish(tiny_config(), workdir, jax.devices()[:2], caplog)
  resume.assert_resumed_at_first(workdir, first_records, log)
  resume.assert_matches(workdir, one_process[1])


def _main_flags(workdir, data_dir, *flags: str) -> list[str]:
  return [
      '--config=configs/quickstart.py:tiny',
      f'--workdir={workdir}',
      f'--config.data_dir={data_dir}',
      *flags,
  ]


def test_a_process_that_never_joins_is_named_and_the_run_ends(tiny_data_dir, tmp_path):
  """Process 0 of two, whose process 1 never comes, and process 1 of two, whose coordinator
  (process 0) never started: each at its own address where nothing listens, both at once."""
  addresses = [commands.free_address()]
  while len(addresses) < 2:  # two ports: process 0 listens at its own, where process 1 must not
    address = commands.free_address()
    if address != addresses[0]:
      addresses.append(address)
  workdir = tmp_path / 'run'

  def run(process_id: int):
    joining = (
        f'--coordinator_address={addresses[process_id]}',
        '--num_processes=2',
        '--initialization_timeout=5',
        f'--process_id={process_id}',
    )
    return commands.run_module(
        'alexnet_jax.main',
        *_main_flags(workdir, tiny_data_dir, *joining),
        timeout=180,  # JAX's own wait, without ours, is 300 s
    )

  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    alone, unanswered = pool.map(run, (0, 1))
  assert alone.returncode == 2, alone.stderr[-3000:]
  assert (
      f'Process 0 waited 5 seconds at the coordinator address {addresses[0]}, and process 1 did '
      'not join' in alone.stderr
  ), alone.stderr[-3000:]
  assert 'Traceback' not in alone.stderr
  assert unanswered.returncode == 2, unanswered.stderr[-3000:]
  assert f'Process 1 could not reach the coordinator at {addresses[1]}' in unanswered.stderr
  assert 'Traceback' not in unanswered.stderr
  assert not os.path.exists(workdir)  # they stopped before touching anything


# commands.MAIN_OF_TWO (ADDRESS PROCESS_ID MARKER FLAGS...), whose process 1 stops after its
# third step, writes MARKER and waits there to be killed: a host lost mid-run at a known step, so
# the run (tiny's, whose programs the two processes above compiled) cannot end before it. Process 0
# meanwhile goes on to the collectives of the step's end, and waits in them.
DYING = r"""
import sys, time
from alexnet_jax import stopping
address, process_id, marker, *flags = sys.argv[1:]
agreed, steps = stopping.StopRequest.agreed, [0]

def stopping_at_3(self, sync_point):  # the loop asks this once per step, after the step
  steps[0] += 1
  if steps[0] == 3:
    open(marker, 'w').close()
    while True:
      time.sleep(1)
  return agreed(self, sync_point)

if process_id == '1':
  stopping.StopRequest.agreed = stopping_at_3
from alexnet_jax import main
sys.argv = ['alexnet_jax.main', f'--coordinator_address={address}', '--num_processes=2',
            f'--process_id={process_id}', *flags]
main.run()
"""


def test_when_a_process_dies_mid_run_the_other_ends_instead_of_waiting(
    tiny_data_dir, compilation_cache, tmp_path
):
  workdir, marker = tmp_path / 'run', tmp_path / 'process_1_at_step_3'
  procs = commands.start_processes(
      DYING,
      str(marker),
      *_main_flags(workdir, tiny_data_dir, '--heartbeat_timeout=10'),
      env=dict(compilation_cache, JAX_NUM_CPU_DEVICES='2'),
      log_dir=str(tmp_path),
  )
  try:
    deadline = time.monotonic() + 300
    while not marker.exists():  # both trained 3 steps
      assert all(p.poll() is None for p in procs), (tmp_path / 'process_0.log').read_text()[-3000:]
      assert time.monotonic() < deadline, 'no step 3 in 300 s'
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


# (flags, phrases): main's refusals of a bad combination of process flags.
REFUSED = [
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
]


@pytest.fixture(scope='module')
def refusals(tmp_path_factory):
  """The command with each REFUSED case's flags, all at once (each ends in seconds): {flags: (the
  finished process, its workdir)}."""
  root = tmp_path_factory.mktemp('refused')

  def run(case):
    i, flags = case
    workdir = root / str(i) / 'run'
    address = () if 'no address' in flags else (f'--coordinator_address={commands.free_address()}',)
    out = commands.run_module(
        'alexnet_jax.main',
        *_main_flags(workdir, root / 'no_data', *address),
        '--initialization_timeout=5',
        *(f for f in flags if f != 'no address'),
        timeout=120,
    )
    return flags, (out, workdir)

  with concurrent.futures.ThreadPoolExecutor(len(REFUSED)) as pool:
    return dict(pool.map(run, enumerate(flags for flags, _ in REFUSED)))


@pytest.mark.parametrize('flags,phrases', REFUSED)
def test_a_bad_combination_of_process_flags_is_one_paragraph(refusals, flags, phrases):
  """Refused before joining anything (no wait at the unanswered address, no data read), in one
  paragraph without a traceback."""
  out, workdir = refusals[flags]
  assert out.returncode == 2, out.stderr[-3000:]
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]
  message = out.stderr.strip().split('Error: ', 1)[-1]
  assert '\n' not in message, message
  for phrase in phrases:
    assert phrase in message, message
  assert not os.path.exists(workdir)
