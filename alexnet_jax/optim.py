"""The paper's optimiser (section 5) and the learning-rate schedules, all from optax.

Section 5's update, with learning rate eps, momentum 0.9 and weight decay 0.0005:

    v <- 0.9 v - 0.0005 eps w - eps dL/dw
    w <- w + v

is `optax.chain(add_decayed_weights(5e-4), scale_by_learning_rate(eps), <plateau scale>,
trace(0.9))`. The learning rate (and the plateau's factor) multiply each step's gradient *before*
it enters the momentum buffer, as in the rule above; `optax.sgd` would instead scale the whole
buffer on the way out, which differs from the paper whenever the rate changes. Biases do not decay
by default, as in cuda-convnet's layer definitions, where weight cost applies to weights only
(`decay_biases=True` decays them too). Batch-norm scales and offsets count as biases.

Schedules (`schedule`):
- `plateau`, the paper's: "divide the learning rate by 10 when the validation error rate stopped
  improving", reduced three times in all. This is `optax.contrib.reduce_on_plateau`, driven by the
  validation top-1 error once per evaluation (`steps.plateau_update`), never by the training
  loss. Its state lives in the train state and so in checkpoints; the train step only reads its
  `scale`.
- `step`: multiply by `step_factor` at each of `step_boundaries` (fractions of the run).
- `cosine`: linear warm-up for `warmup_steps`, then cosine decay to 0, for modern runs.

Fine-tuning (alexnet_jax/finetune.py) adds two transforms, each only when asked for, so the
paper's chain is unchanged without them:
- `new_layer_lr_mult`, Caffe's per-layer `lr_mult`, for the layers `init_from` did not load: a
  learning rate, so it scales the step (weight decay included) before it enters the momentum
  buffer, as `eps` does in the rule above.
- `freeze`: the updates of the named layers are set to zero at the end of the chain, after weight
  decay and momentum, so their parameters stay bit for bit what they were. Their momentum buffers
  stay in the state (unused): it keeps the shape of the parameters, which is what `sharding`
  places and checkpoints hold.
"""

import dataclasses
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

SCHEDULES = ('plateau', 'step', 'cosine')


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """Section 5's optimiser and schedule; the defaults are the paper's values."""

  learning_rate: float = 0.01
  momentum: float = 0.9
  weight_decay: float = 5e-4
  decay_biases: bool = False  # cuda-convnet applied weight cost to weights only
  schedule: str = 'plateau'  # plateau (the paper) | step | cosine
  plateau_factor: float = 0.1  # "divide the learning rate by 10"
  plateau_patience: int = 5  # evaluations without improvement before a reduction (>= 1)
  plateau_cooldown: int = 0  # evaluations to wait after a reduction
  plateau_rtol: float = 1e-3  # relative improvement of the error that counts as progress
  plateau_max_reductions: int = 3  # "reduced three times prior to termination"
  step_boundaries: tuple[float, ...] = (0.33, 0.67, 0.9)  # schedule='step': fractions of the run
  step_factor: float = 0.1
  warmup_steps: int = 0  # schedule='cosine'
  # Fine-tuning (finetune.py). Layers whose parameters do not change, e.g. ('conv1', 'conv2') or
  # 'conv1,conv2'; batch-norm statistics of a frozen norm layer still follow the data.
  freeze: tuple[str, ...] = ()
  # Caffe's lr_mult for the layers init_from did not load (e.g. fc8 for new classes); 1 without
  # init_from.
  new_layer_lr_mult: float = 1.0


def decay_mask(params: Any, decay_biases: bool) -> Any:
  """True for every leaf that weight decay applies to: kernels, and biases if asked."""

  def leaf_decays(path, _):
    name = getattr(path[-1], 'key', str(path[-1]))
    return name == 'kernel' or decay_biases

  return jax.tree_util.tree_map_with_path(leaf_decays, params)


def layer_list(value: str | Sequence[str]) -> tuple[str, ...]:
  """Layer names from 'conv1,conv2', ('conv1', 'conv2') or the command line's ('conv1,conv2',)."""
  parts = [value] if isinstance(value, str) else list(value)
  return tuple(name.strip() for part in parts for name in part.split(',') if name.strip())


def layer_mask(params: Any, layers: Sequence[str]) -> Any:
  """True for every leaf of the named layers (top-level keys of `params`); ValueError naming the
  model's layers for a name it does not have."""
  unknown = sorted(set(layers) - set(params))
  if unknown:
    raise ValueError(
        f'optim.freeze names {unknown}, which this model does not have; its layers are '
        f'{sorted(params)}.'
    )
  return {name: jax.tree.map(lambda _: name in layers, tree) for name, tree in params.items()}


def scale_by_layer(multipliers: dict[str, float]) -> optax.GradientTransformation:
  """Multiplies the updates of each layer in `multipliers` (a top-level key of the parameters) by
  its value; other layers pass unchanged. Stateless."""

  def update(updates, state, params=None):
    del params

    def scale(path, u):
      multiplier = multipliers.get(getattr(path[0], 'key', None), 1.0)
      return u if multiplier == 1.0 else u * jnp.asarray(multiplier, u.dtype)

    return jax.tree_util.tree_map_with_path(scale, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def learning_rate_schedule(
    config: OptimConfig, num_train_steps: int
) -> Callable[[jax.Array], jax.Array]:
  """The base learning rate as a function of the step; `plateau` scales it further."""
  if config.schedule == 'plateau':
    return optax.constant_schedule(config.learning_rate)
  if config.schedule == 'step':
    boundaries = {int(b * num_train_steps): config.step_factor for b in config.step_boundaries}
    return optax.piecewise_constant_schedule(config.learning_rate, boundaries)
  if config.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(
        0.0,
        config.learning_rate,
        config.warmup_steps,
        max(num_train_steps, config.warmup_steps + 1),
    )
  raise ValueError(
      f'optim.schedule={config.schedule!r} is not supported; choose one of {SCHEDULES}.'
  )


def scale_by_plateau() -> optax.GradientTransformationExtraArgs:
  """Multiplies updates by the `plateau_scale` passed to `update` (1 if none is)."""

  def update(updates, state, params=None, *, plateau_scale=None, **extra_args):
    del params, extra_args
    if plateau_scale is None:
      return updates, state
    return jax.tree.map(lambda u: u * plateau_scale.astype(u.dtype), updates), state

  return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


def create_optimizer(
    config: OptimConfig, num_train_steps: int, new_layers: Sequence[str] = ()
) -> optax.GradientTransformationExtraArgs:
  """Section 5's SGD: call `update(grads, state, params, plateau_scale=s)`.

  `new_layers`: the layers init_from did not load (`finetune.Report.new_layers`); they learn at
  `config.new_layer_lr_mult` times the rate. The state's structure depends on the config alone,
  never on `new_layers`, so a checkpoint restores without knowing them.
  """
  schedule = learning_rate_schedule(config, num_train_steps)
  transforms = [
      optax.add_decayed_weights(
          config.weight_decay, mask=lambda p: decay_mask(p, config.decay_biases)
      ),
      optax.scale_by_learning_rate(schedule),
      scale_by_plateau(),
  ]
  # getattr: a config of the paper's fields alone (written before these) is the paper's chain.
  multiplier = getattr(config, 'new_layer_lr_mult', 1.0)
  if multiplier != 1.0:
    transforms.append(scale_by_layer({name: multiplier for name in new_layers}))
  transforms.append(optax.trace(decay=config.momentum))
  frozen = layer_list(getattr(config, 'freeze', ()))
  if frozen:
    transforms.append(optax.masked(optax.set_to_zero(), lambda p: layer_mask(p, frozen)))
  return optax.chain(*transforms)


def create_plateau(config: OptimConfig) -> optax.GradientTransformationExtraArgs:
  """Reduce-on-plateau on the validation error: at most `max_reductions` divisions by 1/factor."""
  # The scale after n cuts, multiplied in float32 as optax multiplies it: rounding cannot block the
  # n-th cut, and a further plateau leaves the scale where it is (a floor a hair below factor**n
  # let an (n+1)-th cut of 0.01% through).
  min_scale = math.prod([np.float32(config.plateau_factor)] * config.plateau_max_reductions)
  return optax.contrib.reduce_on_plateau(
      factor=config.plateau_factor,
      patience=config.plateau_patience,
      cooldown=config.plateau_cooldown,
      rtol=config.plateau_rtol,
      min_scale=min_scale,
  )
