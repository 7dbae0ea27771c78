"""Input pipelines: TFDS ArrayRecord sources read with `tfds.data_source`, transformed with grain.

No TensorFlow is imported here: `tfds.data_source` reads ArrayRecord files and decodes images with
PIL. Only *preparing* a dataset needs TensorFlow (see `alexnet_jax.datasets`).

Reproducibility: the training order and every augmentation draw depend only on `config.seed` and
the position in the stream. grain's `shuffle` permutes each epoch with a seed derived from the
epoch, and `random_map` seeds each example's generator from (seed, index), so a restored
iterator (its state is one integer per process, saved with every checkpoint) continues exactly.

Multi-process: the training stream is defined globally (global example i is a function of the
seed and i alone), and process p reads only rows [p * b, (p + 1) * b) of each global batch, where
b = batch_size / process_count. So the global batches, and a run's numbers, do not depend on how
many processes share them, and no process decodes another's images. Evaluation reads the slice
`process_index::process_count` of the split; its sums do not depend on the order.
"""

import dataclasses
import math
from typing import Any, Iterator

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from alexnet_jax import augment
from alexnet_jax import datasets
from alexnet_jax.errors import ConfigError

IMAGE_KEY = 'image'
LABEL_KEY = 'label'


def _dataset_or_error(config) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder for `config.dataset`, or a ConfigError saying how to get it."""
  name = config.dataset
  try:
    builder = tfds.builder(name, data_dir=config.data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ConfigError(
        f'Unknown dataset {name!r}: TFDS has no dataset of that name. Set --config.dataset to a '
        'TFDS name (e.g. imagenet2012, imagenette, cifar10) or to the built-in '
        "'synthetic_shapes', which needs no download (configs/quickstart.py uses it).") from None
  if builder.is_prepared():
    return builder
  if name.split('/')[0] in datasets.BUILT_IN:
    datasets.ensure_prepared(name, config.data_dir)
    return tfds.builder(name, data_dir=config.data_dir)
  if name.split('/')[0] == 'imagenet2012':
    manual = config.get('manual_dir') or f'{builder.data_dir_root}/downloads/manual'
    raise ConfigError(
        f'ImageNet is not prepared in {builder.data_dir_root}. TFDS cannot download it: get '
        'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org, put them in '
        f'{manual}, and run `tfds build imagenet2012 --data_dir={builder.data_dir_root} '
        f'--manual_dir={manual} --file_format=array_record` once (it needs tensorflow-cpu). To '
        'try the code without ImageNet, use the built-in dataset: --config=configs/quickstart.py.')
  raise ConfigError(
      f'Dataset {name!r} is not prepared in {builder.data_dir_root}. Prepare it once with '
      f'`tfds build {name} --data_dir={builder.data_dir_root} --file_format=array_record` (needs '
      'tensorflow-cpu and the network), or point --config.data_dir at where it is prepared.')


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  num_train_examples: int
  num_eval_examples: int


def get_info(config) -> DatasetInfo:
  builder = _dataset_or_error(config)
  splits = builder.info.splits
  for split in (config.train_split, config.eval_split):
    if split not in splits:
      raise ConfigError(f'Dataset {config.dataset!r} has no split {split!r}; it has '
                        f'{sorted(splits)}. Set --config.train_split / --config.eval_split.')
  return DatasetInfo(num_classes=builder.info.features[LABEL_KEY].num_classes,
                     num_train_examples=splits[config.train_split].num_examples,
                     num_eval_examples=splits[config.eval_split].num_examples)


def _source(config, split: str):
  """Random access to a split; call `get_info` first, which checks and prepares the dataset."""
  return tfds.data_source(config.dataset, split=split, data_dir=config.data_dir)


def _inverse_std(config) -> np.ndarray | None:
  """1 / augment.std_rgb, or None for the paper's mean subtraction alone."""
  std = config.augment.get('std_rgb')
  return None if std is None else (1.0 / np.asarray(std, np.float32))


class TrainTransform(grain.transforms.RandomMap):
  """Section 4.1: random crop, horizontal flip, PCA colour noise, mean subtraction."""

  def __init__(self, config):
    aug = config.augment
    self.kwargs = dict(
        image_size=config.image_size, resize_size=config.resize_size,
        eigval=np.asarray(aug.pca_eigval, np.float32),
        eigvec=np.asarray(aug.pca_eigvec, np.float32),
        pca_std=float(aug.pca_std), mean=np.asarray(aug.mean_rgb, np.float32), flip=aug.flip)
    self.inv_std = _inverse_std(config)

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    image = augment.train_transform(element[IMAGE_KEY], rng=rng, **self.kwargs)
    if self.inv_std is not None:
      image *= self.inv_std
    return {'image': image, 'label': np.int32(element[LABEL_KEY])}


class EvalTransform(grain.transforms.Map):
  """Evaluation view of section 4.1: the centre crop, mean subtracted."""

  def __init__(self, config):
    self.kwargs = dict(image_size=config.image_size, resize_size=config.resize_size,
                       mean=np.asarray(config.augment.mean_rgb, np.float32))
    self.inv_std = _inverse_std(config)

  def map(self, element: dict[str, Any]) -> dict[str, Any]:
    image = augment.eval_transform(element[IMAGE_KEY], **self.kwargs)
    if self.inv_std is not None:
      image *= self.inv_std
    return {'image': image, 'label': np.int32(element[LABEL_KEY]), 'mask': np.float32(1.0)}


def _read_options(config) -> grain.ReadOptions:
  # Prefetching is counted in examples: `prefetch_batches` batches of this process.
  per_process = max(1, config.batch_size // jax.process_count())
  return grain.ReadOptions(num_threads=config.data_threads,
                           prefetch_buffer_size=max(1, config.prefetch_batches) * per_process)


class _ProcessRows(grain.transforms.Map):
  """Maps this process' k-th example to its global position: its rows of each global batch."""

  def __init__(self, stream: grain.MapDataset, global_batch: int, per_process: int,
               process_index: int):
    self.stream = stream
    self.global_batch, self.per_process, self.offset = (
        global_batch, per_process, process_index * per_process)

  def map(self, k: int) -> dict[str, Any]:
    batch, row = divmod(int(k), self.per_process)
    return self.stream[batch * self.global_batch + self.offset + row]


def create_train_dataset(config, process_index: int = 0, process_count: int = 1
                         ) -> grain.IterDataset:
  """The endless stream of this process' training batches, as a checkpointable grain dataset."""
  per_process = config.batch_size // process_count
  stream = grain.MapDataset.source(_source(config, config.train_split))
  stream = stream.shuffle(seed=config.seed).repeat()  # a new permutation every epoch
  stream = stream.random_map(TrainTransform(config), seed=config.seed)  # per global index
  rows = _ProcessRows(stream, config.batch_size, per_process, process_index)
  ds = grain.MapDataset.range(len(stream) // process_count).map(rows)
  ds = ds.batch(per_process, drop_remainder=True)
  it = ds.to_iter_dataset(_read_options(config))
  if config.data_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data_workers))
  return it


def eval_batches(config, process_index: int = 0, process_count: int = 1
                 ) -> Iterator[dict[str, np.ndarray]]:
  """One pass over the evaluation split in fixed-size batches, the last padded and masked.

  Every process yields the same number of batches (the largest shard decides), so collectives
  stay in step; padding rows have mask 0 and are not counted.
  """
  source = _source(config, config.eval_split)
  per_process = config.eval_batch_size // process_count
  num_batches = math.ceil(math.ceil(len(source) / process_count) / per_process)
  ds = grain.MapDataset.source(source)[process_index::process_count].map(EvalTransform(config))
  ds = ds.batch(per_process, drop_remainder=False)
  it = iter(ds.to_iter_dataset(_read_options(config)))
  for _ in range(num_batches):
    batch = next(it, None)
    yield pad_batch(batch, per_process, config.image_size)


def pad_batch(batch: dict[str, np.ndarray] | None, size: int, image_size: int
              ) -> dict[str, np.ndarray]:
  """Pads a batch to `size` rows with zero images and mask 0."""
  if batch is None:
    batch = {'image': np.zeros((0, image_size, image_size, 3), np.float32),
             'label': np.zeros((0,), np.int32), 'mask': np.zeros((0,), np.float32)}
  missing = size - len(batch['label'])
  if missing == 0:
    return batch
  return {k: np.concatenate([v, np.zeros((missing,) + v.shape[1:], v.dtype)])
          for k, v in batch.items()}
