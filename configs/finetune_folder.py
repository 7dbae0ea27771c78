r"""Fine-tuning a trained AlexNet on your own images: a folder prepared with `prepare --folder`.

    python -m alexnet_jax.tools.prepare --folder=ROOT          # ROOT/<class>/<image>; prints NAME, N
    python -m alexnet_jax.main --workdir=runs/NAME_finetuned \
        --config=configs/finetune_folder.py:dataset=NAME,num_classes=N,init_from=runs/quickstart

`init_from` is the workdir of a trained run (e.g. configs/quickstart.py's) or a weights file; this
config only names it. When the run starts, a workdir gives it that run's network (every model field
but num_classes, dtype and dropout_rate), its pixel scaling and, unless pool5 is adaptive, its crop
and resize sizes (`finetune.take_network`, which logs them), so that every layer but the
classifier fits; with a weights file the model fields must match the file (`--config.model.*`).
`--config.init_from=` does the same as the argument.

The recipe is the usual starting point for fine-tuning, the one of Caffe's fine-tuning example
(examples/finetune_flickr_style, CaffeNet, a close relative of this network), not tuned here: a
learning rate of 0.001, a tenth of the paper's initial 0.01, so that the loaded layers move
little; ten times that on the layers init_from did not load (`optim.new_layer_lr_mult=10`, Caffe's
`lr_mult: 10` on its new fc8); momentum 0.9 and weight decay 0.0005 as in the paper. Our choices:
30 epochs, a third of the paper's 90, for a start that has already learned its features, and the
rate divided by 10 at half and at three quarters of the run (Caffe's example divides it after
every fifth of its run, which leaves the last two fifths at 1e-6 and below). Small datasets want
more epochs or a smaller batch (`--config.num_epochs`, `--config.batch_size`).

Arguments: `dataset=NAME` and `num_classes=N` (required: what prepare printed), `init_from=PATH`,
`variant=NAME` (configs/common.py; a workdir's network replaces its model fields when the run
starts).
`--config.optim.freeze=conv1,conv2` keeps layers as loaded.
"""

import ml_collections

from alexnet_jax.configs import alexnet
from alexnet_jax.configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, dataset='', num_classes=0, init_from='', variant='paper')
  if not args.dataset or args.num_classes < 1:
    raise ValueError(
        f'configs/finetune_folder.py needs dataset=NAME,num_classes=N (got {arg!r}): the flags '
        'that `python -m alexnet_jax.tools.prepare --folder=ROOT` printed, e.g. '
        '--config=configs/finetune_folder.py:dataset=my_images,num_classes=3,init_from=DIR.'
    )
  c = alexnet.paper()
  c.dataset = args.dataset
  c.model.num_classes = args.num_classes
  recipe(c, args.init_from)
  common.apply_variant(c, args.variant)
  return c


def recipe(c: ml_collections.ConfigDict, init_from: str) -> None:
  """The fine-tuning recipe (see the module docstring), in place; the run takes init_from's network
  when it starts."""
  c.init_from = init_from or None
  c.optim.learning_rate = 0.001
  c.optim.new_layer_lr_mult = 10.0
  c.optim.schedule = 'step'
  c.optim.step_boundaries = (0.5, 0.75)
  c.optim.step_factor = 0.1
  c.num_epochs = 30.0
