r"""Sections 4.1 and 4.2: data augmentation and dropout against overfitting.

    python -m alexnet_jax.tools.sweep --config=configs/regularisation.py \
        --workdir=runs/regularisation

The paper: without augmentation the network "suffers from substantial overfitting"; PCA colour
noise lowers top-1 error by over 1%; without dropout there is substantial overfitting, and dropout
roughly doubles the iterations needed to converge. Overfitting needs a training set the network
can memorise, so at configs/ablation.py's CPU scale this trains on the first 1,000 images of the
`hard` training split (50 per class) for 1,000 steps (32 epochs), and measures at every evaluation
both the validation error and the error on those 1,000 training images (`eval_trainset`, centre
crops without dropout). Variants, 3 seeds each: the paper's recipe, no dropout, no random crops or
flips (centre crops), no PCA colour noise. The table gives the final validation error, the gap
between validation and training-set error, and the steps until the training-set error first fell
to 30%.

Arguments: those of configs/ablation.py (`scale=paper`, `dataset=NAME`, `tiny`, `seeds=N`); at the
paper's scale the whole training split is used.
Measured here: docs/experiments.md, "The paper's claims, measured", and
experiments/06_regularisation.ipynb.
"""

from alexnet_jax.configs import ablation
from alexnet_jax.configs import common


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, **ablation.ARGS)
  c = ablation.base(args)
  c.eval_trainset = True
  if args.scale == 'cpu' and not args.tiny:
    c.train_split = 'train[:1000]'
    c.eval_every_steps = 50
  return ablation.with_sweep(
      c,
      args,
      ('paper', 'no_dropout', 'no_crop_flip', 'no_pca_noise'),
      target=0.3,
      target_metric='trainset_top1_error',
  )
