"""The exported network against the network itself.

One tiny run (quickstart:tiny, 6 steps) is exported once; model.jax and the SavedModel each run
crops cut by hand (`augment.to_resize_size`, `augment.center_crop`) at two batch sizes, and must
give what `trained.model()` gives on the evaluation pipeline's own preprocessing of the same
images (`pipeline.EvalTransform`): a second code path for the crop, the mean and the scale.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
import types

from flax import nnx
import jax
import numpy as np
import pytest

from alexnet_jax.data import augment
from alexnet_jax.data import pipeline
from alexnet_jax.errors import ConfigError
from alexnet_jax import settings
from alexnet_jax import steps
from alexnet_jax.tools import export as export_command
from alexnet_jax import train
from alexnet_jax.trained import exporting
from alexnet_jax.trained import inference


@pytest.fixture(scope='module')
def workdir(tiny_config, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(tiny_config(), workdir, jax.devices()[:1])  # checkpoints at 3 and 6
  return workdir


@pytest.fixture(scope='module')
def exported(workdir):
  return exporting.export(workdir)  # both formats, in workdir/export


def crops_and_reference(trained: inference.Trained, raw: list[np.ndarray]):
  """(the float32 0..255 crops a user feeds the export, the network's logits on the pipeline's
  own preprocessing of the same images)."""
  data = trained.run.data
  transform = pipeline.EvalTransform(data)
  preprocessed = np.stack([transform.map({'image': r, 'label': 0})['image'] for r in raw])
  # The network as a notebook runs it, under one jit (called eagerly, it would compile op by op).
  logits = np.asarray(nnx.jit(lambda model, x: model(x))(trained.model(), preprocessed))
  crops = np.stack(
      [
          augment.center_crop(augment.to_resize_size(r, data.resize_size), data.image_size)
          for r in raw
      ]
  )
  return crops.astype(np.float32), logits


@pytest.fixture(scope='module')
def reference(workdir):
  trained = inference.load(workdir)
  data = trained.run.data
  source = pipeline.decoding_source(data, data.eval_split)
  return crops_and_reference(trained, [source[i][pipeline.IMAGE_KEY] for i in range(5)])


def softmax(logits):
  e = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def test_the_jax_export_runs_any_batch_size_like_the_network(exported, reference):
  crops, logits = reference
  with open(os.path.join(exported, 'model.jax'), 'rb') as f:
    program = jax.export.deserialize(f.read())
  weights = dict(np.load(os.path.join(exported, 'weights.npz')))
  assert program.platforms == ('cpu', 'cuda')
  assert str(program.in_avals[-1].shape[0]) == 'batch'
  # Pure StableHLO (LRN and pooling included): the only custom call is jax.export's own check
  # of the batch size, so nothing in the program is tied to one platform's kernels.
  assert set(re.findall(r'custom_call @(\w+)', program.mlir_module())) == {'shape_assertion'}
  for n in (2, 5):
    out = program.call(weights, crops[:n])
    np.testing.assert_allclose(out['logits'], logits[:n], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out['probabilities'], softmax(logits[:n]), rtol=1e-5, atol=1e-6)


def test_the_savedmodel_runs_in_tensorflow_like_the_network(exported, reference):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  crops, logits = reference
  loaded = tf.saved_model.load(os.path.join(exported, 'saved_model'))
  serve = loaded.signatures['serving_default']
  for n in (2, 5):
    out = serve(images=tf.constant(crops[:n]))
    assert sorted(out) == ['logits', 'probabilities']
    np.testing.assert_allclose(out['logits'].numpy(), logits[:n], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out['probabilities'].numpy(), softmax(logits[:n]), atol=1e-5)
  with open(loaded.labels.asset_path.numpy().decode()) as f:
    assert f.read() == open(os.path.join(exported, 'labels.txt')).read()


def test_the_metadata_says_how_to_feed_it_and_where_it_came_from(workdir, exported):
  trained = inference.load(workdir)
  with open(os.path.join(exported, 'metadata.json')) as f:
    meta = json.load(f)
  assert meta['source'] == {'workdir': os.path.abspath(workdir), 'step': 6}
  data = trained.run.data
  assert meta['input']['shape'] == ['batch', data.image_size, data.image_size, 3]
  assert meta['input']['dtype'] == 'float32'
  np.testing.assert_allclose(meta['preprocessing']['mean'], data.augment.mean)
  np.testing.assert_allclose(meta['preprocessing']['inv_std'], data.augment.inv_std)
  assert meta['class_names'] == list(trained.class_names) and len(trained.class_names) == 10
  assert open(os.path.join(exported, 'labels.txt')).read().splitlines() == meta['class_names']
  assert meta['outputs']['probabilities'] == ['batch', 10]
  assert sorted(meta['formats']) == ['jax', 'savedmodel']
  assert not [n for n in os.listdir(workdir) if n.startswith('.export')]  # no staging left


@pytest.mark.slow
def test_the_command_exports_a_chosen_step(workdir, tmp_path, compilation_cache):
  output = tmp_path / 'step3'
  out = subprocess.run(
      [
          sys.executable,
          '-m',
          'alexnet_jax.tools.export',
          f'--workdir={workdir}',
          '--step=3',
          f'--output={output}',
      ],
      capture_output=True,
      text=True,
      timeout=600,
      env={**os.environ, **compilation_cache},
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'Exported step 3 of {workdir} to {output}' in out.stdout
  assert sorted(os.listdir(output)) == [
      'labels.txt',
      'metadata.json',
      'model.jax',
      'saved_model',
      'weights.npz',
  ]
  assert json.load(open(output / 'metadata.json'))['source']['step'] == 3
  # The weights are step 3's, not the latest's.
  stored = np.load(output / 'weights.npz')
  expected = exporting.flat_weights(inference.load(workdir, 3))
  assert sorted(stored) == sorted(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(stored[key], value)
  latest = exporting.flat_weights(inference.load(workdir))
  assert not np.array_equal(latest['params/fc8/kernel'], expected['params/fc8/kernel'])


def command_flags(workdir, output, formats=('jax',), overwrite=False):
  return types.SimpleNamespace(
      workdir=str(workdir),
      step=None,
      output=str(output),
      format=list(formats),
      platforms=['cpu'],
      overwrite=overwrite,
  )


def listing(*directories):
  return {str(d): sorted(os.listdir(d)) for d in directories}


@pytest.mark.parametrize('case', ['no checkpoints', 'existing output', 'unknown format'])
def test_a_bad_request_exits_with_one_paragraph_and_leaves_nothing(case, workdir, tmp_path, capsys):
  run, output = workdir, tmp_path / 'out'
  formats, expected = ('jax',), None
  if case == 'no checkpoints':
    run = tmp_path / 'empty'
    run.mkdir()
    expected = 'holds no checkpoint'
  elif case == 'existing output':
    output.mkdir()
    (output / 'notes.txt').write_text('mine')
    expected = 'already holds files. Pass --overwrite'
  else:
    formats, expected = ('jax', 'onnx'), 'Unknown export format onnx'
  before = listing(tmp_path, workdir)
  with pytest.raises(SystemExit) as exit_info:
    export_command.main(['export'], command_flags(run, output, formats))
  assert exit_info.value.code == 2
  error = capsys.readouterr().err.strip()
  assert error.startswith('Error: ') and expected in error and '\n' not in error, error
  assert listing(tmp_path, workdir) == before
  if case == 'existing output':
    assert (output / 'notes.txt').read_text() == 'mine'


def test_overwrite_replaces_only_an_export_and_a_failure_keeps_the_earlier_one(
    workdir, tmp_path, monkeypatch
):
  output = tmp_path / 'out'
  exporting.export(workdir, str(output), formats=('jax',), platforms=('cpu',))
  first = (output / 'model.jax').read_bytes()

  def broken(*args):
    raise RuntimeError('disk full')

  monkeypatch.setattr(exporting, 'write_savedmodel', broken)
  with pytest.raises(RuntimeError, match='disk full'):
    exporting.export(workdir, str(output), formats=('jax', 'savedmodel'), overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ['out']  # no staging directory left beside it
  assert (output / 'model.jax').read_bytes() == first
  assert json.load(open(output / 'metadata.json'))['formats']['jax']['platforms'] == ['cpu']

  monkeypatch.undo()
  exporting.export(workdir, str(output), formats=('jax',), overwrite=True)
  assert sorted(os.listdir(tmp_path)) == ['out']
  assert json.load(open(output / 'metadata.json'))['formats']['jax']['platforms'] == ['cpu', 'cuda']

  mine = tmp_path / 'mine'
  mine.mkdir()
  (mine / 'notes.txt').write_text('mine')
  with pytest.raises(ConfigError, match='not an earlier export'):
    exporting.export(workdir, str(mine), overwrite=True)
  with pytest.raises(ConfigError, match="the run's workdir"):
    exporting.export(workdir, workdir, overwrite=True)
  assert (mine / 'notes.txt').read_text() == 'mine'


def test_batch_statistics_and_a_mean_image_go_into_the_export(tiny_config):
  """A batch-norm network (its running statistics are weights too) of a run that subtracted
  section 2's mean image: built, not trained, with weights, statistics and mean made up."""
  run = settings.from_config(tiny_config())
  data = run.data
  rng = np.random.default_rng(0)
  model_config = dataclasses.replace(run.model, norm='batchnorm', towers=1)
  # The structure only (no initialisation to compile), filled with made-up values.
  model = nnx.eval_shape(lambda: steps.create_model(model_config, data.image_size, seed=1))
  graphdef, params, stats = nnx.split(model, nnx.Param, ...)
  params = jax.tree.map(
      lambda v: rng.normal(0, 0.05, v.shape).astype(np.float32), nnx.to_pure_dict(params)
  )
  stats = jax.tree.map(
      lambda v: rng.uniform(0.5, 2.0, v.shape).astype(np.float32), nnx.to_pure_dict(stats)
  )
  assert sorted(stats) == ['norm1', 'norm2']
  mean_image = rng.uniform(0, 255, (data.resize_size, data.resize_size, 3)).astype(np.float32)
  data = dataclasses.replace(
      data, augment=dataclasses.replace(data.augment, mean=mean_image, inv_std=None)
  )
  built = inference.Trained(
      graphdef, params, stats, dataclasses.replace(run, model=model_config, data=data), 0
  )
  raw = [rng.integers(0, 256, (90, 100, 3), dtype=np.uint8) for _ in range(3)]
  crops, logits = crops_and_reference(built, raw)
  program = jax.export.deserialize(exporting.export_jax(built, ('cpu',)).serialize())
  out = program.call(exporting.flat_weights(built), crops)
  assert 'batch_stats/norm1/var' in exporting.flat_weights(built)
  np.testing.assert_allclose(out['logits'], logits, rtol=1e-5, atol=1e-5)
