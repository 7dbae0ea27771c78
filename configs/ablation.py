r"""The run every paper experiment varies: the base of configs/relu_tanh.py, normalisation.py,
pooling.py, towers.py, regularisation.py, ensembles.py and kernels.py.

    python -m alexnet_jax.main --config=configs/ablation.py --workdir=runs/ablation

Arguments (a comma-separated list, configs/common.py):
- `scale=cpu` (the default): the paper's network at a scale a 2-core CPU trains in about a minute,
  on the built-in dataset's `hard` variant (20 classes: 10 shapes x warm or cool hue, with clutter
  and an occluding bar), where the easy variant's 0.4% error leaves no room for an effect:
  67-pixel crops of 76-pixel images, half the channels (width 0.5), batch 32, 1,000 steps. The start
  is the quickstart's (he init, pixels divided by their std, warm-up and cosine decay, at lr 0.02;
  configs/quickstart.py says why the paper's start fails on short runs).
  An experiment about where its runs end (configs/normalisation.py) trains instead in `levelled`'s
  regime, where the validation error stops falling before the run does.
- `scale=paper`: the paper's recipe unchanged (configs/alexnet.py: 224-pixel crops, 90 epochs, the
  plateau schedule, the ten-patch test), on ImageNet or any TFDS dataset: a GPU host's run.
- `dataset=NAME`: another prepared TFDS dataset (`model.num_classes` must match it; the run says
  so at once if it does not).
- `tiny`: seconds on a CPU, for the tests and the notebooks' smoke runs.
- `variant=NAME`: one of configs/common.py's VARIANTS.
- `seeds=N`, `first_seed=K`: an experiment's reported seeds, K to K + N - 1 (default: its own
  count from 0). Rerunning with `first_seed=10` checks its verdicts on seeds it never saw.
"""

import ml_collections

from alexnet_jax.configs import alexnet
from alexnet_jax.configs import common
from alexnet_jax.data import augment
from alexnet_jax import settings

HARD = 'synthetic_shapes/hard'
MEDIUM = 'synthetic_shapes/medium'
ARGS = dict(tiny=False, scale='cpu', dataset='', variant='paper', seeds=0, first_seed=0)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, **ARGS)
  config = base(args)
  common.apply_variant(config, args.variant)
  return config


def base(args: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The base run of `args` (parsed with ARGS), before any variant."""
  if args.scale not in ('cpu', 'paper'):
    raise ValueError(f"scale={args.scale!r}: choose 'cpu' (this machine's) or 'paper'.")
  c = alexnet.paper()
  if args.scale == 'cpu':
    c.dataset = HARD
    c.model.num_classes = 20
    c.resize_size, c.image_size = 76, 67
    c.model.width = 0.5
    c.batch_size, c.eval_batch_size = 32, 250
    c.num_train_steps = 1000
    c.log_every_steps = 20
    c.eval_every_steps = 100
    c.checkpoint_every_steps = 300
    c.final_eval_crops = 1
    c.profile_steps = 0
    c.model.init = 'he'
    c.augment.std_rgb = augment.IMAGENET_STD_RGB
    c.optim.schedule = 'cosine'
    c.optim.learning_rate = 0.02
    c.optim.warmup_steps = 50
  if args.dataset:
    c.dataset = args.dataset
  if args.tiny:
    common.make_tiny(c)
  return c


def levelled(c: ml_collections.ConfigDict, args: ml_collections.ConfigDict) -> None:
  """At the CPU scale, in place: the regime where the runs stop learning before they end.

  On `hard` the validation error still falls at 5,000 steps, so a 1,000-step run measures how fast
  a variant starts, not where it ends. Here: `synthetic_shapes/medium` (the same 20 classes with
  0-2 distractors and no bar), its first 2,000 training images, a quarter of the channels (half
  costs twice as much, and an experiment's 24 runs must fit a notebook's 30 minutes), 2,000 steps
  of 32 (32 epochs; at 1,500 the error still fell 1.8 points over the last 250). The probes and
  the curves: docs/experiments.md, "What this machine can and cannot answer". `tiny`,
  `scale=paper` and `dataset=NAME` are left as they are.
  """
  if args.scale != 'cpu' or args.tiny or args.dataset:
    return
  c.dataset = MEDIUM
  c.train_split = 'train[:2000]'
  c.model.width = 0.25
  c.num_train_steps = 2000
  c.eval_every_steps = 250
  c.checkpoint_every_steps = 500


def rates(
    c: ml_collections.ConfigDict, factors: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
) -> tuple:
  """A tuning grid for `with_sweep`'s `learning_rates`: the config's rate times each factor (by
  default a quarter, half, once and twice: with half, once and twice several variants chose the
  smallest rate, and a best rate at either end says the grid should widen)."""
  return tuple(c.optim.learning_rate * f for f in factors)


def with_sweep(
    config: ml_collections.ConfigDict,
    args: ml_collections.ConfigDict,
    variants: tuple[str, ...],
    seeds: int = 3,
    metric: str = 'eval_top1_error',
    learning_rates: tuple[float, ...] = (),
    tuning_metric: str | None = None,
    target: float | None = None,
    target_metric: str = 'train_top1_error',
    custom: dict | None = None,
) -> ml_collections.ConfigDict:
  """`config` with the `sweep` section `alexnet_jax.sweeps.sweep` runs. `tiny` keeps the first two
  variants and two seeds, the least that exercises every table and plot."""
  if args.variant != 'paper':
    raise ValueError(
        f'variant={args.variant!r}: an experiment config sweeps its own variants '
        f'{tuple(variants)}; for a single run of one, use configs/ablation.py:variant='
        f'{args.variant} with python -m alexnet_jax.main, or --config.sweep.variants to choose.'
    )
  seeds = args.seeds or seeds
  if args.tiny:
    variants, seeds = variants[:2], 2
  config.sweep = ml_collections.ConfigDict(
      {
          'variants': tuple(variants),  # names of `named` or `custom` below
          'seeds': tuple(range(args.first_seed, args.first_seed + seeds)),
          'parallel': 1,  # runs side by side, on disjoint sets of the devices
          # Seeds of a variant trained as one group, one program on one device (train_members);
          # 1: one after another, which is faster on XLA:CPU (docs/performance.md).
          'together': 1,
          # Each variant at its best rate (sweeps/sweep.py, `tune`): with rates given, every
          # variant first trains at each on tuning_seeds (never reported), and its reported runs
          # take the rate with the lowest mean final `tuning_metric` ('steps_to_target': the
          # fewest steps to `target`). (): optim.learning_rate for all.
          'learning_rates': () if args.tiny else tuple(learning_rates),
          'tuning_seeds': (100,),
          'tuning_metric': tuning_metric or metric,
          'metric': metric,  # the curves and the final-error bars
          # The "steps to reach" bars: the first logged step at which target_metric <= target.
          'target': ml_collections.config_dict.placeholder(float),
          'target_metric': target_metric,
          # What each name changes, name -> nested overrides: configs/common.py's VARIANTS (every
          # one, so --config.sweep.variants may pick any), and the experiment's own.
          'named': {name: settings.nested(changes) for name, changes in common.VARIANTS.items()},
          'custom': custom or {},
      }
  )
  config.sweep.target = target
  return config
