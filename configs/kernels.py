r"""Figures 3 and 4: what the network learned, over seeds.

    python -m alexnet_jax.tools.sweep --config=configs/kernels.py --workdir=runs/paper_seeds

The paper: conv1's kernels on GPU 1 are "largely colour-agnostic", those on GPU 2 "largely
colour-specific", and "this kind of specialization occurs during every run and is independent of
any particular random weight initialization"; and images whose fc7 activations are close in
Euclidean distance are close in content. experiments/08_kernels.ipynb shows, for each of five
seeds at this sweep's length and at five times it (experiments/07_ensembles.ipynb's equal-compute
networks), conv1's kernels as an image grid per tower with each tower's colour specificity
(`analysis.colour_specificity`: the share of a kernel's energy that is colour contrast rather than
luminance), the towers' difference against kernels shuffled between them (`analysis.tower_split`)
and the kernels' smoothness against the random start (`analysis.smoothness`); then the validation
images nearest to a few queries in fc7 space, how often neighbours share the class, palette and
shape against chance, chance within the palette and pixel space, and predictions with their
top-5 classes. It trains on the built-in `hard` variant, whose classes depend on hue,
so colour-selective kernels have a reason to appear. The runs are configs/ensembles.py's: sweep
either into the same workdir and the second finds them done.

Arguments: those of configs/ablation.py (`scale=paper`, `dataset=NAME`, `tiny`, `seeds=N`).
Measured here: docs/experiments.md, "The paper's claims, measured", and
experiments/08_kernels.ipynb.
"""

from alexnet_jax.configs import ensembles


def get_config(arg: str | None = None):
  return ensembles.get_config(arg)
