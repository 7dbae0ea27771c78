r"""Colour statistics of a training set: the mean image (section 2) and the RGB PCA (section 4.1).

    python -m alexnet_jax.statistics --config=configs/alexnet.py --output=imagenet_stats.npz

then train with `--config.augment.stats_file=imagenet_stats.npz`, adding
`--config.augment.mean=image` for the paper's mean image. Any config field can be overridden as in
`main` (`--config.data_dir=...`); `--max_images=N` reads N images spread evenly over the split.

Every image of `config.train_split` goes through the resize the training transform applies
(shorter side to `config.resize_size`, central square: `augment._ensure_size`), and one streaming
pass accumulates, in float64, the sum image, the pixel sum and the 3x3 sum of pixel outer
products. The pixel values are integers, so every per-image sum is an exact float64 integer and
the totals stay exact up to 2^53 (ImageNet at 256: at most ~2e15): the result does not depend on
the order, or the number of threads, in which images arrive. The file holds:

- `mean_image`: (resize_size, resize_size, 3) float32, 0..255: section 2's "mean activity";
- `mean_rgb`: (3,), 0..255, the per-channel mean of all pixels (= the mean image's mean);
- `pixel_covariance`: (3, 3), the covariance of 0..255 RGB pixels (normalised by N - 1);
- `pca_eigval`: (3,), descending, ON THE SCALE OF `augment.IMAGENET_PCA_EIGVAL`: the eigenvalues
  of the covariance of pixels / 255, times 255 (= eigenvalues of `pixel_covariance` / 255; see
  `augment.eigval_on_imagenet_scale`), which is what `augment.pca_color_noise` expects;
- `pca_eigvec`: (3, 3), the matching unit eigenvectors as COLUMNS (rows R, G, B);
- `std_rgb`: (3,), per-channel standard deviation of the pixels (for `augment.std_rgb`);
- `num_images`, `resize_size`, `dataset`, `split`.

`load_colour_statistics(config)` is what the input pipeline calls to turn the config (and the
file, when `augment.stats_file` is set) into the mean, eigenvalues and eigenvectors it uses.
"""

import os
import sys
import time
from typing import Any

from absl import logging
import numpy as np

from alexnet_jax import augment
from alexnet_jax.errors import ConfigError

COMMAND = 'python -m alexnet_jax.statistics --config=CONFIG --output=FILE.npz'
_KEYS = ('mean_image', 'mean_rgb', 'pca_eigval', 'pca_eigvec', 'resize_size')


# --- Computing ---


class ColourMoments:
  """Streaming float64 sums over square images of one size; `result()` turns them into stats."""

  def __init__(self, size: int):
    self.size = size
    self.num_images = 0
    self.image_sum = np.zeros((size, size, 3), np.float64)
    self.pixel_sum = np.zeros(3, np.float64)
    self.outer_sum = np.zeros((3, 3), np.float64)

  def add(self, image: np.ndarray, pixel_sum: np.ndarray | None = None,
          outer_sum: np.ndarray | None = None) -> None:
    """Adds one size x size x 3 image; its pixel moments may come precomputed (`image_moments`)."""
    if image.shape != self.image_sum.shape:
      raise ValueError(f'expected a {self.image_sum.shape} image, got {image.shape}')
    if pixel_sum is None:
      pixel_sum, outer_sum = image_moments(image)
    self.image_sum += image
    self.pixel_sum += pixel_sum
    self.outer_sum += outer_sum
    self.num_images += 1

  def result(self) -> dict[str, np.ndarray]:
    n = self.num_images * self.size * self.size  # pixels
    if n < 2:
      raise ValueError('need at least two pixels to estimate a covariance')
    mean_rgb = self.pixel_sum / n
    cov = (self.outer_sum - np.outer(self.pixel_sum, mean_rgb)) / (n - 1)
    cov = (cov + cov.T) / 2
    cov_eigval, eigvec = augment.pca_of_covariance(cov)
    return {
        'mean_image': (self.image_sum / self.num_images).astype(np.float32),
        'mean_rgb': mean_rgb,
        'pixel_covariance': cov,
        'pca_eigval': augment.eigval_on_imagenet_scale(cov_eigval),
        'pca_eigvec': eigvec,
        'std_rgb': np.sqrt(np.diag(cov)),
        'num_images': np.int64(self.num_images),
        'resize_size': np.int64(self.size),
    }


def image_moments(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Sum of the pixels and of their outer products, float64 (exact for integer pixels)."""
  # Channels as contiguous rows (transposed while still uint8): 2.5x faster than reducing and
  # multiplying the (pixels, 3) array, whose 3-element rows make numpy's inner loops short.
  x = np.ascontiguousarray(image.reshape(-1, 3).T).astype(np.float64)
  return x.sum(axis=1), x @ x.T


def subsample(num_examples: int, max_images: int | None) -> np.ndarray:
  """Indices of `max_images` examples spread evenly over the split (all of them if None)."""
  if max_images is None or max_images <= 0 or max_images >= num_examples:
    return np.arange(num_examples)
  return np.arange(max_images, dtype=np.int64) * num_examples // max_images


def compute_statistics(config, max_images: int | None = None, threads: int | None = None,
                       log_every_s: float = 30.0) -> dict[str, Any]:
  """The colour statistics of `config`'s training split at `config.resize_size` (see above).

  Images are read, decoded and resized by `threads` reader threads (grain; default: one per
  CPU), in order, and summed in this thread.
  """
  # Imported here: input_pipeline imports this module, and config_checks loads statistics files
  # without grain or TFDS.
  import grain
  from alexnet_jax import input_pipeline

  input_pipeline.get_info(config)  # checks the dataset and split, prepares a built-in one
  # The training pixels exactly as the input pipeline decodes them.
  source = input_pipeline._source(config, config.train_split)
  indices = subsample(len(source), max_images)
  size = config.resize_size

  def resized(k: int):
    # The resize the training transform applies (section 2).
    image = augment._ensure_size(source[int(indices[k])][input_pipeline.IMAGE_KEY], size)
    return (image,) + image_moments(image)

  threads = threads or os.cpu_count() or 1
  ds = grain.MapDataset.range(len(indices)).map(resized).to_iter_dataset(
      grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4 * threads))
  moments = ColourMoments(size)
  start = last_log = time.time()
  logging.info('Colour statistics of %s/%s: %d of %d images at %dx%d, %d threads.',
               config.dataset, config.train_split, len(indices), len(source), size, size, threads)
  for image, pixel_sum, outer_sum in ds:
    moments.add(image, pixel_sum, outer_sum)
    now = time.time()
    if now - last_log >= log_every_s:
      last_log, done = now, moments.num_images
      rate = done / (now - start)
      logging.info('%d / %d images (%.1f%%), %.0f images/s, %.1f min to go.', done, len(indices),
                   100 * done / len(indices), rate, (len(indices) - done) / rate / 60)
  stats = moments.result()
  logging.info('Read %d images in %.1f s.', moments.num_images, time.time() - start)
  stats.update(dataset=np.str_(config.dataset), split=np.str_(config.train_split))
  return stats


def save(stats: dict[str, Any], path: str) -> None:
  """Writes `stats` to exactly `path` (np.savez would append .npz), via a temporary file."""
  tmp = f'{path}.tmp'
  with open(tmp, 'wb') as f:
    np.savez(f, **stats)
  os.replace(tmp, path)


def summary(stats: dict[str, Any], path: str) -> str:
  """What was computed, and the flags that use it."""
  fmt = lambda v: '(' + ', '.join(f'{x:.4f}' for x in np.ravel(v)) + ')'
  vec = stats['pca_eigvec']
  return '\n'.join([
      f'{int(stats["num_images"])} images of {stats["dataset"]}/{stats["split"]} at '
      f'{int(stats["resize_size"])}x{int(stats["resize_size"])} -> {path}',
      f'  mean_rgb   {fmt(stats["mean_rgb"])}   (0..255)',
      f'  std_rgb    {fmt(stats["std_rgb"])}',
      f'  pca_eigval {fmt(stats["pca_eigval"])}   (255 * eig(cov(pixels / 255)), the scale of '
      f'augment.IMAGENET_PCA_EIGVAL {fmt(augment.IMAGENET_PCA_EIGVAL)})',
      '  pca_eigvec (columns) ' + ', '.join(fmt(vec[:, i]) for i in range(3)),
      'Train with it (mean_rgb, pca_eigval and pca_eigvec come from the file):',
      f'  --config.augment.stats_file={path}',
      'and for the paper\'s mean image (section 2) instead of the per-channel mean:',
      f'  --config.augment.mean=image --config.augment.stats_file={path}',
      'To also standardise pixels with this set\'s deviation:',
      f'  --config.augment.std_rgb="{fmt(stats["std_rgb"])}"',
  ])


# --- Loading ---


def _read(path: str) -> dict[str, np.ndarray]:
  if not os.path.exists(path):
    raise ConfigError(
        f'augment.stats_file={path!r} does not exist. Compute it once with `{COMMAND}` (with the '
        'config you train with), or leave augment.stats_file unset to use the config\'s '
        'mean_rgb and PCA constants.')
  try:
    with np.load(path) as data:
      stats = {k: data[k] for k in data.files}
  except (OSError, ValueError) as e:
    raise ConfigError(f'augment.stats_file={path!r} is not a readable .npz file ({e}). Compute '
                      f'it again with `{COMMAND}`.') from None
  missing = [k for k in _KEYS if k not in stats]
  if missing:
    raise ConfigError(f'augment.stats_file={path!r} lacks {missing}: it was not written by '
                      f'`{COMMAND}`. Compute it again with that command.')
  return stats


def load_colour_statistics(config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mean, pca_eigval, pca_eigvec) as float32 for the transforms, from the config or its file.

  `mean` is (3,) for `augment.mean='rgb'`, or the (resize_size, resize_size, 3) mean image for
  'image' (section 2), which the transforms cut with each crop's window. With
  `augment.stats_file` set, all three come from that file; 'image' requires it.
  """
  aug = config.augment
  kind = aug.get('mean', 'rgb')
  path = aug.get('stats_file')
  if kind not in ('rgb', 'image'):
    raise ConfigError(f"augment.mean={kind!r} must be 'rgb' (subtract augment.mean_rgb from "
                      "every pixel) or 'image' (subtract the training set's mean image, "
                      'section 2, which needs augment.stats_file).')
  if path is None:
    if kind == 'image':
      raise ConfigError(
          "augment.mean='image' subtracts the training set's mean image (section 2), which "
          f'comes from a statistics file: compute it once with `{COMMAND}` and pass '
          "--config.augment.stats_file=FILE.npz, or use --config.augment.mean=rgb.")
    return tuple(np.asarray(v, np.float32) for v in (aug.mean_rgb, aug.pca_eigval, aug.pca_eigvec))
  stats = _read(path)
  if int(stats['resize_size']) != config.resize_size:
    raise ConfigError(
        f'augment.stats_file={path!r} was computed at resize_size={int(stats["resize_size"])}, '
        f'but this config uses resize_size={config.resize_size}: the mean image must match the '
        f'resized images. Compute it again with `{COMMAND}` and this config, or set '
        f'--config.resize_size={int(stats["resize_size"])}.')
  logging.log_first_n(logging.INFO, 'Colour statistics (mean %s, PCA) from %s: %d images of %s.',
                      1, kind, path, int(stats.get('num_images', -1)), stats.get('dataset', '?'))
  if 'dataset' in stats and str(stats['dataset']) != config.dataset:
    logging.log_first_n(logging.WARNING, 'augment.stats_file %s holds statistics of %s, not of %s.',
                        1, path, str(stats['dataset']), config.dataset)
  mean = stats['mean_image'] if kind == 'image' else stats['mean_rgb']
  return (np.asarray(mean, np.float32), np.asarray(stats['pca_eigval'], np.float32),
          np.asarray(stats['pca_eigvec'], np.float32))


# --- Command line ---


def main(argv, flags) -> None:
  if len(argv) > 1:
    sys.stderr.write(f'\nError: unexpected arguments {" ".join(argv[1:])!r}. Everything is a flag: '
                     '--config=FILE, --output=FILE.npz, --config.FIELD=VALUE overrides.\n')
    sys.exit(2)
  config, output = flags.config, flags.output
  try:
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
      raise ConfigError(f'Cannot write --output={output!r}: {directory} is not a directory you '
                        'can write to. Pass a path in a writable directory.')
    stats = compute_statistics(config, flags.max_images, flags.threads)
  except ConfigError as e:
    sys.stderr.write(f'\nError: {e}\n')
    sys.exit(2)
  save(stats, output)
  print(summary(stats, output))


def run() -> None:
  # Flags are defined here, not at import, so that the input pipeline can import this module
  # next to main's flags (and without ml_collections).
  from absl import app
  from absl import flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file('config', None, 'Path to a config file, e.g. configs/alexnet.py.',
                                  lock_config=True)
  flags.DEFINE_string('output', None, 'Where to write the statistics (.npz).')
  flags.DEFINE_integer('max_images', None, 'Read only this many training images, spread evenly '
                       'over the split (default: all).')
  flags.DEFINE_integer('threads', None, 'Reader threads (default: one per CPU).')
  flags.mark_flags_as_required(['config', 'output'])

  def parse(argv):
    # As main's parser: a config that fails to load, a missing flag or a bad override is one
    # paragraph, not a traceback.
    try:
      argv = flags.FLAGS(argv)
      flags.FLAGS.config.get('dataset')  # a config file that failed to load raises only when used
      return argv
    except (OSError, ImportError, AttributeError, KeyError, flags.Error, TypeError,
            ValueError) as e:
      problem = ' '.join(str(e).split()).rstrip('.')
      sys.stderr.write(f'\nError: {problem}. Usage: {COMMAND} '
                       '[--max_images=N] [--config.FIELD=VALUE ...], run from the repository '
                       'root; the config fields are listed in configs/alexnet.py.\n')
      sys.exit(2)

  app.run(lambda argv: main(argv, flags.FLAGS), flags_parser=parse)


if __name__ == '__main__':
  run()
