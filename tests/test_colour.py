"""The colour-statistics command and its use: numpy on the same pixels, the published scale,
the mean image in the transforms, and bad input."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from alexnet_jax.data import augment
from alexnet_jax.data import colour
from alexnet_jax.data import pipeline
from alexnet_jax.errors import ConfigError
from alexnet_jax import settings
from alexnet_jax.tools import colour_statistics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESIZE, CROP = 76, 67  # tiny_config's sizes; the tiny dataset stores 256x256 images


def pil_resize(image):
  """Section 2's resize by PIL directly (the tiny dataset's images are square): bilinear with
  antialiasing, in one pass."""
  return np.asarray(
      Image.fromarray(image).resize((RESIZE, RESIZE), Image.Resampling.BILINEAR, reducing_gap=None)
  )


def decoded(config, split):
  """The split's images as the input pipeline decodes them (for training: at a reduced JPEG scale
  that still covers resize_size), which is what the statistics must describe."""
  config = settings.from_config(config).data
  pipeline.get_info(config)
  return pipeline.decoding_source(config, split)


def resized_train_images(config, indices=None):
  source = decoded(config, 'train')
  indices = range(len(source)) if indices is None else indices
  return np.stack([pil_resize(source[int(i)]['image']) for i in indices])


@pytest.fixture(scope='module')
def stats_file(tiny_config, tmp_path_factory):
  stats = colour_statistics.compute_statistics(settings.from_config(tiny_config()).data, threads=2)
  path = str(tmp_path_factory.mktemp('stats') / 'tiny_stats.npz')
  colour_statistics.save(stats, path)
  return path, stats


def test_statistics_equal_numpy_on_the_same_resized_images(tiny_data_dir, stats_file, tiny_config):
  _, stats = stats_file
  images = resized_train_images(tiny_config())
  assert int(stats['num_images']) == len(images) == 320
  mean_image = np.zeros((RESIZE, RESIZE, 3))
  for image in images:  # the naive mean image
    mean_image += image
  mean_image /= len(images)
  np.testing.assert_allclose(stats['mean_image'], mean_image, rtol=1e-6)
  pixels = images.reshape(-1, 3).astype(np.float64)
  np.testing.assert_allclose(stats['mean_rgb'], pixels.mean(0), rtol=1e-12)
  cov = np.cov(pixels, rowvar=False)
  np.testing.assert_allclose(stats['pixel_covariance'], cov, rtol=1e-10)
  np.testing.assert_allclose(stats['std_rgb'], pixels.std(0, ddof=1), rtol=1e-10)
  # Stored eigenvalues: 255 x those of the covariance of pixels / 255, largest first.
  eigval, eigvec = np.linalg.eigh(np.cov(pixels / 255, rowvar=False))
  np.testing.assert_allclose(stats['pca_eigval'], 255 * eigval[::-1], rtol=1e-9)
  for i in range(3):  # eigenvectors as columns, up to sign
    got, v = stats['pca_eigvec'][:, i], eigvec[:, 2 - i]
    np.testing.assert_allclose(got, np.sign(v @ got) * v, atol=1e-8)
  assert str(stats['dataset']) == 'synthetic_shapes/tiny' and int(stats['resize_size']) == RESIZE


def test_max_images_reads_an_even_subsample(tiny_data_dir, tiny_config):
  stats = colour_statistics.compute_statistics(
      settings.from_config(tiny_config()).data, max_images=7, threads=1
  )
  chosen = [0, 45, 91, 137, 182, 228, 274]  # floor(k * 320 / 7)
  np.testing.assert_allclose(
      stats['mean_image'], resized_train_images(tiny_config(), chosen).mean(0), rtol=1e-6
  )
  assert int(stats['num_images']) == 7


def test_eigenvalues_are_on_the_scale_of_the_published_imagenet_ones():
  # Six pixels m +- a_i v_i (0..1 units) have sample covariance sum_i (2 a_i^2 / 5) v_i v_i^T: with
  # a_i = sqrt(5 l_i / 2) its eigenvalues are the published l = (0.2175, 0.0188, 0.0045), so the
  # command must store exactly IMAGENET_PCA_EIGVAL = 255 * l for these pixels given in 0..255.
  published = np.array([0.2175, 0.0188, 0.0045])
  u, _, vt = np.linalg.svd(np.asarray(augment.IMAGENET_PCA_EIGVEC))
  vectors = u @ vt  # the published eigenvectors, made exactly orthonormal
  moments = colour.ColourMoments(1)
  for i in range(3):
    for sign in (1, -1):
      pixel = 0.5 + sign * np.sqrt(5 * published[i] / 2) * vectors[:, i]
      moments.add(255 * pixel.reshape(1, 1, 3))
  stats = moments.result()
  np.testing.assert_allclose(stats['pca_eigval'], augment.IMAGENET_PCA_EIGVAL, rtol=1e-9)
  for i in range(3):
    np.testing.assert_allclose(np.abs(stats['pca_eigvec'][:, i] @ vectors[:, i]), 1, atol=1e-9)
  # ...which are the covariance's eigenvalues in 0..255 units divided by 255.
  np.testing.assert_allclose(
      stats['pca_eigval'], np.linalg.eigvalsh(stats['pixel_covariance'])[::-1] / 255, rtol=1e-9
  )


def mean_image_config(config, path, **fields):
  config.augment.mean = 'image'
  config.augment.stats_file = path
  for name, value in fields.items():
    config[name] = value
  return settings.from_config(config).data


def test_mean_image_is_cut_with_each_crop_window(tiny_data_dir, stats_file, tiny_config):
  path, stats = stats_file
  mean, std = stats['mean_image'], np.asarray(tiny_config().augment.std_rgb)
  image = pil_resize(decoded(tiny_config(), 'validation')[0]['image']).astype(np.float32)

  def window(top, left):
    return (
        image[top : top + CROP, left : left + CROP] - mean[top : top + CROP, left : left + CROP]
    ) / std

  # The centre crop: (76 - 67) // 2 = 4.
  batch = next(pipeline.eval_batches(mean_image_config(tiny_config(), path)))
  np.testing.assert_allclose(batch['image'][0], window(4, 4), rtol=1e-5, atol=1e-5)
  # Ten patches: 0 centre, 1-4 corners, 5-9 their reflections (mean reflected with the image).
  batch = next(pipeline.eval_batches(mean_image_config(tiny_config(), path, eval_crops=10)))
  assert batch['image'].shape == (64, 10, CROP, CROP, 3)
  far = RESIZE - CROP
  for k, (top, left) in enumerate([(4, 4), (0, 0), (0, far), (far, 0), (far, far)]):
    np.testing.assert_allclose(batch['image'][0, k], window(top, left), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        batch['image'][0, k + 5], window(top, left)[:, ::-1], rtol=1e-5, atol=1e-5
    )

  # Training gets the same mean image and the file's PCA; augment.train_transform cuts the mean
  # image with each random window (tests/test_augment.py).
  transform = pipeline.TrainTransform(mean_image_config(tiny_config(), path))
  np.testing.assert_array_equal(transform.kwargs['mean'], mean)
  np.testing.assert_array_equal(transform.kwargs['eigval'], stats['pca_eigval'].astype(np.float32))
  np.testing.assert_array_equal(transform.kwargs['eigvec'], stats['pca_eigvec'].astype(np.float32))


def test_stats_file_replaces_the_per_channel_constants(tiny_data_dir, stats_file, tiny_config):
  path, stats = stats_file
  config = tiny_config()
  config.augment.stats_file = path
  aug = settings.from_config(config).data.augment  # the file, read where a run reads it
  mean, eigval, eigvec = aug.mean, aug.eigval, aug.eigvec
  np.testing.assert_array_equal(mean, stats['mean_rgb'].astype(np.float32))
  np.testing.assert_array_equal(eigval, stats['pca_eigval'].astype(np.float32))
  np.testing.assert_array_equal(eigvec, stats['pca_eigvec'].astype(np.float32))


@pytest.mark.parametrize(
    'fields,phrase',
    [
        (dict(mean='image'), 'python -m alexnet_jax.tools.colour_statistics'),
        (dict(stats_file='/no/such/stats.npz'), 'does not exist. Compute it once with'),
        (dict(mean='median'), "must be 'rgb'"),
    ],
)
def test_bad_colour_statistics_fields_are_explained(tiny_data_dir, fields, phrase, tiny_config):
  config = tiny_config()
  config.augment.update(fields)
  with pytest.raises(ConfigError, match=phrase):
    settings.from_config(config)


def test_stats_file_of_another_resize_size_is_refused(tiny_data_dir, stats_file, tiny_config):
  with pytest.raises(ConfigError, match='computed at resize_size=76.*--config.resize_size=76'):
    mean_image_config(tiny_config(), stats_file[0], resize_size=80)
  with pytest.raises(ConfigError, match='eval_crops=5 must be 1'):
    mean_image_config(tiny_config(), stats_file[0], eval_crops=5)


def test_command_line(tiny_data_dir, tmp_path):
  output = tmp_path / 'stats'  # no .npz suffix: written to exactly this name
  args = [
      sys.executable,
      '-m',
      'alexnet_jax.tools.colour_statistics',
      '--config=configs/quickstart.py:tiny',
      f'--config.data_dir={tiny_data_dir}',
      '--max_images=10',
  ]
  env = dict(os.environ, PYTHONPATH=REPO)
  out = subprocess.run(
      args + [f'--output={output}'], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'--config.augment.mean=image --config.augment.stats_file={output}' in out.stdout
  with np.load(output) as data:
    assert int(data['num_images']) == 10 and data['mean_image'].shape == (76, 76, 3)
    assert str(data['split']) == 'train'
  bad = subprocess.run(
      args + ['--output=/no/such/dir/stats.npz'],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert bad.returncode == 2 and 'Traceback' not in bad.stderr, bad.stderr[-3000:]
  assert 'Pass a path in a writable directory' in bad.stderr


@pytest.mark.slow
def test_a_run_carries_its_statistics_when_the_file_moves(stats_file, tiny_config, tmp_path):
  """Trained with the mean image of a statistics file that is then moved away: the run still
  loads with the file's statistics bit for bit, resumes, and is fine-tuned from (init_from)."""
  from alexnet_jax.trained import inference  # pylint: disable=g-import-not-at-top
  from alexnet_jax import train  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  path = str(tmp_path / 'stats.npz')
  colour_statistics.save(stats_file[1], path)

  def config(steps):
    c = tiny_config()
    c.augment.mean, c.augment.stats_file = 'image', path
    c.num_train_steps = steps
    c.checkpoint_every_steps = c.eval_every_steps = c.log_every_steps = 2
    return c

  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config(2), workdir, jax.devices()[:1])
  before = inference.load(workdir)
  os.rename(path, path + '.moved')
  with pytest.raises(ConfigError, match='does not exist'):  # the file is what it was read from
    settings.from_config(config(2))

  after = inference.load(workdir)  # failed before checkpoints carried the statistics
  for field in ('mean', 'eigval', 'eigvec'):
    want = getattr(before.run.data.augment, field)
    np.testing.assert_array_equal(getattr(after.run.data.augment, field), want)
  np.testing.assert_array_equal(after.run.data.augment.mean, stats_file[1]['mean_image'])

  state, _ = train.train_and_evaluate(config(4), workdir, jax.devices()[:1])  # resumes
  assert int(state.step) == 4

  tuned = config(2)
  tuned.init_from = workdir
  tuned_dir = str(tmp_path / 'tuned')
  train.train_and_evaluate(tuned, tuned_dir, jax.devices()[:1])
  np.testing.assert_array_equal(
      inference.load(tuned_dir).run.data.augment.mean, stats_file[1]['mean_image']
  )
