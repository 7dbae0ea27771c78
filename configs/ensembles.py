r"""Section 6: averaging the predictions of several networks (the paper: 1 CNN 40.7% top-1 on the
ILSVRC-2012 validation set, 5 CNNs 38.1%).

    python -m alexnet_jax.tools.sweep --config=configs/ensembles.py --workdir=runs/paper_seeds

Five networks of the paper's recipe at configs/ablation.py's CPU scale, differing only in their
seed (initial weights, dropout, data order and augmentation). experiments/07_ensembles.ipynb then
averages their softmax outputs on the validation set, for every subset of k = 1..5 of them
(`analysis.ensemble_errors`). configs/kernels.py is the same five runs (the same workdir serves
both notebooks).

Arguments: those of configs/ablation.py (`scale=paper`, `dataset=NAME`, `tiny`, `seeds=N`).
Measured here: docs/experiments.md, "The paper's claims, measured", and
experiments/07_ensembles.ipynb.
"""

from alexnet_jax.configs import ablation
from alexnet_jax.configs import common


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, **ablation.ARGS)
  c = ablation.base(args)
  c = ablation.with_sweep(c, args, ('paper',), seeds=5)
  if args.tiny:
    c.sweep.seeds = (0, 1, 2)  # three, so that k = 2 has several subsets
  return c
