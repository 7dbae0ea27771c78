"""The arguments every config takes, as `get_config(arg)` (`--config=FILE.py:ARG`).

ARG is a comma-separated list: preset names and `key=value` pairs, e.g. `tiny`,
`runlocal,variant=no_lrn`. Presets:

- `tiny`: the smallest run of the recipe: the built-in dataset's `tiny` split (320 / 160 images),
  67-pixel crops of 76-pixel images, a quarter of the channels, batch 16, 6 steps with
  evaluations and checkpoints every 3. The tests and the notebooks' smoke runs use it; seconds on
  a CPU.
- `runlocal`: the recipe on the built-in dataset at a laptop's scale (see each config).
- `variant=NAME`: one of the paper's ablations (`VARIANTS`), applied on top.
"""

import ml_collections

# The paper's ablations (sections 3.1 to 4.2) as named changes of the model, so that an ablation is
# an argument: `--config=configs/alexnet.py:variant=no_lrn`. The recipes' data: an experiment hands
# them to the sweep in its `sweep.named` section (configs/ablation.py), so the library never
# imports the recipes.
VARIANTS = {
    'paper': {},
    'tanh': {'model.activation': 'tanh'},  # section 3.1, Figure 1
    'one_tower': {'model.towers': 1},  # section 3.2: one tower of the same total width
    # Section 3.2's own comparison (footnote 3): one tower with half the kernels in conv1-conv4.
    'one_tower_small': {'model.towers': 1, 'model.conv_channels': (48, 128, 192, 192, 256)},
    'no_lrn': {'model.norm': 'none'},  # section 3.3
    'batchnorm': {'model.norm': 'batchnorm'},  # a modern alternative at the LRN positions
    'plain_pool': {'model.pool': 'plain'},  # section 3.4: 2x2 windows, stride 2
    'no_dropout': {'model.dropout_rate': 0.0},  # section 4.2
    'no_pca_noise': {'augment.pca_std': 0.0},  # section 4.1
    'no_flip': {'augment.flip': False},  # section 4.1
    # Section 4.1's first form of augmentation, translations and reflections, off: the centre crop.
    'no_crop_flip': {'augment.random_crop': False, 'augment.flip': False},
}


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """`arg` ('tiny,variant=no_lrn') as a ConfigDict over `defaults`; unknown keys are errors."""
  out = ml_collections.ConfigDict(defaults)
  for token in (arg or '').split(','):
    token = token.strip()
    if not token:
      continue
    key, sep, value = token.partition('=')
    if key not in defaults:
      raise ValueError(
          f'Unknown config argument {key!r} in {arg!r}; this config takes ' f'{sorted(defaults)}.'
      )
    if not sep:
      out[key] = True
    elif isinstance(defaults[key], bool):
      out[key] = value.lower() in ('1', 'true', 'yes')
    else:
      out[key] = type(defaults[key])(value)
  return out


def set_field(config: ml_collections.ConfigDict, dotted: str, value) -> None:
  node = config
  *parents, last = dotted.split('.')
  for part in parents:
    node = node[part]
  node[last] = value


def apply_variant(config: ml_collections.ConfigDict, variant: str) -> None:
  if variant not in VARIANTS:
    raise ValueError(f'Unknown variant {variant!r}; choose one of {sorted(VARIANTS)}.')
  for field, value in VARIANTS[variant].items():
    set_field(config, field, value)


def make_tiny(config: ml_collections.ConfigDict) -> None:
  """The `tiny` preset (see the module docstring), in place."""
  config.dataset = 'synthetic_shapes/tiny'
  config.model.num_classes = 10
  config.image_size = 67
  config.resize_size = 76
  config.model.width = 0.25
  config.batch_size = 16
  config.eval_batch_size = 64
  config.num_train_steps = 6
  config.log_every_steps = 3
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  config.final_eval_crops = 1
  config.optim.plateau_patience = 1
  config.profile_steps = 0
