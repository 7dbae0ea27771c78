"""host_memory: glibc malloc settings, applied only where they should be, and in effect here."""

import os
import subprocess
import sys

import pytest

from alexnet_jax import host_memory


def recording_mallopt():
  calls = []
  return calls, lambda param, value: calls.append((param, value)) or 1


def test_sets_arena_mmap_and_trim_settings():
  calls, mallopt = recording_mallopt()
  was_applied = host_memory.applied()
  assert host_memory.apply({'JAX_PLATFORMS': 'cpu'}, mallopt)
  assert calls == [(-8, 1), (-4, 0), (-1, -1)]  # mallopt(3): M_ARENA_MAX, M_MMAP_MAX, M_TRIM
  assert host_memory.applied() == was_applied  # a stand-in mallopt changes nothing real


@pytest.mark.parametrize('environ', [{'ALEXNET_JAX_MALLOC': 'glibc'},
                                     {'MALLOC_ARENA_MAX': '4'}, {'MALLOC_TRIM_THRESHOLD_': '0'},
                                     {'GLIBC_TUNABLES': 'glibc.malloc.mmap_max=0'},
                                     {'LD_PRELOAD': '/usr/lib/libjemalloc.so.2'},
                                     {'JAX_PLATFORMS': 'cuda,cpu'}])
def test_leaves_malloc_alone_when_told_otherwise(environ):
  calls, mallopt = recording_mallopt()
  assert not host_memory.apply(environ, mallopt)
  assert calls == []
  assert host_memory.reason_to_skip(environ, accelerator=lambda: False)


def test_accelerator_plugins_keep_glibc_defaults_unless_jax_is_told_to_use_the_cpu():
  assert host_memory.reason_to_skip({}, accelerator=lambda: True)
  assert host_memory.reason_to_skip({'JAX_PLATFORMS': 'cpu'}, accelerator=lambda: True) is None
  assert host_memory.reason_to_skip({}, accelerator=lambda: False) is None


# Run in a fresh process (the settings must precede JAX's threads, and this process's heap
# history would decide what a fresh allocation costs): the page faults of 30 calls of a program
# whose 64 MB result is allocated at each call and freed after it, as XLA:CPU does with a step's
# temporaries. `delete` frees it as soon as the runtime lets go of it (asynchronously: a few
# blocks can be in flight at once).
FAULTS = """
import resource
import alexnet_jax
import jax, jax.numpy as jnp
fn = jax.jit(lambda v: v + 1)
x = jnp.zeros((4096, 4096), jnp.float32)
fn(x).block_until_ready()  # compiled
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
  result = fn(x)
  result.block_until_ready()
  result.delete()
print(alexnet_jax._host_memory.applied(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_in_30_calls(**environ):
  env = {k: v for k, v in os.environ.items()
         if k not in host_memory.USER_VARIABLES + (host_memory.OPT_OUT,)}
  env.update(environ, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', FAULTS], env=env, check=True, capture_output=True,
                       text=True).stdout.split()
  return out[0] == 'True', float(out[1])


def test_freed_buffers_are_handed_out_again_not_faulted_in_afresh():
  """With the settings the heap grows to the few blocks in flight, then reuses them; with
  glibc's defaults (the user opting out) every call maps a fresh block and faults in each of its
  4 KB pages again."""
  if host_memory._mallopt() is None:  # not glibc: apply() must have done nothing
    assert not host_memory.applied()
    return
  block = 64 * 2 ** 20 // 4096
  applied, tuned = _faults_in_30_calls()
  opted_out, default = _faults_in_30_calls(ALEXNET_JAX_MALLOC='glibc')
  assert applied and not opted_out
  assert default > 29 * block, default / block  # the reference: a fresh block at every call
  assert tuned < 10 * block, tuned / block
