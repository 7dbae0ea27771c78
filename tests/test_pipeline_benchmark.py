"""The pipeline benchmark: its tf.data reference computes what ours computes, and it runs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from alexnet_jax.data import decode
from alexnet_jax.data import pipeline
from alexnet_jax.tools import pipeline_benchmark as pb
from tests import commands

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
    image = decode.decode_image(record['image'], resize_size)
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


def test_the_command_on_one_core_prints_the_table_of_its_json(tmp_path, compilation_cache):
  """`python -m`, one batch per timing: each pipeline's process is spawned from the command's
  `__main__`. Pinned to one core, so the rows are the two one-core ones."""
  output = tmp_path / 'pipeline.json'
  before = os.sched_getaffinity(0)
  os.sched_setaffinity(0, {min(before)})  # this thread's cores, which the command inherits
  try:
    proc = subprocess.Popen(
        [
            sys.executable,
            '-m',
            'alexnet_jax.tools.pipeline_benchmark',
            '--images=8',
            '--batches=1',
            '--repeats=1',
            f'--output={output}',
        ],
        cwd=commands.REPO,
        env=dict(os.environ, PYTHONPATH=commands.REPO, **compilation_cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
  finally:
    os.sched_setaffinity(0, before)
  try:
    stdout, stderr = proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.communicate()
  assert proc.returncode == 0, stderr[-3000:]
  result = json.loads(output.read_text())
  assert (result['images'], result['batch_size'], result['cores_available']) == (8, 128, 1)
  rows = result['rows']
  assert [(r['name'], r['cores']) for r in rows] == [
      (name, 1) for name, _, _, cores in pb.ROWS if cores == 1
  ]
  kinds = {'ours': 'threads', 'ours, uint8': 'threads, uint8 to the device'}
  for row in rows:
    assert {k: len(v) for k, v in row['rates'].items()} == {
        'ours': 1,
        'tf.data': 1,
        'ours, uint8': 1,
    }
    assert set(row['stages']) >= {'decode_us', 'draws_us', 'batch_assembly_us'}
    for key, how in kinds.items():
      ratio = row[key] / row['tf.data']
      assert row['ratio'][key] == pytest.approx(ratio)
      line = f"| {row['name']} | {how} | 1 | {row[key]:.0f} | {row['tf.data']:.0f} | {ratio:.2f} |"
      assert line in stdout, stdout
    assert f"\n{row['name']}, one core, microseconds per image: pil_decode " in stdout
