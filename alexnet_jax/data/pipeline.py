"""Input pipelines: TFDS ArrayRecord sources read with `tfds.data_source`, transformed with grain.

No TensorFlow is imported here: `tfds.data_source` reads ArrayRecord files and we decode the
images ourselves (`decode.decode_image`: libjpeg-turbo through simplejpeg, PIL for other formats). Only
*preparing* a dataset needs TensorFlow (see `alexnet_jax.data.datasets`).

Speed: training images are decoded at the smallest JPEG DCT scale (1/8 .. 8/8) that still covers
`resize_size`, so full-size photos are never decompressed at full size; each example's random
choices (crop, flip, colour shift; section 4.1) are drawn per example, and the pixels are cut,
reflected, shifted and converted to float32 for the whole batch in one pass into the batch array
(`TrainBatch`). `python -m alexnet_jax.tools.pipeline_benchmark` measures it against tf.data.

Robustness: an image that cannot be decoded is logged with its index, counted, and replaced by the
next decodable example of the split (`decode.DecodingSource`), so one bad file never stops a run and the
stream stays a function of the seed.

Reproducibility: the training order and every augmentation draw depend only on `config.seed` and
the position in the stream. Epoch e is the permutation `default_rng([seed, e])` of the split, and
global example g draws its augmentation from a Philox generator keyed by (g, seed)
(`examples.TrainExamples`), so a restored iterator (its state is one integer per process, saved with
every checkpoint) continues exactly. (grain's `shuffle` and `random_map` do the same per index,
but at a far higher cost per example, `shuffle`'s highest on splits of a few hundred examples; a
numpy permutation of the split once per epoch is cheap even for ImageNet's 1.28M.
docs/benchmark_history.md has the figures.)

Multi-process: the training stream is defined globally (global example i is a function of the
seed and i alone), and process p reads only rows [p * b, (p + 1) * b) of each global batch, where
b = batch_size / process_count. So the global batches, and a run's numbers, do not depend on how
many processes share them, and no process decodes another's images. Evaluation reads the slice
`process_index::process_count` of the split; its sums do not depend on the order.
"""

import dataclasses
import math
import sys
import threading
import time
from typing import Any, Iterator, Sequence

from absl import flags
from absl import logging
import grain
import numpy as np
import tensorflow_datasets as tfds

from alexnet_jax.data import augment
from alexnet_jax.data import datasets
from alexnet_jax.data import decode
from alexnet_jax.data import examples
from alexnet_jax.data import workers
from alexnet_jax.errors import ConfigError

IMAGE_KEY = decode.IMAGE_KEY
LABEL_KEY = 'label'


@dataclasses.dataclass(frozen=True, eq=False)
class AugmentConfig:
  """Section 4.1's augmentation and section 2's mean, with the colour statistics resolved: the
  config's constants, or the training set's own from `augment.stats_file` (`colour`)."""

  flip: bool = True
  random_crop: bool = True  # False: the centre crop, the translations of section 4.1 off
  pca_std: float = 0.1
  mean: np.ndarray = dataclasses.field(  # (3,), or the (resize, resize, 3) mean image
      default_factory=lambda: np.asarray(augment.IMAGENET_MEAN_RGB, np.float32)
  )
  eigval: np.ndarray = dataclasses.field(
      default_factory=lambda: np.asarray(augment.IMAGENET_PCA_EIGVAL, np.float32)
  )
  eigvec: np.ndarray = dataclasses.field(  # columns are the eigenvectors
      default_factory=lambda: np.asarray(augment.IMAGENET_PCA_EIGVEC, np.float32)
  )
  inv_std: np.ndarray | None = None  # 1 / augment.std_rgb; None: the paper's raw 0..255 scale


@dataclasses.dataclass(frozen=True, eq=False)
class DataConfig:
  """Everything the input pipeline reads, typed; `settings.from_config` makes it from a run's
  config (the fields keep the config's names)."""

  dataset: str  # any prepared TFDS dataset; 'synthetic_shapes' is built in
  data_dir: str | None = None  # TFDS data_dir; None: TFDS's default
  # Where the ILSVRC tar files live (default <data_dir>/downloads/manual); named in the message
  # that explains how to prepare ImageNet (python -m alexnet_jax.tools.prepare).
  manual_dir: str | None = None
  train_split: str = 'train'
  eval_split: str = 'validation'
  resize_size: int = 256  # images are first made resize_size x resize_size (section 2)
  image_size: int = 224  # random training crops of this size; centre crop for evaluation (4.1)
  # 1: evaluate the centre crop | 10: section 4.1's test, the softmax averaged over the four
  # corner and centre patches and their reflections: the model sees 10 x eval_batch_size images
  # per evaluation step; the centre patch's own metrics are reported too, as eval_center_*.
  eval_crops: int = 1
  batch_size: int = 128  # global batch (section 5), split over the devices
  eval_batch_size: int = 128  # the last evaluation batch is padded and masked: every example counts
  data_workers: int = 0  # grain worker processes (0: decode in threads of the training process)
  data_threads: int = 2  # grain reader threads per process (per worker, with data_workers > 0)
  prefetch_batches: int = 2  # batches decoded ahead, and batches put on the devices ahead
  # The training split's images, decoded and resized, are kept after their first read up to this
  # many MiB per process (per worker with data_workers > 0): later epochs only crop them. 0: none.
  # The same limit, separately, for the evaluation passes kept between evaluations (eval_batches).
  cache_images_mib: int = 1024
  # True: the host decodes and crops training images to uint8, and the train step reflects them,
  # adds the PCA colour shift, subtracts the mean and converts to float32 on the device, with the
  # same draws and the same numbers (device_augment.py) | False: all on the host.
  device_augment: bool = True
  seed: int = 0
  augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)


def _dataset_or_error(config: DataConfig) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder for `config.dataset`, or a ConfigError saying how to get it."""
  name = config.dataset
  try:
    builder = tfds.builder(name, data_dir=config.data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ConfigError(
        f'Unknown dataset {name!r}: TFDS has no dataset of that name, and none is prepared in '
        f'--config.data_dir={config.data_dir}. Set --config.dataset to a TFDS name (e.g. '
        "imagenet2012, imagenette, cifar10), to the built-in 'synthetic_shapes', which needs no "
        'download (configs/quickstart.py uses it), or to your own images prepared with `python -m '
        'alexnet_jax.tools.prepare --folder=...` (or --csv=...), with --config.data_dir set to the '
        'data_dir it printed.'
    ) from None
  if builder.is_prepared():
    return builder
  if name.split('/')[0] in datasets.BUILT_IN:
    datasets.ensure_prepared(name, config.data_dir)
    return tfds.builder(name, data_dir=config.data_dir)
  if name.split('/')[0] == 'imagenet2012':
    manual = config.manual_dir or f'{builder.data_dir_root}/downloads/manual'
    raise ConfigError(
        f'ImageNet is not prepared in {builder.data_dir_root}. TFDS cannot download it: get '
        'ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org, put them in '
        f'{manual}, and run `python -m alexnet_jax.tools.prepare --dataset=imagenet2012 --data_dir='
        f'{builder.data_dir_root} --manual_dir={manual}` once (it needs tensorflow-cpu). To '
        'try the code without ImageNet, use the built-in dataset: --config=configs/quickstart.py.'
    )
  raise ConfigError(
      f'Dataset {name!r} is not prepared in {builder.data_dir_root}. Prepare it once with '
      f'`python -m alexnet_jax.tools.prepare --dataset={name} --data_dir={builder.data_dir_root}` (needs '
      'tensorflow-cpu and the network), or point --config.data_dir at where it is prepared.'
  )


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  num_train_examples: int
  num_eval_examples: int
  class_names: tuple[str, ...] = ()  # the label names, index = label; str(i) where none are given


def get_info(config: DataConfig) -> DatasetInfo:
  builder = _dataset_or_error(config)
  splits = builder.info.splits
  sizes = {}
  for split in (config.train_split, config.eval_split):
    # TFDS's slicing syntax ('train[:1000]', 'train[:10%]') selects part of a split: the
    # data-limited regime of the regularisation experiments.
    try:
      sizes[split] = splits[split].num_examples
    except (KeyError, ValueError, AssertionError):
      raise ConfigError(
          f'Dataset {config.dataset!r} has no split {split!r}; it has '
          f"{sorted(splits)} (a slice such as 'train[:1000]' selects part of one). Set "
          '--config.train_split / --config.eval_split.'
      ) from None
  label = builder.info.features[LABEL_KEY]
  return DatasetInfo(
      num_classes=label.num_classes,
      num_train_examples=sizes[config.train_split],
      num_eval_examples=sizes[config.eval_split],
      class_names=tuple(label.names or (str(i) for i in range(label.num_classes))),
  )


def decoding_source(config: DataConfig, split: str) -> decode.DecodingSource:
  """Random access to a split, images decoded by `DecodingSource`; call `get_info` first.

  The training split is decoded at the smallest DCT scale covering resize_size (see
  `decode.decode_image`); the evaluation split at full size, so its pixels are exactly TFDS's own.
  """
  records = tfds.data_source(
      config.dataset,
      split=split,
      data_dir=config.data_dir,
      decoders={IMAGE_KEY: tfds.decode.SkipDecoding()},
  )
  return decode.DecodingSource(records, config.resize_size if split == config.train_split else 0)


class TrainTransform(grain.transforms.RandomMap):
  """Section 4.1: random crop, horizontal flip, PCA colour noise, mean subtraction."""

  def __init__(self, config: DataConfig):
    aug = config.augment
    # The mean is (3,), or section 2's mean image, which train_transform cuts with each crop's
    # window.
    self.kwargs = dict(
        image_size=config.image_size,
        resize_size=config.resize_size,
        eigval=aug.eigval,
        eigvec=aug.eigvec,
        pca_std=float(aug.pca_std),
        mean=aug.mean,
        flip=aug.flip,
        random_crop=aug.random_crop,
    )
    self.inv_std = aug.inv_std

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Draws this example's crop, reflection and colour shift; `TrainBatch` applies them.

    The draws are `augment.train_transform`'s, in its order, from the example's own generator
    (`examples.TrainExamples`); the pixels are touched once, for the whole batch, in `TrainBatch`.
    """
    return self.draw(self.resized(element), rng)

  def resized(self, element: dict[str, Any]) -> dict[str, Any]:
    """The example as its crops are cut from it: the image at resize_size, and the label. It
    depends on the example alone, so `examples.TrainExamples` may keep it
    (`examples.ResizedImages`)."""
    image, _, _ = augment.resized_for_crop(
        element[IMAGE_KEY], self.kwargs['image_size'], self.kwargs['resize_size']
    )
    return {IMAGE_KEY: image, LABEL_KEY: element[LABEL_KEY]}

  def draw(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """`random_map` of an example already `resized`."""
    kw = self.kwargs
    image = element[IMAGE_KEY]
    h, w = image.shape[:2]
    top, left, flipped, offset = augment.train_draws(
        h,
        w,
        image_size=kw['image_size'],
        eigval=kw['eigval'],
        eigvec=kw['eigvec'],
        pca_std=kw['pca_std'],
        flip=kw['flip'],
        rng=rng,
        random_crop=kw['random_crop'],
    )
    return {
        'image': image,
        'window': (top, left, flipped),
        'offset': offset,
        'label': np.int32(element[LABEL_KEY]),
    }


class TrainBatch:
  """grain batch_fn: `TrainTransform`'s drawn examples -> one training batch.

  Host-augmented (`device_augment=False`): each image is cut, reflected and converted straight
  into its row of a float32 batch, with the PCA shift and the mean folded into one per-channel
  offset (`augment.crop_offset_to_float`): one pass over the output pixels instead of a float
  image per example and a stack that copies it.

  Device-augmented (`device_augment=True`): each crop is copied into a uint8 batch as it is, with
  the example's reflection, colour shift and window beside it; the jitted step finishes the image
  (`device_augment.DeviceAugment`, which documents the batch).
  """

  def __init__(self, transform: TrainTransform, device_augment: bool = False):
    kw = transform.kwargs
    self.size, self.resize_size = kw['image_size'], kw['resize_size']
    self.mean = np.asarray(kw['mean'], np.float32)
    self.device_augment = device_augment
    s = self.size
    if self.mean.ndim > 1 and self.mean.shape not in ((s, s, 3), (self.resize_size,) * 2 + (3,)):
      raise ValueError(
          f'mean must be (3,), ({s}, {s}, 3) or ({self.resize_size}, {self.resize_size}, 3); '
          f'got {self.mean.shape}'
      )
    # Where the mean is per channel it folds into each example's shift, as on the host.
    self.folded_mean = self.mean if self.mean.ndim <= 1 else np.zeros(3, np.float32)
    self.inv_std = transform.inv_std
    # Multiplying by a row-tiled vector keeps numpy's inner loop long (augment._add_per_channel).
    self.inv_std_row = (
        None
        if transform.inv_std is None
        else np.tile(np.asarray(transform.inv_std, np.float32), self.size)
    )
    self.buffers = _BatchBuffers()

  def __call__(self, elements: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    if self.device_augment:
      return self._uint8(elements)
    s = self.size
    images = self.buffers.get((len(elements), s, s, 3))
    for out, e in zip(images, elements):
      top, left, flipped = e['window']
      augment.crop_offset_to_float(
          e['image'], top, left, s, flipped, e['offset'], self.mean, self.resize_size, out=out
      )
      if self.inv_std_row is not None:
        out.reshape(s, s * 3)[...] *= self.inv_std_row  # same float32 product as image *= inv_std
    return {'image': images, 'label': np.array([e['label'] for e in elements], np.int32)}

  def _uint8(self, elements: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    s, n = self.size, len(elements)
    images = self.buffers.get((n, s, s, 3), np.uint8)
    flip, window = np.empty(n, bool), np.empty((n, 2), np.int32)
    shift = np.empty((n, 3), np.float32)
    for i, e in enumerate(elements):
      top, left, flip[i] = e['window']
      window[i] = top, left
      images[i] = e['image'][top : top + s, left : left + s]
      # The host path's float32 offset - mean (augment.crop_offset_to_float), computed as it is.
      shift[i] = e['offset'] - self.folded_mean
    return {
        'image': images,
        'flip': flip,
        'shift': shift,
        'window': window,
        'label': np.array([e['label'] for e in elements], np.int32),
    }


class _BatchBuffers:
  """Batch arrays, handed out again once nothing references them any more.

  The first write to a freshly allocated 77 MB ImageNet batch pays its page faults, so writing
  224x224 crops into a new array is slower than into a reused one (the pipeline benchmark's
  stages print both; docs/benchmark_history.md). An array is reused only when its reference count
  says that only this pool holds it: no batch dict, view, queue or jax array (which keeps its source
  alive while it copies) refers to it. At most `keep` arrays are kept; beyond that, batches are
  fresh arrays.
  """

  def __init__(self, keep: int = 8):
    self.keep = keep
    self._arrays: list[np.ndarray] = []
    self._lock = threading.Lock()
    # References that the pool's own list, the loop variable and the call below hold, measured
    # on the same code path (the exact count differs between Python versions).
    self._unreferenced = max(sys.getrefcount(a) for a in [np.empty(0)])

  def get(self, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    with self._lock:
      for a in self._arrays:
        if a.shape == shape and a.dtype == dtype and sys.getrefcount(a) <= self._unreferenced:
          return a
      a = np.empty(shape, dtype)
      if len(self._arrays) < self.keep:
        self._arrays.append(a)
      return a

  def __getstate__(self):  # pickled to grain worker processes: no arrays, no lock
    return {'keep': self.keep}

  def __setstate__(self, state):
    self.__init__(**state)


class EvalTransform(grain.transforms.Map):
  """Evaluation view of section 4.1, mean subtracted: the centre crop (image_size^2 x 3), or
  with `eval_crops=10` the ten patches of the paper's test (10 x image_size^2 x 3)."""

  def __init__(self, config: DataConfig):
    mean = config.augment.mean
    self.ten_crops = config.eval_crops == 10
    if self.ten_crops and mean.ndim == 3 and mean.shape[0] == config.resize_size:
      mean = augment.ten_crop(mean, config.image_size)  # cut the mean image once, not per image
    self.kwargs = dict(image_size=config.image_size, resize_size=config.resize_size, mean=mean)
    self.inv_std = config.augment.inv_std

  def map(self, element: dict[str, Any]) -> dict[str, Any]:
    transform = augment.ten_crop_transform if self.ten_crops else augment.eval_transform
    image = transform(element[IMAGE_KEY], **self.kwargs)
    if self.inv_std is not None:
      image *= self.inv_std
    return {'image': image, 'label': np.int32(element[LABEL_KEY]), 'mask': np.float32(1.0)}


def _read_options(config: DataConfig, threads: int | None = None) -> grain.ReadOptions:
  """`data_threads` (or `threads`) threads, each making whole batches; `prefetch_batches` batches
  ready ahead.

  The datasets batch before `to_iter_dataset`, so grain's buffer counts batches (at least one per
  thread, or threads would idle), not examples: 2 x 128 examples would be 256 ImageNet batches.
  """
  threads = max(0, config.data_threads if threads is None else threads)
  return grain.ReadOptions(
      num_threads=threads, prefetch_buffer_size=max(1, config.prefetch_batches, threads)
  )


class TrainStream:
  """This process' endless training batches (`train_dataset`); iterate it for a `TrainIterator`."""

  def __init__(
      self,
      batches: grain.MapDataset,
      read_options: grain.ReadOptions,
      workers: int,
      train_examples: Any = None,
  ):
    self.batches, self.read_options, self.workers = batches, read_options, workers
    # The `examples.TrainExamples` the batches are made of (with its kept images).
    self.train_examples = train_examples

  def __iter__(self) -> 'TrainIterator':
    return TrainIterator(self)

  def prefill(self) -> None:
    """Decodes the whole training split into memory before the first step, where it fits
    `cache_images_mib` and the stream reads in this process (worker processes keep their own
    images as they read them); logs what it did."""
    if self.workers > 0 or self.train_examples is None:
      return
    start = time.monotonic()
    if self.train_examples.prefill(self.read_options.num_threads):
      kept = self.train_examples.resized
      logging.info(
          'Decoded the %d training images into memory in %.1f s (%.0f MB); later reads only '
          'crop them.',
          len(kept),
          time.monotonic() - start,
          kept.used / 1e6,
      )


class TrainIterator:
  """A `TrainStream`'s batches from batch `next_index` on; its checkpointable state is that one
  integer, however the batches are made.

  grain's own iterator states differ with the number of worker processes (threads:
  {'next_index': n}; `mp_prefetch`: one state per worker), so a checkpoint written under one
  data_workers would not restore under another, nor where `train_dataset` falls back to threads.
  Batch n is a function of n alone, so `set_state` just starts a fresh grain pipeline at n (it is
  built when the first batch is read).
  """

  def __init__(self, stream: TrainStream):
    self.stream, self.next_index = stream, 0
    self._batches = None

  def __iter__(self) -> 'TrainIterator':
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._batches is None:
      stream = self.stream
      ds = stream.batches[self.next_index :].to_iter_dataset(stream.read_options)
      if stream.workers > 0:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; notebooks and tests
          flags.FLAGS.mark_as_parsed()  # never parse them (main.py does): take the defaults
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=stream.workers))
      self._batches = iter(ds)
    batch = next(self._batches)
    self.next_index += 1
    return batch

  def get_state(self) -> dict[str, int]:
    return {'next_index': self.next_index}

  def set_state(self, state: dict[str, Any]) -> None:
    if 'next_index' in state:
      index = state['next_index']
    elif 'iterators_in_use_states' in state:
      # Written by grain's `mp_prefetch` before this class: each worker counts the batches of
      # its slice (i::workers) that were read, so together they count them all.
      index = sum(s['next_index'] for s in state['iterators_in_use_states'])
    else:
      raise ConfigError(
          f'The checkpoint holds a data iterator state this pipeline does not know ({state}), so '
          'the run cannot continue its data stream. Resume with the version of alexnet_jax that '
          'wrote it, or start a new run in another --workdir.'
      )
    self.close()
    self.next_index = int(index)

  def close(self) -> None:
    """Stops the pipeline's threads and worker processes; reading again restarts them."""
    if self._batches is not None:
      self._batches.close()
      self._batches = None


def create_train_dataset(
    config: DataConfig, process_index: int = 0, process_count: int = 1
) -> TrainStream:
  """The endless stream of this process' training batches, with a checkpointable iterator."""
  return train_dataset(
      decoding_source(config, config.train_split), config, process_index, process_count
  )


def train_dataset(
    source: Sequence[dict[str, Any]],
    config: DataConfig,
    process_index: int = 0,
    process_count: int = 1,
) -> TrainStream:
  """`create_train_dataset` over any random-access `source` of examples with decoded images
  (a `decode.DecodingSource`); the benchmark and the tests pass their own."""
  per_process = config.batch_size // process_count
  transform = TrainTransform(config)
  stream = examples.TrainExamples(source, transform, config.seed, config.cache_images_mib * 2**20)
  rows = examples.ProcessRows(stream, config.batch_size, per_process, process_index)
  ds = grain.MapDataset.range(len(stream) // process_count).map(rows)
  ds = ds.batch(
      per_process, drop_remainder=True, batch_fn=TrainBatch(transform, config.device_augment)
  )
  processes, threads = workers.workers_and_threads(config, per_process)
  return TrainStream(ds, _read_options(config, threads), processes, stream)


# Evaluation passes this process has read, kept up to `cache_images_mib` (examples.KeptPasses);
# `KEPT_PASSES.clear()` frees them.
KEPT_PASSES = examples.KeptPasses()


def eval_batches(
    config: DataConfig, process_index: int = 0, process_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
  """One pass over the evaluation split in fixed-size batches, the last padded and masked.

  Every process yields the same number of batches (the largest shard decides), so collectives
  stay in step; padding rows have mask 0 and are not counted. A whole pass that fits in
  `cache_images_mib` is kept, and the next pass with the same data and transform reads it
  (read-only arrays) instead of decoding again.
  """
  inv_std = config.augment.inv_std
  key = (
      *(getattr(config, f) for f in ('dataset', 'data_dir', 'eval_split', 'resize_size')),
      *(getattr(config, f) for f in ('image_size', 'eval_crops', 'eval_batch_size')),
      config.eval_split == config.train_split,  # decoded as training images (decoding_source)
      np.asarray(config.augment.mean).tobytes(),
      None if inv_std is None else np.asarray(inv_std).tobytes(),
      process_index,
      process_count,
  )
  limit = config.cache_images_mib * 2**20
  kept = KEPT_PASSES.get(key) if limit else None  # 0: nothing kept, nothing read from there
  if kept is not None:
    yield from kept
    return
  source = decoding_source(config, config.eval_split)
  per_process = config.eval_batch_size // process_count
  num_batches = math.ceil(math.ceil(len(source) / process_count) / per_process)
  ds = grain.MapDataset.source(source)[process_index::process_count].map(EvalTransform(config))
  ds = ds.batch(per_process, drop_remainder=False)
  it = iter(ds.to_iter_dataset(_read_options(config)))
  made, size = [], 0
  for _ in range(num_batches):
    batch = pad_batch(next(it, None), per_process, config.image_size, config.eval_crops)
    if made is not None:
      size += sum(v.nbytes for v in batch.values())
      if size <= limit:
        made.append(batch)
      else:  # over the limit: keep nothing
        made = None
    yield batch
  if made is not None:
    KEPT_PASSES.put(key, made, limit)


def pad_batch(
    batch: dict[str, np.ndarray] | None, size: int, image_size: int, crops: int = 1
) -> dict[str, np.ndarray]:
  """Pads a batch to `size` rows with zero images and mask 0 (a row holds `crops` > 1 images)."""
  if batch is None:
    crop_axis = (crops,) if crops > 1 else ()
    batch = {
        'image': np.zeros((0,) + crop_axis + (image_size, image_size, 3), np.float32),
        'label': np.zeros((0,), np.int32),
        'mask': np.zeros((0,), np.float32),
    }
  missing = size - len(batch['label'])
  if missing == 0:
    return batch
  return {
      k: np.concatenate([v, np.zeros((missing,) + v.shape[1:], v.dtype)]) for k, v in batch.items()
  }
