"""Your own images as a TFDS dataset: a `ROOT/<class>/<image>` folder or a CSV of (file, label).

`python -m alexnet_jax.tools.prepare --folder=...` / `--csv=...` lists the images here, then writes
them with a `tfds.core.GeneratorBasedBuilder` created for the dataset's name at runtime
(`make_builder`). The result is an ordinary prepared TFDS dataset (ArrayRecord shards plus
`dataset_info.json` and `features.json`), so training opens it by name with
`tfds.data_source(name, data_dir=...)` like any other: TFDS rebuilds a read-only builder from
those files, and neither this module nor TensorFlow is imported when reading.

Features: `image` (JPEG), `label` (`ClassLabel` with the class names, in the order of the class
list), `file_name` (the path relative to the source folder, to trace an example back to its file).

Every image is decoded in full with PIL before it is written. Files PIL cannot decode (empty,
truncated, not an image) are skipped and listed, with the reason, in `prepare_report.json` next
to the prepared dataset; one bad file never stops the preparation. Grayscale, palette, CMYK and
16-bit images are converted to RGB, transparent ones composited on white, and EXIF rotations
applied, since the training pipeline expects HxWx3 RGB.

Storage, `resize` (section 2 of the paper: "rescaled the image such that the shorter side was of
length 256, and then cropped out the central 256x256 patch"): with `resize=256` each image is
stored as that 256x256 patch (`augment.resize_shorter_and_center_crop`), re-encoded as JPEG
quality 90. AlexNet never sees anything else of the image, and training then skips the resize
on every epoch: each stored file is smaller than the original, decodes faster, and what training
does per read (`decode.decode_image` at the size it needs, then the resize and crop) shrinks
most of all (docs/benchmark_history.md has the sizes and times, on photo-like JPEGs of ImageNet's
typical size). The cost: nothing outside the central square survives, so recipes that crop from the
whole photo need `resize=0`. With `resize=0`, JPEG files that need no conversion are stored byte
for byte, anything else at quality 95.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import json
import math
import os
import re
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageOps

from alexnet_jax.data import augment
from alexnet_jax.data.datasets import builder
from alexnet_jax.errors import ConfigError

_VERSION = '1.0.0'
REPORT_FILE = 'prepare_report.json'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.ppm')
RESIZED_QUALITY = 90  # the stored 256x256 patch
REENCODE_QUALITY = 95  # full-size images that had to be converted (PNG, CMYK, ...)
# Folder names that say nothing about the dataset: the name comes from their parent instead.
_GENERIC_DIRS = ('train', 'training', 'train_set', 'images', 'imgs', 'data', 'all')
_CHUNK = 256  # images decoded in parallel at a time (bounds memory on large datasets)


@dataclasses.dataclass(frozen=True)
class Example:
  path: str  # absolute path of the image file
  label: int
  file_name: str  # as the user named it: relative to the folder / as written in the CSV


# --------------------------------------------------------------------------------------------
# Listing: folders, CSV files, class lists.


def dataset_name(path: str) -> str:
  """A TFDS-valid name (lower-case snake case) from the folder, or the CSV's folder."""
  path = os.path.abspath(path)
  parts = [p for p in (os.path.dirname(path) if os.path.isfile(path) else path).split(os.sep) if p]
  while len(parts) > 1 and parts[-1].lower() in _GENERIC_DIRS:
    parts.pop()
  name = re.sub(r'[^a-z0-9]+', '_', (parts[-1] if parts else 'images').lower()).strip('_')
  return name if name[:1].isalpha() else f'images_{name}'


def read_class_list(path: str) -> list[str]:
  """One class per line, either `name` or `index name` (iFood 2019's class_list.txt)."""
  if not os.path.isfile(path):
    raise ConfigError(
        f'The class list {path!r} does not exist. Pass --classes=FILE with one '
        'class name per line (or `index name` per line, as iFood 2019 ships).'
    )
  with open(path, encoding='utf-8') as f:
    lines = [line.strip() for line in f if line.strip()]
  indexed = [re.match(r'^(\d+)[\s,]+(\S.*)$', line) for line in lines]
  if lines and all(indexed) and sorted(int(m[1]) for m in indexed) == list(range(len(lines))):
    names = [m[2].strip() for m in sorted(indexed, key=lambda m: int(m[1]))]
  else:
    names = lines
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if not names or duplicates:
    raise ConfigError(
        f'The class list {path!r} is empty or names a class twice ({duplicates}). '
        'Write each class once, one per line, in the order of the label indices.'
    )
  return names


def _check_dir(path: str, flag: str) -> None:
  if not path or not os.path.isdir(path):
    raise ConfigError(
        f'{flag}={path!r} is not a folder. Point {flag} at the folder that holds '
        'your images (for --folder: one subfolder per class, ROOT/<class>/<image>).'
    )


def list_folder(
    root: str, classes: Sequence[str] | None = None, flag: str = '--folder'
) -> tuple[list[Example], list[str], list[str]]:
  """`ROOT/<class>/**/<image>` -> (examples, class names, ignored files).

  Class names are the subfolder names, sorted, unless `classes` fixes their order (and which
  subfolders to use). Files without an image extension are ignored and returned.
  """
  _check_dir(root, flag)
  subdirs = sorted(
      d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith('.')
  )
  names = list(classes) if classes is not None else subdirs
  absent = [c for c in names if c not in subdirs]
  if absent:
    raise ConfigError(
        f'{flag}={root!r} has no subfolder for the classes {absent[:10]} of the '
        f'class list ({len(absent)} in all). Each class needs a folder ROOT/<class>; '
        'fix the folder names or the class list.'
    )
  examples, ignored = [], []
  for label, name in enumerate(names):
    for dirpath, dirnames, files in os.walk(os.path.join(root, name), followlinks=True):
      dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
      for f in sorted(files):
        path = os.path.join(dirpath, f)
        rel = os.path.relpath(path, root)
        if f.startswith('.'):
          continue
        if f.lower().endswith(IMAGE_EXTENSIONS):
          examples.append(Example(path, label, rel))
        else:
          ignored.append(rel)
  if not examples:
    loose = [f for f in os.listdir(root) if f.lower().endswith(IMAGE_EXTENSIONS)]
    where = (
        f'its {len(loose)} images lie directly in it, not in class subfolders'
        if loose
        else f'found {len(subdirs)} subfolders and no image files in them'
    )
    raise ConfigError(
        f'{flag}={root!r} holds no images in class subfolders ({where}). Arrange '
        'them as ROOT/<class name>/<image>.jpg, one subfolder per class, or describe '
        'them with --csv=FILE --images=DIR.'
    )
  return examples, names, ignored


def list_csv(
    csv_path: str,
    images_dir: str,
    classes: Sequence[str] | None = None,
    max_missing_fraction: float = 0.01,
    flag: str = '--csv',
) -> tuple[list[Example], list[str], list[str]]:
  """Rows `file,label` (a header row is skipped) -> (examples, class names, missing files).

  A label is an index into `classes` or a class name. Without a class list, names become the
  classes (sorted) and integer labels name themselves (classes '0' ... 'max'). Files named by
  the CSV but absent are returned as missing, unless there are more than `max_missing_fraction`
  of them: then the CSV or --images is probably wrong, and that is an error.
  """
  if not os.path.isfile(csv_path):
    raise ConfigError(
        f'{flag}={csv_path!r} does not exist. Pass the CSV file of image names and '
        "labels (e.g. iFood 2019's train_labels.csv)."
    )
  images_flag = '--images' if flag == '--csv' else '--val_images'
  _check_dir(images_dir, images_flag)
  with open(csv_path, newline='', encoding='utf-8') as f:
    rows = [(n, r) for n, r in enumerate(csv.reader(f), start=1) if any(c.strip() for c in r)]
  if (
      rows
      and not os.path.isfile(os.path.join(images_dir, rows[0][1][0].strip()))
      and (len(rows[0][1]) < 2 or not rows[0][1][1].strip().isdigit())
      and (classes is None or rows[0][1][1].strip() not in classes)
  ):
    rows = rows[1:]  # a header such as `img_name,label`
  short = [n for n, r in rows if len(r) < 2]
  if not rows or short:
    raise ConfigError(
        f'{flag}={csv_path!r} has no rows or rows without a label (lines '
        f'{short[:10]}). Each row must be `image_file,label`.'
    )
  labels = [r[1].strip() for _, r in rows]
  if classes is None:
    if all(lab.isdigit() for lab in labels):
      classes = [str(i) for i in range(max(int(lab) for lab in labels) + 1)]
    else:
      classes = sorted(set(labels))
  index = {name: i for i, name in enumerate(classes)}
  examples, bad_rows, missing = [], [], []
  for (n, r), lab in zip(rows, labels):
    label = int(lab) if lab.isdigit() and lab not in index else index.get(lab, -1)
    if not 0 <= label < len(classes):
      bad_rows.append(n)
      continue
    path = os.path.join(images_dir, r[0].strip())
    if os.path.isfile(path):
      examples.append(Example(path, label, r[0].strip()))
    else:
      missing.append(r[0].strip())
  if bad_rows:
    raise ConfigError(
        f'{flag}={csv_path!r}: the labels on lines {bad_rows[:10]} ({len(bad_rows)} rows in all) '
        f'are not in the class list, which has {len(classes)} classes: indices 0 to '
        f'{len(classes) - 1} or the names {list(classes[:5])}{"..." if len(classes) > 5 else ""}. '
        'Fix those rows, or pass the right --classes file.'
    )
  if len(missing) > max_missing_fraction * len(rows):
    raise ConfigError(
        f'{len(missing)} of the {len(rows)} images named in {csv_path!r} are not in {images_dir!r} '
        f"(e.g. {missing[:3]}). Check that {images_flag} points at the folder the CSV's file "
        'names are relative to; if those files are really gone, pass --max_missing_fraction='
        f'{math.ceil(1000 * len(missing) / len(rows)) / 1000} to skip them (they are listed in '
        'the report).'
    )
  return examples, list(classes), missing


def split_validation(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
  """Holds out round(fraction * n_c) of each class c, drawn with `seed`: (train, validation)."""
  train, validation = [], []
  by_class: dict[int, list[Example]] = {}
  for e in sorted(examples, key=lambda e: (e.label, e.file_name)):
    by_class.setdefault(e.label, []).append(e)
  for label, members in sorted(by_class.items()):
    order = np.random.default_rng([seed, label]).permutation(len(members))
    held = set(order[: int(round(fraction * len(members)))].tolist())
    for i, e in enumerate(members):
      (validation if i in held else train).append(e)
  return train, validation


# --------------------------------------------------------------------------------------------
# Decoding and storing one image.


def encode_image(path: str, resize: int) -> tuple[bytes | None, str | None]:
  """(JPEG bytes to store, None), or (None, why the file was skipped)."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
    if not data:
      return None, 'empty file'
    image = Image.open(io.BytesIO(data))
    fmt = image.format
    image.load()  # decodes in full: a truncated file fails here
    rotated = ImageOps.exif_transpose(image)
    if resize == 0 and fmt == 'JPEG' and image.mode == 'RGB' and rotated is image:
      return data, None  # stored as it is: no loss
    image = rotated
    if image.mode in ('RGBA', 'LA', 'PA') or 'transparency' in image.info:
      white = Image.new('RGBA', image.size, (255, 255, 255, 255))
      image = Image.alpha_composite(white, image.convert('RGBA'))
    if image.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F'):
      image = Image.fromarray((np.asarray(image, np.float64) / 256).clip(0, 255).astype(np.uint8))
    pixels = np.asarray(image.convert('RGB'))
  except Image.UnidentifiedImageError:
    return None, 'not an image PIL can read'
  except Exception as e:  # pylint: disable=broad-except  (any decoder failure is a bad file)
    return None, f'{type(e).__name__}: {" ".join(str(e).split())}'
  if resize:
    pixels = augment.resize_shorter_and_center_crop(pixels, resize)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(
      buf, format='JPEG', quality=RESIZED_QUALITY if resize else REENCODE_QUALITY
  )
  return buf.getvalue(), None


# --------------------------------------------------------------------------------------------
# The builder.


def make_builder(
    name: str,
    class_names: Sequence[str],
    splits: dict[str, Sequence[Example]],
    resize: int = 256,
    workers: int | None = None,
):
  """A GeneratorBasedBuilder class named `name` writing `splits`; `.skipped` lists bad files.

  Not registered with TFDS (names are the user's and may be prepared again in one process); a
  prepared dataset is read back without this class.
  """
  shape = (resize, resize, 3) if resize else (None, None, 3)
  skipped: list[dict[str, str]] = []

  class ImageFolder(builder.LocalBuilder, skip_registration=True):
    VERSION = tfds.core.Version(_VERSION)
    RELEASE_NOTES = {_VERSION: 'Prepared by python -m alexnet_jax.tools.prepare.'}

    def _info(self) -> tfds.core.DatasetInfo:
      return self.dataset_info_from_configs(
          description=f'Images prepared from {sorted(splits)} sources by alexnet_jax.tools.prepare.',
          features=tfds.features.FeaturesDict(
              {
                  'image': tfds.features.Image(shape=shape, encoding_format='jpeg'),
                  'label': tfds.features.ClassLabel(names=list(class_names)),
                  'file_name': tfds.features.Text(),
              }
          ),
          supervised_keys=('image', 'label'),
          homepage=None,
      )

    def _split_generators(self, dl_manager):
      del dl_manager  # the images are local
      return {
          split: self._generate_examples(split, examples)
          for split, examples in splits.items()
          if examples
      }

    def _generate_examples(self, split: str, examples: Sequence[Example]) -> Iterator:
      # PIL releases the GIL while decoding, resizing and encoding, so threads scale.
      with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        for start in range(0, len(examples), _CHUNK):
          chunk = examples[start : start + _CHUNK]
          encoded = pool.map(lambda e: encode_image(e.path, resize), chunk)
          for i, (e, (data, reason)) in enumerate(zip(chunk, encoded), start=start):
            if data is None:
              skipped.append({'split': split, 'file': e.file_name, 'reason': reason})
              continue
            yield i, {'image': data, 'label': e.label, 'file_name': e.file_name}

  ImageFolder.name = name
  ImageFolder.skipped = skipped
  return ImageFolder


def prepare(
    name: str,
    data_dir: str | None,
    class_names: Sequence[str],
    splits: dict[str, Sequence[Example]],
    resize: int = 256,
    overwrite: bool = False,
    skipped: Sequence[dict] = (),
    ignored: Sequence[str] = (),
    workers: int | None = None,
) -> dict:
  """Writes the dataset and `prepare_report.json` beside it; returns the report.

  `skipped`: files already known to be bad (a CSV's missing files), reported with those that
  fail to decode. A dataset already prepared is kept (its report returned) unless `overwrite`.
  """
  make = make_builder(name, class_names, splits, resize, workers)
  builder = make(data_dir=data_dir)
  report_path = os.path.join(builder.data_dir, REPORT_FILE)
  replaced = None
  if builder.is_prepared() and overwrite:
    # A builder that has read the prepared dataset's info refuses to write another one (TFDS:
    # "Cannot override the file format..."). The old one steps aside, and comes back if the new
    # one fails: an interrupted --overwrite never leaves the user with no dataset.
    replaced = builder.data_path.parent / (builder.data_path.name + '.replaced')
    if replaced.exists():
      replaced.rmtree()
    builder.data_path.rename(replaced)
    builder = make(data_dir=data_dir)
  if builder.is_prepared() and not overwrite:
    report = {}
    if os.path.isfile(report_path):
      with open(report_path, encoding='utf-8') as f:
        report = json.load(f)
    return dict(
        report,
        already_prepared=True,
        dataset=name,
        data_dir=str(builder.data_dir_root),
        num_classes=builder.info.features['label'].num_classes,
    )
  try:
    builder.download_and_prepare(
        file_format='array_record',
        download_config=tfds.download.DownloadConfig(
            download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
        ),
    )
  except BaseException:
    if replaced is not None:
      if builder.data_path.exists():
        builder.data_path.rmtree()
      replaced.rename(builder.data_path)
    raise
  if replaced is not None:
    replaced.rmtree()
  bad = list(skipped) + builder.skipped
  report = dict(
      dataset=name,
      data_dir=str(builder.data_dir_root),
      num_classes=len(class_names),
      classes=list(class_names),
      resize=resize,
      examples={s: builder.info.splits[s].num_examples for s in builder.info.splits},
      num_skipped=len(bad),
      skipped=bad,
      num_ignored=len(ignored),
      ignored=list(ignored),
      report=report_path,
  )
  with open(report_path, 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=1)
  return report
