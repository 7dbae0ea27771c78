"""A trained workdir, used: load it from its checkpoint alone, evaluate it (alone or in an
ensemble), predict image files, extract any layer's features (`retrieval` writes them to files
and finds the nearest images in them, Figure 4).

Every checkpoint records the run's config, colour statistics and class names (`checkpointing`),
so `load(workdir)` needs nothing else: it is the one loader of a trained network (`Trained`).
Everything runs on one device, jitted, over batches of one size (the last one padded and masked,
so every example counts and nothing compiles twice). `split_outputs` and `image_outputs` stream
the per-example outputs of `make_forward` batch by batch: the log of the softmax (averaged over
section 4.1's ten patches with `crops=10`) and any layer's activations, never holding more than a
batch of images. Images are prepared exactly as the run's evaluation prepared its own:
`decode.decode_image`, then `pipeline.EvalTransform` (resize, centre crop or ten patches, mean
and std). The commands in `alexnet_jax.tools` (evaluate, predict, features) are flags around the
functions here and in `retrieval`; `write_*` put results in a `files.staged` directory, which
appears all at once or not at all."""

import dataclasses
import json
import os
import re
from typing import Callable, Iterable, Iterator, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from PIL import Image
import tensorflow_datasets as tfds

from alexnet_jax import checkpointing
from alexnet_jax.data import decode
from alexnet_jax.data import imagenet
from alexnet_jax.data import pipeline
from alexnet_jax.errors import ConfigError
from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import settings
from alexnet_jax import steps

CROPS = (1, 10)  # the centre crop; section 4.1's four corners, centre and their reflections
# What a directory of images holds: the files of the types PIL can open, by extension.
IMAGE_EXTENSIONS = frozenset(
    ext for ext, kind in Image.registered_extensions().items() if kind in Image.OPEN
)


# --- Loading ---


def stored_config(workdir: str, step: int | str | None = None):
  """The ConfigDict the run in `workdir` was trained with, from its checkpoint (the latest, or
  `step`'s), and its class names."""
  checkpointer = checkpointing.Checkpointer(workdir, max_to_keep=None, read_only=True)
  try:
    meta = checkpointer.read_meta(step)
  finally:
    checkpointer.close()
  return settings.config_from_dict(meta['config']), tuple(meta.get('class_names', ()))


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained network: its graph, parameters and batch statistics, and the run's settings."""

  graphdef: nnx.GraphDef
  params: dict
  batch_stats: dict
  run: settings.RunConfig
  step: int
  class_names: tuple[str, ...] = ()  # from the checkpoint's meta; () if it has none
  workdir: str = ''  # where it was loaded from

  def model(self) -> models.AlexNet:
    return nnx.merge(self.graphdef, self.params, self.batch_stats)


def load(workdir: str, step: int | str | None = None, **overrides) -> Trained:
  """The network of the run in `workdir` at its latest checkpoint (or `step`'s: a number, 'best'
  or 'latest'), on one device, with the config, colour statistics and class names its checkpoint
  records.

  `overrides` replace top-level config fields that do not change the network, e.g.
  `data_dir=...` for data that moved, `eval_batch_size=...`.
  """
  checkpointer = checkpointing.Checkpointer(workdir, max_to_keep=None, read_only=True)
  try:
    step = checkpointer.check_step(step)
    meta = checkpointer.read_meta(step)
    config = settings.config_from_dict(meta['config'])
    for field, value in overrides.items():
      if field not in config:
        raise ConfigError(f'{field!r} is not a config field; the run has {sorted(config)}.')
      config[field] = value
    # The checkpoint carries its statistics file's colour statistics: the file may have moved.
    run = settings.from_config(config, settings.carried_colour_statistics(config, [meta]))
    new_model = lambda: steps.create_model(run.model, run.data.image_size, run.loop.seed)
    # The optimiser state is restored with the rest (a checkpoint is one tree) and then dropped;
    # its schedule's length does not change its structure. Only shapes are built: initialising
    # the weights eagerly, to overwrite them, took seconds, op by op.
    graphdef = nnx.split(nnx.eval_shape(new_model), nnx.Param, ...)[0]
    abstract = jax.eval_shape(
        lambda: steps.create_train_state(
            new_model(),
            optim.create_optimizer(run.optim, 1),
            optim.create_plateau(run.optim),
            run.loop.seed,
        )[1]
    )
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract
    )
    state, _ = checkpointer.restore(abstract, step)
  finally:
    checkpointer.close()
  return Trained(
      graphdef,
      state.params,
      state.batch_stats,
      run,
      int(state.step),
      class_names=tuple(meta.get('class_names', ())),
      workdir=workdir,
  )


def load_ensemble(
    workdirs: Sequence[str], step: int | str | None = None, **overrides
) -> list[Trained]:
  """The networks of several workdirs, checked to form one ensemble (`check_ensemble`)."""
  if not workdirs:
    raise ConfigError('No workdir given: pass --workdir=DIR, or several as --workdir=A,B,C.')
  members = [load(workdir, step, **overrides) for workdir in workdirs]
  check_ensemble(members)
  return members


def class_names(trained: Trained) -> tuple[str, ...]:
  """The run's class names (from its checkpoint; ImageNet's WordNet ids as their names), or the
  label numbers where it has none."""
  if trained.class_names:
    return imagenet.readable(trained.class_names)
  return tuple(str(i) for i in range(trained.run.model.num_classes))


def check_ensemble(members: Sequence[Trained]) -> None:
  """ConfigError unless the networks can be averaged: section 6 averages the softmax of CNNs
  that classify the same classes of the same dataset, at the same image size."""

  def task(trained):
    return {
        'dataset': trained.run.data.dataset,
        'number of classes': trained.run.model.num_classes,
        'class names': class_names(trained),
        'image size': trained.run.data.image_size,
    }

  first = task(members[0])
  for member in members[1:]:
    other = task(member)
    differ = [
        f'{field} ({first[field]!r} and {other[field]!r})'
        if field != 'class names'
        else 'class names'
        for field in first
        if first[field] != other[field]
    ]
    if differ:
      raise ConfigError(
          f'{member.workdir} and {members[0].workdir} cannot be one ensemble: their '
          f'{", ".join(differ)} differ. An ensemble (section 6) averages the softmax of networks '
          'trained on the same classes of the same dataset at the same image size; pass '
          'workdirs of runs of one dataset.'
      )


# --- The forward pass ---


def joined(towers: list[jax.Array]) -> jax.Array:
  """One layer's per-tower outputs as one array, the towers side by side on the channel axis."""
  return towers[0] if len(towers) == 1 else jnp.concatenate(towers, axis=-1)


def make_forward(graphdef: nnx.GraphDef, layers: tuple[str, ...] = (), crops: int = 1):
  """The jitted `(params, batch_stats, images) -> {'log_probs': B x classes, layer: B x ...}`,
  each layer's towers `joined` (names: the keys of `models.AlexNet.features`).

  `images` are B x H x W x 3, or B x 10 x H x W x 3 with `crops=10`: the ten patches are one
  batch of B * 10 images, and `log_probs` is the log of their softmax averaged (section 4.1;
  `steps.crop_averaged_log_probs`, exact where a probability underflows). A layer's activations
  are always those of the centre patch (view 0 of `augment.ten_crop`).
  """

  @jax.jit
  def forward(params, batch_stats, images):
    model = nnx.merge(graphdef, params, batch_stats)
    features = model.features(images.reshape((-1,) + images.shape[-3:]), train=False)
    (logits,) = features['fc8']
    logits = logits.astype(jnp.float32).reshape((-1, crops, logits.shape[-1]))
    out = {'log_probs': steps.crop_averaged_log_probs(logits)}
    for name in layers:
      layer = joined(features[name]).astype(jnp.float32)
      out[name] = layer.reshape((-1, crops) + layer.shape[1:])[:, 0]
    return out

  return forward


def layer_shapes(trained: Trained) -> dict[str, tuple[int, ...]]:
  """Each layer's output shape for one example, towers joined, in the network's order (the keys
  of `models.AlexNet.features`); traced, not run."""
  order = []

  def shapes(params, batch_stats, images):
    features = nnx.merge(trained.graphdef, params, batch_stats).features(images, train=False)
    order.extend(features)
    return {name: joined(towers) for name, towers in features.items()}

  size = trained.run.data.image_size
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  out = jax.eval_shape(shapes, trained.params, trained.batch_stats, images)
  return {name: out[name].shape[1:] for name in order}


def check_layers(trained: Trained, layers: str | Sequence[str]) -> tuple[str, ...]:
  """`layers` (a name or several) as a tuple, or a ConfigError listing the layers there are."""
  layers = (layers,) if isinstance(layers, str) else tuple(layers)
  names = tuple(layer_shapes(trained))
  unknown = [name for name in layers if name not in names]
  if unknown or not layers:
    raise ConfigError(
        f'AlexNet has no layer {unknown[0] if unknown else ""!r}. Its layers are '
        f'{", ".join(names)} (models.AlexNet.features: conv1-conv5 after their ReLU, the '
        'normalisation and pooling layers, fc6 and fc7 after their ReLU, fc8 the logits); '
        'Figure 4 uses fc7.'
    )
  return layers


def _check_crops(crops: int) -> int:
  if crops not in CROPS:
    raise ConfigError(
        f'crops={crops} must be 1 (the centre crop) or 10 (the four corner and centre patches '
        'and their reflections, section 4.1).'
    )
  return crops


def _outputs(
    trained: Trained, batches: Iterable[tuple[dict, dict]], forward: Callable
) -> Iterator[dict]:
  """The host outputs of each (batch, per-row values) pair, padding rows (at the end) dropped.

  Each batch is dispatched before the previous one's outputs are read back, so the device
  computes while the host converts.
  """
  pending = None
  for batch, rows in batches:
    out = forward(trained.params, trained.batch_stats, batch['image'])
    if pending is not None:
      yield _to_host(*pending)
    pending = out, rows, int(np.sum(batch['mask'] > 0))
  if pending is not None:
    yield _to_host(*pending)


def _to_host(out: dict, rows: dict, count: int) -> dict:
  return {
      **{k: np.asarray(v)[:count] for k, v in out.items()},
      **{k: v[:count] for k, v in rows.items()},
  }


def _concatenate(chunks: Iterable[dict]) -> dict:
  chunks = list(chunks)
  if not chunks:
    return {}
  return {
      k: np.concatenate([c[k] for c in chunks])
      if isinstance(chunks[0][k], np.ndarray)
      else [x for c in chunks for x in c[k]]
      for k in chunks[0]
  }


# --- A split ---


def split_data(
    trained: Trained,
    split: str | None = None,
    crops: int = 1,
    batch_size: int | None = None,
) -> tuple[pipeline.DataConfig, int]:
  """The run's data settings for evaluating `split` (default its evaluation split; a TFDS slice
  such as 'validation[:100]' works), and the split's size; ConfigError if it has no such split."""
  data = dataclasses.replace(
      trained.run.data,
      eval_split=split or trained.run.data.eval_split,
      eval_crops=_check_crops(crops),
      eval_batch_size=batch_size or trained.run.data.eval_batch_size,
  )
  try:
    pipeline.get_info(trained.run.data)  # the run's own splits: is its dataset here?
  except ConfigError as e:
    raise ConfigError(
        f"{e} (The run's dataset; here --data_dir=DIR reads it from another directory.)"
    ) from None
  splits = tfds.builder(data.dataset, data_dir=data.data_dir).info.splits
  try:
    count = splits[data.eval_split].num_examples  # TFDS reads slices too
  except (KeyError, ValueError, AssertionError):
    raise ConfigError(
        f'Dataset {data.dataset!r} has no split {data.eval_split!r}; it has {sorted(splits)}. '
        "Pass one of them as --split (a slice such as 'validation[:100]' selects part of one)."
    ) from None
  return data, count


def split_outputs(
    trained: Trained,
    split: str | None = None,
    *,
    layers: tuple[str, ...] = (),
    crops: int = 1,
    batch_size: int | None = None,
    forward: Callable | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Per batch of `split`, in the split's order: 'log_probs', each of `layers` and 'labels'.

  `forward` (`make_forward(graphdef, layers, crops)`) can be shared by networks of one
  graph.
  """
  data, _ = split_data(trained, split, crops, batch_size)
  forward = forward or make_forward(trained.graphdef, layers, crops)
  batches = ((b, {'labels': b['label'].astype(np.int64)}) for b in pipeline.eval_batches(data))
  return _outputs(trained, batches, forward)


def check_count(count: int, expected: int, split: str) -> None:
  if count != expected:  # a bug, not bad input: every example must count
    raise RuntimeError(f'{count} outputs for the {expected} examples of {split!r}.')


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """Section 6's numbers for one network or an ensemble on one split."""

  metrics: dict[str, float]  # loss, top1_error, top5_error (ties count against the label), count
  per_class: pd.DataFrame  # label, class, count, top1_accuracy, top5_accuracy
  probs: np.ndarray  # N x classes: the softmax, averaged over the crops and the networks
  labels: np.ndarray
  split: str
  crops: int
  workdirs: tuple[str, ...]
  steps: tuple[int, ...]


def evaluate(
    members: Trained | Sequence[Trained],
    split: str | None = None,
    crops: int = 1,
    batch_size: int | None = None,
) -> Evaluation:
  """Loss, top-1 and top-5 error of a network, or of an ensemble, over every example of `split`
  (default: the first network's evaluation split), per class too.

  An ensemble's prediction is its networks' softmax averaged (section 6), each network's first
  averaged over its ten patches with `crops=10` (section 4.1). Each network reads the split with
  its own run's preprocessing.
  """
  members = [members] if isinstance(members, Trained) else list(members)
  check_ensemble(members)
  split = split or members[0].run.data.eval_split
  total, labels, forward = None, None, None
  for trained in members:
    if forward is None or trained.graphdef != members[0].graphdef:
      forward = make_forward(trained.graphdef, (), crops)
    _, expected = split_data(trained, split, crops, batch_size)
    out = _concatenate(
        split_outputs(trained, split, crops=crops, batch_size=batch_size, forward=forward)
    )
    check_count(len(out.get('labels', ())), expected, split)
    if labels is None:
      labels = out['labels']
    elif not np.array_equal(labels, out['labels']):
      raise ConfigError(
          f'{trained.workdir} reads other labels for {split!r} than {members[0].workdir}: their '
          'data_dir settings point at different copies of the dataset. Pass --data_dir to read '
          'one copy for all of them.'
      )
    # log(p1 + p2 + ...), exact where a probability underflows.
    total = out['log_probs'] if total is None else np.logaddexp(total, out['log_probs'])
  log_probs = total - np.log(len(members))
  loss = -log_probs[np.arange(len(labels)), labels]
  top1, top5 = (np.asarray(e) > 0 for e in steps.error_rates(jnp.asarray(log_probs), labels))
  metrics = {
      'loss': float(np.mean(loss, dtype=np.float64)),
      'top1_error': float(np.mean(top1)),
      'top5_error': float(np.mean(top5)),
      'count': len(labels),
  }
  return Evaluation(
      metrics=metrics,
      per_class=_per_class(labels, top1, top5, class_names(members[0])),
      probs=np.exp(log_probs),
      labels=labels,
      split=split,
      crops=crops,
      workdirs=tuple(t.workdir for t in members),
      steps=tuple(t.step for t in members),
  )


def _per_class(labels, top1_wrong, top5_wrong, names) -> pd.DataFrame:
  count = np.bincount(labels, minlength=len(names))
  with np.errstate(invalid='ignore', divide='ignore'):  # a class with no example: NaN
    right = lambda wrong: np.bincount(labels, weights=~wrong, minlength=len(names)) / count
    return pd.DataFrame(
        {
            'label': np.arange(len(names)),
            'class': list(names),
            'count': count,
            'top1_accuracy': right(top1_wrong),
            'top5_accuracy': right(top5_wrong),
        }
    )


def _path_name(split: str) -> str:
  """A split as part of a directory name: a slice's brackets, colons and % become '_'."""
  return re.sub(r'[^A-Za-z0-9._-]', '_', split).rstrip('_')


def default_eval_dir(workdirs: Sequence[str], split: str, crops: int) -> str:
  """`<first workdir>/eval/<split>_<crops>crop[_ensemble]`."""
  suffix = '_ensemble' if len(workdirs) > 1 else ''
  return os.path.join(workdirs[0], 'eval', f'{_path_name(split)}_{crops}crop{suffix}')


def default_features_dir(workdir: str, split: str | None, layer: str) -> str:
  """`<workdir>/features/<split>_<layer>`, or `images_<layer>` for image files (`split` None)."""
  return os.path.join(workdir, 'features', f'{_path_name(split or "images")}_{layer}')


def write_evaluation(evaluation: Evaluation, directory: str) -> list[str]:
  """metrics.json (the metrics, split, crops, workdirs and steps) and per_class.csv, written into
  `directory` (a `files.staged` one for all or nothing); returns their paths."""
  paths = [os.path.join(directory, 'metrics.json'), os.path.join(directory, 'per_class.csv')]
  record = {
      **evaluation.metrics,
      'split': evaluation.split,
      'crops': evaluation.crops,
      'workdirs': [os.path.abspath(w) for w in evaluation.workdirs],
      'steps': list(evaluation.steps),
  }
  with open(paths[0], 'w') as f:
    json.dump(record, f, indent=1)
  evaluation.per_class.to_csv(paths[1], index=False)
  return paths


# --- Image files ---


def image_files(paths: Iterable[str]) -> list[str]:
  """`paths`, each directory replaced by the image files in it (the extensions PIL opens; sorted,
  not recursive, hidden files left out). Files named themselves are kept whatever their name."""
  files = []
  for path in paths:
    if os.path.isdir(path):
      files.extend(
          os.path.join(path, name)
          for name in sorted(os.listdir(path))
          if not name.startswith('.')
          and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
          and os.path.isfile(os.path.join(path, name))
      )
    else:
      files.append(path)
  return files


def read_image(path: str) -> np.ndarray:
  """uint8 H x W x 3 RGB pixels of an image file, decoded as the training pipeline decodes its
  examples (`decode.decode_image`): grayscale is repeated into R, G and B, CMYK converted to
  RGB (by libjpeg-turbo), alpha dropped (the colours under transparent pixels are kept), only a
  GIF's first frame, EXIF orientation ignored. Resizing, also of images smaller than the crop,
  is EvalTransform's."""
  with open(path, 'rb') as f:
    return decode.decode_image(f.read())


def image_outputs(
    trained: Trained,
    paths: Iterable[str],
    *,
    layers: tuple[str, ...] = (),
    crops: int = 1,
    batch_size: int | None = None,
    skipped: list | None = None,
    forward: Callable | None = None,
) -> Iterator[dict]:
  """Per batch of image files (directories expanded, `image_files`): 'log_probs', each of
  `layers` and 'files'. A file that cannot be read or decoded is left out and appended to
  `skipped` as (file, reason)."""
  data = dataclasses.replace(trained.run.data, eval_crops=_check_crops(crops))
  transform = pipeline.EvalTransform(data)  # the evaluation's own preprocessing
  size = batch_size or data.eval_batch_size
  skipped = [] if skipped is None else skipped
  forward = forward or make_forward(trained.graphdef, layers, crops)

  def batch_of(images, files):
    batch = {
        'image': np.stack(images),
        'label': np.zeros(len(images), np.int32),
        'mask': np.ones(len(images), np.float32),
    }
    return pipeline.pad_batch(batch, size, data.image_size, crops), {'files': files}

  def batches():
    images, files = [], []
    for path in image_files(paths):
      try:
        element = {pipeline.IMAGE_KEY: read_image(path), pipeline.LABEL_KEY: 0}
        images.append(transform.map(element)['image'])
      except Exception as e:  # pylint: disable=broad-except  (PIL raises OSError, ValueError, ...)
        skipped.append((path, _unreadable(e)))
        continue
      files.append(path)
      if len(images) == size:
        yield batch_of(images, files)
        images, files = [], []
    if images:
      yield batch_of(images, files)

  return _outputs(trained, batches(), forward)


def _unreadable(error: Exception) -> str:
  """Why an image file could not be read, in a few words."""
  if isinstance(error, Image.UnidentifiedImageError):
    return 'not an image file PIL can open'
  if isinstance(error, OSError) and error.strerror:
    return error.strerror  # e.g. 'No such file or directory', 'Permission denied'
  return f'{type(error).__name__}: {" ".join(str(error).split())}'


def no_images_error(paths: Sequence[str], skipped: list) -> ConfigError:
  if not skipped:
    return ConfigError(
        f'No image files in {", ".join(paths)}: a directory is searched for the file types PIL '
        'opens (.jpg, .png, ...), not recursively. Pass image files or a directory of them.'
    )
  reasons = '; '.join(f'{f} ({why})' for f, why in skipped[:3])
  more = f' and {len(skipped) - 3} more' if len(skipped) > 3 else ''
  return ConfigError(
      f'None of the {len(skipped)} images could be read: {reasons}{more}. Pass files PIL can '
      'open (JPEG, PNG, ...).'
  )


def top5(probs: np.ndarray, class_names: Sequence[str]) -> list[list[tuple[str, float]]]:
  """Each example's five most probable classes, with their probabilities (Figure 4, left)."""
  order = np.argsort(-probs, axis=1, kind='stable')[:, : min(5, probs.shape[1])]
  return [[(class_names[c], float(p[c])) for c in row] for p, row in zip(probs, order)]


@dataclasses.dataclass(frozen=True)
class Predictions:
  files: list[str]  # the images predicted, in the order given
  probs: np.ndarray  # len(files) x classes: the softmax (averaged over ten patches with crops=10)
  skipped: list[tuple[str, str]]  # (file, why) for each image that could not be read
  class_names: tuple[str, ...]
  crops: int

  def top5(self) -> list[list[tuple[str, float]]]:
    return top5(self.probs, self.class_names)


def predict(
    trained: Trained, paths: Sequence[str], crops: int = 1, batch_size: int | None = None
) -> Predictions:
  """The network's softmax on image files (or directories of them); ConfigError if none of
  them can be read, the rest predicted otherwise."""
  skipped = []
  out = _concatenate(
      image_outputs(trained, paths, crops=crops, batch_size=batch_size, skipped=skipped)
  )
  if not out:
    raise no_images_error(paths, skipped)
  return Predictions(out['files'], np.exp(out['log_probs']), skipped, class_names(trained), crops)


# --- Features ---


def features(
    trained: Trained,
    split: str | None = None,
    layers: str | Sequence[str] = 'fc7',
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
  """Every example of `split` (default the evaluation split), from its centre crop, in the
  split's order (index i is `pipeline.decoding_source(...)[i]`): each of `layers`' activations
  (N x ..., the towers side by side on the channel axis), 'probs' (the softmax) and 'labels'."""
  layers = check_layers(trained, layers)
  data, expected = split_data(trained, split, 1, batch_size)
  out = _concatenate(split_outputs(trained, split, layers=layers, batch_size=batch_size))
  check_count(len(out.get('labels', ())), expected, data.eval_split)
  out['probs'] = np.exp(out.pop('log_probs'))
  return out


def split_images(
    trained: Trained, indices: Iterable[int], split: str | None = None
) -> list[np.ndarray]:
  """The decoded uint8 images at `indices` of `split` (default the evaluation split), for display:
  index i is row i of `features`."""
  source = pipeline.decoding_source(trained.run.data, split or trained.run.data.eval_split)
  return [np.asarray(source[int(i)][pipeline.IMAGE_KEY]) for i in indices]


def image_features(
    trained: Trained,
    paths: Sequence[str],
    layers: str | Sequence[str] = 'fc7',
    batch_size: int | None = None,
) -> dict:
  """As `features`, for image files: each of `layers`, 'probs', 'files' and 'skipped' ((file,
  why) for each image that could not be read); ConfigError if none could."""
  layers = check_layers(trained, layers)
  skipped = []
  out = _concatenate(
      image_outputs(trained, paths, layers=layers, batch_size=batch_size, skipped=skipped)
  )
  if not out:
    raise no_images_error(paths, skipped)
  out['probs'] = np.exp(out.pop('log_probs'))
  out['skipped'] = skipped
  return out
