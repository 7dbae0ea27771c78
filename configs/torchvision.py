r"""torchvision's AlexNet with torchvision's preprocessing: the config of its pretrained weights.

    python -m alexnet_jax.tools.import_weights --weights=alexnet-owt-7be5be79.pth \
        --workdir=runs/torchvision --config=torchvision
    python -m alexnet_jax.tools.evaluate --workdir=runs/torchvision --eval_crops=1 \
        --config.data_dir=$HOME/tensorflow_datasets

The network is `models.TORCHVISION`, Krizhevsky's 2014 one-tower net as torchvision builds it
(64/192/384/256/256 kernels, no LRN, conv1 padded by 2, pool5 averaged to 6x6, dropout before
fc6 and fc7). torchvision publishes 56.522% top-1 / 79.066% top-5 accuracy on the ILSVRC-2012
validation set for its weights (alexnet-owt-7be5be79.pth), one centre crop per image; that is
the number to expect here. It has not been measured with this codebase (no ImageNet here).

Preprocessing is torchvision's evaluation transform: shorter side resized to 256 (PIL bilinear,
antialiased), the central 224x224 crop, then (x / 255 - mean) / std per channel with mean (0.485,
0.456, 0.406) and std (0.229, 0.224, 0.225). Our pipeline works in 0..255 units, (x - mean_rgb) /
std_rgb, so both are those numbers times 255. Two roundings differ from torchvision's by at most a
pixel: the resized longer side is rounded here, truncated there, and an odd crop margin leaves
the extra pixel at the bottom/right here, where torchvision rounds half to even.

Training fields, for fine-tuning the imported weights (`python -m alexnet_jax.main
--config=torchvision --workdir=DIR` resumes from the imported step 0): a tenth of the paper's
learning rate, 0.001, decayed by a cosine over 10 epochs; no PCA colour noise, which torchvision's
weights were not trained with; random crops and flips and the paper's weight decay kept; every
evaluation on the centre crop, as torchvision reports. The initialisation matters only when
training from scratch.

Arguments (`configs/common.py`): `:tiny`, the smallest run of this network on the built-in data.
"""

import ml_collections

from alexnet_jax.configs import alexnet
from alexnet_jax.configs import common
from alexnet_jax import models

# torchvision's Normalize constants, for pixels in 0..1.
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, tiny=False)
  c = alexnet.paper()
  # From the dataclass, so that conv1_padding is an int field here (the paper's is 'ceil').
  c.model = alexnet.fields_of(models.TORCHVISION, skip=('tower_axis', 'batch_axis', 'fc_axis'))
  c.dataset = 'imagenet2012'
  c.model.num_classes = 1000
  c.resize_size = 256
  c.image_size = 224
  c.augment.mean_rgb = tuple(round(255 * m, 4) for m in TORCHVISION_MEAN)
  c.augment.std_rgb = tuple(round(255 * s, 4) for s in TORCHVISION_STD)
  c.augment.pca_std = 0.0
  c.eval_crops = 1
  c.final_eval_crops = 1
  c.num_epochs = 10.0
  c.optim.learning_rate = 0.001
  c.optim.schedule = 'cosine'
  if args.tiny:
    common.make_tiny(c)
  return c
