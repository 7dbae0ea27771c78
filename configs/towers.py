r"""Section 3.2: the two-tower network against one tower (the paper: -1.7% top-1).

    python -m alexnet_jax.tools.sweep --config=configs/towers.py --workdir=runs/towers

Two comparisons, each variant at its own learning rate, then 5 seeds each:
- `one_tower`: one tower of the same total width: every layer sees every channel of the one below,
  so this isolates the towers' restricted connectivity (conv2, conv4 and conv5 see only their own
  tower);
- `one_tower_small`: the paper's own comparison, one tower with half the kernels in conv1 to conv4
  (section 3.2's footnote: conv5 and the fully connected layers keep their size, so the two nets
  have about as many parameters).
At the CPU scale the runs train in configs/ablation.py's `levelled` regime (`synthetic_shapes/
medium`, 2,000 images, a quarter of the channels, 2,000 steps), where the validation error stops
falling before the end: on `hard` at 1,000 steps every variant was still falling, so the
differences measured how fast each starts (docs/experiments.md). Each variant first trains at four
learning rates (a quarter, half, once and twice the base 0.02) on a tuning seed never reported and
keeps the one with the lowest final validation error. Reported: the final validation top-1 error,
paired by seed against two towers, and the steps until it first falls to 25%.

Arguments: those of configs/ablation.py (`scale=paper`, `dataset=NAME`, `tiny`, `seeds=N`,
`first_seed=K`).
Measured here: docs/experiments.md, "The paper's claims, measured", and
experiments/05_towers.ipynb.
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
      ('paper', 'one_tower', 'one_tower_small'),
      seeds=5,
      # From a quarter of the rate: when half was the smallest rate tried, both one-tower networks
      # chose it (`at_edge`), so a better rate could lie below.
      learning_rates=ablation.rates(c),
      target=0.25,
      target_metric='eval_top1_error',
  )
