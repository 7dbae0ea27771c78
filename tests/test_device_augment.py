"""The device half of the augmentation against the host path: the same draws, the same float32."""

import jax
import numpy as np
import pytest

from alexnet_jax.data import device_augment
from alexnet_jax.data import pipeline
from alexnet_jax import settings
from alexnet_jax import train

SIZE, RESIZE = 40, 48


def _data(mean, inv_std=None, pca_std=0.5, resize=RESIZE) -> pipeline.DataConfig:
  aug = pipeline.AugmentConfig(pca_std=pca_std, mean=np.asarray(mean, np.float32), inv_std=inv_std)
  return pipeline.DataConfig(
      dataset='none', image_size=SIZE, resize_size=resize, batch_size=8, augment=aug
  )


def _elements(data: pipeline.DataConfig, n: int = 8):
  """Drawn examples of random square images at `resize_size` and larger (resized on the host)."""
  transform = pipeline.TrainTransform(data)
  rng = np.random.default_rng(7)
  elements = []
  for i in range(n):
    side = data.resize_size + 16 * (i % 2)
    image = rng.integers(0, 256, (side, side, 3), np.uint8)
    elements.append(transform.random_map({'image': image, 'label': i}, np.random.default_rng(i)))
  return transform, elements


MEANS = {
    'rgb': (123.68, 116.779, 103.939),
    'mean image (resize-sized)': np.random.default_rng(1).uniform(0, 255, (RESIZE, RESIZE, 3)),
    'mean image (crop-sized)': np.random.default_rng(2).uniform(0, 255, (SIZE, SIZE, 3)),
}


@pytest.mark.parametrize('mean', list(MEANS))
@pytest.mark.parametrize('std', [None, (58.395, 57.12, 57.375)])
def test_device_path_equals_the_host_path_bit_for_bit(mean, std):
  inv_std = None if std is None else 1.0 / np.asarray(std, np.float32)
  data = _data(MEANS[mean], inv_std)
  transform, elements = _elements(data)
  host = pipeline.TrainBatch(transform)(elements)
  sent = pipeline.TrainBatch(transform, device_augment=True)(elements)

  assert host['image'].dtype == np.float32 and sent['image'].dtype == np.uint8
  assert sent['image'].nbytes * 4 == host['image'].nbytes
  flips = sent['flip']
  assert 0 < flips.sum() < len(flips)  # both branches are exercised
  assert np.abs(sent['shift'] - sent['shift'][0]).max() > 0  # PCA shifts differ per example
  finish = jax.jit(device_augment.for_data(data))
  np.testing.assert_array_equal(np.asarray(finish(sent)), host['image'])
  np.testing.assert_array_equal(sent['label'], host['label'])


def test_a_mean_image_at_the_crop_size_when_resize_equals_it_is_reflected_with_the_crop():
  # resize_size == image_size: the mean image is "resize-sized" and must flip with the image.
  data = _data(np.random.default_rng(3).uniform(0, 255, (SIZE, SIZE, 3)), resize=SIZE)
  transform, elements = _elements(data)
  host = pipeline.TrainBatch(transform)(elements)
  sent = pipeline.TrainBatch(transform, device_augment=True)(elements)
  assert 0 < sent['flip'].sum() < len(sent['flip'])
  finish = device_augment.for_data(data)
  assert finish.cut_with_crop
  np.testing.assert_array_equal(np.asarray(jax.jit(finish)(sent)), host['image'])


def test_the_uint8_batch_is_the_unreflected_crop_and_a_naive_finish_matches():
  """An independent reference: numpy in float64, written out, against the device's float32."""
  data = _data(MEANS['rgb'], 1.0 / np.asarray((58.0, 57.0, 57.5), np.float32))
  transform, elements = _elements(data)
  sent = pipeline.TrainBatch(transform, device_augment=True)(elements)
  got = np.asarray(jax.jit(device_augment.for_data(data))(sent))
  for i, e in enumerate(elements):
    top, left, flipped = e['window']
    crop = e['image'][top : top + SIZE, left : left + SIZE]
    np.testing.assert_array_equal(sent['image'][i], crop)
    assert tuple(sent['window'][i]) == (top, left) and sent['flip'][i] == flipped
    want = crop[:, ::-1] if flipped else crop
    want = (want + e['offset'].astype(np.float64) - np.asarray(MEANS['rgb'])) / (58.0, 57.0, 57.5)
    np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-4)


def test_a_host_made_float_batch_passes_through():
  finish = device_augment.DeviceAugment()
  images = np.ones((2, 4, 4, 3), np.float32)
  assert finish({'image': images}) is images


@pytest.mark.slow
def test_training_gives_the_same_parameters_either_way(tiny_data_dir, tiny_config, tmp_path):
  finals = {}
  for on_device in (True, False):
    config = tiny_config()
    config.num_train_steps = 3
    config.eval_every_steps = 3
    config.final_eval_crops = 1
    config.device_augment = on_device
    run = settings.from_config(config)
    assert run.data.device_augment is on_device
    state, metrics = train.train_and_evaluate(
        run, str(tmp_path / str(on_device)), jax.devices()[:1]
    )
    finals[on_device] = (jax.tree.map(np.asarray, state.params), metrics)
  jax.tree.map(np.testing.assert_array_equal, finals[True][0], finals[False][0])
  assert finals[True][1] == finals[False][1]


@pytest.mark.slow
@pytest.mark.parametrize('strategy', ['data', 'towers'])
def test_a_mean_image_trains_the_same_either_way_on_two_devices(tiny_config, tmp_path, strategy):
  """Section 2's mean image, cut with each crop on the devices of a mesh: the batch split over
  them (`data`) or each tower on its own (`towers`, inside shard_map). A gather of the mean image
  by batch-split windows once failed to trace under the mesh's explicit axes."""
  path = str(tmp_path / 'stats.npz')
  rng = np.random.default_rng(0)
  np.savez(
      path,
      mean_image=rng.uniform(0, 255, (76, 76, 3)).astype(np.float32),
      mean_rgb=np.full(3, 120.0),
      pca_eigval=np.asarray((0.2, 0.02, 0.005)),
      pca_eigvec=np.eye(3),
      resize_size=np.int64(76),
  )
  finals = {}
  for on_device in (True, False):
    config = tiny_config()
    config.augment.mean, config.augment.stats_file = 'image', path
    config.num_train_steps = config.eval_every_steps = 2
    config.final_eval_crops = 1
    config.strategy = strategy
    config.device_augment = on_device
    state, metrics = train.train_and_evaluate(
        config, str(tmp_path / str(on_device)), jax.devices()[:2]
    )
    finals[on_device] = (jax.tree.map(np.asarray, state.params), metrics)
  jax.tree.map(np.testing.assert_array_equal, finals[True][0], finals[False][0])
  assert finals[True][1] == finals[False][1]
