"""A run's config, checked once and turned into typed settings: the edge between the
ml_collections ConfigDict that configs/ and the command line speak and the core, which takes
dataclasses (`models.ModelConfig`, `optim.OptimConfig`, `pipeline.DataConfig`,
`sharding.MeshConfig`, `LoopConfig`).

`from_config(config)` checks every field before any work starts, so a bad field costs seconds, not
a crash later: every problem becomes a ConfigError whose message names the field and a value that
works. Placement (mesh, strategy, batch divisibility against the devices) is checked by
`sharding`, datasets by `data.pipeline`. It also reads the colour statistics file, once.
"""

import dataclasses
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

from alexnet_jax.data import colour
from alexnet_jax.data import pipeline
from alexnet_jax.errors import ConfigError
from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import sharding


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """The training loop's schedule of steps, logs, evaluations and checkpoints."""

  num_train_steps: int = -1  # > 0 overrides num_epochs
  num_epochs: float = 90.0  # "roughly 90 cycles through the training set" (section 5)
  log_every_steps: int = 100
  eval_every_steps: int = -1  # -1: once per epoch (the plateau schedule is driven by it)
  checkpoint_every_steps: int = 5000  # also after each evaluation that is the best so far
  keep_checkpoints: int = 3  # the last ones; the best evaluated one is kept besides
  profile_steps: int = 5  # clu Profile: trace this many steps once, early in the run (0: off)
  # The evaluation at the end of the run (and of a finished run resumed): section 4.1's ten
  # patches, the paper's reported test (1: the centre crop).
  final_eval_crops: int = 10
  # Also evaluate the training split at every evaluation, as the validation split is (centre crop,
  # no dropout), written as trainset_*: the train-vs-validation gap of section 4.2.
  eval_trainset: bool = False
  seed: int = 0
  # Running the same command again resumes from the workdir's latest checkpoint, and stops if the
  # config changes a field that changes the network or its data (model.*, dataset, augment.*,
  # batch_size, seed, optim.*, ...; CHANGEABLE_ON_RESUME lists what may change). True: continue
  # anyway.
  allow_config_change: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class RunConfig:
  """One training run, typed: what `train.train_and_evaluate` runs."""

  model: models.ModelConfig
  optim: optim.OptimConfig
  data: pipeline.DataConfig
  mesh: sharding.MeshConfig
  loop: LoopConfig
  hparams: dict[str, Any]  # the config's fields, flattened, for TensorBoard
  # The ConfigDict this was made from, as plain nested dicts: what checkpoints store, so that a
  # workdir alone rebuilds its network (`config_from_dict`).
  source: dict[str, Any] = dataclasses.field(default_factory=dict)
  # A trained run's workdir or a weights file a fresh run starts from (finetune.py); None: none.
  init_from: str | None = None
  # The config fields, dotted, that came from init_from's run (`finetune.take_network`).
  init_network: tuple[str, ...] = ()


# Fields that change how a run is carried out, not what it computes: a run made with other values
# of these is the same run (e.g. the data moved to another disk, more loader workers). A sweep's
# record of a run leaves them out (`identity`), and `differences` ignores them by default.
EXECUTION_FIELDS = (
    'data_dir',
    'manual_dir',
    'data_workers',
    'data_threads',
    'prefetch_batches',
    'cache_images_mib',  # a kept image is the one decoding it again gives
    'device_augment',  # where the augmentation is computed, not what it is
    'keep_checkpoints',
    'checkpoint_every_steps',
    'profile_steps',
    'allow_config_change',
)


# What a run may change when it resumes from its workdir's checkpoints (a field, or a whole section
# such as `mesh`): how long it trains (a cosine or step schedule then stretches to the new length
# from the step it resumes at), how often it logs, evaluates (which moves the plateau schedule's
# decisions) and saves, where its data lives, how it is loaded and placed, and its last evaluation.
# Every other field changes the network or the data it learns from: model.*, dataset, the splits,
# resize_size, image_size, eval_crops (the metric the plateau schedule and the best checkpoint go
# by), augment.*, batch_size, seed, optim.*; `train` refuses to resume under another value of one,
# unless allow_config_change=True.
CHANGEABLE_ON_RESUME = EXECUTION_FIELDS + (
    'num_train_steps',
    'num_epochs',
    'log_every_steps',
    'eval_every_steps',
    'eval_batch_size',  # the last batch is padded and masked: the same metrics
    'final_eval_crops',
    'eval_trainset',
    'strategy',  # placement only: orbax restores into the new shardings
    'mesh',
    'sweep',  # the sweep runner's own section, not the run's
    # Read only when a fine-tuning run starts; a resumed one has the weights in its checkpoint.
    'init_from',
)


def recorded_defaults() -> dict[str, Any]:
  """Each field of the typed settings at its default, flattened as `identity` flattens: what a
  record made before the field existed ran with (a new field keeps the old behaviour at its
  default)."""
  tree = {
      'model': dataclasses.asdict(models.ModelConfig()),
      'optim': dataclasses.asdict(optim.OptimConfig()),
      'init_from': None,
      **{f.name: f.default for f in dataclasses.fields(LoopConfig)},
  }
  return flatten(tree)


def _tuples(value):
  """JSON's lists as the configs' tuples, so that a stored config compares equal to its source."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return tuple(_tuples(v) for v in value)
  return value


def identity(config: ml_collections.ConfigDict | dict) -> dict[str, Any]:
  """The config's fields that change what a run computes (all but EXECUTION_FIELDS), flattened
  to dotted names: what a sweep records of each run."""
  tree = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
  return {k: v for k, v in flatten(tree).items() if k not in EXECUTION_FIELDS}


def differences(
    recorded: Mapping[str, Any],
    current: ml_collections.ConfigDict | Mapping[str, Any],
    ignoring: Sequence[str] = EXECUTION_FIELDS,
) -> list[str]:
  """'field: A there, B now' for each field in which two configs differ, sorted, leaving out the
  fields (or whole sections, e.g. 'mesh') in `ignoring`: the one comparison of a sweep's record
  with its config and of a checkpoint's config with the resuming run's (`train.check_resumable`,
  ignoring CHANGEABLE_ON_RESUME). Either side may be nested (a ConfigDict, a checkpoint's JSON)
  or flat (`identity`). A field the record lacks (added by an upgrade since) counts at its
  default (`recorded_defaults`), so no table of added fields is kept; one only the record has
  (removed since) is not compared."""
  if isinstance(current, ml_collections.ConfigDict):
    current = current.to_dict()
  old, new = flatten(_tuples(dict(recorded))), flatten(_tuples(dict(current)))
  defaults = recorded_defaults()
  old = {**{k: defaults[k] for k in set(new) - set(old) if k in defaults}, **old}
  names = sorted(
      k
      for k in set(old) & set(new)
      if old[k] != new[k] and not any(k == f or k.startswith(f + '.') for f in ignoring)
  )
  return [f'{k}: {old[k]!r} there, {new[k]!r} now' for k in names]


def config_from_dict(tree: dict[str, Any]) -> ml_collections.ConfigDict:
  """The ConfigDict of a stored `RunConfig.source`; JSON's lists become the configs' tuples."""
  return ml_collections.ConfigDict(_tuples(tree))


def from_config(
    config: ml_collections.ConfigDict, colour_statistics: dict[str, Any] | None = None
) -> RunConfig:
  """The typed settings of `config`; ConfigError for the first field that cannot work.

  `colour_statistics` ({'mean', 'eigval', 'eigvec'}, as `carried_colour_statistics` reads them
  from a checkpoint) replace what `augment.stats_file` holds, which is then not read: a trained
  run carries the statistics it was trained with, so it loads after that file has moved.
  """
  validate(config)
  aug = config.augment
  if colour_statistics is not None and aug.get('stats_file'):
    mean, eigval, eigvec = (
        np.asarray(colour_statistics[k], np.float32) for k in ('mean', 'eigval', 'eigvec')
    )
  else:
    mean, eigval, eigvec = colour.load_colour_statistics(
        mean=aug.get('mean', 'rgb'),
        stats_file=aug.get('stats_file'),
        mean_rgb=aug.mean_rgb,
        pca_eigval=aug.pca_eigval,
        pca_eigvec=aug.pca_eigvec,
        resize_size=config.resize_size,
        dataset=config.dataset,
    )
  std = aug.std_rgb
  augment = pipeline.AugmentConfig(
      flip=bool(aug.flip),
      random_crop=bool(aug.get('random_crop', True)),
      pca_std=float(aug.pca_std),
      mean=mean,
      eigval=eigval,
      eigvec=eigvec,
      inv_std=None if std is None else 1.0 / np.asarray(std, np.float32),
  )
  data = pipeline.DataConfig(
      **{
          f.name: config[f.name]
          for f in dataclasses.fields(pipeline.DataConfig)
          if f.name not in ('augment', 'manual_dir', 'eval_crops', 'device_augment')
      },
      manual_dir=config.get('manual_dir'),
      eval_crops=config.get('eval_crops', 1),
      device_augment=bool(config.get('device_augment', True)),  # older configs lack it
      augment=augment,
  )
  loop = LoopConfig(
      **{f.name: config.get(f.name, f.default) for f in dataclasses.fields(LoopConfig)}
  )
  return RunConfig(
      model=model_config(config),
      optim=optim.OptimConfig(
          **{
              **config.optim.to_dict(),
              'step_boundaries': tuple(config.optim.step_boundaries),
              'freeze': optim.layer_list(config.optim.get('freeze', ())),
          }
      ),
      data=data,
      mesh=sharding.MeshConfig(config.strategy, config.mesh.data, config.mesh.model),
      loop=loop,
      hparams=flatten(config.to_dict()),
      source=config.to_dict(),
      init_from=config.get('init_from') or None,
  )


def colour_statistics(run: RunConfig) -> dict[str, Any] | None:
  """What a checkpoint's meta carries of the colour statistics file a run was trained with (the
  mean, a pixel's or section 2's mean image, and the PCA of section 4.1), as JSON lists; None for a
  run without `augment.stats_file`, whose constants are in its config."""
  if not run.source.get('augment', {}).get('stats_file'):
    return None
  aug = run.data.augment
  return {'mean': aug.mean.tolist(), 'eigval': aug.eigval.tolist(), 'eigvec': aug.eigvec.tolist()}


def carried_colour_statistics(
    config: ml_collections.ConfigDict, metas: list[dict | None]
) -> dict[str, Any] | None:
  """The colour statistics that the first of `metas` (checkpoints' meta: the run's own, or the
  run it fine-tunes from) carries for the same `augment.stats_file` and `augment.mean` as
  `config`; None if the config has no statistics file or none carries them."""
  aug = config.augment
  if not aug.get('stats_file'):
    return None
  for meta in metas:
    if not meta or not meta.get('colour_statistics'):
      continue
    recorded = meta.get('config', {})
    same = (
        recorded.get('augment', {}).get('stats_file') == aug.stats_file
        and recorded.get('augment', {}).get('mean', 'rgb') == aug.get('mean', 'rgb')
        and recorded.get('resize_size') == config.resize_size  # the mean image's size
    )
    if same:
      return meta['colour_statistics']
  return None


def model_config(config: ml_collections.ConfigDict) -> models.ModelConfig:
  fields = config.model.to_dict()
  lrn = models.LRNConfig(**fields.pop('lrn'))
  return models.ModelConfig(**fields, lrn=lrn)


def dotted(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """Nested mappings as one level of dotted names: {'optim': {'learning_rate': 0.005}} as
  {'optim.learning_rate': 0.005}. The one flattening of configs (sweeps, fine-tuning, records)."""
  flat = {}
  for key, value in dict(tree).items():
    if hasattr(value, 'keys'):  # dicts and ConfigDicts (no collections.abc.Mapping)
      flat.update(dotted(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def nested(flat: Mapping[str, Any], separator: str = '.') -> dict[str, Any]:
  """The inverse of `dotted`: {'model.norm': 'none'} as {'model': {'norm': 'none'}} (the form a
  ConfigDict section holds, e.g. an experiment's `sweep.named`); `separator` '/' for paths."""
  tree = {}
  for name, value in flat.items():
    *parents, last = name.split(separator)
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
    node[last] = value
  return tree


def flatten(tree: dict, prefix: str = '') -> dict[str, Any]:
  """`dotted`, with the values TensorBoard cannot show as strings."""
  return {
      k: v if isinstance(v, (int, float, str, bool)) else str(v)
      for k, v in dotted(tree, prefix).items()
  }


def get_field(config: Any, name: str) -> Any:
  """The value of the dotted field `name` ('optim.learning_rate') of a (nested) config; KeyError
  where it has none."""
  node = config
  for part in name.split('.'):
    # ConfigDicts are no collections.abc.Mapping: ask for the keys themselves.
    if not hasattr(node, 'keys') or part not in node.keys():
      raise KeyError(name)
    node = node[part]
  return node


def _positive(config, *fields: str, allow_minus_one: tuple[str, ...] = ()) -> None:
  for field in fields:
    value = get_field(config, field)
    if value <= 0 and not (field in allow_minus_one and value == -1):
      extra = ' (or -1)' if field in allow_minus_one else ''
      raise ConfigError(f'{field}={value} must be positive{extra}; e.g. --config.{field}=100.')


def _vector(config, field: str, shape: tuple[int, ...]) -> None:
  value = config.augment[field]
  if np.shape(value) != shape or not np.all(np.isfinite(np.asarray(value, np.float64))):
    raise ConfigError(
        f'augment.{field}={value!r} must be {shape[0]} numbers per RGB channel'
        f'{" (a 3x3 matrix)" if len(shape) == 2 else ""}; see configs/alexnet.py.'
    )


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for the first field that cannot work; normalises `augment.std_rgb` and
  `optim.freeze`."""
  _positive(
      config,
      'log_every_steps',
      'checkpoint_every_steps',
      'keep_checkpoints',
      'batch_size',
      'eval_batch_size',
      'image_size',
      'resize_size',
      'model.lrn.size',
  )
  _positive(
      config,
      'eval_every_steps',
      'num_train_steps',
      allow_minus_one=('eval_every_steps', 'num_train_steps'),
  )
  if config.num_train_steps == -1 and config.num_epochs <= 0:
    raise ConfigError(f'num_epochs={config.num_epochs} must be positive when num_train_steps=-1.')
  if config.image_size > config.resize_size:
    raise ConfigError(
        f'image_size={config.image_size} is larger than resize_size={config.resize_size}: crops '
        'are cut from the resized image (the paper: 224 out of 256). Raise resize_size.'
    )
  if config.data_workers < 0 or config.prefetch_batches < 0:
    raise ConfigError('data_workers and prefetch_batches cannot be negative.')

  # `--config.augment.std_rgb=None` arrives as (None,) from the command line.
  if config.augment.std_rgb is not None and all(v is None for v in config.augment.std_rgb):
    config.augment.std_rgb = None
  for field, shape in (('mean_rgb', (3,)), ('pca_eigval', (3,)), ('pca_eigvec', (3, 3))):
    _vector(config, field, shape)
  if config.augment.std_rgb is not None:
    _vector(config, 'std_rgb', (3,))
    if min(config.augment.std_rgb) <= 0:
      raise ConfigError(f'augment.std_rgb={config.augment.std_rgb} must be positive.')
  if config.augment.pca_std < 0:
    raise ConfigError(f'augment.pca_std={config.augment.pca_std} cannot be negative (0: off).')
  # augment.mean and augment.stats_file are checked where from_config reads the file.
  for field in ('eval_crops', 'final_eval_crops'):
    if config.get(field, 1) not in (1, 10):
      raise ConfigError(
          f'{field}={config[field]} must be 1 (the centre crop) or 10 (the four '
          'corner and centre patches and their reflections, section 4.1).'
      )

  o = config.optim
  if o.schedule not in optim.SCHEDULES:
    raise ConfigError(
        f'optim.schedule={o.schedule!r} is not supported; choose one of ' f'{optim.SCHEDULES}.'
    )
  if o.plateau_patience < 1:
    raise ConfigError(
        f'optim.plateau_patience={o.plateau_patience} must be at least 1 '
        '(evaluations without improvement before the learning rate drops).'
    )
  if not 0 < o.plateau_factor < 1:
    raise ConfigError(
        f'optim.plateau_factor={o.plateau_factor} must be in (0, 1); the paper '
        'divides by 10: 0.1.'
    )
  if o.learning_rate <= 0 or o.momentum < 0 or o.weight_decay < 0:
    raise ConfigError(
        'optim.learning_rate must be positive, momentum and weight_decay not ' 'negative.'
    )

  try:
    model = model_config(config)
    models.validate(model)
  except (TypeError, ValueError) as e:
    raise ConfigError(str(e)) from None
  smallest = models.min_image_size(model.pool, model.conv1_padding)
  if config.image_size < smallest:
    raise ConfigError(
        f"image_size={config.image_size} is too small for AlexNet's five layers "
        f'of pooling; use at least {smallest}.'
    )
  _validate_finetuning(config)


def _validate_finetuning(config: ml_collections.ConfigDict) -> None:
  init_from = config.get('init_from')
  if init_from is not None and not isinstance(init_from, str):
    raise ConfigError(
        f"init_from={init_from!r} must be a path: a trained run's workdir or a weights file."
    )
  multiplier = config.optim.get('new_layer_lr_mult', 1.0)
  if not 0 <= multiplier < float('inf'):  # also NaN
    raise ConfigError(
        f'optim.new_layer_lr_mult={multiplier} must be a number >= 0: it multiplies the '
        'learning rate of the layers init_from did not load (Caffe fine-tunes with 10).'
    )
  frozen = optim.layer_list(config.optim.get('freeze', ()))
  if isinstance(config.optim.get('freeze'), tuple):
    # The command line's ('conv1,conv2',) as ('conv1', 'conv2'): one spelling in checkpoints and
    # in the identity the sweep compares.
    config.optim.freeze = frozen
  if not frozen:
    return
  layers = models.layer_names(model_config(config))
  unknown = [name for name in frozen if name not in layers]
  if unknown:
    raise ConfigError(
        f'optim.freeze names {unknown}, which this model does not have; its layers are '
        f'{list(layers)}, e.g. --config.optim.freeze=conv1,conv2.'
    )
  if set(layers) <= set(frozen):
    raise ConfigError(
        f'optim.freeze={",".join(frozen)} freezes every layer of the model, so training would '
        'change nothing. Leave at least one layer out (e.g. fc8).'
    )
