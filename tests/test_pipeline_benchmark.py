"""The pipeline benchmark: its tf.data reference computes what ours computes, and it runs."""

import os

import numpy as np
import pytest

from alexnet_jax.data import pipeline
from alexnet_jax.tools import pipeline_benchmark as pb

pytestmark = pytest.mark.slow  # TensorFlow's tf.data, and timed pipelines


@pytest.fixture(scope='module')
def records():
  return pb.make_jpegs(3, size=64)


@pytest.mark.parametrize('resize_size,image_size', [(64, 48), (32, 24)])  # 32: both decode at 1/2
def test_tf_data_and_ours_compute_the_same_example_from_the_same_draws(
    records, resize_size, image_size
):
  config = pb.pipeline_config(resize_size, image_size, threads=1, batch_size=3)
  aug = config.augment
  eigval, eigvec = np.asarray(aug.eigval), np.asarray(aug.eigvec)
  draws = [
      (0, 0, False, np.zeros(3)),  # the deterministic case: corner crop, no flip, no noise
      (resize_size - image_size, 3, True, np.array([0.1, -0.2, 0.05])),
      (5, resize_size - image_size, True, np.array([-0.3, 0.0, 0.2])),
  ]
  elements, expected = [], []
  for record, (top, left, flip, alpha) in zip(records, draws, strict=True):
    shift = (eigvec @ (alpha * eigval)).astype(np.float32)  # section 4.1's formula
    image = pipeline.decode_image(record['image'], resize_size)
    assert image.shape == (resize_size, resize_size, 3)
    elements.append(
        {
            'image': image,
            'window': (top, left, flip),
            'offset': shift,
            'label': np.int32(record['label']),
        }
    )
    expected.append(
        np.asarray(
            pb.tf_example(
                record['image'], top, left, flip, alpha.astype(np.float32), config, stored_size=64
            )
        )
    )
  ours = pipeline.TrainBatch(pipeline.TrainTransform(config))(elements)['image']
  # The same libjpeg-turbo decode (integer-accurate DCT, also when scaled), the same arithmetic.
  np.testing.assert_allclose(ours, np.stack(expected), atol=1e-3)


def test_the_benchmark_runs_and_reports_both_pipelines(records):
  before = os.sched_getaffinity(0)
  result = pb.run(
      records * 3, rows=(('tiny', 64, 48, 1),), batches=1, repeats=2, batch_size=4, stored_size=64
  )
  assert os.sched_getaffinity(0) == before  # the pinning is undone
  (row,) = result['rows']
  assert len(row['rates']['ours']) == len(row['rates']['tf.data']) == 2
  assert row['ours'] > 0 and row['tf.data'] > 0
  assert row['ratio']['ours'] == pytest.approx(row['ours'] / row['tf.data'])
  assert set(row['stages']) >= {'decode_us', 'draws_us', 'batch_assembly_us'}
  assert row['ours, uint8'] > 0 and 'uint8_batch_assembly_us' in row['stages']
  assert '| tiny | threads | 1 |' in pb.table(result)
  assert '| tiny | threads, uint8 to the device | 1 |' in pb.table(result)
