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

The ``hard`` configs draw a 20-class variant in which colour matters. Label
``l`` is shape ``l % 10`` in palette ``l // 10``, ``warm`` or ``cool``, named
``disk_warm``, ``ring_warm``, ..., ``vertical_stripes_warm``, ``disk_cool``,
..., ``vertical_stripes_cool`` (``HARD_CLASS_NAMES[l]``). The main shape's
geometry (position, size, aspect, rotation, border margin) is drawn as
above, so every class still maps to itself under a horizontal flip, and

* its colour is built in an opponent-colour space, BT.601 YCbCr: a luma
  uniform on 70..190 whatever the palette, a hue (the angle of the chroma
  vector) in the palette's arc, red through orange to yellow for ``warm``
  and green through cyan to blue for ``cool`` (with gaps of 40 and 110
  degrees between the arcs), and a chroma of 35-70. Hue and chroma are
  redrawn, keeping the luma, until the colour is in gamut, so the palette is
  in the hue and never in the brightness: a grey-level view cannot tell
  ``disk_warm`` from ``disk_cool``. The background is a uniform random
  colour, independent of the class, with the contrast rule above;
* 2-4 distractors are drawn before it, so it hides them where they overlap:
  random shapes among the 10, at any rotation, 12%-22% of the side across
  (and at most 60% of the main shape's diameter, so the main shape stays the
  largest object in area as well as extent), centred outside the main
  shape's enclosing circle but free to touch it, coloured from either
  palette or grey independently of the label;
* one straight bar across the whole image, 4%-8% of the side wide, at a
  random angle and of a random colour, is drawn over everything, placed so
  that it hides between 2% and 25% of the main shape's area.

So the class is in the hue of the largest object, found among distractors
and partly hidden: the network needs spatial and colour information
together, so that colour-selective kernels have a reason to appear (the
paper's Figure 3: one tower's conv1 kernels are colour-agnostic, the other's
colour-specific), and the ablations (normalisation, pooling, towers,
regularisation) have error left to move. The tests check that a threshold on
the shape's R - B separates the palettes while one on its luma is at chance,
that the mean colour of the image predicts neither class nor palette, and
that shape-centred orientation histograms of the luma, which solve the
default variant, find the shape only about half the time and the palette at
chance.

Configs (labels are balanced: example ``i`` has label ``i % 10``, or
``i % 20`` in the hard configs):

* ``default``: 10,000 train / 1,000 validation examples, 157 MB on disk.
  Preparing it (drawing, JPEG encoding, shuffling, writing ArrayRecord) is
  cheap enough to happen offline on first use, on a CPU; docs/benchmark_history.md has
  the time and the command that measures it.
* ``tiny``: 320 train / 160 validation examples, 7 MB, a small fraction of
  that to prepare; for tests and notebooks.
* ``hard``: the hard variant, 10,000 train / 1,000 validation examples,
  196 MB on disk (its JPEGs are larger, ~19 KB: more edges).
* ``hard_tiny``: the hard variant, 320 train / 160 validation examples, 9 MB;
  for tests.
* ``medium``: the hard variant's 20 classes and palettes with less clutter:
  0-2 distractors and no bar (``shapes_drawing.CLUTTER``), 10,000 train / 1,000 validation
  examples. At configs/ablation.py's CPU scale a network's error on ``hard``
  is still falling after 5,000 steps; ``medium`` is the one to use where an
  ablation needs runs that finish learning on a CPU.

Images are stored as JPEG (quality 90, no chroma subsampling, ~14 KB each);
the decoded pixels differ from the drawn ones by ~3 levels on average, most of
it the pixel noise that JPEG smooths away.

Every example is a pure function of ``(seed, split, index)`` and the
variant: its numpy ``Generator`` is
``np.random.default_rng([seed, split_id, index])`` with ``split_id`` 0 for
train and 1 for validation, so train and validation are disjoint draws, and
re-preparing gives the same images (bit-for-bit on the same platform and
numpy version; the JPEG step may differ across libjpeg versions).
``make_arrays`` (with ``hard=True`` for the hard configs) returns exactly the
pixels the builder encodes.

Drawing (``shapes_drawing``) is vectorised numpy (signed distances on a coordinate grid,
anti-aliased edges), with no Python loop over pixels (its time per image:
docs/benchmark_history.md).

This module imports ``tensorflow_datasets`` but not TensorFlow; reading a
prepared dataset works without TensorFlow, preparing one needs it
(``pip install tensorflow-cpu``).
"""

from __future__ import annotations

import dataclasses
import io
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from alexnet_jax.data.datasets import builder
from alexnet_jax.data.datasets import shapes_drawing

JPEG_QUALITY = 90
SPLIT_IDS = {'train': 0, 'validation': 1}


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
  """The generator that draws example ``index`` of ``split``."""
  return np.random.default_rng([int(seed), SPLIT_IDS[split], int(index)])


def class_names(hard: bool = False) -> tuple[str, ...]:
  """The class names of the default variant, or of the ``hard`` one: ``names[label]``."""
  return shapes_drawing.HARD_CLASS_NAMES if hard else shapes_drawing.CLASS_NAMES


def example_label(index: int, hard: bool = False) -> int:
  """Labels are balanced and fixed by position: ``index % num_classes`` (10, or 20 if hard)."""
  return int(index) % len(class_names(hard))


def make_example(
    seed: int,
    split: str,
    index: int,
    size: int = shapes_drawing.IMAGE_SIZE,
    *,
    hard: bool = False,
    clutter: str = 'hard',
) -> tuple[np.ndarray, int]:
  """Image and label of example ``index`` of ``split`` (before JPEG)."""
  label = example_label(index, hard)
  rng = example_rng(seed, split, index)
  return shapes_drawing.draw_example(rng, label, size, hard=hard, clutter=clutter), label


def make_arrays(
    seed: int,
    split: str,
    num_examples: int,
    size: int = shapes_drawing.IMAGE_SIZE,
    *,
    hard: bool = False,
    clutter: str = 'hard',
) -> tuple[np.ndarray, np.ndarray]:
  """First ``num_examples`` examples of ``split``, as the builder draws them.

  Returns ``(images uint8 [N, size, size, 3], labels int64 [N])`` in index
  order (the builder's ArrayRecord files hold the same examples, JPEG
  encoded, in TFDS' shuffled order). ``hard=True`` draws the 20-class variant, with the
  ``hard`` config's clutter or, ``clutter='medium'``, the ``medium`` config's.
  """
  if split not in SPLIT_IDS:
    raise ValueError(f'split must be one of {sorted(SPLIT_IDS)}, got {split!r}')
  images = np.empty((num_examples, size, size, 3), dtype=np.uint8)
  labels = np.empty((num_examples,), dtype=np.int64)
  for i in range(num_examples):
    images[i], labels[i] = make_example(seed, split, i, size, hard=hard, clutter=clutter)
  return images, labels


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  """JPEG bytes of a uint8 RGB image (PIL; no chroma subsampling)."""
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='JPEG', quality=quality, subsampling=0)
  return buf.getvalue()


@dataclasses.dataclass(eq=False)
class SyntheticShapesConfig(tfds.core.BuilderConfig):
  """Sizes, seed and variant (default or 20-class, with its clutter) of one config."""

  num_train: int = 0
  num_validation: int = 0
  seed: int = 0
  hard: bool = False
  clutter: str = 'hard'  # with hard: a key of shapes_drawing.CLUTTER


class SyntheticShapes(builder.LocalBuilder):
  """Procedural shape dataset, 10 classes or 20 (``hard``); see the module docstring."""

  name = 'synthetic_shapes'
  VERSION = tfds.core.Version('1.2.0')
  RELEASE_NOTES: ClassVar[dict[str, str]] = {
      '1.0.0': 'Initial release.',
      '1.1.0': 'Adds the hard and hard_tiny configs.',
      '1.2.0': 'Adds the medium config.',
  }
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
      SyntheticShapesConfig(
          name='hard',
          description=(
              'The hard variant, 20 classes (shape x warm/cool hue), with clutter and an '
              'occluding bar: 10,000 train / 1,000 validation.'
          ),
          num_train=10_000,
          num_validation=1_000,
          seed=0,
          hard=True,
      ),
      SyntheticShapesConfig(
          name='medium',
          description=(
              'The 20 classes of the hard variant with 0-2 distractors and no bar: '
              '10,000 train / 1,000 validation.'
          ),
          num_train=10_000,
          num_validation=1_000,
          seed=0,
          hard=True,
          clutter='medium',
      ),
      SyntheticShapesConfig(
          name='hard_tiny',
          description='The hard variant for tests: 320 train / 160 validation.',
          num_train=320,
          num_validation=160,
          seed=0,
          hard=True,
      ),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'default'

  def _info(self) -> tfds.core.DatasetInfo:
    hard = self.builder_config.hard
    if hard and self.builder_config.clutter == 'medium':
      description = (
          'Procedurally drawn 256x256 images of 20 classes, 10 shapes x 2 hue palettes (warm, '
          'cool; the luma does not depend on the class), with random position, size and '
          'rotation and 0-2 distractor shapes of class-independent colours.'
      )
    elif hard:
      description = (
          'Procedurally drawn 256x256 images of 20 classes, 10 shapes x 2 hue palettes (warm, '
          'cool; the luma does not depend on the class), with random position, size and '
          'rotation, 2-4 distractor shapes of class-independent colours and a bar occluding '
          'up to 25% of the shape.'
      )
    else:
      description = (
          'Procedurally drawn 256x256 images of 10 shape classes with '
          'random position, size, rotation and class-independent colours.'
      )
    return self.dataset_info_from_configs(
        description=description,
        features=tfds.features.FeaturesDict(
            {
                'image': tfds.features.Image(
                    shape=(shapes_drawing.IMAGE_SIZE, shapes_drawing.IMAGE_SIZE, 3),
                    encoding_format='jpeg',
                ),
                'label': tfds.features.ClassLabel(names=list(class_names(hard))),
            }
        ),
        supervised_keys=('image', 'label'),
        homepage=None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    cfg = self.builder_config
    return {
        'train': self._generate_examples('train', cfg.num_train, cfg),
        'validation': self._generate_examples('validation', cfg.num_validation, cfg),
    }

  def _generate_examples(self, split: str, num_examples: int, cfg: SyntheticShapesConfig):
    for i in range(num_examples):
      image, label = make_example(cfg.seed, split, i, hard=cfg.hard, clutter=cfg.clutter)
      # Pre-encoded bytes go straight into the record (TFDS would
      # otherwise encode through TensorFlow, which is slower).
      yield i, {'image': encode_jpeg(image), 'label': label}
