"""The train state and the jitted training and evaluation steps: pure functions of arrays.

`nnx.split` separates the model into a static graph and plain dictionaries of parameters and
batch statistics once; each step `nnx.merge`s them inside `jax.jit`. Nothing in a step touches
the host, so steps queue up back to back. This module imports no TensorFlow (clu's metric
writers do, so they stay in `train`): it needs jax, flax, optax and clu's pure-Python metrics.
"""

import dataclasses
import functools
from typing import Any, Callable

from clu import metrics
import flax
from flax import nnx
import jax
import jax.numpy as jnp
import optax

from alexnet_jax.data import device_augment
from alexnet_jax import models
from alexnet_jax import sharding


class TrainingDiverged(RuntimeError):
  """The loss or the gradients stopped being finite."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict  # nnx.Param leaves of the model, as a plain nested dict
  batch_stats: dict  # nnx.BatchStat leaves (batch-norm running averages); empty with LRN
  opt_state: Any  # optax state of SGD-momentum and weight decay
  plateau: Any  # optax.contrib.reduce_on_plateau state; its `scale` multiplies the updates
  rng: jax.Array  # raw uint32 key data; dropout draws fold in the step


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  top1_error: metrics.Average.from_output('top1_error')
  top5_error: metrics.Average.from_output('top5_error')


@flax.struct.dataclass
class TenCropEvalMetrics(metrics.Collection):
  """Section 4.1's test (softmax averaged over ten patches), and its centre patch alone."""

  loss: metrics.Average.from_output('loss')
  top1_error: metrics.Average.from_output('top1_error')
  top5_error: metrics.Average.from_output('top5_error')
  center_loss: metrics.Average.from_output('center_loss')
  center_top1_error: metrics.Average.from_output('center_top1_error')
  center_top5_error: metrics.Average.from_output('center_top5_error')


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  top1_error: metrics.Average.from_output('top1_error')
  top5_error: metrics.Average.from_output('top5_error')
  learning_rate: metrics.LastValue.from_output('learning_rate')
  grad_norm: metrics.Average.from_output('grad_norm')


def create_model(model: models.ModelConfig, image_size: int, seed: int, **axes) -> models.AlexNet:
  """The network of `model`; `axes` (tower_axis, batch_axis, fc_axis) come from sharding.Layout."""
  return models.AlexNet(dataclasses.replace(model, **axes), image_size, rngs=nnx.Rngs(params=seed))


def create_train_state(
    model: models.AlexNet,
    tx: optax.GradientTransformation,
    plateau: optax.GradientTransformation,
    seed: int,
) -> tuple[nnx.GraphDef, TrainState]:
  """The train state of `model`; dropout draws from a key of `seed + 1` (the weights used
  `seed`)."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params = nnx.to_pure_dict(params)
  state = TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=nnx.to_pure_dict(rest),
      opt_state=tx.init(params),
      plateau=plateau.init(None),
      rng=jax.random.key_data(jax.random.key(seed + 1)),
  )
  return graphdef, state


def error_rates(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-example top-1 and top-5 errors (section 6): 1 where the label is not among the best k.

  The label's rank is the number of other classes it does not strictly beat: a tie counts
  against the label, so a network whose logits are all equal (dead or collapsed) is wrong on
  every example, not right, and so is a NaN network (with more than five classes, for
  top-5). Counting instead of sorting
  keeps each example's work on its own device: `top_k` on a batch-sharded array makes XLA gather
  the logits.
  """
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  # C - 1 minus the classes the label strictly beats (the label does not beat itself).
  rank = logits.shape[-1] - 1 - jnp.sum(label_logit > logits, axis=-1)
  return (rank >= 1).astype(jnp.float32), (rank >= 5).astype(jnp.float32)


def _apply(graphdef, params, batch_stats, images, *, train, dropout_rng=None):
  model = nnx.merge(graphdef, params, batch_stats)
  logits = model(images, train=train, dropout_rng=dropout_rng)
  return logits, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))


def metric_sums(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
  """Sums over the (masked) examples of a batch; divided by `count` they are the metrics.

  `logits` may be any scores whose softmax is the prediction, e.g. normalised log-probabilities
  (`crop_averaged_log_probs`): their cross-entropy is then -log p(label), and ranks do not change.
  """
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  top1, top5 = error_rates(logits, labels)
  return {
      'loss': jnp.sum(losses * mask),
      'top1_error': jnp.sum(top1 * mask),
      'top5_error': jnp.sum(top5 * mask),
      'count': jnp.sum(mask),
  }


def crop_averaged_log_probs(logits: jax.Array) -> jax.Array:
  """log of the softmax averaged over each example's views: (B, crops, C) logits -> (B, C).

  Section 4.1 averages the network's softmax (probabilities, not logits) over ten patches;
  logsumexp of the log-softmax keeps this exact where a probability underflows.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jax.nn.logsumexp(log_probs, axis=1) - jnp.log(logits.shape[1])


def _average(sums: dict, name: str) -> metrics.Average:
  return metrics.Average(total=sums[name], count=sums['count'])


def train_step(
    state: TrainState,
    batch: dict,
    *,
    graphdef,
    tx,
    schedule,
    distribute,
    preprocess: Callable[[dict], jax.Array] = device_augment.images,
) -> tuple[TrainState, TrainMetrics, jax.Array]:
  """One SGD step on a global batch. Returns the new state, its metrics and a finite flag.

  `preprocess(shard)` gives the shard's float32 images: `device_augment.DeviceAugment` finishes
  a uint8 batch's augmentation here, on each device's own rows; the default takes host-made ones.
  """
  dropout_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def per_shard(params, batch_stats, shard, rng, loss_scale):
    images = preprocess(shard)

    def loss_fn(p):
      logits, new_stats = _apply(graphdef, p, batch_stats, images, train=True, dropout_rng=rng)
      sums = metric_sums(logits, shard['label'], jnp.ones_like(shard['label'], jnp.float32))
      return sums['loss'] / sums['count'] * loss_scale, (sums, new_stats)

    (_, (sums, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return sums, new_stats, grads

  step_fn = distribute(per_shard, state.params, state.batch_stats, grads=True)
  sums, batch_stats, grads = step_fn(state.params, state.batch_stats, batch, dropout_rng)
  scale = state.plateau.scale
  updates, opt_state = tx.update(grads, state.opt_state, state.params, plateau_scale=scale)
  params = optax.apply_updates(state.params, updates)
  grad_norm = optax.global_norm(grads)
  step_metrics = TrainMetrics.empty().replace(
      loss=_average(sums, 'loss'),
      top1_error=_average(sums, 'top1_error'),
      top5_error=_average(sums, 'top5_error'),
      learning_rate=metrics.LastValue.from_model_output(schedule(state.step) * scale),
      grad_norm=metrics.Average.from_model_output(grad_norm),
  )
  finite = jnp.isfinite(sums['loss']) & jnp.isfinite(grad_norm)
  new_state = state.replace(
      step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  )
  return new_state, step_metrics, finite


def eval_step(
    state: TrainState, batch: dict, *, graphdef, distribute
) -> EvalMetrics | TenCropEvalMetrics:
  """Metrics of the examples whose `mask` is 1 (padding rows have mask 0).

  Images of shape (B, H, W, 3) are one view per example. (B, crops, H, W, 3), e.g. the ten
  patches of `augment.ten_crop`, are run through the model as B * crops images, and each
  example's prediction is the average of its views' softmax (section 4.1); view 0, the centre
  patch, is also scored alone (`center_*`).
  """

  def per_shard(params, batch_stats, shard, rng, loss_scale):
    del rng, loss_scale
    images, labels, mask = shard['image'], shard['label'], shard['mask']
    if images.ndim == 4:
      logits, _ = _apply(graphdef, params, batch_stats, images, train=False)
      return metric_sums(logits, labels, mask), batch_stats
    crops = images.shape[1]
    logits, _ = _apply(
        graphdef, params, batch_stats, images.reshape((-1,) + images.shape[2:]), train=False
    )
    logits = logits.reshape(-1, crops, logits.shape[-1])
    sums = metric_sums(crop_averaged_log_probs(logits), labels, mask)
    center = metric_sums(logits[:, 0], labels, mask)
    sums.update({f'center_{k}': center[k] for k in ('loss', 'top1_error', 'top5_error')})
    return sums, batch_stats

  step_fn = distribute(per_shard, state.params, state.batch_stats, grads=False)
  sums, _ = step_fn(state.params, state.batch_stats, batch, jax.random.key(0))
  collection = EvalMetrics if batch['image'].ndim == 4 else TenCropEvalMetrics
  return collection.empty().replace(
      **{name: _average(sums, name) for name in collection.__annotations__}
  )


def _one_device(per_shard, *_, grads):
  del grads
  return sharding.undistributed(per_shard)


def make_train_step(
    graphdef, tx, schedule, layout=None, preprocess=None, members=False
) -> Callable:
  """The jitted train step; `layout` (a sharding.Layout) distributes it, None: one device.

  `preprocess`: see `train_step`; None takes the batch's images as they are. `members`: the
  states and batches are stacked on a leading axis, one row per network trained together (a
  sweep's seeds), and the step is mapped over it (`jax.vmap`) on one device: each member's
  numbers are its own run's, to float rounding (XLA turns the mapped convolutions into grouped
  ones, which add up in another order).
  """
  if members and layout is not None:
    raise ValueError('Members trained together run on one device: give no layout.')
  distribute = layout.distribute if layout is not None else _one_device
  step = functools.partial(
      train_step,
      graphdef=graphdef,
      tx=tx,
      schedule=schedule,
      distribute=distribute,
      preprocess=preprocess or device_augment.images,
  )
  return jax.jit(jax.vmap(step) if members else step, donate_argnums=0)


def make_eval_step(graphdef, layout=None, members=False) -> Callable:
  """The jitted evaluation step; `members`: as in `make_train_step`, every member on the same
  batch."""
  if members and layout is not None:
    raise ValueError('Members trained together run on one device: give no layout.')
  distribute = layout.distribute if layout is not None else _one_device
  step = functools.partial(eval_step, graphdef=graphdef, distribute=distribute)
  return jax.jit(jax.vmap(step, in_axes=(0, None)) if members else step)


def plateau_update(
    plateau: optax.GradientTransformation, state: TrainState, eval_error: float
) -> TrainState:
  """Feeds one validation top-1 error to the reduce-on-plateau schedule (section 5)."""
  _, new = plateau.update(
      updates=None, state=state.plateau, value=jnp.asarray(eval_error, jnp.float32)
  )
  return state.replace(plateau=new)
