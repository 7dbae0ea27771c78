"""``synthetic_shapes``: a procedural, offline image-classification dataset.

This dataset ships with the package so that the quickstart, the tests and the
notebooks run without downloading anything. Every image is drawn with numpy
from a seed, and the dataset is registered as a TFDS builder, so it is read
through ``tfds.data_source('synthetic_shapes/<config>', ...)`` exactly like
any real dataset (ArrayRecord files, JPEG-encoded images).

Classes (10): ``disk``, ``ring``, ``square``, ``diamond``, ``triangle_up``,
``triangle_down``, ``plus``, ``x_cross``, ``horizontal_stripes`` and
``vertical_stripes`` (3 bars inside a square patch). Every class maps to
itself under a horizontal flip, so the usual random-flip augmentation never
changes the label, and the per-image rotation is limited to +-15 degrees, so
that no two classes can be rotated into each other (square/diamond and
plus/x_cross differ by 45 degrees, the two stripe classes by 90 degrees, the
two triangles by 180 degrees).

Each image is 256x256 RGB uint8 and holds one shape with

* a random centre, a random size (the circle enclosing the shape spans
  34%-66% of the image side) and an aspect-ratio jitter of +-10%; the shape stays at least 12% of the side
  away from every border, so a random crop of 88% of the side keeps it whole;
* a random rotation in [-15, +15] degrees;
* a foreground and a background colour drawn uniformly in RGB space,
  independently of the class (redrawn until they differ by at least 60 in
  luma and 100 in RGB distance, so the shape is always visible);
* a mild background: a linear brightness gradient and a faint low-frequency
  sinusoidal texture, then uniform pixel noise (std 2-5 levels) over the whole image.

Because the colours are independent of the class, and a bright shape on a dark
background is as likely as the reverse, neither the mean colour of an image
nor any fixed linear template of its pixels identifies the class (the tests
check both: a softmax regression on mean RGB and one on raw pixels both stay
far from solving it); the class is only in the *spatial* layout of edges,
which a small convolutional network learns easily (a 3-layer, 64x64-input
convnet trained with SGD on 3,000 images reached 96% validation accuracy
after 1,000 steps of batch 32 with random flips).

Configs (labels are balanced: example ``i`` has label ``i % 10``):

* ``default``: 10,000 train / 1,000 validation examples, 157 MB on disk.
  Preparing it (drawing, JPEG encoding, shuffling, writing ArrayRecord) is
  cheap enough to happen offline on first use, on a CPU; BENCHMARKS.md has
  the time and the command that measures it.
* ``tiny``: 320 train / 160 validation examples, 7 MB, a small fraction of
  that to prepare; for tests and notebooks.

Images are stored as JPEG (quality 90, no chroma subsampling, ~14 KB each);
the decoded pixels differ from the drawn ones by ~3 levels on average, most of
it the pixel noise that JPEG smooths away.

Every example is a pure function of ``(seed, split, index)``: its numpy
``Generator`` is ``np.random.default_rng([seed, split_id, index])`` with
``split_id`` 0 for train and 1 for validation, so train and validation are
disjoint draws, and re-preparing gives the same images (bit-for-bit on the
same platform and numpy version; the JPEG step may differ across libjpeg
versions). ``make_arrays`` returns exactly the pixels the builder encodes.

Drawing is vectorised numpy (signed distances on a coordinate grid,
anti-aliased edges), with no Python loop over pixels (its time per image:
BENCHMARKS.md).

This module imports ``tensorflow_datasets`` but not TensorFlow; reading a
prepared dataset works without TensorFlow, preparing one needs it
(``pip install tensorflow-cpu``).
"""

from __future__ import annotations

import dataclasses
import functools
import io
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from alexnet_jax.data.datasets import builder

CLASS_NAMES: tuple[str, ...] = (
    'disk',
    'ring',
    'square',
    'diamond',
    'triangle_up',
    'triangle_down',
    'plus',
    'x_cross',
    'horizontal_stripes',
    'vertical_stripes',
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 256
JPEG_QUALITY = 90
SPLIT_IDS = {'train': 0, 'validation': 1}

# Geometry, as fractions of the image side.
_MIN_EXTENT, _MAX_EXTENT = 0.34, 0.66  # shape diameter (before aspect jitter)
_BORDER_MARGIN = 0.12  # minimum distance between shape and image border
_MAX_ROTATION_DEG = 15.0
_ASPECT_JITTER = 0.10
# Colours.
_MIN_LUMA_CONTRAST = 60.0
_MIN_RGB_DISTANCE = 100.0
_LUMA = np.array([0.299, 0.587, 0.114])
_BYTE_STD = float(np.sqrt((256**2 - 1) / 12))  # std of uniform bytes


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates (x along columns, y along rows, y down)."""
  c = np.arange(size, dtype=np.float32) + 0.5
  return c[None, :], c[:, None]


def _shape_sdf(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Signed distance (negative inside) of class ``label`` in local units.

  ``u`` points right and ``v`` points down; every shape fits in the unit
  disk, so a shape of radius r pixels covers at most a 2r x 2r box.
  """
  name = CLASS_NAMES[label]
  if name == 'disk':
    return np.sqrt(u * u + v * v) - 0.9
  if name == 'ring':
    return np.abs(np.sqrt(u * u + v * v) - 0.72) - 0.2
  if name == 'square':
    return np.maximum(np.abs(u), np.abs(v)) - 0.68
  if name == 'diamond':
    return (np.abs(u) + np.abs(v) - 0.95) * np.float32(1 / np.sqrt(2))
  if name in ('triangle_up', 'triangle_down'):
    # Equilateral triangle inscribed in a circle of radius 0.95: the max
    # over its three edge half-planes (outward normals 120 degrees apart).
    if name == 'triangle_down':
      v = -v
    au = np.abs(u) * np.float32(np.sqrt(3) / 2)
    return np.maximum(v, au - 0.5 * v) - 0.475
  if name in ('plus', 'x_cross'):
    if name == 'x_cross':
      s = np.float32(1 / np.sqrt(2))
      u, v = (u - v) * s, (u + v) * s
    au, av = np.abs(u), np.abs(v)
    arm_h = np.maximum(au - 0.9, av - 0.24)
    arm_v = np.maximum(av - 0.9, au - 0.24)
    return np.minimum(arm_h, arm_v)
  if name in ('horizontal_stripes', 'vertical_stripes'):
    # Three bars of width 0.25 (period 0.5) clipped to a square patch.
    w = v if name == 'horizontal_stripes' else u
    bars = np.abs(np.mod(w + 0.25, 0.5) - 0.25) - 0.125
    patch = np.maximum(np.abs(u), np.abs(v)) - 0.68
    return np.maximum(bars, patch)
  raise ValueError(f'label must be in [0, {NUM_CLASSES}), got {label}')


def _draw_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Foreground and background RGB colours, independent of the class."""
  bg = rng.uniform(0.0, 255.0, size=3)
  for _ in range(1000):
    fg = rng.uniform(0.0, 255.0, size=3)
    if (
        abs(float(_LUMA @ (fg - bg))) >= _MIN_LUMA_CONTRAST
        and float(np.linalg.norm(fg - bg)) >= _MIN_RGB_DISTANCE
    ):
      return fg, bg
  # Practically unreachable; fall back to the luma-inverted background.
  return 255.0 - bg, bg


def draw_example(rng: np.random.Generator, label: int, size: int = IMAGE_SIZE) -> np.ndarray:
  """Draws one image of class ``label``; returns uint8 ``(size, size, 3)``.

  All randomness comes from ``rng``, consumed in a fixed order, so the same
  generator state always gives the same image.
  """
  label = int(label)
  if not 0 <= label < NUM_CLASSES:
    raise ValueError(f'label must be in [0, {NUM_CLASSES}), got {label}')
  # Geometry.
  radius = 0.5 * size * rng.uniform(_MIN_EXTENT, _MAX_EXTENT)
  aspect = np.exp(rng.uniform(-_ASPECT_JITTER, _ASPECT_JITTER))
  rx, ry = radius * aspect, radius / aspect  # semi-axes in pixels
  lo = _BORDER_MARGIN * size + max(rx, ry)
  cx, cy = rng.uniform(lo, size - lo, size=2)
  theta = np.deg2rad(rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG))
  fg, bg = _draw_colours(rng)
  # Background: linear gradient plus a faint low-frequency texture.
  grad_amp = rng.uniform(-30.0, 30.0)
  grad_dir = rng.uniform(0.0, 2 * np.pi)
  tex_amp = rng.uniform(0.0, 8.0)
  tex_freq = rng.uniform(1.0, 4.0, size=2) * (2 * np.pi / size)
  tex_freq *= rng.choice([-1.0, 1.0], size=2)
  tex_phase = rng.uniform(0.0, 2 * np.pi)
  noise_std = rng.uniform(2.0, 5.0)

  x, y = _grid(size)
  dx, dy = x - np.float32(cx), y - np.float32(cy)
  c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
  # Local frame (rotated by theta, scaled by the semi-axes).
  u = (c * dx + s * dy) * np.float32(1.0 / rx)
  v = (c * dy - s * dx) * np.float32(1.0 / ry)
  sdf = _shape_sdf(label, u, v)
  # Anti-aliased coverage: the distance in pixels (approximately) through a
  # one-pixel ramp.
  alpha = np.clip(0.5 - sdf * np.float32(min(rx, ry)), 0.0, 1.0)

  gx = np.float32(grad_amp / size * np.cos(grad_dir))
  gy = np.float32(grad_amp / size * np.sin(grad_dir))
  shade = gx * (x - size / 2) + gy * (y - size / 2)
  fx, fy = np.float32(tex_freq[0]), np.float32(tex_freq[1])
  shade = shade + np.float32(tex_amp) * np.sin(fx * x + fy * y + np.float32(tex_phase))
  # Pixel noise: uniform, zero-mean, standard deviation ``noise_std``, from
  # raw random bytes (several times faster than Gaussian samples).
  num_bytes = 3 * size * size
  noise = rng.integers(0, 2**32, size=-(-num_bytes // 4), dtype=np.uint32)
  noise = noise.view(np.uint8)[:num_bytes].reshape(3, size, size)
  noise_scale = np.float32(noise_std / _BYTE_STD)
  noise_offset = np.float32(127.5 * noise_std / _BYTE_STD)

  # Composite, channel by channel (broadcasting over a trailing axis of 3 is
  # slow in numpy): background colour + shading where alpha = 0, the flat
  # foreground colour where alpha = 1, then noise.
  #   pixel = bg + shade * (1 - alpha) + alpha * (fg - bg) + noise
  shade *= 1.0 - alpha
  out = np.empty((size, size, 3), dtype=np.uint8)
  chan = np.empty((size, size), dtype=np.float32)
  for ch in range(3):
    np.multiply(alpha, np.float32(fg[ch] - bg[ch]), out=chan)
    chan += shade
    chan += np.float32(bg[ch]) - noise_offset
    chan += noise[ch] * noise_scale
    np.clip(chan, 0.0, 255.0, out=chan)
    np.rint(chan, out=chan)
    out[..., ch] = chan
  return out


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator that draws example ``index`` of ``split``."""
  return np.random.default_rng([int(seed), SPLIT_IDS[split], int(index)])


def example_label(index: int) -> int:
  """Labels are balanced and fixed by position: ``index % NUM_CLASSES``."""
  return int(index) % NUM_CLASSES


def make_example(
    seed: int, split: str, index: int, size: int = IMAGE_SIZE
) -> tuple[np.ndarray, int]:
  """Image and label of example ``index`` of ``split`` (before JPEG)."""
  label = example_label(index)
  return draw_example(example_rng(seed, split, index), label, size), label


def make_arrays(
    seed: int, split: str, num_examples: int, size: int = IMAGE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
  """First ``num_examples`` examples of ``split``, as the builder draws them.

  Returns ``(images uint8 [N, size, size, 3], labels int64 [N])`` in index
  order (the builder's ArrayRecord files hold the same examples, JPEG
  encoded, in TFDS' shuffled order).
  """
  if split not in SPLIT_IDS:
    raise ValueError(f'split must be one of {sorted(SPLIT_IDS)}, got {split!r}')
  images = np.empty((num_examples, size, size, 3), dtype=np.uint8)
  labels = np.empty((num_examples,), dtype=np.int64)
  for i in range(num_examples):
    images[i], labels[i] = make_example(seed, split, i, size)
  return images, labels


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  """JPEG bytes of a uint8 RGB image (PIL; no chroma subsampling)."""
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='JPEG', quality=quality, subsampling=0)
  return buf.getvalue()


@dataclasses.dataclass(eq=False)
class SyntheticShapesConfig(tfds.core.BuilderConfig):
  """Sizes and seed of one ``synthetic_shapes`` variant."""

  num_train: int = 0
  num_validation: int = 0
  seed: int = 0


class SyntheticShapes(builder.LocalBuilder):
  """Procedural 10-class shape dataset (see the module docstring)."""

  name = 'synthetic_shapes'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES: ClassVar[dict[str, str]] = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
      SyntheticShapesConfig(
          name='default',
          description='Quickstart size: 10,000 train / 1,000 validation.',
          num_train=10_000,
          num_validation=1_000,
          seed=0,
      ),
      SyntheticShapesConfig(
          name='tiny',
          description='Tests and notebooks: 320 train / 160 validation.',
          num_train=320,
          num_validation=160,
          seed=0,
      ),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'default'

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=(
            'Procedurally drawn 256x256 images of 10 shape classes with '
            'random position, size, rotation and class-independent colours.'
        ),
        features=tfds.features.FeaturesDict(
            {
                'image': tfds.features.Image(
                    shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format='jpeg'
                ),
                'label': tfds.features.ClassLabel(names=list(CLASS_NAMES)),
            }
        ),
        supervised_keys=('image', 'label'),
        homepage=None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    cfg = self.builder_config
    return {
        'train': self._generate_examples('train', cfg.num_train, cfg.seed),
        'validation': self._generate_examples('validation', cfg.num_validation, cfg.seed),
    }

  def _generate_examples(self, split: str, num_examples: int, seed: int):
    for i in range(num_examples):
      image, label = make_example(seed, split, i)
      # Pre-encoded bytes go straight into the record (TFDS would
      # otherwise encode through TensorFlow, which is slower).
      yield i, {'image': encode_jpeg(image), 'label': label}
