r"""Section 3.3: local response normalisation lowers the top-1 error (the paper: by 1.4%).

    python -m alexnet_jax.tools.sweep --config=configs/normalisation.py --workdir=runs/normalisation

The paper's LRN after conv1 and conv2, against no normalisation and against batch normalisation at
the same two places (the modern replacement, not in the paper), 3 seeds each at configs/
ablation.py's CPU scale: the final validation top-1 error, and the steps until it first falls to
75%.

Arguments: those of configs/ablation.py (`scale=paper`, `dataset=NAME`, `tiny`, `seeds=N`).
Measured here: docs/experiments.md, "The paper's claims, measured", and
experiments/03_normalisation.ipynb.
"""

from alexnet_jax.configs import ablation
from alexnet_jax.configs import common


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, **ablation.ARGS)
  c = ablation.base(args)
  return ablation.with_sweep(
      c, args, ('paper', 'no_lrn', 'batchnorm'), target=0.75, target_metric='eval_top1_error'
  )
