r"""The paper's ImageNet recipe: Krizhevsky, Sutskever & Hinton, NIPS 2012.

    python -m alexnet_jax.main --config=configs/alexnet.py --workdir=runs/alexnet \
        --config.data_dir=$HOME/tensorflow_datasets

Needs TFDS `imagenet2012`, prepared once from the manually downloaded ILSVRC-2012 files with
`python -m alexnet_jax.tools.prepare --dataset=imagenet2012 --data_dir=...` (see docs/data.md).
Without them the run stops at once with a message saying where to put the files. The paper reports
40.7% top-1 / 18.2% top-5 error for one CNN on the validation set (section 6) with its ten-patch
test, which is this recipe's final evaluation (`final_eval_crops=10`); the per-epoch evaluations
that drive the plateau schedule use the centre crop, 10x cheaper. This codebase has not been run on
ImageNet yet.

Where this recipe differs from the paper, and how to get the paper's choice:
- the mean: it subtracts the per-channel mean of ImageNet (the published constants
  `augment.IMAGENET_MEAN_RGB`), not section 2's mean image, because the mean image must be
  computed from the training set first: `python -m alexnet_jax.tools.colour_statistics
  --config=configs/alexnet.py --output=stats.npz`, then `--config.augment.stats_file=stats.npz
  --config.augment.mean=image`. The same file replaces the published PCA constants (the paper
  does not publish its own) with those of your training set.
- what the paper leaves open (224 vs 227 pixels, LRN's alpha, the plateau's patience, biases
  without weight decay): docs/design.md, "Choices the paper leaves open".

Arguments (`configs/common.py`): `:runlocal` runs this recipe on the built-in dataset at 112
pixels for 200 steps (it checks the recipe end to end on a laptop; the paper's initialisation is
slow to start on 10 classes, see configs/quickstart.py), `:tiny` the smallest run, and
`variant=NAME` one of the paper's ablations (`common.VARIANTS`), e.g. `:variant=no_lrn`.
"""

import dataclasses
import typing

import ml_collections

from alexnet_jax.configs import common
from alexnet_jax.data import augment
from alexnet_jax.data import pipeline
from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import settings
from alexnet_jax import sharding


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, tiny=False, runlocal=False, variant='paper')
  c = paper()
  if args.runlocal:
    c.dataset = 'synthetic_shapes'
    c.model.num_classes = 10
    c.resize_size, c.image_size = 128, 112
    c.batch_size, c.eval_batch_size = 32, 100
    c.num_train_steps, c.log_every_steps = 200, 50
    c.eval_every_steps = c.checkpoint_every_steps = 100
    c.final_eval_crops = 1
    c.profile_steps = 0
  if args.tiny:
    common.make_tiny(c)
  common.apply_variant(c, args.variant)
  return c


def paper() -> ml_collections.ConfigDict:
  """Every field, with the paper's value where the paper gives one."""
  c = ml_collections.ConfigDict()

  # --- Data (section 2) ---
  # Every field, its meaning and its default: pipeline.DataConfig, e.g. dataset, data_dir,
  # train_split, eval_split, resize_size, image_size, eval_crops (1 | 10: section 4.1's test),
  # batch_size, eval_batch_size, data_workers, data_threads, prefetch_batches, cache_images_mib,
  # device_augment.
  c.update(fields_of(pipeline.DataConfig(dataset='imagenet2012'), skip=('seed', 'augment')))

  # --- Augmentation (section 4.1) ---
  c.augment = ml_collections.ConfigDict()
  c.augment.flip = True  # horizontal reflections
  c.augment.random_crop = True  # random image_size crops (False: the centre crop)
  c.augment.pca_std = 0.1  # alpha ~ N(0, 0.1) per image; 0 turns PCA colour noise off
  # 255 x the eigen-values of the covariance of RGB pixels / 255 (augment.eigval_on_imagenet_scale)
  c.augment.pca_eigval = augment.IMAGENET_PCA_EIGVAL
  c.augment.pca_eigvec = augment.IMAGENET_PCA_EIGVEC  # its COLUMNS are the eigenvectors
  c.augment.mean_rgb = augment.IMAGENET_MEAN_RGB  # subtracted from every pixel (section 2)
  # rgb: subtract mean_rgb from every pixel | image: subtract the training set's mean image, as
  # section 2 does (needs stats_file).
  c.augment.mean = 'rgb'
  # .npz written by `python -m alexnet_jax.tools.colour_statistics` (at this resize_size); when
  # set, its per-channel mean, PCA eigen-values and vectors and mean image replace the constants
  # above.
  c.augment.stats_file = ml_collections.config_dict.placeholder(str)
  # Divide by this after subtracting the mean; None: the paper's raw 0..255 scale.
  c.augment.std_rgb = ml_collections.config_dict.placeholder(tuple)

  # --- Model (section 3) ---
  # Every field, its meaning and the paper's value: models.ModelConfig (and LRNConfig), e.g.
  # model.towers (2 | 1), model.norm (lrn | batchnorm | none), model.activation (relu | tanh),
  # model.pool (overlapping | plain), model.dropout_rate, model.init (paper | caffe | he),
  # model.width, model.dtype, model.lrn.{size, k, alpha, beta, alpha_over_n}, and where
  # torchvision's AlexNet differs (configs/torchvision.py): model.conv1_padding (ceil | pixels),
  # model.adaptive_avg_pool (0 | bins), model.dropout_placement (after | before).
  c.model = fields_of(models.ModelConfig(), skip=('tower_axis', 'batch_axis', 'fc_axis'))

  # --- Devices (alexnet_jax/sharding.py) ---
  # Every field, its meaning and its default: sharding.MeshConfig: strategy (data | towers | owt),
  # mesh.data and mesh.model (devices along each axis; -1: inferred).
  c.strategy = sharding.MeshConfig().strategy
  c.mesh = fields_of(sharding.MeshConfig(), skip=('strategy',))

  # --- Optimisation (section 5) ---
  # Every field, its meaning and the paper's value (section 5): optim.OptimConfig, e.g.
  # optim.learning_rate, momentum, weight_decay, decay_biases, schedule (plateau | step | cosine),
  # plateau_{factor, patience, cooldown, rtol, max_reductions}, step_boundaries, warmup_steps;
  # for fine-tuning, freeze and new_layer_lr_mult (below).
  c.optim = fields_of(optim.OptimConfig())

  # --- Fine-tuning (alexnet_jax/finetune.py; configs/ifood2019.py, configs/finetune_folder.py) ---
  # A trained run's workdir or a weights file (torchvision's .pth / .safetensors): a fresh run
  # starts from its weights in every layer whose shapes fit this model, the others (e.g. fc8 for
  # other classes) keep model.init's; a resumed run ignores it. None: train from scratch. With it,
  # optim.freeze (layers that do not change) and optim.new_layer_lr_mult (Caffe's lr_mult for the
  # layers it did not load).
  c.init_from = ml_collections.config_dict.placeholder(str)

  # --- Loop ---
  # Every field, its meaning and its default: settings.LoopConfig: num_epochs (90, section 5),
  # num_train_steps (> 0 overrides it), seed, log_every_steps, eval_every_steps (-1: once per
  # epoch), checkpoint_every_steps, keep_checkpoints, profile_steps, final_eval_crops (10: section
  # 4.1's test), eval_trainset (section 4.2's gap), allow_config_change (resuming under another
  # network or data).
  c.update(fields_of(settings.LoopConfig()))
  return c


def fields_of(value, skip: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  """A ConfigDict of a settings dataclass's fields (nested ones too): one source of the values.
  A field that defaults to None is a typed placeholder, so --config.FIELD=VALUE can set it."""
  hints = typing.get_type_hints(type(value))
  out = ml_collections.ConfigDict()
  for f in dataclasses.fields(value):
    if f.name in skip:
      continue
    v = getattr(value, f.name)
    if dataclasses.is_dataclass(v):
      out[f.name] = fields_of(v)
    elif v is None:
      kinds = [t for t in typing.get_args(hints[f.name]) if t is not type(None)]
      out[f.name] = ml_collections.config_dict.placeholder(typing.get_origin(kinds[0]) or kinds[0])
    else:
      out[f.name] = v
  return out
