"""Two processes on 127.0.0.1 (gloo collectives, 2 CPU devices each) train like one process."""

import os

import jax
import numpy as np
import pytest

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
from alexnet_jax import train
from alexnet_jax.configs import quickstart
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
