"""Shared fixtures: the built-in dataset's `tiny` config, prepared once per test session.

The test process simulates 8 CPU devices (set before JAX starts), so sharding tests can build
meshes; single-device tests pass `ONE_DEVICE` explicitly.
"""

import jax

jax.config.update('jax_num_cpu_devices', 8)

import pytest  # noqa: E402

from alexnet_jax import datasets  # noqa: E402
from tests.tiny import tiny_config  # noqa: E402,F401  (re-exported for the tests)

ONE_DEVICE = jax.devices()[:1]


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  datasets.ensure_prepared('synthetic_shapes/tiny', data_dir)
  return data_dir
