"""What trained networks say: their outputs on a split, ensembles (section 6), the conv1 kernels
of each tower (Figure 3) and the images nearest in fc7 space (Figure 4).

`restore(config, workdir)` gives the network of a finished (or checkpointed) run,
`make_forward` its jitted forward pass to the softmax and any layers (also over section 4.1's ten
patches), and `outputs` runs it over a split, centre crops in the split's order, returning its
softmax and fc7 activations (`inference` streams the same forward over any split or image files).
The rest are functions of arrays. Everything runs on one device: the validation splits of the
experiments are small, and a researcher inspecting a model should not need a mesh.
"""

import dataclasses
import itertools

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from alexnet_jax import checkpointing
from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import settings
from alexnet_jax import steps
from alexnet_jax.data import pipeline


@dataclasses.dataclass(frozen=True)
class Trained:
  """A trained network: its graph, parameters and batch statistics, and the run's settings."""

  graphdef: nnx.GraphDef
  params: dict
  batch_stats: dict
  run: settings.RunConfig
  step: int
  class_names: tuple[str, ...] = ()  # from the checkpoint's meta; () if it has none
  workdir: str = ''  # where it was restored from

  def model(self) -> models.AlexNet:
    return nnx.merge(self.graphdef, self.params, self.batch_stats)


def restore(config, workdir: str, step: int | None = None) -> Trained:
  """The network of the run in `workdir` (its latest checkpoint, or `step`'s), on one device;
  `config` is the config it was trained with (a ConfigDict or a `settings.RunConfig`)."""
  checkpointer = checkpointing.Checkpointer(workdir, max_to_keep=None, read_only=True)
  try:
    step = checkpointer.check_step(step)
    if not isinstance(config, settings.RunConfig):
      # The checkpoint carries its statistics file's colour statistics: the file may have moved.
      carried = settings.carried_colour_statistics(config, [checkpointer.meta(step)])
      config = settings.from_config(config, carried)
    run = config
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
  return Trained(graphdef, state.params, state.batch_stats, run, int(state.step), workdir=workdir)


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


def outputs(trained: Trained, split: str | None = None) -> dict[str, np.ndarray]:
  """The network's softmax (`probs`, N x classes), fc7 activations (`fc7`, N x units, both towers
  joined) and `labels` on every example of `split` (default: the evaluation split), from the
  centre crop, in the split's order (index i is `pipeline.decoding_source(...)[i]`).
  `inference.features` gives any layer's, of any split, checked."""
  data = dataclasses.replace(
      trained.run.data, eval_split=split or trained.run.data.eval_split, eval_crops=1
  )
  forward = make_forward(trained.graphdef, ('fc7',))
  probs, fc7, labels = [], [], []
  for batch in pipeline.eval_batches(data):
    keep = batch['mask'] > 0
    out = forward(trained.params, trained.batch_stats, batch['image'])
    probs.append(np.exp(np.asarray(out['log_probs'])[keep]))
    fc7.append(np.asarray(out['fc7'])[keep])
    labels.append(batch['label'][keep])
  return {
      'probs': np.concatenate(probs),
      'fc7': np.concatenate(fc7),
      'labels': np.concatenate(labels).astype(np.int64),
  }


def top1_error(probs: np.ndarray, labels: np.ndarray) -> float:
  """Top-1 error of predictions; a tie counts against the label (as `steps.error_rates`)."""
  label_prob = probs[np.arange(len(labels)), labels]
  return float(np.mean(np.sum(probs >= label_prob[:, None], axis=1) > 1))


def ensemble_errors(member_probs: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
  """Section 6's ensembles: the softmax of k models averaged, for k = 1..K.

  `member_probs` is K x N x classes. For each k, every one of the C(K, k) subsets of the K models
  is an ensemble; the row gives the mean, std and number of their top-1 errors, so k = 1 is the
  spread of single models and k = K the one ensemble of all of them.
  """
  count = len(member_probs)
  rows = []
  for k in range(1, count + 1):
    errors = [
        top1_error(member_probs[list(subset)].mean(axis=0), labels)
        for subset in itertools.combinations(range(count), k)
    ]
    rows.append(
        {
            'models': k,
            'top1_error_mean': float(np.mean(errors)),
            'top1_error_std': float(np.std(errors, ddof=1)) if len(errors) > 1 else 0.0,
            'ensembles': len(errors),
        }
    )
  return pd.DataFrame(rows)


def conv1_kernels(trained: Trained) -> list[np.ndarray]:
  """conv1's kernels, one (channels, 11, 11, 3) array per tower (Figure 3's two halves)."""
  kernel = np.asarray(trained.params['conv1']['kernel'], np.float32)  # (11, 11, 3, channels)
  per_tower = np.split(kernel, trained.run.model.towers, axis=-1)
  return [np.moveaxis(k, -1, 0) for k in per_tower]


def colour_specificity(kernels: np.ndarray) -> np.ndarray:
  """Per kernel (..., H, W, 3): the share of its energy that is colour, not luminance.

  A kernel splits into its grey part (the mean over R, G and B at each position, the same in all
  three channels) and the rest, which sums to zero over the channels at every position and so is
  pure colour contrast. The share is |rest|^2 / |kernel|^2: 0 for a kernel that sees only
  luminance (Figure 3's first tower), 1 for one blind to luminance, and 2/3 on average for the
  random initialisation (independent channels).
  """
  kernels = np.asarray(kernels, np.float64)
  grey = kernels.mean(axis=-1, keepdims=True)
  total = np.sum(kernels**2, axis=(-3, -2, -1))
  return np.sum((kernels - grey) ** 2, axis=(-3, -2, -1)) / np.maximum(total, 1e-30)


def nearest(
    query: np.ndarray,
    database: np.ndarray,
    k: int,
    exclude_self: bool = False,
    exclude: np.ndarray | None = None,
):
  """Indices of the `k` rows of `database` nearest to each row of `query` in Euclidean distance
  (Figure 4 uses fc7's 4096 activations), nearest first. `exclude` holds, per query row, a
  database index to skip (the query's own row) or -1; `exclude_self` (query rows are database
  rows 0..Q-1) skips each row's own index."""
  query = np.asarray(query, np.float64)
  database = np.asarray(database, np.float64)
  distances = (
      np.sum(query**2, axis=1)[:, None]
      - 2 * query @ database.T
      + np.sum(database**2, axis=1)[None, :]
  )
  if exclude_self:
    exclude = np.arange(len(query))
  if exclude is not None:
    rows = np.flatnonzero(np.asarray(exclude) >= 0)
    distances[rows, np.asarray(exclude)[rows]] = np.inf
  return np.argsort(distances, axis=1, kind='stable')[:, :k]


def top5(probs: np.ndarray, class_names) -> list[list[tuple[str, float]]]:
  """Each example's five most probable classes, with their probabilities (Figure 4, left)."""
  order = np.argsort(-probs, axis=1, kind='stable')[:, : min(5, probs.shape[1])]
  return [[(class_names[c], float(p[c])) for c in row] for p, row in zip(probs, order)]


def class_names(config) -> list[str]:
  """The label names of the run's dataset (its TFDS ClassLabel)."""
  run = config if isinstance(config, settings.RunConfig) else settings.from_config(config)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = tfds.builder(run.data.dataset, data_dir=run.data.data_dir)
  names = builder.info.features[pipeline.LABEL_KEY].names
  return list(names) if names else [str(i) for i in range(run.model.num_classes)]


def images(config, indices, split: str | None = None) -> list[np.ndarray]:
  """The decoded uint8 images at `indices` of `split` (default the evaluation split), for display;
  their order matches `outputs`."""
  run = config if isinstance(config, settings.RunConfig) else settings.from_config(config)
  source = pipeline.decoding_source(run.data, split or run.data.eval_split)
  return [np.asarray(source[int(i)][pipeline.IMAGE_KEY]) for i in indices]
