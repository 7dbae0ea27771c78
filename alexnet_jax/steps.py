"""The train state and the jitted training and evaluation steps: pure functions of arrays.

`nnx.split` separates the model into a static graph and plain dictionaries of parameters and
batch statistics once; each step `nnx.merge`s them inside `jax.jit`. Nothing in a step touches
the host, so steps queue up back to back. This module imports no TensorFlow (clu's metric
writers do, so they stay in `train`), and runs as-is on machines with only jax, flax and optax.
"""

import functools
from typing import Any, Callable

from clu import metrics
import flax
from flax import nnx
import jax
import jax.numpy as jnp
import optax

from alexnet_jax import models
from alexnet_jax import optim


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
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  top1_error: metrics.Average.from_output('top1_error')
  top5_error: metrics.Average.from_output('top5_error')
  learning_rate: metrics.LastValue.from_output('learning_rate')
  grad_norm: metrics.Average.from_output('grad_norm')


def model_config(config) -> models.ModelConfig:
  fields = config.model.to_dict()
  lrn = models.LRNConfig(**fields.pop('lrn'))
  return models.ModelConfig(**fields, lrn=lrn)


def create_model(config, seed: int | None = None) -> models.AlexNet:
  seed = config.seed if seed is None else seed
  return models.AlexNet(model_config(config), config.image_size, rngs=nnx.Rngs(params=seed))


def create_train_state(config, model: models.AlexNet, tx: optax.GradientTransformation,
                       plateau: optax.GradientTransformation) -> tuple[nnx.GraphDef, TrainState]:
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params = nnx.to_pure_dict(params)
  state = TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=nnx.to_pure_dict(rest),
      opt_state=tx.init(params),
      plateau=plateau.init(None),
      rng=jax.random.key_data(jax.random.key(config.seed + 1)))
  return graphdef, state


def error_rates(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-example top-1 and top-5 errors (section 6): 1 where the label is not among the best k."""
  top1 = (jnp.argmax(logits, -1) != labels).astype(jnp.float32)
  k = min(5, logits.shape[-1])
  _, best = jax.lax.top_k(logits, k)
  top5 = 1.0 - jnp.any(best == labels[:, None], axis=-1).astype(jnp.float32)
  return top1, top5


def _apply(graphdef, params, batch_stats, images, *, train, dropout_rng=None):
  model = nnx.merge(graphdef, params, batch_stats)
  logits = model(images, train=train, dropout_rng=dropout_rng)
  return logits, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))


def train_step(state: TrainState, batch: dict, *, graphdef, tx, schedule
               ) -> tuple[TrainState, TrainMetrics, jax.Array]:
  """One SGD step on a global batch. Returns the new state, its metrics and a finite flag."""
  dropout_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  def loss_fn(params):
    logits, batch_stats = _apply(graphdef, params, state.batch_stats, batch['image'], train=True,
                                 dropout_rng=dropout_rng)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
    return losses.mean(), (losses, logits, batch_stats)

  (loss, (losses, logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  scale = optim.plateau_scale(state.plateau)
  params = optax.apply_updates(state.params, optim.scale_updates(updates, scale))
  grad_norm = optax.global_norm(grads)
  top1, top5 = error_rates(logits, batch['label'])
  step_metrics = TrainMetrics.single_from_model_output(
      loss=losses, top1_error=top1, top5_error=top5,
      learning_rate=schedule(state.step) * scale, grad_norm=grad_norm)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state)
  return new_state, step_metrics, finite


def eval_step(state: TrainState, batch: dict, *, graphdef) -> EvalMetrics:
  logits, _ = _apply(graphdef, state.params, state.batch_stats, batch['image'], train=False)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  top1, top5 = error_rates(logits, batch['label'])
  return EvalMetrics.single_from_model_output(
      loss=losses, top1_error=top1, top5_error=top5, mask=batch['mask'])


def make_train_step(graphdef, tx, schedule) -> Callable:
  return jax.jit(functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=schedule),
                 donate_argnums=0)


def make_eval_step(graphdef) -> Callable:
  return jax.jit(functools.partial(eval_step, graphdef=graphdef))


def plateau_update(plateau: optax.GradientTransformation, state: TrainState,
                   eval_error: float) -> TrainState:
  """Feeds one validation top-1 error to the reduce-on-plateau schedule (section 5)."""
  _, new = plateau.update(updates=None, state=state.plateau,
                          value=jnp.asarray(eval_error, jnp.float32))
  return state.replace(plateau=new)
