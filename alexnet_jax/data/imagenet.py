"""ImageNet's 1,000 classes (ILSVRC-2012, the paper's dataset): WordNet ids and readable names.

`imagenet_classes.tsv`, shipped with the package, holds one class a line in label order, `wnid
<tab> name`: the ids sorted, as TFDS's imagenet2012 numbers its labels (its `labels.txt`), and the
names torchvision publishes with its ImageNet weights (`AlexNet_Weights.IMAGENET1K_V1.meta
['categories']`), which are in that same order. Shipped as data, so that weights imported without
a prepared ImageNet, and without torchvision, still name their classes ('balloon', not 417).
"""

import functools
import os
from typing import Sequence

CLASSES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'imagenet_classes.tsv')
NUM_CLASSES = 1000


@functools.cache
def _classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
  with open(CLASSES_FILE, encoding='utf-8') as f:
    rows = [line.rstrip('\n').split('\t') for line in f if line.strip()]
  return tuple(wnid for wnid, _ in rows), tuple(name for _, name in rows)


def wnids() -> tuple[str, ...]:
  """The WordNet ids ('n01440764', ...), in label order."""
  return _classes()[0]


def names() -> tuple[str, ...]:
  """The readable names ('tench', 'goldfish', ...), in label order."""
  return _classes()[1]


def readable(class_names: Sequence[str]) -> tuple[str, ...]:
  """`class_names` with ImageNet's WordNet ids (what a run trained on TFDS's imagenet2012 records)
  replaced by their names; any other list unchanged."""
  if len(class_names) == NUM_CLASSES and tuple(class_names) == wnids():
    return names()
  return tuple(class_names)
