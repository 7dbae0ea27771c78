r"""Sections 4.1 and 4.2: data augmentation and dropout against overfitting.

    python -m alexnet_jax.tools.sweep --config=configs/regularisation.py \
        --workdir=runs/regularisation

The paper: without augmentation the network "suffers from substantial overfitting"; PCA colour
noise lowers top-1 error by over 1%; without dropout there is substantial overfitting, and dropout
roughly doubles the iterations needed to converge. Overfitting needs a training set the network
can memorise: at the CPU scale the runs train in configs/ablation.py's `levelled` regime (the first
2,000 images of `synthetic_shapes/medium`, 100 per class, a quarter of the channels, 2,000 steps
of 32: 32 epochs), where the validation error stops falling before the end, and every evaluation
measures both the validation error and the error on those 2,000 training images (`eval_trainset`,
centre crops without dropout). Variants: the paper's recipe, no dropout, no random crops or flips
(centre crops), no PCA colour noise. Each first trains at four learning rates (a quarter, half,
once and twice the base 0.02) on a tuning seed never reported and keeps the one with the lowest
final validation error; then 5 seeds each. The outcome the claims are about comes first: the final
validation error, paired by seed against the paper's recipe; then the generalisation gap
(validation minus training-set error); and for dropout's cost the steps until the training-set
error first fell to 25% (runs that never did are counted, k of n).

Arguments: those of configs/ablation.py (`scale=paper`, `dataset=NAME`, `tiny`, `seeds=N`,
`first_seed=K`); at the paper's scale the whole training split is used.
Measured here: docs/experiments.md, "The paper's claims, measured", and
experiments/06_regularisation.ipynb.
"""

from alexnet_jax.configs import ablation
from alexnet_jax.configs import common


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, **ablation.ARGS)
  c = ablation.base(args)
  ablation.levelled(c, args)
  c.eval_trainset = True
  return ablation.with_sweep(
      c,
      args,
      ('paper', 'no_dropout', 'no_crop_flip', 'no_pca_noise'),
      seeds=5,
      # From a quarter of the rate: when half was the smallest rate tried, the networks without
      # random crops and flips and without PCA noise chose it (`at_edge`), so a better rate could
      # lie below.
      learning_rates=ablation.rates(c),
      target=0.25,
      target_metric='trainset_top1_error',
  )
