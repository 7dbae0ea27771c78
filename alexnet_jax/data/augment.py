"""Per-image preprocessing and augmentation from the AlexNet paper, in numpy.

The paper, Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
Networks" (NIPS 2012), describes them in two places:

- Section 2: images are down-sampled so the shorter side is 256, then the central 256x256 patch
  is kept; the "mean activity" over the training set is subtracted from each pixel.
- Section 4.1: training uses random 224x224 patches and their horizontal reflections, plus "PCA
  colour augmentation" (a random multiple of the principal components of RGB pixel values is
  added to every pixel). At test time the network averages its softmax over ten patches: the four
  corner patches, the centre patch, and their reflections.

Everything here runs on the host inside data-loader worker processes, once per image, so it uses
only numpy and PIL on purpose: no JAX or TensorFlow import, since workers should not initialise an
accelerator runtime. All randomness comes from an explicit `np.random.Generator`, so a pipeline
that seeds the generator per (epoch, example) is exactly reproducible.

Conventions: images are HxWx3 arrays in RGB order; pixel values are in 0..255 units throughout
(uint8 before the float conversion, float32 after), and so are the colour statistics below.
"""

from __future__ import annotations

import functools
from typing import Iterable

import numpy as np
from PIL import Image

__all__ = [
    'IMAGENET_MEAN_RGB',
    'IMAGENET_PCA_EIGVAL',
    'IMAGENET_PCA_EIGVEC',
    'IMAGENET_STD_RGB',
    'resize_shorter_and_center_crop',
    'resize_square',
    'to_resize_size',
    'resized_for_crop',
    'window_rows',
    'crop_offset_to_float',
    'random_crop',
    'center_crop',
    'random_flip',
    'ten_crop',
    'pca_color_noise',
    'subtract_mean',
    'train_transform',
    'train_draws',
    'eval_transform',
    'ten_crop_transform',
    'compute_pca_statistics',
    'pca_of_covariance',
    'eigval_on_imagenet_scale',
]

# --- ImageNet colour statistics, 0..255 pixel units ---
#
# These are NOT numbers from the 2012 paper, which does not publish them. They are the widely used
# ILSVRC-2012 values published with later ImageNet training code: the per-channel mean, and the
# eigen-decomposition of the RGB covariance originally given in 0..1 units, rescaled here by 255.
# compute_pca_statistics() derives them from your own training set.
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)

IMAGENET_PCA_EIGVAL = tuple(v * 255.0 for v in (0.2175, 0.0188, 0.0045))

# Columns are the eigenvectors (column i pairs with IMAGENET_PCA_EIGVAL[i]); rows are the R, G, B
# components.
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
# Per-channel standard deviation of ImageNet pixels, same source and units. The paper only
# subtracts the mean; dividing by these is the modern convention (config `augment.std_rgb`).
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)

_BILINEAR = Image.Resampling.BILINEAR


def _check_image(image: np.ndarray) -> None:
  # Fail early with a clear message: grayscale/CMYK/RGBA decodes must be
  # converted to RGB by the decoder, not silently mis-broadcast here.
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'expected an HxWx3 RGB image, got shape {image.shape}')


def _check_crop(image: np.ndarray, size: int) -> tuple[int, int]:
  _check_image(image)
  h, w = image.shape[:2]
  if size <= 0 or size > h or size > w:
    raise ValueError(f'crop size {size} does not fit in image of shape {image.shape}')
  return h, w


# --- Resizing (section 2) ---


def _pil_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
  if image.dtype != np.uint8:
    raise ValueError(f'resize expects a uint8 image, got {image.dtype}')
  # PIL's BILINEAR filter widens its support by the down-scale factor, i.e.
  # it is antialiased, unlike a plain 2x2 bilinear interpolation.  That
  # matters for the large down-scaling factors typical of ImageNet photos.
  # reducing_gap=None keeps the exact (single-pass) filter.
  pil = Image.fromarray(np.ascontiguousarray(image))
  pil = pil.resize((width, height), resample=_BILINEAR, reducing_gap=None)
  return np.asarray(pil)


def resize_shorter_and_center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """Rescales a uint8 RGB `image` so its shorter side is `size`, then keeps the central square.

  Section 2: "given a rectangular image, we first rescaled the image such that the shorter side
  was of length 256, and then cropped out the central 256x256 patch from the resulting image."
  The result is a uint8 `size` x `size` x 3 array; the crop follows `center_crop`'s convention
  (an odd margin puts the extra pixel at the bottom/right).
  """
  _check_image(image)
  h, w = image.shape[:2]
  if h <= w:
    new_h, new_w = size, max(size, int(round(w * size / h)))
  else:
    new_h, new_w = max(size, int(round(h * size / w))), size
  if (new_h, new_w) != (h, w):
    image = _pil_resize(image, new_w, new_h)
  return center_crop(image, size)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes an (already square) uint8 image directly to `size` x `size` with PIL.

  Used when the dataset has been stored pre-cropped at some square size (e.g. 256x256 per
  section 2) and a different working resolution is wanted (e.g. 146 -> random 128 crops for fast
  experiments). A non-square `image` is resized anyway and its aspect ratio is NOT preserved; one
  that is already `size` x `size` is returned as is, not copied.
  """
  _check_image(image)
  if image.shape[:2] == (size, size):
    return image
  return _pil_resize(image, size, size)


def to_resize_size(image: np.ndarray, resize_size: int) -> np.ndarray:
  # Stored datasets are usually already resize_size^2 (Section 2), in which
  # case nothing is done and no copy is made.
  if image.shape[:2] == (resize_size, resize_size):
    return image
  if image.shape[0] == image.shape[1]:
    return resize_square(image, resize_size)
  return resize_shorter_and_center_crop(image, resize_size)


# --- Crops and reflections (section 4.1) ---


def _random_offsets(h: int, w: int, size: int, rng: np.random.Generator) -> tuple[int, int]:
  # integers(0, n + 1) is uniform on {0, ..., n}: both the first and the last
  # valid window positions are reachable.  Row offset is drawn before column
  # offset (callers replaying the generator rely on this order).
  top = int(rng.integers(0, h - size + 1))
  left = int(rng.integers(0, w - size + 1))
  return top, left


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """Takes a uniformly random `size` x `size` window (section 4.1), as a view.

  The paper trains on "random 224x224 patches" of the 256x256 images. Offsets are uniform over
  every valid position, both ends inclusive: `top = rng.integers(0, H - size + 1)` is drawn first,
  then `left = rng.integers(0, W - size + 1)`. The result is the view
  `image[top:top+size, left:left+size]`, not a copy: copy it if you need to mutate it.
  """
  h, w = _check_crop(image, size)
  top, left = _random_offsets(h, w, size, rng)
  return image[top : top + size, left : left + size]


def _center_offsets(h: int, w: int, size: int) -> tuple[int, int]:
  # Floor division: with an odd margin the extra pixel is left at the
  # bottom / right edge.
  return (h - size) // 2, (w - size) // 2


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """Takes the central `size` x `size` window (section 2 and test time), as a view of `image`.

  `top = (H - size) // 2` and `left = (W - size) // 2`: when the margin `H - size` (or
  `W - size`) is odd, the top (left) side gets the smaller half and the extra pixel is dropped
  from the BOTTOM (RIGHT) side.
  """
  h, w = _check_crop(image, size)
  top, left = _center_offsets(h, w, size)
  return image[top : top + size, left : left + size]


def random_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Reflects the image horizontally with probability 0.5 (section 4.1).

  Draws exactly one `rng.random()` and flips iff it is < 0.5. The result is either
  `image[:, ::-1]`, a negative-stride view (no copy), or `image` itself.
  """
  if rng.random() < 0.5:
    return image[:, ::-1]
  return image


def ten_crop(image: np.ndarray, size: int) -> np.ndarray:
  """The ten test-time patches of section 4.1, as a new `[10, size, size, 3]` array.

  "At test time, the network makes a prediction by extracting five 224x224 patches (the four
  corner patches and the center patch) as well as their horizontal reflections ..., and averaging
  the predictions made by the network's softmax layer on the ten patches."

  The array is a copy with `image`'s dtype. The order along its first axis is fixed, so callers can
  rely on it: 0 the centre (`center_crop`'s convention), 1 top-left, 2 top-right, 3 bottom-left,
  4 bottom-right, then 5..9 the same five windows each horizontally flipped (index `i + 5` is the
  reflection of index `i`).
  """
  h, w = _check_crop(image, size)
  ct, cl = _center_offsets(h, w, size)
  offsets = ((ct, cl), (0, 0), (0, w - size), (h - size, 0), (h - size, w - size))
  c = image.shape[-1]
  out = np.empty((10, size, size, c), dtype=image.dtype)
  for i, (top, left) in enumerate(offsets):
    out[i] = image[top : top + size, left : left + size]
  # Reflections via a row gather rather than out[:5, :, ::-1] (see
  # window_rows); mode="clip" lets np.take write straight into `out`
  # (the indices are in range by construction).
  np.take(
      out[:5].reshape(5, size, size * c),
      _row_flip_index(size, c),
      axis=2,
      out=out[5:].reshape(5, size, size * c),
      mode='clip',
  )
  return out


# --- Colour: PCA noise (section 4.1) and mean subtraction (section 2) ---


def _add_per_channel(image: np.ndarray, vec: np.ndarray) -> np.ndarray:
  """float32 `image + vec` for an HxWxC image and a (C,) vector.

  Broadcasting a (3,) vector over HxWx3 makes numpy's innermost loop only 3 elements long, so the
  loop overhead, not the arithmetic, sets the time. Viewing the image as H x (W*C) rows and tiling
  the vector over one row gives inner loops of W*C elements instead. Also fuses the
  uint8->float32 conversion.
  """
  h, w, c = image.shape
  rows = image.reshape(h, w * c)  # a view for crops of C-contiguous images
  out = np.add(rows, np.tile(vec.astype(np.float32, copy=False), w), dtype=np.float32)
  return out.reshape(h, w, c)


@functools.lru_cache(maxsize=32)
def _row_flip_index(width: int, channels: int = 3) -> np.ndarray:
  """Gather index reversing pixel order (not channel order) of a flat row."""
  idx = (np.arange(width)[::-1, None] * channels + np.arange(channels)).ravel()
  idx.flags.writeable = False  # shared through the cache
  return idx


def window_rows(x: np.ndarray, top: int, left: int, size: int, flipped: bool) -> np.ndarray:
  """`x[top:top+size, left:left+size]` (reflected if `flipped`) as size x (size*C) rows.

  Converting or adding a `[:, ::-1]` view is slow for the same reason as in `_add_per_channel`
  (3-element inner loops); a fancy-index gather with a precomputed index on the flat rows is
  faster and produces a contiguous copy.
  """
  c = x.shape[-1]
  rows = x[top : top + size, left : left + size].reshape(size, size * c)
  if flipped:
    rows = np.take(rows, _row_flip_index(size, c), axis=1)  # faster than rows[:, idx]
  return rows


def _pca_shift(eigval, eigvec, std: float, rng: np.random.Generator) -> np.ndarray | None:
  """The per-image RGB offset `eigvec @ (alpha * eigval)`, or None if std == 0."""
  if std == 0:
    # No draw is made, so disabling the augmentation does not need any
    # generator state and costs nothing.
    return None
  eigval = np.asarray(eigval, dtype=np.float64)
  eigvec = np.asarray(eigvec, dtype=np.float64)
  if eigval.shape != (3,) or eigvec.shape != (3, 3):
    raise ValueError(f'expected eigval (3,) and eigvec (3, 3), got {eigval.shape}, {eigvec.shape}')
  alpha = rng.normal(0.0, std, size=3)
  # Paper: add [p1, p2, p3][a1*l1, a2*l2, a3*l3]^T, p_i the COLUMNS of eigvec.
  return eigvec @ (alpha * eigval)


def pca_color_noise(
    image: np.ndarray,
    eigval,
    eigvec,
    std: float,
    rng: np.random.Generator,
) -> np.ndarray:
  """PCA colour augmentation ("fancy PCA"), section 4.1.

  Adds the same RGB vector `eigvec @ (alpha * eigval)` to every pixel of `image` (an HxWx3 float
  image in 0..255 units, not modified), where `eigvec`'s COLUMNS are the eigenvectors and
  `alpha ~ N(0, std)` has shape (3,) and is drawn once per call, i.e. once per image per
  presentation (the paper uses std = 0.1). The shift therefore has covariance
  `eigvec diag((std * eigval)**2) eigvec^T`.

  Each call makes exactly one `rng.normal(0, std, size=3)` draw, except that `std == 0` draws
  nothing from `rng` and returns the image unchanged as float32. The result is a float32 HxWx3
  array, a new one unless `std == 0` and `image` was already float32. Statistics whose shapes are
  not (3,) and (3, 3) raise ValueError (checked only when `std != 0`).

  Scale caveat: `eigval`, in 0..255 units, multiplies alpha as in the paper's formula, which is
  not scale invariant (a true covariance eigenvalue has units of pixel^2). The published
  `IMAGENET_PCA_EIGVAL` (~55 for PC1) is far smaller than the raw covariance eigenvalues
  `compute_pca_statistics` returns (order 10^3..10^4 for natural images in 0..255 units). Pass the
  published values, or computed ones converted to the same convention with
  `eigval_on_imagenet_scale` (`255 * eig(cov(pixels / 255))`, what
  `python -m alexnet_jax.tools.colour_statistics` stores).
  """
  image = np.asarray(image, dtype=np.float32)
  shift = _pca_shift(eigval, eigvec, std, rng)
  if shift is None:
    return image
  return _add_per_channel(image, shift.astype(np.float32))


def subtract_mean(image: np.ndarray, mean) -> np.ndarray:
  """Subtracts the training-set "mean activity" (section 2): float32 `image - mean`, always new.

  `image` may have any real dtype (the subtraction is computed in float32). `mean` is anything
  that broadcasts to the HxWx3 image: a per-channel (3,) vector (the common simplification) or a
  full HxWx3 mean image (the paper's choice, which must then match the image's spatial size).
  """
  mean = np.asarray(mean, dtype=np.float32)
  image = np.asarray(image)
  if mean.shape == (3,) and image.ndim == 3:
    # x + (-m) is bit-identical to x - m (negation is exact).
    return _add_per_channel(image, -mean)
  return np.subtract(image, mean, dtype=np.float32)


# --- Full per-image transforms ---


def crop_offset_to_float(
    image: np.ndarray,
    top: int,
    left: int,
    size: int,
    flipped: bool,
    offset: np.ndarray,
    mean,
    resize_size: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
  """float32 `window(image) + offset - window(mean)` in as few passes as possible.

  `offset` is a (3,) float32 vector (PCA shift, or zeros). A per-channel mean folds into it, so
  the whole output is ONE fused uint8->float32 add over size^2 pixels. A mean image stored at the
  pre-crop resolution (resize_size^2, as in the paper, where the mean is subtracted before
  cropping) is cut with the same window and reflection as the image, which is equivalent to
  subtracting it before the crop; a crop-sized mean image (when resize_size != size) is used as
  is, and any other shape raises ValueError.

  `out`, a C-contiguous float32 (size, size, C) array, receives the result (a batch assembler
  passes one row of its batch, so the pixels are written once, straight into the batch);
  otherwise a new array is made.
  """
  mean = np.asarray(mean, dtype=np.float32)
  c = image.shape[-1]
  rows = window_rows(image, top, left, size, flipped)
  out_rows = None if out is None else out.reshape(size, size * c)  # a view: out is contiguous
  if mean.ndim <= 1:
    vec = np.broadcast_to(offset - mean, (c,))
    out = np.add(rows, np.tile(vec, size), dtype=np.float32, out=out_rows)
  else:
    # A resize-sized mean (also when resize_size == size) was subtracted before the crop and
    # the reflection, so it is cut and reflected with the image.
    if mean.shape == (resize_size, resize_size, c):
      mean_rows = window_rows(mean, top, left, size, flipped)
    elif mean.shape == (size, size, c):
      mean_rows = mean.reshape(size, size * c)
    else:
      raise ValueError(
          f'mean must be (3,), ({size}, {size}, 3) or ({resize_size}, {resize_size}, 3); '
          f'got {mean.shape}'
      )
    out = np.subtract(rows, mean_rows, dtype=np.float32, out=out_rows)
    if offset.any():
      out += np.tile(offset, size)
  return out.reshape(size, size, c)


def resized_for_crop(image_uint8: np.ndarray, image_size: int, resize_size: int):
  """The image at `resize_size`, and its height and width, checked to fit a crop of `image_size`.

  A `resize_size` below `image_size` raises ValueError.
  """
  if resize_size < image_size:
    raise ValueError(f'resize_size {resize_size} < image_size {image_size}')
  image = to_resize_size(image_uint8, resize_size)
  h, w = _check_crop(image, image_size)
  return image, h, w


def train_transform(
    image_uint8: np.ndarray,
    *,
    image_size: int,
    resize_size: int,
    eigval,
    eigvec,
    pca_std: float,
    mean,
    flip: bool,
    rng: np.random.Generator,
    random_crop: bool = True,
) -> np.ndarray:
  """Training-time pipeline: sections 2 and 4.1 combined, into a new float32 array.

  Steps: resize the uint8 RGB image to `resize_size` (256 in the paper) if needed (a square input
  with `resize_square`, any other with `resize_shorter_and_center_crop`), `random_crop` to
  `image_size` (224), `random_flip` if `flip`, float32, `pca_color_noise` with std `pca_std`
  (0.1 in the paper; 0 disables it), `subtract_mean`. The result is a freshly allocated
  `image_size` x `image_size` x 3 array. `eigval` and `eigvec` are the RGB PCA statistics in
  0..255 units, eigenvectors as columns; `mean` is a per-channel (3,) mean or a mean image of
  shape (image_size, image_size, 3) or (resize_size, resize_size, 3), the latter cut with the same
  window and reflection as the image.

  `random_crop=False` takes the centre crop instead (the ablation of section 4.1's translations;
  it draws no offsets).

  Generator draws, in order: crop row offset, crop column offset, flip coin (only if `flip`),
  alpha (3 normals, only if `pca_std > 0`) -- the same sequence as calling the individual
  functions one after the other, so the result is a deterministic function of the generator
  state.

  Speed: the crop is never materialised in uint8 (except as the flip gather), the float
  conversion only touches image_size^2 pixels, and the PCA shift plus a per-channel mean fold into
  one (3,) offset applied in the same pass as the conversion.
  """
  image, h, w = resized_for_crop(image_uint8, image_size, resize_size)
  top, left, flipped, offset = train_draws(
      h,
      w,
      image_size=image_size,
      eigval=eigval,
      eigvec=eigvec,
      pca_std=pca_std,
      flip=flip,
      rng=rng,
      random_crop=random_crop,
  )
  return crop_offset_to_float(image, top, left, image_size, flipped, offset, mean, resize_size)


def train_draws(
    h: int,
    w: int,
    *,
    image_size: int,
    eigval,
    eigvec,
    pca_std: float,
    flip: bool,
    rng: np.random.Generator,
    random_crop: bool = True,
) -> tuple[int, int, bool, np.ndarray]:
  """`train_transform`'s random choices for an h x w image, without touching pixels.

  Returns `(top, left, flipped, offset)`: the crop window, the reflection and the (3,) float32
  PCA colour shift (zeros if `pca_std == 0`), drawn in `train_transform`'s order. A pipeline that
  draws per example and converts pixels per batch (`pipeline.TrainTransform` and `TrainBatch`)
  calls this, then `crop_offset_to_float` with `out=` a row of the batch.
  """
  if random_crop:
    top, left = _random_offsets(h, w, image_size, rng)
  else:
    top, left = _center_offsets(h, w, image_size)
  flipped = bool(flip) and rng.random() < 0.5
  shift = _pca_shift(eigval, eigvec, pca_std, rng)
  offset = np.zeros(3, np.float32) if shift is None else shift.astype(np.float32)
  return top, left, flipped, offset


def eval_transform(
    image_uint8: np.ndarray,
    *,
    image_size: int,
    resize_size: int,
    mean,
) -> np.ndarray:
  """Evaluation pipeline: resize (section 2), centre crop, subtract mean.

  The single-centre-crop evaluation; see `ten_crop` for section 4.1's ten-patch test. `mean` is as
  in `train_transform`. The result is a freshly allocated float32 `image_size` x `image_size` x 3
  array.
  """
  image, h, w = resized_for_crop(image_uint8, image_size, resize_size)
  top, left = _center_offsets(h, w, image_size)
  offset = np.zeros(3, np.float32)
  return crop_offset_to_float(image, top, left, image_size, False, offset, mean, resize_size)


def ten_crop_transform(
    image_uint8: np.ndarray,
    *,
    image_size: int,
    resize_size: int,
    mean,
) -> np.ndarray:
  """Section 4.1's test-time input: the ten patches of `ten_crop`, mean subtracted.

  Resizes as in `eval_transform`, cuts the ten patches (order as in `ten_crop`: index 0 is
  `eval_transform`'s centre crop) and subtracts the mean, into a freshly allocated float32
  `[10, image_size, image_size, 3]` array. `mean` may be a per-channel (3,) vector, a crop-sized
  (image_size, image_size, 3) image used as is for every patch (unless image_size ==
  resize_size), a (resize_size, resize_size, 3) mean image -- cut with the same ten windows and
  reflections, i.e. subtracted before cropping as in section 2 -- or that image already cut by
  `ten_crop` (10, image_size, image_size, 3), which lets a caller cut it once instead of once per
  image. Any other shape raises ValueError.
  """
  image, _, _ = resized_for_crop(image_uint8, image_size, resize_size)
  crops = ten_crop(image, image_size)
  mean = np.asarray(mean, dtype=np.float32)
  c = crops.shape[-1]
  if mean.ndim <= 1:
    # Flat rows and a tiled vector: long inner loops (see _add_per_channel).
    rows = crops.reshape(10 * image_size, image_size * c)
    out = np.add(rows, np.tile(-np.broadcast_to(mean, (c,)), image_size), dtype=np.float32)
    return out.reshape(crops.shape)
  if mean.shape == (resize_size, resize_size, c):
    # Also when resize_size == image_size: the reflected patches then
    # need the reflected mean image.
    mean = ten_crop(mean, image_size)
  elif mean.shape not in ((image_size, image_size, c), crops.shape):
    raise ValueError(
        f'mean must be (3,), ({image_size}, {image_size}, 3), ({resize_size}, {resize_size}, 3)'
        f' or (10, {image_size}, {image_size}, 3); got {mean.shape}'
    )
  return np.subtract(crops, mean, dtype=np.float32)


# --- Statistics ---


def compute_pca_statistics(images: Iterable[np.ndarray]):
  """Per-channel mean and PCA of the RGB pixel covariance (section 4.1).

  "We perform PCA on the set of RGB pixel values throughout the ImageNet training set." Streams
  over `images`, uint8 HxWx3 RGB arrays whose sizes may differ, and never holds more than one
  image's pixels: each image's mean and centred scatter matrix are computed in float64 and merged
  with the pairwise (Chan et al.) update, which avoids the cancellation of the naive
  sum-of-squares formula over ~10^11 pixels. An image that is not HxWx3, or fewer than two pixels
  in all, raise ValueError.

  Returns `(mean_rgb, eigval, eigvec)`, float64 arrays of shapes (3,), (3,) and (3, 3): the pixel
  mean; the eigenvalues of the sample covariance (normalised by N - 1, like `np.cov`) in
  DESCENDING order; and the matching unit eigenvectors as COLUMNS, each sign-normalised so that
  its largest-magnitude component is positive (any sign is equally valid for the augmentation,
  since alpha is symmetric).

  Scale: `eigval` is the raw covariance spectrum of 0..255 pixels (pixel^2 units, order
  10^3..10^4 for natural images). It is NOT on the scale of `IMAGENET_PCA_EIGVAL`, which is
  `255 * eig(cov(pixels / 255)) = eig(cov(pixels)) / 255`; convert it with
  `eigval_on_imagenet_scale` before passing it to `pca_color_noise` or `augment.pca_eigval` (the
  `python -m alexnet_jax.tools.colour_statistics` command stores the converted values).
  """
  n = 0
  mean = np.zeros(3, dtype=np.float64)
  m2 = np.zeros((3, 3), dtype=np.float64)
  for image in images:
    image = np.asarray(image)
    _check_image(image)
    x = image.reshape(-1, 3).astype(np.float64)
    nb = x.shape[0]
    if nb == 0:
      continue
    mean_b = x.mean(axis=0)
    x -= mean_b
    m2_b = x.T @ x
    delta = mean_b - mean
    total = n + nb
    m2 += m2_b + np.outer(delta, delta) * (n * nb / total)
    mean += delta * (nb / total)
    n = total
  if n < 2:
    raise ValueError('need at least two pixels to estimate a covariance')
  eigval, eigvec = pca_of_covariance(m2 / (n - 1))
  return mean, eigval, eigvec


def pca_of_covariance(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Eigenvalues (descending) and unit eigenvectors (COLUMNS) of a 3x3 covariance.

  Each eigenvector's sign is fixed so that its largest-magnitude component is positive, which
  makes the output a deterministic function of `cov`.
  """
  eigval, eigvec = np.linalg.eigh(np.asarray(cov, dtype=np.float64))  # ascending
  eigval, eigvec = eigval[::-1].copy(), eigvec[:, ::-1].copy()
  signs = np.sign(eigvec[np.argmax(np.abs(eigvec), axis=0), np.arange(3)])
  signs[signs == 0] = 1.0
  eigvec *= signs
  return eigval, eigvec


def eigval_on_imagenet_scale(cov_eigval) -> np.ndarray:
  """Covariance eigenvalues of 0..255 pixels -> the scale of `IMAGENET_PCA_EIGVAL`.

  The published ImageNet values (0.2175, 0.0188, 0.0045) are eigenvalues of the covariance of
  pixels in 0..1; `IMAGENET_PCA_EIGVAL` multiplies them by 255 (once, not 255^2) so that
  `pca_color_noise`'s shift `eigvec @ (alpha * eigval)` comes out in 0..255 units. A covariance
  of 0..255 pixels is 255^2 times the 0..1 one, so its eigenvalues map to that scale by dividing
  by 255: `255 * (lambda / 255^2) = lambda / 255`.
  """
  return np.asarray(cov_eigval, dtype=np.float64) / 255.0
