"""Shared fixtures: the built-in dataset's `tiny` config, prepared once per test session.

The test process simulates 8 CPU devices (set before JAX starts), so sharding tests can build
meshes; single-device tests pass `ONE_DEVICE` explicitly.
"""

import jax

jax.config.update('jax_num_cpu_devices', 8)

import pytest  # noqa: E402

from alexnet_jax import datasets  # noqa: E402

ONE_DEVICE = jax.devices()[:1]


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  datasets.ensure_prepared('synthetic_shapes/tiny', data_dir)
  return data_dir


def tiny_config(data_dir):
  """The quickstart's recipe, shrunk: tiny dataset, narrow model, small images, a few steps."""
  from configs import quickstart
  c = quickstart.get_config()
  c.dataset = 'synthetic_shapes/tiny'
  c.data_dir = data_dir
  c.image_size = 67
  c.resize_size = 76
  c.model.width = 0.25
  c.batch_size = 16
  c.eval_batch_size = 64
  c.num_train_steps = 6
  c.log_every_steps = 3
  c.eval_every_steps = 3
  c.checkpoint_every_steps = 3
  c.optim.plateau_patience = 1
  return c
