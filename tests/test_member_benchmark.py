"""tools/member_benchmark: its three ways of training members together compute the same members."""

import jax
import numpy as np
import pytest

from alexnet_jax import settings
from alexnet_jax.tools import member_benchmark
from tests import commands


def test_every_option_trains_each_member_as_one_after_another_does(tiny_config, one_device):
  config = tiny_config()
  run = settings.from_config(config)
  outputs = {}
  for name, (fn, states, batches) in member_benchmark.options(run, members=2).items():
    outputs[name] = member_benchmark.members_of(name, jax.device_get(fn(states, batches)), 2)
  reference = outputs['one after another']
  for name in ('vmap', 'unrolled'):
    for mine, theirs in zip(outputs[name], reference, strict=True):
      for a, b in zip(jax.tree.leaves(mine.params), jax.tree.leaves(theirs.params), strict=True):
        # vmap's grouped convolutions sum in another order: float32's rounding, not another step.
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # The members are different networks (their own seeds and batches): the check can fail.
  first, second = (jax.tree.leaves(m.params) for m in reference)
  assert not all(np.allclose(a, b) for a, b in zip(first, second))
  seconds = {'one after another': 0.2, 'vmap': 0.4, 'unrolled': 0.1}
  rows = {r['option']: r for r in member_benchmark.table(run, 2, seconds, limit=1e12)}
  assert (
      rows['vmap']['vs_one_after_another'] == 0.5 and rows['unrolled']['member_steps_per_s'] == 20
  )


@pytest.mark.slow
def test_the_command_prints_each_option_against_the_machines_limit(tmp_path, compilation_cache):
  """The command trains the test above's members (its first device only), with the test
  process's 8 simulated CPU devices: the compilation cache's key includes the CPU's device count,
  so its three programs are the ones the test above compiled, not compiled again."""
  output = tmp_path / 'members.json'
  out, result = commands.run_for_json(
      'alexnet_jax.tools.member_benchmark',
      '--config=quickstart:tiny',
      '--members=2',
      '--window=1',
      '--windows=1',
      output=output,
      env=dict(compilation_cache, JAX_NUM_CPU_DEVICES=str(jax.device_count())),
  )
  assert [r['option'] for r in result['rows']] == list(member_benchmark.OPTIONS)
  assert result['limit']['flops_per_s'] > 0
  lines = out.stdout.splitlines()
  assert lines[0].startswith('2 members, batch ') and 'float32 limit' in lines[0]
  for row in result['rows']:  # each printed as its JSON says
    assert f"| {row['option']} | {row['ms_per_step_of_all_members']:.1f} |" in out.stdout
