"""Evaluating, predicting and extracting features from trained workdirs, against the trainer's own
evaluation, naive loops over the ten patches and the distances, PNGs written from the dataset,
and the commands run end to end."""

import dataclasses
import json
import os
import subprocess
import sys

from flax import nnx
import jax
import numpy as np
import pandas as pd
from PIL import Image
import pytest

from alexnet_jax.data import augment
from alexnet_jax.data import pipeline
from alexnet_jax.errors import ConfigError
from alexnet_jax.system import files
from alexnet_jax import train
from alexnet_jax.trained import inference
from alexnet_jax.trained import retrieval

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def runs(tiny_config, tmp_path_factory):
  """Two tiny runs (seeds 0 and 1, one device): workdir -> what the trainer's final evaluation
  (`train.evaluate`, the centre crop) reported."""
  parent = tmp_path_factory.mktemp('runs')
  finals = {}
  for seed in (0, 1):
    config = tiny_config()
    config.seed = seed
    workdir = str(parent / f'seed_{seed}')
    _, finals[workdir] = train.train_and_evaluate(config, workdir, jax.devices()[:1])
  return finals


@pytest.fixture(scope='module')
def trained(runs):
  return [inference.load(workdir) for workdir in runs]


@pytest.fixture(scope='module')
def single(trained):
  """Each network's centre-crop evaluation of the validation split."""
  return [inference.evaluate(t) for t in trained]


def ranks(probs, labels):
  """For each example, how many other classes the label does not strictly beat."""
  return np.array(
      [sum(p[c] >= p[y] for c in range(len(p)) if c != y) for p, y in zip(probs, labels)]
  )


def naive_metrics(probs, labels):
  rank = ranks(probs, labels)
  loss = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
  return {'loss': loss, 'top1_error': np.mean(rank >= 1), 'top5_error': np.mean(rank >= 5)}


# The network called straight (no inference code), each jitted once for all the tests: one trace
# per network and image shape.
network_logits = nnx.jit(lambda model, images: model(images))
network_layers = nnx.jit(lambda model, images: model.features(images, train=False))


def network(t):
  return nnx.merge(t.graphdef, t.params, t.batch_stats)


def reference_logits(t, images):
  """The network's logits for a batch of prepared images, straight from the model."""
  logits = network_logits(network(t), np.asarray(images, np.float32))
  return np.asarray(logits, np.float64)


def softmax(logits):
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_evaluate_gives_the_trainers_own_numbers(runs, trained, single):
  finals, evaluation = list(runs.values())[0], single[0]
  examples = len(pipeline.decoding_source(trained[0].run.data, 'validation'))
  assert evaluation.metrics['count'] == examples == 160  # the padded last batch counts whole
  for name in ('loss', 'top1_error', 'top5_error'):
    assert evaluation.metrics[name] == pytest.approx(finals[name], abs=1e-6), name
    assert evaluation.metrics[name] == pytest.approx(
        naive_metrics(evaluation.probs, evaluation.labels)[name], abs=1e-6
    )
  rank = ranks(evaluation.probs, evaluation.labels)
  table = evaluation.per_class
  assert list(table['class']) == list(trained[0].class_names)
  for label, row in table.iterrows():
    mine = evaluation.labels == label
    assert row['count'] == mine.sum()
    assert row['top1_accuracy'] == pytest.approx(np.mean(rank[mine] == 0))
    assert row['top5_accuracy'] == pytest.approx(np.mean(rank[mine] < 5))
  # A TFDS slice is the first rows of the split.
  part = inference.evaluate(trained[0], 'validation[:50]')
  assert part.metrics['count'] == 50
  np.testing.assert_allclose(part.probs, evaluation.probs[:50], rtol=1e-6, atol=1e-7)


def test_ten_patches_average_the_softmax_of_each_patch(trained):
  t = trained[0]
  evaluation = inference.evaluate(t, crops=10)
  data = t.run.data
  size, source = data.image_size, pipeline.decoding_source(data, 'validation')
  for i in range(4):
    image = augment.to_resize_size(source[i]['image'], data.resize_size)  # section 2's resize
    h, w = image.shape[:2]
    corners = [((h - size) // 2, (w - size) // 2), (0, 0), (0, w - size), (h - size, 0)]
    corners.append((h - size, w - size))
    patches = [image[top : top + size, left : left + size] for top, left in corners]
    patches += [patch[:, ::-1] for patch in patches]  # and their reflections
    pixels = (np.stack(patches).astype(np.float32) - data.augment.mean) * data.augment.inv_std
    expected = softmax(reference_logits(t, pixels)).mean(axis=0)
    np.testing.assert_allclose(evaluation.probs[i], expected, rtol=1e-5, atol=1e-7)
  for name, value in naive_metrics(evaluation.probs, evaluation.labels).items():
    assert evaluation.metrics[name] == pytest.approx(value, abs=1e-6)


def test_an_ensemble_averages_its_networks_softmax(trained, single):
  a, b = trained
  itself = inference.evaluate([a, a])
  np.testing.assert_allclose(itself.probs, single[0].probs, rtol=1e-6, atol=1e-8)
  assert itself.metrics == pytest.approx(single[0].metrics, abs=1e-6)
  pair = inference.evaluate([a, b])
  assert not np.allclose(single[0].probs, single[1].probs, atol=1e-3)  # two different networks
  mean = (single[0].probs + single[1].probs) / 2
  np.testing.assert_allclose(pair.probs, mean, rtol=1e-5, atol=1e-8)
  assert pair.metrics == pytest.approx({**naive_metrics(mean, pair.labels), 'count': 160}, abs=1e-6)
  assert pair.workdirs == (a.workdir, b.workdir)


def test_only_runs_of_one_task_form_an_ensemble(trained):
  a = trained[0]
  for data, phrase in [
      ({'dataset': 'synthetic_shapes/hard'}, "dataset ('synthetic_shapes/tiny' and"),
      ({'image_size': 99}, 'image size (67 and 99)'),
  ]:
    other = dataclasses.replace(
        a, run=dataclasses.replace(a.run, data=dataclasses.replace(a.run.data, **data))
    )
    with pytest.raises(ConfigError, match='cannot be one ensemble') as error:
      inference.evaluate([a, other])
    assert phrase in str(error.value)
  renamed = dataclasses.replace(a, class_names=('cat',) + a.class_names[1:])
  with pytest.raises(ConfigError, match='their class names differ'):
    inference.check_ensemble([a, renamed])


def write_images(t, directory):
  """Image files made from validation example 3, and for each a file that must predict the same."""
  os.makedirs(directory)
  pixels = pipeline.decoding_source(t.run.data, 'validation')[3]['image']
  image, path = Image.fromarray(pixels), lambda name: os.path.join(directory, name)
  image.save(path('example.png'))
  alpha = np.linspace(0, 255, pixels.size // 3).reshape(pixels.shape[:2]).astype(np.uint8)
  Image.fromarray(np.dstack([pixels, alpha])).save(path('rgba.png'))  # alpha is dropped
  grey = image.convert('L')
  grey.save(path('grey.png'))
  Image.fromarray(np.repeat(np.asarray(grey)[..., None], 3, axis=-1)).save(path('grey_rgb.png'))
  image.convert('CMYK').save(path('cmyk.jpg'))
  Image.open(path('cmyk.jpg')).convert('RGB').save(path('cmyk_rgb.png'))
  # Smaller than the crop: its shorter side is scaled up to resize_size, the centre square kept.
  small = image.resize((40, 30), Image.Resampling.BILINEAR)
  small.save(path('small.png'))
  r = t.run.data.resize_size
  wide = small.resize((round(40 * r / 30), r), Image.Resampling.BILINEAR, reducing_gap=None)
  left = (wide.width - r) // 2
  wide.crop((left, 0, left + r, r)).save(path('small_resized.png'))
  with open(path('broken.jpg'), 'wb') as f:
    f.write(b'\xff\xd8 not a JPEG after all')
  with open(path('notes.txt'), 'w') as f:  # not an image extension: not listed from the directory
    f.write('hello')
  return pixels


def test_predictions_prepare_image_files_as_the_evaluation_prepares_examples(
    trained, single, tmp_path
):
  t = trained[0]
  write_images(t, str(tmp_path / 'images'))
  predictions = inference.predict(t, [str(tmp_path / 'images')], batch_size=4)  # 2 batches
  assert predictions.skipped == [
      (str(tmp_path / 'images' / 'broken.jpg'), predictions.skipped[0][1])
  ]
  probs = {os.path.basename(f): p for f, p in zip(predictions.files, predictions.probs)}
  assert len(probs) == 8  # all but broken.jpg and notes.txt
  # A PNG of a validation example: the probabilities of the evaluation of that example.
  np.testing.assert_allclose(probs['example.png'], single[0].probs[3], rtol=1e-5, atol=1e-7)
  for name, same in [
      ('rgba.png', 'example.png'),
      ('grey.png', 'grey_rgb.png'),
      ('small.png', 'small_resized.png'),
  ]:
    np.testing.assert_allclose(probs[name], probs[same], rtol=1e-5, atol=1e-7, err_msg=name)
  assert not np.allclose(probs['grey.png'], probs['example.png'], atol=1e-4)
  # CMYK: libjpeg-turbo's conversion to RGB, which rounds within a level of PIL's.
  cmyk = inference.read_image(str(tmp_path / 'images' / 'cmyk.jpg')).astype(int)
  assert np.abs(cmyk - np.asarray(Image.open(tmp_path / 'images' / 'cmyk_rgb.png'))).max() <= 1
  assert 'cmyk.jpg' in probs
  # Ten patches: the ten-patch evaluation of the same example.
  ten = inference.predict(t, [str(tmp_path / 'images' / 'example.png')], crops=10)
  expected = inference.evaluate(t, 'validation[3:4]', crops=10).probs[0]
  np.testing.assert_allclose(ten.probs[0], expected, rtol=1e-5, atol=1e-7)
  top = ten.top5()[0]
  assert [name for name, _ in top] == [t.class_names[c] for c in np.argsort(-expected)[:5]]
  with pytest.raises(ConfigError, match='None of the 2 images could be read'):
    inference.predict(t, [str(tmp_path / 'images' / 'broken.jpg'), str(tmp_path / 'gone.png')])


def test_a_sixteen_bit_png_predicts_as_its_eight_bit_copy(trained, tmp_path):
  """A 16-bit greyscale PNG (PIL mode I;16) is its top 8 bits, not the white PIL's RGB conversion
  clips it to: the probabilities of the same picture saved with 8 bits."""
  t = trained[0]
  pixels = pipeline.decoding_source(t.run.data, 'validation')[3]['image']
  grey = np.asarray(Image.fromarray(pixels).convert('L'))
  low = np.random.default_rng(0).integers(0, 256, grey.shape)  # the bits 8-bit storage drops
  paths = {name: str(tmp_path / f'{name}.png') for name in ('grey16', 'grey8', 'white')}
  Image.fromarray((grey.astype(np.uint16) << 8) | low.astype(np.uint16)).save(paths['grey16'])
  Image.fromarray(grey).save(paths['grey8'])
  Image.fromarray(np.full_like(grey, 255)).save(paths['white'])
  assert Image.open(paths['grey16']).mode == 'I;16'
  probs = inference.predict(t, [paths['grey16'], paths['grey8'], paths['white']]).probs
  np.testing.assert_allclose(probs[0], probs[1], rtol=1e-5, atol=1e-7)
  assert not np.allclose(probs[2], probs[1], atol=1e-4)  # the network tells white from the picture


def test_features_of_any_layer_join_the_towers(trained, single):
  t = trained[0]
  layers = ('conv2', 'pool5', 'fc7', 'fc8')
  out = inference.features(t, layers=layers)
  assert out['conv2'].shape == (160, 7, 7, 64)  # two towers of 32 maps at width 0.25
  assert out['fc7'].shape == (160, 1024) and out['fc8'].shape == (160, 10)
  images = next(pipeline.eval_batches(t.run.data))['image'][:10]
  towers = network_layers(network(t), images)
  assert len(towers['conv2']) == 2
  for name in layers:
    expected = np.concatenate([np.asarray(x) for x in towers[name]], axis=-1)
    np.testing.assert_allclose(out[name][:10], expected, rtol=1e-5, atol=1e-5, err_msg=name)
  np.testing.assert_allclose(softmax(out['fc8'].astype(np.float64)), out['probs'], atol=1e-6)
  np.testing.assert_allclose(out['probs'], single[0].probs, atol=1e-7)
  np.testing.assert_array_equal(out['labels'], single[0].labels)
  # The images shown beside the features: image i, prepared and run by hand, is row i.
  shown = inference.split_images(t, [0, 7])
  transform = pipeline.EvalTransform(t.run.data)
  prepared = [transform.map({pipeline.IMAGE_KEY: x, pipeline.LABEL_KEY: 0})['image'] for x in shown]
  expected = softmax(reference_logits(t, np.stack(prepared)))
  np.testing.assert_allclose(out['probs'][[0, 7]], expected, rtol=1e-5, atol=1e-7)
  with pytest.raises(
      ConfigError, match='no layer .fc9.. Its layers are conv1, norm1, pool1, conv2'
  ):
    inference.features(t, layers='fc9')


def brute_force_nearest(query, database, k, own):
  rows = []
  for q, skip in zip(query, own):
    distances = [np.linalg.norm(q - d) if j != skip else np.inf for j, d in enumerate(database)]
    rows.append(np.argsort(distances, kind='stable')[:k])
  return np.array(rows)


def test_nearest_in_chunks_is_a_brute_force_search():
  rng = np.random.default_rng(0)
  database = rng.normal(size=(50, 3, 4))  # rows of any shape are flattened
  query = np.concatenate([database[[4, 30]], rng.normal(size=(1, 3, 4))])
  own = [4, 30, -1]
  for chunk in (7, 50):
    rows, distances = retrieval.nearest(query, database, 6, exclude=own, chunk_rows=chunk)
    np.testing.assert_array_equal(rows, brute_force_nearest(query, database, 6, own))
    for q, row, distance in zip(query, rows, distances):
      np.testing.assert_allclose(distance, np.linalg.norm(database[row] - q, axis=(1, 2)))
  # k beyond the database: every other row, once.
  rows, _ = retrieval.nearest(database[:2], database[:3], 5, exclude=[0, 1], chunk_rows=2)
  np.testing.assert_array_equal(rows, brute_force_nearest(database[:2], database[:3], 2, [0, 1]))


def test_top5_lists_the_most_probable_classes_in_order():
  probs = np.array([[0.05, 0.4, 0.1, 0.2, 0.15, 0.1]])
  (row,) = inference.top5(probs, list('abcdef'))
  assert [name for name, _ in row] == ['b', 'd', 'e', 'c', 'f']
  assert row[0][1] == pytest.approx(0.4)


def test_bad_input_is_a_config_error_and_writes_nothing(runs, trained, tmp_path):
  workdir = list(runs)[0]
  with pytest.raises(ConfigError, match='holds no checkpoint'):
    inference.load(str(tmp_path))
  with pytest.raises(ConfigError, match=r'no checkpoint of step 5; it has steps \[3, 6\]'):
    inference.load(workdir, step=5)
  with pytest.raises(ConfigError, match=r"no split 'test'; it has \['train', 'validation'\]"):
    inference.evaluate(trained[0], split='test')
  with pytest.raises(ConfigError, match='crops=3 must be 1'):
    inference.evaluate(trained[0], crops=3)
  output = tmp_path / 'new' / 'features'
  with pytest.raises(ConfigError, match='no layer'):
    with files.staged(str(output)) as stage:
      retrieval.write_features(trained[0], stage, layer='fc9')
  assert os.listdir(tmp_path) == []  # not even the parent it made


def command(name, *args, env, cwd):
  return subprocess.run(
      [sys.executable, '-m', f'alexnet_jax.tools.{name}', *args],
      capture_output=True,
      text=True,
      cwd=cwd,
      timeout=300,
      env={**os.environ, **env, 'PYTHONPATH': REPO + os.pathsep + os.environ.get('PYTHONPATH', '')},
  )


def assert_one_paragraph(out, *phrases):
  assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]
  message = out.stderr.strip().split('Error: ', 1)[-1]
  assert '\n' not in message.strip(), message
  for phrase in phrases:
    assert phrase in message, message


@pytest.mark.slow
def test_the_evaluate_command_writes_an_ensembles_metrics(
    runs, trained, tmp_path, compilation_cache
):
  a, b = list(runs)
  out = command('evaluate', f'--workdir={a},{b}', env=compilation_cache, cwd=str(tmp_path))
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'an ensemble of 2' in out.stdout and '160 examples of validation' in out.stdout
  assert 'read only' not in out.stderr and 'read_only' not in out.stderr  # orbax's notices
  expected = inference.evaluate(trained)
  directory = os.path.join(a, 'eval', 'validation_1crop_ensemble')
  with open(os.path.join(directory, 'metrics.json')) as f:
    written = json.load(f)
  assert written['steps'] == [6, 6] and written['crops'] == 1
  for name in ('loss', 'top1_error', 'top5_error', 'count'):
    assert written[name] == pytest.approx(expected.metrics[name], abs=1e-6)
  table = pd.read_csv(os.path.join(directory, 'per_class.csv'))
  pd.testing.assert_frame_equal(table, expected.per_class, check_dtype=False)
  assert sorted(os.listdir(directory)) == ['metrics.json', 'per_class.csv']


def test_the_predict_command_names_what_it_skips(runs, trained, tmp_path, compilation_cache):
  t = trained[0]
  write_images(t, str(tmp_path / 'images'))
  out = command(
      'predict',
      f'--workdir={t.workdir}',
      '--images=images/example.png,images/broken.jpg',
      '--json=out/predictions.json',
      env=compilation_cache,
      cwd=str(tmp_path),
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'Skipped images/broken.jpg: ' in out.stderr
  expected = inference.predict(t, [str(tmp_path / 'images' / 'example.png')]).top5()[0]
  line = [l for l in out.stdout.splitlines() if l.startswith('images/example.png')][0]
  assert line.split()[1] == expected[0][0]
  with open(tmp_path / 'out' / 'predictions.json') as f:
    written = json.load(f)
  (prediction,) = written['predictions']
  assert [c['class'] for c in prediction['top5']] == [name for name, _ in expected]
  np.testing.assert_allclose(
      [c['probability'] for c in prediction['top5']], [p for _, p in expected]
  )
  assert written['skipped'][0]['file'] == 'images/broken.jpg'


@pytest.mark.slow
def test_the_features_command_writes_features_and_their_nearest_rows(
    runs, trained, tmp_path, compilation_cache
):
  t = trained[0]
  output = str(tmp_path / 'fc7')
  args = [f'--workdir={t.workdir}', f'--output={output}']
  out = command('features', *args, '--query=0,5', '--k=3', env=compilation_cache, cwd=str(tmp_path))
  assert out.returncode == 0, out.stderr[-3000:]
  expected = inference.features(t, layers='fc7')
  database = np.load(os.path.join(output, 'features.npy'))
  assert database.dtype == np.float32
  np.testing.assert_allclose(database, expected['fc7'], rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(np.load(os.path.join(output, 'labels.npy')), expected['labels'])
  with open(os.path.join(output, 'nearest.json')) as f:
    found = json.load(f)
  rows = [[n['row'] for n in q['neighbours']] for q in found['queries']]
  np.testing.assert_array_equal(rows, brute_force_nearest(database[[0, 5]], database, 3, [0, 5]))
  names = t.class_names
  assert found['queries'][1]['neighbours'][0]['class'] == names[expected['labels'][rows[1][0]]]
  assert f'5 ({names[expected["labels"][5]]})' in out.stdout

  bad = command(
      'features',
      *args[:1],
      f'--output={tmp_path / "bad"}',
      '--layer=fc9',
      env=compilation_cache,
      cwd=str(tmp_path),
  )
  assert_one_paragraph(bad, "no layer 'fc9'", 'conv1, norm1, pool1, conv2, norm2, pool2, conv3')
  assert not os.path.exists(tmp_path / 'bad')


# --- Image files, earlier steps and ten patches through the commands ---


def prepared(data, path, crops=1):
  """An image file as the paper prepares it, written out here: decoded to RGB, its shorter side
  scaled to resize_size with PIL's antialiased bilinear filter and the central square kept
  (section 2); the centre crop, or the four corners, centre and their reflections (section 4.1);
  the mean subtracted and divided by the std."""
  image, r, size = Image.open(path).convert('RGB'), data.resize_size, data.image_size
  scale = r / min(image.size)
  shape = tuple(max(r, round(side * scale)) for side in image.size)
  pixels = np.asarray(image.resize(shape, Image.Resampling.BILINEAR, reducing_gap=None))
  top, left = (pixels.shape[0] - r) // 2, (pixels.shape[1] - r) // 2
  pixels = pixels[top : top + r, left : left + r]
  corners = [((r - size) // 2,) * 2]
  if crops == 10:
    corners += [(0, 0), (0, r - size), (r - size, 0), (r - size, r - size)]
  patches = [pixels[y : y + size, x : x + size] for y, x in corners]
  if crops == 10:
    patches += [patch[:, ::-1] for patch in patches]
  return (np.stack(patches).astype(np.float32) - data.augment.mean) * data.augment.inv_std


def reference_layers(t, images):
  """Every layer of the network on prepared images, straight from the model, towers joined."""
  out = network_layers(network(t), np.asarray(images, np.float32))
  return {name: np.concatenate([np.asarray(x) for x in towers], -1) for name, towers in out.items()}


def write_examples(t, directory):
  """Validation examples 0-4 as PNGs, example 5's middle 200 rows (a wide image, resized on its
  shorter side) and a broken JPEG; returns the readable files in the order a directory lists
  them."""
  os.makedirs(directory)
  source = pipeline.decoding_source(t.run.data, 'validation')
  paths = [os.path.join(directory, f'example_{i}.png') for i in range(5)]
  for i, path in enumerate(paths):
    Image.fromarray(source[i]['image']).save(path)
  paths.append(os.path.join(directory, 'wide_5.png'))
  Image.fromarray(source[5]['image'][28:228]).save(paths[-1])
  with open(os.path.join(directory, 'broken.jpg'), 'wb') as f:
    f.write(b'\xff\xd8 not a JPEG after all')
  return paths


def test_image_features_are_the_layers_of_the_prepared_images(trained, tmp_path):
  t = trained[0]
  paths = write_examples(t, str(tmp_path / 'images'))
  out = inference.image_features(t, [str(tmp_path / 'images')])  # fc7, as in Figure 4
  assert out['files'] == paths
  assert out['skipped'] == [(str(tmp_path / 'images' / 'broken.jpg'), out['skipped'][0][1])]
  expected = reference_layers(t, np.concatenate([prepared(t.run.data, p) for p in paths]))
  assert out['fc7'].shape == (6, 1024)
  np.testing.assert_allclose(out['fc7'], expected['fc7'], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out['probs'], softmax(expected['fc8'].astype(np.float64)), atol=1e-6)
  # The PNGs of validation examples: the features of those examples read from the split.
  split = inference.features(t, 'validation[:5]')
  np.testing.assert_allclose(out['fc7'][:5], split['fc7'], rtol=1e-6, atol=1e-6)
  with pytest.raises(ConfigError, match='None of the 1 images could be read'):
    inference.image_features(t, [str(tmp_path / 'images' / 'broken.jpg')])


@pytest.mark.slow
def test_the_features_command_finds_the_nearest_images_to_query_images(
    trained, tmp_path, compilation_cache
):
  t = trained[0]
  paths = write_examples(t, str(tmp_path / 'images'))
  os.makedirs(tmp_path / 'query')
  source = pipeline.decoding_source(t.run.data, 'validation')
  Image.fromarray(source[7]['image'][:, ::-1]).save(tmp_path / 'query' / 'mirrored_7.png')
  queries = [paths[2], str(tmp_path / 'query' / 'mirrored_7.png')]
  out = command(
      'features',
      f'--workdir={t.workdir}',
      '--images=images',
      '--query=images/example_2.png,query/mirrored_7.png',
      '--k=3',
      '--output=out/fc7',
      env=compilation_cache,
      cwd=str(tmp_path),
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'Skipped images/broken.jpg: ' in out.stderr
  assert 'fc7 of 6 images, shape (6, 1024): written to out/fc7' in out.stdout
  output = tmp_path / 'out' / 'fc7'
  with open(output / 'files.txt') as f:
    assert f.read().splitlines() == [os.path.relpath(p, tmp_path) for p in paths]
  with open(output / 'info.json') as f:
    info = json.load(f)
  assert info['step'] == 6 and info['shape'] == [6, 1024]
  assert [s['file'] for s in info['skipped']] == ['images/broken.jpg']
  database = np.load(output / 'features.npy')
  reference = reference_layers(t, np.concatenate([prepared(t.run.data, p) for p in paths]))['fc7']
  np.testing.assert_allclose(database, reference, rtol=1e-5, atol=1e-5)
  # The neighbours: every distance from the query's own features, computed here, sorted.
  query = reference_layers(t, np.concatenate([prepared(t.run.data, p) for p in queries]))['fc7']
  distances = np.linalg.norm(reference[None] - query[:, None], axis=-1)
  rows = np.argsort(distances, axis=1, kind='stable')[:, :3]
  assert rows[0, 0] == 2  # a query image of the database finds itself first
  with open(output / 'nearest.json') as f:
    found = json.load(f)
  assert found['k'] == 3 and found['skipped'] == []
  assert [q['file'] for q in found['queries']] == ['images/example_2.png', 'query/mirrored_7.png']
  for q, row, distance in zip(found['queries'], rows, distances):
    assert [n['row'] for n in q['neighbours']] == list(row)
    assert [n['file'] for n in q['neighbours']] == [
        os.path.relpath(paths[j], tmp_path) for j in row
    ]
    np.testing.assert_allclose(
        [n['distance'] for n in q['neighbours']], distance[row], rtol=1e-4, atol=1e-3
    )
  assert 'query/mirrored_7.png' in out.stdout


@pytest.mark.slow
def test_the_evaluate_command_reads_another_split_with_ten_patches_at_an_earlier_step(
    runs, tmp_path, compilation_cache
):
  workdir = list(runs)[0]
  earlier, latest = inference.load(workdir, step=3), inference.load(workdir)
  assert (earlier.step, latest.step) == (3, 6)
  # Compiled here first, the command's forward comes from the shared compilation cache.
  expected = inference.evaluate(earlier, 'train', crops=10)
  out = command(
      'evaluate',
      f'--workdir={workdir}',
      '--split=train',
      '--eval_crops=10',
      '--step=3',
      '--output=out/eval',
      env=compilation_cache,
      cwd=str(tmp_path),
  )
  assert out.returncode == 0, out.stderr[-3000:]
  with open(tmp_path / 'out' / 'eval' / 'metrics.json') as f:
    written = json.load(f)
  examples = len(pipeline.decoding_source(earlier.run.data, 'train'))
  assert written['count'] == examples == 320  # the train split, not the 160 of validation
  assert (written['split'], written['crops'], written['steps']) == ('train', 10, [3])
  for name in ('loss', 'top1_error', 'top5_error'):
    assert written[name] == pytest.approx(expected.metrics[name], abs=1e-6), name
  table = pd.read_csv(tmp_path / 'out' / 'eval' / 'per_class.csv')
  pd.testing.assert_frame_equal(table, expected.per_class, check_dtype=False)
  # The other step and the centre crop give other numbers: each flag made its difference.
  assert inference.evaluate(latest, 'train', crops=10).metrics['loss'] != pytest.approx(
      written['loss'], abs=1e-4
  )
  assert inference.evaluate(earlier, 'train').metrics['loss'] != pytest.approx(
      written['loss'], abs=1e-4
  )
  # What was printed is what was written, and written only to --output.
  assert out.stdout.splitlines() == [
      f'{workdir} (step 3), on 320 examples of train, the ten patches of section 4.1:',
      f'loss {written["loss"]:.6g}  top-1 error {written["top1_error"]:.2%}  '
      f'top-5 error {written["top5_error"]:.2%}',
      'written to out/eval: metrics.json, per_class.csv',
  ]
  assert not os.path.exists(os.path.join(workdir, 'eval', 'train_10crop'))


@pytest.mark.slow
def test_the_predict_command_averages_ten_patches_at_an_earlier_step(
    runs, tmp_path, compilation_cache
):
  workdir = list(runs)[0]
  earlier, latest = inference.load(workdir, step=3), inference.load(workdir)
  paths = write_examples(earlier, str(tmp_path / 'images'))[4:]  # one square, one wide
  data = earlier.run.data
  patches = np.concatenate([prepared(data, p, crops=10) for p in paths])
  ten_patch_probs = lambda t: softmax(reference_logits(t, patches)).reshape(2, 10, -1).mean(1)
  expected = ten_patch_probs(earlier)
  assert not np.allclose(ten_patch_probs(latest), expected, atol=1e-3)  # step 6 predicts otherwise
  assert not np.allclose(softmax(reference_logits(earlier, patches[::10])), expected, atol=1e-3)
  # The library's own ten-patch prediction at step 3; compiled here first, for the command too.
  np.testing.assert_allclose(
      inference.predict(earlier, paths, crops=10).probs, expected, rtol=1e-5, atol=1e-7
  )
  out = command(
      'predict',
      f'--workdir={workdir}',
      '--images=images/example_4.png,images/wide_5.png',
      '--crops=10',
      '--step=3',
      '--json=out/predictions.json',
      env=compilation_cache,
      cwd=str(tmp_path),
  )
  assert out.returncode == 0, out.stderr[-3000:]
  with open(tmp_path / 'out' / 'predictions.json') as f:
    written = json.load(f)
  assert (written['step'], written['crops']) == (3, 10) and len(written['predictions']) == 2
  names = earlier.class_names
  for prediction, name, probs in zip(written['predictions'], ['example_4', 'wide_5'], expected):
    assert prediction['file'] == f'images/{name}.png'
    top5 = np.argsort(-probs, kind='stable')[:5]
    assert [c['class'] for c in prediction['top5']] == [names[c] for c in top5]
    np.testing.assert_allclose(
        [c['probability'] for c in prediction['top5']], probs[top5], rtol=1e-5, atol=1e-7
    )
