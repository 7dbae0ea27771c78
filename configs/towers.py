r"""Section 3.2: the two-tower network against one tower (the paper: -1.7% top-1).

    python -m alexnet_jax.tools.sweep --config=configs/towers.py --workdir=runs/towers

Two comparisons at configs/ablation.py's CPU scale, each variant at its own learning rate (the
lowest final validation error of three, on a tuning seed never reported), then 5 seeds each:
- `one_tower`: one tower of the same total width: every layer sees every channel of the one below,
  so this isolates the towers' restricted connectivity (conv2, conv4 and conv5 see only their own
  tower);
- `one_tower_small`: the paper's own comparison, one tower with half the kernels in conv1 to conv4
  (section 3.2's footnote: conv5 and the fully connected layers keep their size, so the two nets
  have about as many parameters).
The final validation top-1 error, and the steps until it first falls to 75%.

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
  return ablation.with_sweep(
      c,
      args,
      ('paper', 'one_tower', 'one_tower_small'),
      seeds=5,
      # Around the rate that trained fastest in a 1,500-step probe (docs/experiments.md).
      learning_rates=ablation.rates(c, (0.125, 0.25, 0.5)),
      target=0.75,
      target_metric='eval_top1_error',
  )
