r"""Prepares a dataset once, in the ArrayRecord format that training reads without TensorFlow.

    python -m alexnet_jax.tools.prepare --dataset=imagenet2012 --data_dir=DIR [--manual_dir=DIR]
    python -m alexnet_jax.tools.prepare --dataset=imagenette/320px-v2        # any TFDS name
    python -m alexnet_jax.tools.prepare --folder=ROOT [--val_folder=ROOT]    # ROOT/<class>/<image>
    python -m alexnet_jax.tools.prepare --csv=train_labels.csv --images=train_set \
        --classes=class_list.txt --val_csv=val_labels.csv --val_images=val_set   # iFood 2019

It ends by printing the flags to train on the result. Your own images are written by
`datasets.image_folder` (see there for what `--resize` stores and saves); files PIL cannot
decode are skipped and listed in `prepare_report.json` beside the dataset. This command may
import TensorFlow (TFDS writes with it); training does not.
"""

import difflib
import os
import sys

from absl import app
from absl import flags
import tensorflow_datasets as tfds

from alexnet_jax.data import datasets  # noqa: F401  (registers synthetic_shapes)
from alexnet_jax.data.datasets import image_folder
from alexnet_jax.errors import ConfigError
from alexnet_jax.system import runtime

_IMAGENET_TARS = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')

flags.DEFINE_string('dataset', None, 'A TFDS name: imagenet2012, cifar10, imagenette/320px-v2...')
flags.DEFINE_string('folder', None, 'Your images as ROOT/<class>/<image>.')
flags.DEFINE_string('csv', None, 'Your images as CSV rows `file,label`; with --images.')
flags.DEFINE_string('images', None, 'The folder the --csv file names are relative to.')
flags.DEFINE_string(
    'classes',
    None,
    'Class list, one per line (`name` or `index name`); fixes '
    'the label order, and with --folder which subfolders are used.',
)
flags.DEFINE_string('val_folder', None, 'A separate validation folder, laid out as --folder.')
flags.DEFINE_string('val_csv', None, 'A separate validation CSV, laid out as --csv.')
flags.DEFINE_string('val_images', None, "The folder of --val_csv's files (default --images).")
flags.DEFINE_float(
    'validation_fraction',
    None,
    'Held out of train per class when no separate '
    'validation source is given (default 0.1 then).',
)
flags.DEFINE_integer('seed', 0, 'Seed of the validation hold-out.')
flags.DEFINE_integer(
    'resize',
    256,
    'Store images as the central square of this side after '
    'scaling the shorter side to it (section 2 of the paper); 0 keeps them whole.',
)
flags.DEFINE_float(
    'max_missing_fraction',
    0.01,
    'CSV files that may be missing (skipped and ' 'reported) before it is an error.',
)
flags.DEFINE_string('name', None, 'Dataset name for your images (default: from the folder name).')
flags.DEFINE_string('data_dir', None, 'TFDS data directory (default ~/tensorflow_datasets).')
flags.DEFINE_string('manual_dir', None, 'Your downloads (default <data_dir>/downloads/manual).')
flags.DEFINE_bool('overwrite', False, 'Rebuild a dataset of your images that is already prepared.')


def prepare_tfds(name: str, data_dir: str | None = None, manual_dir: str | None = None) -> dict:
  """Builds TFDS dataset `name` as ArrayRecord; ConfigError for an unknown name or missing files."""
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    known = tfds.list_builders(with_community_datasets=False)  # the community list is online
    close = difflib.get_close_matches(name.split('/')[0], known, n=5, cutoff=0.6)
    raise ConfigError(
        f'TFDS has no dataset {name!r}{f"; did you mean {close}" if close else ""}. Use a name '
        'from https://www.tensorflow.org/datasets/catalog (with /config if it has several), the '
        "built-in 'synthetic_shapes', or prepare your own images with --folder or --csv."
    ) from None
  manual = manual_dir or os.path.join(builder.data_dir_root, 'downloads', 'manual')
  if name.split('/')[0] == 'imagenet2012':
    absent = [t for t in _IMAGENET_TARS if not os.path.isfile(os.path.join(manual, t))]
    if absent and not builder.is_prepared():
      raise ConfigError(
          f'ImageNet needs {" and ".join(_IMAGENET_TARS)} in {manual} ({", ".join(absent)} '
          'missing). TFDS cannot download them: get them from https://image-net.org (free '
          'registration), put them there (or pass --manual_dir=WHERE_THEY_ARE) and run again.'
      )
  try:
    builder.download_and_prepare(
        file_format='array_record', download_config=tfds.download.DownloadConfig(manual_dir=manual)
    )
  except AssertionError as e:  # TFDS' "Manual directory ... does not exist or is empty"
    raise ConfigError(
        f'{name!r} needs files you download yourself, in {manual}. TFDS says: '
        f'{" ".join(str(e).split())}'
    ) from None
  except ModuleNotFoundError as e:
    raise ConfigError(
        f'Preparing {name!r} needs the Python package {e.name!r}, which is not '
        f'installed: `pip install {e.name}`, then run again.'
    ) from None
  return dict(
      dataset=name,
      data_dir=str(builder.data_dir_root),
      num_classes=builder.info.features['label'].num_classes,
      examples={s: v.num_examples for s, v in builder.info.splits.items()},
  )


_IMAGE_FLAGS = (
    'folder',
    'csv',
    'images',
    'classes',
    'val_folder',
    'val_csv',
    'val_images',
    'validation_fraction',
    'seed',
    'resize',
    'max_missing_fraction',
    'name',
    'data_dir',
    'overwrite',
)


def prepare_images(
    folder=None,
    csv=None,
    images=None,
    classes=None,
    val_folder=None,
    val_csv=None,
    val_images=None,
    validation_fraction=None,
    seed=0,
    resize=256,
    max_missing_fraction=0.01,
    name=None,
    data_dir=None,
    overwrite=False,
) -> dict:
  """Your images (a folder, or a CSV with its image folder; arguments as the flags) -> a report."""
  class_list = image_folder.read_class_list(classes) if classes else None
  if folder:
    train, class_list, ignored = image_folder.list_folder(folder, class_list)
    missing = []
  else:
    train, class_list, missing = image_folder.list_csv(
        csv, images, class_list, max_missing_fraction
    )
    ignored = []
  name = name or image_folder.dataset_name(folder or csv)
  if name in tfds.list_builders(with_community_datasets=False):
    raise ConfigError(
        f'{name!r} is already a TFDS dataset, so training would read that one. '
        f'Give yours another name: --name={name}_images.'
    )
  if not (name[:1].isalpha() and name.replace('_', '').isalnum() and name.islower()):
    raise ConfigError(
        f'--name={name!r}: TFDS names are lower-case letters, digits and _, '
        'starting with a letter (e.g. --name=ifood2019).'
    )
  validation, val_missing = [], []
  if val_folder:
    validation, _, val_ignored = image_folder.list_folder(val_folder, class_list, '--val_folder')
    ignored += val_ignored
  elif val_csv:
    validation, _, val_missing = image_folder.list_csv(
        val_csv, val_images or images, class_list, max_missing_fraction, '--val_csv'
    )
  fraction = validation_fraction
  if fraction is not None and not 0 <= fraction < 1 or resize < 0:
    raise ConfigError(
        f'--validation_fraction={fraction} must be in [0, 1) and --resize='
        f'{resize} at least 0 (0: store the images whole).'
    )
  if validation and fraction:
    raise ConfigError(
        'Pass either a validation source (--val_folder / --val_csv) or '
        '--validation_fraction, not both.'
    )
  if not validation:
    train, validation = image_folder.split_validation(
        train, 0.1 if fraction is None else fraction, seed
    )
  skipped = [{'split': 'train', 'file': m, 'reason': 'missing file'} for m in missing] + [
      {'split': 'validation', 'file': m, 'reason': 'missing file'} for m in val_missing
  ]
  splits = {'train': train, 'validation': validation}
  return image_folder.prepare(
      name, data_dir, class_list, splits, resize, overwrite, skipped, ignored
  )


def main(argv):
  runtime.tune_process()
  f = flags.FLAGS
  sources = [s for s in ('dataset', 'folder', 'csv') if f[s].value]
  try:
    if len(argv) > 1 or len(sources) != 1 or (f.csv and not f.images):
      raise ConfigError(
          'Name exactly one source: --dataset=TFDS_NAME, --folder=ROOT (ROOT/<class>'
          '/<image>) or --csv=FILE --images=DIR; see python -m alexnet_jax.tools.prepare '
          '--help.'
      )
    if f.dataset:
      report = prepare_tfds(f.dataset, f.data_dir, f.manual_dir)
    else:
      report = prepare_images(**{k: f[k].value for k in _IMAGE_FLAGS})
  except ConfigError as e:
    sys.stderr.write(f'\nError: {e}\n')
    sys.exit(2)
  again = ', already prepared (--overwrite rebuilds it)' if report.get('already_prepared') else ''
  print(
      f'\nPrepared {report["dataset"]} in {report["data_dir"]}: {report.get("examples")} '
      f'examples{again}.'
  )
  if report.get('num_skipped'):
    reasons = sorted({s['reason'].split(':')[0] for s in report['skipped']})
    print(
        f'Skipped {report["num_skipped"]} bad files ({", ".join(reasons)}), listed in '
        f'{report["report"]}.'
    )
  print(
      f'Train on it with:\n  --config.dataset={report["dataset"]} --config.data_dir='
      f'{report["data_dir"]} --config.model.num_classes={report["num_classes"]}'
  )


if __name__ == '__main__':
  app.run(main)
