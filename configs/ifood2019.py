r"""Fine-tuning on iFood 2019 (FGVC6): 251 fine-grained food classes, about 118,000 training and
12,000 validation images (the test set's labels are not public, so its validation set is ours).

    python -m alexnet_jax.tools.prepare --name=ifood2019 --classes=class_list.txt \
        --csv=train_labels.csv --images=train_set --val_csv=val_labels.csv --val_images=val_set
    python -m alexnet_jax.main --config=configs/ifood2019.py:init_from=runs/alexnet \
        --workdir=runs/ifood2019

The dataset ships as train_set/ and val_set/ image folders, train_labels.csv and val_labels.csv
(`img_name,label`) and class_list.txt (`index name`); prepare stores each image as the paper's
256x256 centre patch (its default `--resize=256`) under the name `ifood2019`, its val_set as the
`validation` split that this config evaluates.

`init_from` is an ImageNet-trained workdir (configs/alexnet.py's: its network, crop size and pixel
scaling are taken over when the run starts, see configs/finetune_folder.py), e.g. torchvision's
AlexNet weights imported into one (`python -m alexnet_jax.tools.import_weights --weights=FILE.pth
--workdir=runs/torchvision`, then `init_from=runs/torchvision`). The recipe is
configs/finetune_folder.py's, the starting point of Caffe's fine-tuning example, not tuned here on
iFood: learning rate 0.001, ten times that on the layers init_from did not load (fc8, for 251
classes), 30 epochs with the rate divided by 10 at half and three quarters of them; the paper's
augmentation, batch of 128 and ten-patch final test. No result on iFood has been measured with it.

Arguments: `init_from=PATH`, `variant=NAME` (configs/common.py).
"""

import ml_collections

from alexnet_jax.configs import alexnet
from alexnet_jax.configs import common
from alexnet_jax.configs import finetune_folder

NUM_CLASSES = 251


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, init_from='', variant='paper')
  c = alexnet.paper()
  c.dataset = 'ifood2019'
  c.model.num_classes = NUM_CLASSES
  finetune_folder.recipe(c, args.init_from)
  common.apply_variant(c, args.variant)
  return c
