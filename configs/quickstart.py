r"""The paper's network on the built-in `synthetic_shapes` dataset, sized for a laptop CPU.

    python -m alexnet_jax.main --config=configs/quickstart.py --workdir=runs/quickstart

Same layers, towers, LRN, dropout, initialisation, augmentation and optimiser as
`configs/alexnet.py`; what changes is the data (10 procedurally drawn shape classes, prepared
offline on first use), the image size (112-pixel crops of 128x128 images, keeping the paper's
224/256 ratio) and the length of the run. The README gives what it printed on a 2-core CPU.
"""

from configs import alexnet


def get_config():
  c = alexnet.get_config()
  c.dataset = 'synthetic_shapes'
  c.resize_size = 128
  c.image_size = 112
  c.model.num_classes = 10
  c.batch_size = 32
  c.eval_batch_size = 100
  c.num_train_steps = 1000
  c.log_every_steps = 50
  c.eval_every_steps = 250
  c.checkpoint_every_steps = 250
  c.optim.plateau_patience = 2
  c.profile_steps = 0
  return c
