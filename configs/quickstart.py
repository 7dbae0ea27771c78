r"""The paper's network on the built-in `synthetic_shapes` dataset, sized for a laptop CPU.

    python -m alexnet_jax.main --config=configs/quickstart.py --workdir=runs/quickstart

Same layers, towers, LRN, dropout, augmentation and SGD-momentum with weight decay as
`configs/alexnet.py`. What changes:
- the data: 10 procedurally drawn shape classes, prepared once, offline, on first use;
- the size: 112-pixel crops of 128x128 images (the paper's 224/256 ratio), 800 steps of 32;
- the start, because a short run on a laptop cannot afford the paper's (section 5). With
  N(0, 0.01) weights the signal fades layer by layer, and fc7's 4096 units all sit near their
  bias of 1, so one step of lr 0.01 moves the logits by about 0.01 x 4096 = 40 times the output
  error: with 10 classes that error is large, and in our short runs on this data the network
  collapsed to predicting the class prior (chance-level loss) within its first 25 steps, with or
  without warm-up. So: fan-in scaled `he` init, pixels divided by their standard deviation, lr
  0.005 with 50 warm-up steps and a cosine decay. `--config.model.init=paper
  --config.augment.std_rgb=None --config.optim.schedule=plateau --config.optim.learning_rate=0.01`
  restores the paper's recipe on this data.
What it printed, and how long it took, on a 2-core CPU: docs/performance.md, "The quickstart".
"""

from alexnet_jax.configs import alexnet
from alexnet_jax.configs import common
from alexnet_jax.data import augment


def get_config(arg: str | None = None):
  """Arguments (configs/common.py): `tiny` (the tests' and notebooks' smoke run), `variant=NAME`."""
  args = common.parse_arg(arg, tiny=False, variant='paper')
  c = alexnet.paper()
  c.dataset = 'synthetic_shapes'
  c.resize_size = 128
  c.image_size = 112
  c.model.num_classes = 10
  c.batch_size = 32
  c.eval_batch_size = 100
  c.num_train_steps = 800
  c.log_every_steps = 50
  c.eval_every_steps = 200
  c.checkpoint_every_steps = 200
  c.model.init = 'he'
  c.augment.std_rgb = augment.IMAGENET_STD_RGB
  c.optim.schedule = 'cosine'
  c.optim.learning_rate = 0.005
  c.optim.warmup_steps = 50
  c.profile_steps = 0
  c.final_eval_crops = 1  # docs/performance.md's printed numbers are centre-crop ones
  if args.tiny:
    common.make_tiny(c)
  common.apply_variant(c, args.variant)
  return c
