r"""Section 3.4: overlapping pooling (3x3 windows, stride 2) against plain 2x2, stride 2 (the
paper: -0.4% top-1, and "slightly more difficult to overfit").

    python -m alexnet_jax.tools.sweep --config=configs/pooling.py --workdir=runs/pooling

The question needs pool5 to be larger than one pixel with both kinds of window: at configs/
ablation.py's 67-pixel crops overlapping pooling leaves a 1x1 pool5, so 3x3/2 against 2x2/2 would
compare how the last window treats the map's edge, not overlap. At the CPU scale the crops are 99
pixels (resized to 113 first, the CPU scale's crop-to-resize ratio): conv1 23x23, then 11, 5 and a
2x2 pool5 for both kinds of window, as at the paper's 224 (55, 27, 13, 6) the two give the same map
sizes, so the networks differ in the windows alone. The runs train in configs/ablation.py's
`levelled` regime (`synthetic_shapes/medium`, 2,000 images, a quarter of the channels, 2,000 steps)
where the validation error stops falling before the end, and the first 2,000 images are few enough
to overfit: each evaluation also measures the error on them (`eval_trainset`). Each variant first
trains at four learning rates (a quarter, half, once and twice the base 0.02) on a tuning seed never
reported and keeps the one with the lowest final validation error; then 5 seeds each: the final
validation top-1 error and the generalisation gap (validation minus training-set error), each
paired by seed against overlapping pooling, and the steps until the validation error first falls
to 25%.

Arguments: those of configs/ablation.py (`scale=paper`, `dataset=NAME`, `tiny`, `seeds=N`,
`first_seed=K`).
Measured here: docs/experiments.md, "The paper's claims, measured", and
experiments/04_pooling.ipynb.
"""

from alexnet_jax.configs import ablation
from alexnet_jax.configs import common

# At the CPU scale: crops whose pool5 is 2x2 with either kind of window (models.feature_sizes).
CROP, RESIZE = 99, 113


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, **ablation.ARGS)
  c = ablation.base(args)
  ablation.levelled(c, args)
  if args.scale == 'cpu' and not args.tiny:
    c.resize_size, c.image_size = RESIZE, CROP
  c.eval_trainset = True
  return ablation.with_sweep(
      c,
      args,
      ('paper', 'plain_pool'),
      seeds=5,
      learning_rates=ablation.rates(c),
      target=0.25,
      target_metric='eval_top1_error',
  )
