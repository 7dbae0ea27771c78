r"""Section 3.4: overlapping pooling (3x3 windows, stride 2) against plain 2x2, stride 2 (the
paper: -0.4% top-1, and "slightly more difficult to overfit").

    python -m alexnet_jax.tools.sweep --config=configs/pooling.py --workdir=runs/pooling

3 seeds each at configs/ablation.py's CPU scale: the final validation top-1 error, the
error on the training images themselves (`eval_trainset`) and the steps until the validation error
first falls to 75%.

Arguments: those of configs/ablation.py (`scale=paper`, `dataset=NAME`, `tiny`, `seeds=N`).
Measured here: docs/experiments.md, "The paper's claims, measured", and
experiments/04_pooling.ipynb.
"""

from alexnet_jax.configs import ablation
from alexnet_jax.configs import common


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, **ablation.ARGS)
  c = ablation.base(args)
  c.eval_trainset = True
  return ablation.with_sweep(
      c, args, ('paper', 'plain_pool'), target=0.75, target_metric='eval_top1_error'
  )
