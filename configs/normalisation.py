r"""Section 3.3: local response normalisation lowers the top-1 error (the paper: by 1.4%).

    python -m alexnet_jax.tools.sweep --config=configs/normalisation.py --workdir=runs/normalisation

The paper's LRN after conv1 and conv2, against no normalisation and against batch normalisation at
the same two places (the modern replacement, not in the paper). At the CPU scale the runs train in
configs/ablation.py's `levelled` regime (`synthetic_shapes/medium`, 2,000 images, a quarter of the
channels, 2,000 steps), where the validation error stops falling before the end. Each variant
first trains at four learning rates (a quarter, half, once and twice the base 0.02) on a tuning
seed never reported and keeps the one with the lowest final validation error; then 5 seeds each:
the final validation top-1 error, paired by seed against LRN, and the steps until it first falls
to 25%.

Arguments: those of configs/ablation.py (`scale=paper`, `dataset=NAME`, `tiny`, `seeds=N`,
`first_seed=K`).
Measured here: docs/experiments.md, "The paper's claims, measured", and
experiments/03_normalisation.ipynb.
"""

from alexnet_jax.configs import ablation
from alexnet_jax.configs import common


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, **ablation.ARGS)
  c = ablation.base(args)
  ablation.levelled(c, args)
  return ablation.with_sweep(
      c,
      args,
      ('paper', 'no_lrn', 'batchnorm'),
      seeds=5,
      # From a quarter of the rate: when half was the smallest rate tried, the networks without
      # normalisation and with batch norm chose it (`at_edge`), so a better rate could lie below.
      learning_rates=ablation.rates(c),
      target=0.25,
      target_metric='eval_top1_error',
  )
