"""The paper's optimiser (section 5) and the learning-rate schedules, all from optax.

Section 5's update, with learning rate eps, momentum 0.9 and weight decay 0.0005:

    v <- 0.9 v - 0.0005 eps w - eps dL/dw
    w <- w + v

is `optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(eps, momentum=0.9))`: the decay enters the
momentum buffer and is scaled by the learning rate, exactly as written. Biases do not decay by
default, as in cuda-convnet's layer definitions, where weight cost applies to weights only
(`decay_biases=True` decays them too). Batch-norm scales and offsets count as biases.

Schedules (`schedule`):
- `plateau`, the paper's: "divide the learning rate by 10 when the validation error rate stopped
  improving", reduced three times in all. This is `optax.contrib.reduce_on_plateau`, driven by the
  validation top-1 error once per evaluation (`plateau_step`), never by the training loss. Its state
  lives in the train state and so in checkpoints; the train step only reads its `scale`.
- `step`: multiply by `step_factor` at each of `step_boundaries` (fractions of the run).
- `cosine`: linear warm-up for `warmup_steps`, then cosine decay to 0, for modern runs.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ('plateau', 'step', 'cosine')


def decay_mask(params: Any, decay_biases: bool) -> Any:
  """True for every leaf that weight decay applies to: kernels, and biases if asked."""
  def leaf_decays(path, _):
    name = getattr(path[-1], 'key', str(path[-1]))
    return name == 'kernel' or decay_biases
  return jax.tree_util.tree_map_with_path(leaf_decays, params)


def learning_rate_schedule(config, num_train_steps: int) -> Callable[[jax.Array], jax.Array]:
  """The base learning rate as a function of the step; `plateau` scales it further."""
  if config.schedule == 'plateau':
    return optax.constant_schedule(config.learning_rate)
  if config.schedule == 'step':
    boundaries = {int(b * num_train_steps): config.step_factor for b in config.step_boundaries}
    return optax.piecewise_constant_schedule(config.learning_rate, boundaries)
  if config.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, config.warmup_steps, max(num_train_steps, config.warmup_steps + 1))
  raise ValueError(f'optim.schedule={config.schedule!r} is not supported; choose one of {SCHEDULES}.')


def create_optimizer(config, num_train_steps: int) -> optax.GradientTransformation:
  """SGD with momentum and decoupled-from-the-loss (but paper-equivalent) weight decay."""
  schedule = learning_rate_schedule(config, num_train_steps)
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay,
                                mask=lambda p: decay_mask(p, config.decay_biases)),
      optax.sgd(schedule, momentum=config.momentum),
  )


def create_plateau(config) -> optax.GradientTransformationExtraArgs:
  """Reduce-on-plateau on the validation error: at most `max_reductions` divisions by 1/factor."""
  # A hair below factor**n so float rounding of the repeated product cannot block the n-th step.
  min_scale = config.plateau_factor ** config.plateau_max_reductions * (1 - 1e-4)
  return optax.contrib.reduce_on_plateau(
      factor=config.plateau_factor,
      patience=config.plateau_patience,
      cooldown=config.plateau_cooldown,
      rtol=config.plateau_rtol,
      min_scale=min_scale,
  )


def plateau_scale(plateau_state) -> jax.Array:
  return plateau_state.scale if plateau_state is not None else jnp.ones((), jnp.float32)


def scale_updates(updates: Any, scale: jax.Array) -> Any:
  return jax.tree.map(lambda u: u * scale.astype(u.dtype), updates)
