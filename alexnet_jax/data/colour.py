"""Colour statistics of a training set: the file that holds them, loading it, and their moments.

The mean image (section 2) and the PCA of RGB pixel values (section 4.1) are computed once per
training set by `python -m alexnet_jax.tools.colour_statistics` (which streams the images through
`ColourMoments`) and saved as an .npz file; `load_colour_statistics` turns a config (and that
file, when `augment.stats_file` is set) into what the transforms use. The file holds:

- `mean_image`: (resize_size, resize_size, 3) float32, 0..255: section 2's "mean activity";
- `mean_rgb`: (3,), 0..255, the per-channel mean of all pixels (= the mean image's mean);
- `pixel_covariance`: (3, 3), the covariance of 0..255 RGB pixels (normalised by N - 1);
- `pca_eigval`: (3,), descending, ON THE SCALE OF `augment.IMAGENET_PCA_EIGVAL`: the eigenvalues
  of the covariance of pixels / 255, times 255 (= eigenvalues of `pixel_covariance` / 255; see
  `augment.eigval_on_imagenet_scale`), which is what `augment.pca_color_noise` expects;
- `pca_eigvec`: (3, 3), the matching unit eigenvectors as COLUMNS (rows R, G, B);
- `std_rgb`: (3,), per-channel standard deviation of the pixels (for `augment.std_rgb`);
- `num_images`, `resize_size`, `dataset`, `split`.

The sums are float64 over integer pixels, so every per-image sum is exact and the totals stay exact
up to 2^53 (ImageNet at 256: at most ~2e15): the result does not depend on the order in which
images arrive.
"""

import os

from absl import logging
import numpy as np

from alexnet_jax.data import augment
from alexnet_jax.errors import ConfigError

COMMAND = 'python -m alexnet_jax.tools.colour_statistics --config=CONFIG --output=FILE.npz'
_KEYS = ('mean_image', 'mean_rgb', 'pca_eigval', 'pca_eigvec', 'resize_size')


# --- Moments ---


class ColourMoments:
  """Streaming float64 sums over square images of one size; `result()` turns them into stats."""

  def __init__(self, size: int):
    self.size = size
    self.num_images = 0
    self.image_sum = np.zeros((size, size, 3), np.float64)
    self.pixel_sum = np.zeros(3, np.float64)
    self.outer_sum = np.zeros((3, 3), np.float64)

  def add(
      self,
      image: np.ndarray,
      pixel_sum: np.ndarray | None = None,
      outer_sum: np.ndarray | None = None,
  ) -> None:
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
  # Channels as contiguous rows (transposed while still uint8): faster than reducing and
  # multiplying the (pixels, 3) array, whose 3-element rows make numpy's inner loops short.
  x = np.ascontiguousarray(image.reshape(-1, 3).T).astype(np.float64)
  return x.sum(axis=1), x @ x.T


# --- Loading ---


def _read(path: str) -> dict[str, np.ndarray]:
  if not os.path.exists(path):
    raise ConfigError(
        f'augment.stats_file={path!r} does not exist. Compute it once with `{COMMAND}` (with the '
        "config you train with), or leave augment.stats_file unset to use the config's "
        'mean_rgb and PCA constants.'
    )
  try:
    with np.load(path) as data:
      stats = {k: data[k] for k in data.files}
  except (OSError, ValueError) as e:
    raise ConfigError(
        f'augment.stats_file={path!r} is not a readable .npz file ({e}). Compute '
        f'it again with `{COMMAND}`.'
    ) from None
  missing = [k for k in _KEYS if k not in stats]
  if missing:
    raise ConfigError(
        f'augment.stats_file={path!r} lacks {missing}: it was not written by '
        f'`{COMMAND}`. Compute it again with that command.'
    )
  return stats


def load_colour_statistics(
    *,
    mean: str,
    stats_file: str | None,
    mean_rgb,
    pca_eigval,
    pca_eigvec,
    resize_size: int,
    dataset: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mean, pca_eigval, pca_eigvec) as float32 for the transforms: the config's `augment.*`
  constants, or those of its `augment.stats_file` (named as in the config, for the messages).

  The mean is (3,) for `mean='rgb'`, or the (resize_size, resize_size, 3) mean image for 'image'
  (section 2), which the transforms cut with each crop's window; 'image' needs the file.
  """
  kind, path = mean, stats_file
  if kind not in ('rgb', 'image'):
    raise ConfigError(
        f"augment.mean={kind!r} must be 'rgb' (subtract augment.mean_rgb from "
        "every pixel) or 'image' (subtract the training set's mean image, "
        'section 2, which needs augment.stats_file).'
    )
  if path is None:
    if kind == 'image':
      raise ConfigError(
          "augment.mean='image' subtracts the training set's mean image (section 2), which "
          f'comes from a statistics file: compute it once with `{COMMAND}` and pass '
          '--config.augment.stats_file=FILE.npz, or use --config.augment.mean=rgb.'
      )
    return tuple(np.asarray(v, np.float32) for v in (mean_rgb, pca_eigval, pca_eigvec))
  stats = _read(path)
  if int(stats['resize_size']) != resize_size:
    raise ConfigError(
        f'augment.stats_file={path!r} was computed at resize_size={int(stats["resize_size"])}, '
        f'but this config uses resize_size={resize_size}: the mean image must match the '
        f'resized images. Compute it again with `{COMMAND}` and this config, or set '
        f'--config.resize_size={int(stats["resize_size"])}.'
    )
  logging.log_first_n(
      logging.INFO,
      'Colour statistics (mean %s, PCA) from %s: %d images of %s.',
      1,
      kind,
      path,
      int(stats.get('num_images', -1)),
      stats.get('dataset', '?'),
  )
  if 'dataset' in stats and str(stats['dataset']) != dataset:
    logging.log_first_n(
        logging.WARNING,
        'augment.stats_file %s holds statistics of %s, not of %s.',
        1,
        path,
        str(stats['dataset']),
        dataset,
    )
  chosen = stats['mean_image'] if kind == 'image' else stats['mean_rgb']
  return (
      np.asarray(chosen, np.float32),
      np.asarray(stats['pca_eigval'], np.float32),
      np.asarray(stats['pca_eigvec'], np.float32),
  )
