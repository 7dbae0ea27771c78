"""Fine-tuning: a run that starts from another run's weights, or a weights file, where they fit.

`--config.init_from=PATH` names a trained run's workdir (its latest checkpoint) or a weights file
(`weights.read`: torchvision's .pth / .safetensors). A workdir also gives the run its network, as
nanoGPT's `init_from` does: when the run starts, `take_network` replaces the config's model fields
(all but `OWN_MODEL_FIELDS`: the new head, the compute dtype, the dropout rate), pixel scaling
and, unless pool5 is adaptive, crop and resize sizes with the source run's, and logs which; the
configs themselves only name init_from. A weights file records no network: the config's model
fields must be the file's (configs/torchvision.py for torchvision's). On a fresh run every layer
whose parameters and batch-norm statistics all have this model's shapes is copied; the others
keep their fresh initialisation (fc8 for another `num_classes`, a layer the source does not
have), and the `Report` says which and why. A source of which nothing fits is another
architecture, an error. The optimiser state starts fresh: momentum zero, the schedule at step 0.

Two optimiser fields go with it (`optim.create_optimizer`): `optim.freeze`, layers whose
parameters never change, and `optim.new_layer_lr_mult`, Caffe's `lr_mult` for the layers
init_from did not load. Which layers those are belongs to the run: every checkpoint's meta records
the report (with the config fields taken from the source), and a resumed run takes it from there
and ignores init_from (its checkpoint already holds the weights and its config the network; the
source may have moved).

`init_from(params, batch_stats, source)` is the loading on its own, for notebooks; `take_network`
(the config's side) and `take_weights` (the model's) are what `train` calls. Nothing here needs
the after-training code (`trained.inference`): a source's arrays and config are read with orbax
and `checkpointing` directly.
"""

import copy
import dataclasses
import os
from typing import Any

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from alexnet_jax import checkpointing
from alexnet_jax.errors import ConfigError
from alexnet_jax import optim
from alexnet_jax import settings

# `weights` (torchvision's formats) is imported where it is used: `train` imports this module and
# needs it only for a weights file.


@dataclasses.dataclass(frozen=True)
class Report:
  """What a run started from: the layers loaded from `source`, those re-initialised (with why),
  and the source's layers this model has no place for. Empty without init_from."""

  source: str | None = None
  loaded: tuple[str, ...] = ()
  reinitialised: dict[str, str] = dataclasses.field(default_factory=dict)
  unused: tuple[str, ...] = ()
  # The config fields the run took from the source run (`take_network`), dotted; None in a record
  # written before reports held them.
  network: tuple[str, ...] | None = ()

  @property
  def new_layers(self) -> tuple[str, ...]:
    """The layers `optim.new_layer_lr_mult` applies to."""
    return tuple(self.reinitialised)

  def to_json(self) -> dict | None:
    if self.source is None:
      return None
    out = dict(
        source=self.source,
        loaded=list(self.loaded),
        reinitialised=dict(self.reinitialised),
        unused=list(self.unused),
    )
    if self.network is not None:
      out['network'] = list(self.network)
    return out

  @classmethod
  def from_json(cls, value: dict | None) -> 'Report':
    if not value:
      return cls()
    return cls(
        value['source'],
        tuple(value['loaded']),
        dict(value['reinitialised']),
        tuple(value.get('unused', ())),
        tuple(value['network']) if 'network' in value else None,
    )

  def __str__(self) -> str:
    if self.source is None:
      return 'no init_from: every layer starts from model.init'
    lines = [f'init_from={self.source}:', f'  loaded: {", ".join(self.loaded)}']
    if self.reinitialised:
      why = ', '.join(f'{layer} ({reason})' for layer, reason in self.reinitialised.items())
      lines.append(f'  re-initialised: {why}')
    if self.unused:
      lines.append(f'  in the source, not in this model: {", ".join(self.unused)}')
    return '\n'.join(lines)


def _leaves(tree: Any) -> dict[str, Any]:
  """A layer's leaves by their path inside it ('kernel', 'bias', 'mean', ...)."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): leaf for path, leaf in flat}


def _misfit(layer: str, fresh: dict, given: dict) -> str | None:
  """Why the source's `layer` cannot replace this model's (every leaf that differs), or None."""
  reasons = []
  for kind, what in (('params', 'parameters'), ('batch_stats', 'batch-norm statistics')):
    if layer not in fresh[kind]:
      continue
    if layer not in given[kind]:
      reasons.append(f'its {what} are missing in the source')
      continue
    theirs = _leaves(given[kind][layer])
    for name, leaf in _leaves(fresh[kind][layer]).items():
      if name not in theirs:
        reasons.append(f'{name} is missing in the source')
      elif tuple(np.shape(theirs[name])) != tuple(leaf.shape):
        reasons.append(
            f'{name} {tuple(np.shape(theirs[name]))} in the source vs {tuple(leaf.shape)} here'
        )
  return '; '.join(reasons) or None


def take_fitting_layers(
    params: dict, batch_stats: dict, source_params: dict, source_stats: dict, source: str = ''
) -> tuple[dict, dict, Report]:
  """`params` and `batch_stats` (a fresh model's) with each layer of the source whose leaves all
  have the same names and shapes, cast to this model's dtypes; the rest as they were. A layer is
  taken whole or not at all. ConfigError if no layer fits."""
  fresh = {'params': params, 'batch_stats': batch_stats}
  given = {'params': source_params, 'batch_stats': source_stats or {}}
  out = {kind: dict(tree) for kind, tree in fresh.items()}
  loaded, reinitialised = [], {}
  for layer in dict.fromkeys([*params, *batch_stats]):  # the model's order, each layer once
    reason = _misfit(layer, fresh, given)
    if reason:
      reinitialised[layer] = reason
      continue
    for kind in out:
      if layer in fresh[kind]:
        out[kind][layer] = jax.tree.map(
            lambda mine, theirs: jnp.asarray(theirs, mine.dtype),
            fresh[kind][layer],
            {name: given[kind][layer][name] for name in fresh[kind][layer]},
        )
    loaded.append(layer)
  if not loaded:
    why = ', '.join(f'{layer}: {reason}' for layer, reason in reinitialised.items())
    raise ConfigError(
        f'init_from={source}: none of its layers fits this model ({why}). It holds another '
        'architecture: a weights file records no network, so give this run the model fields '
        '(and image_size) of the network it holds, e.g. --config=configs/torchvision.py for '
        "torchvision's AlexNet; a trained run's workdir gives its own when the run starts."
    )
  ours = set(params) | set(batch_stats)
  theirs = dict.fromkeys([*source_params, *given['batch_stats']])
  unused = tuple(layer for layer in theirs if layer not in ours)
  report = Report(source, tuple(loaded), reinitialised, unused)
  return out['params'], out['batch_stats'], report


def _checkpoint(workdir: str) -> tuple[str, dict]:
  """The directory of the latest checkpoint's train state in a run's `workdir`, and its meta;
  ConfigError naming init_from where it has none."""
  try:
    checkpointer = checkpointing.Checkpointer(workdir, max_to_keep=None, read_only=True)
    try:
      step = checkpointer.check_step(None)
      meta = checkpointer.read_meta(step)
    finally:
      checkpointer.close()
  except ConfigError as e:
    raise ConfigError(f'init_from={workdir!r}: {e}') from None
  # orbax names a finished checkpoint by its step, and each item by its name (checkpointing.py).
  return os.path.join(checkpointer.directory, str(step), 'state'), meta


def read_checkpoint(workdir: str) -> tuple[dict, dict]:
  """(params, batch_stats) of the latest checkpoint in a run's `workdir`, as numpy arrays on the
  host, whatever devices wrote them: only those two parts of the train state are read."""
  path, _ = _checkpoint(workdir)
  with ocp.PyTreeCheckpointer() as reader:
    stored = reader.metadata(path).item_metadata.tree
    wanted = {kind: stored.get(kind, {}) for kind in ('params', 'batch_stats')}
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), wanted)
    arrays = reader.restore(
        path,
        args=ocp.args.PyTreeRestore(
            item=abstract,
            restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract),
            partial_restore=True,
        ),
    )
  return arrays['params'], arrays.get('batch_stats') or {}


def source_config(workdir: str) -> ml_collections.ConfigDict:
  """The config the run in `workdir` was trained with (its latest checkpoint's)."""
  return settings.config_from_dict(_checkpoint(workdir)[1]['config'])


def read_source(path: str) -> tuple[dict, dict]:
  """(params, batch_stats) of a trained run's workdir or a weights file; ConfigError if neither."""
  if os.path.isdir(path):
    return read_checkpoint(path)
  if os.path.isfile(path):
    from alexnet_jax.trained import weights  # pylint: disable=g-import-not-at-top

    return weights.read(path), {}
  raise ConfigError(
      f'init_from={path!r} does not exist. Pass the --workdir of a trained run, or a weights file '
      "(torchvision's AlexNet as .pth or .safetensors)."
  )


def init_from(params: dict, batch_stats: dict, source: str) -> tuple[dict, dict, Report]:
  """`params` and `batch_stats` of a fresh model with the layers of `source` (a trained run's
  workdir or a weights file) that fit: see `take_fitting_layers`."""
  return take_fitting_layers(params, batch_stats, *read_source(source), source=source)


def recorded_report(workdir: str) -> Report | None:
  """The report the latest checkpoint in `workdir` holds; None if it has no checkpoint."""
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    return None
  checkpointer = checkpointing.Checkpointer(workdir, max_to_keep=None, read_only=True)
  try:
    if checkpointer.latest_step() is None:
      return None
    try:
      meta = checkpointer.read_meta()
    except ConfigError:  # written before checkpoints recorded their config: no init_from either
      meta = {}
  finally:
    checkpointer.close()
  return Report.from_json(meta.get('init_from'))


def take_weights(run: settings.RunConfig, workdir: str, model: nnx.Module) -> Report:
  """What the run in `workdir` starts from. A fresh run with `run.init_from` gets the source's
  weights in `model` (in place) where they fit; a resumed one the report its checkpoint holds."""
  if run.init_from is None and run.optim.new_layer_lr_mult == 1.0:
    return Report()  # nothing here depends on the split: no need to look at the checkpoints
  report = recorded_report(workdir)
  if report is not None:
    if run.init_from:
      logging.info(
          '%s already has a checkpoint, which holds the weights: init_from=%s is not read '
          'again. The run started from: %s',
          workdir,
          run.init_from,
          report,
      )
    return report
  if run.init_from is None:
    logging.warning(
        'optim.new_layer_lr_mult=%s has no effect without init_from: no layer was loaded, so '
        'none is new, and every layer learns at the base rate.',
        run.optim.new_layer_lr_mult,
    )
    return Report()
  params = nnx.state(model, nnx.Param)
  stats = nnx.state(model, nnx.BatchStat)
  new_params, new_stats, report = init_from(
      nnx.to_pure_dict(params), nnx.to_pure_dict(stats), run.init_from
  )
  report = dataclasses.replace(report, network=run.init_network)
  nnx.replace_by_pure_dict(params, new_params)
  nnx.replace_by_pure_dict(stats, new_stats)
  nnx.update(model, params, stats)
  logging.info('%s', report)
  frozen = optim.layer_list(run.optim.freeze)
  frozen_new = [layer for layer in frozen if layer in report.reinitialised]
  if frozen_new:
    logging.warning(
        'optim.freeze includes %s, which init_from did not load: frozen, it keeps its random '
        'initialisation for the whole run.',
        ', '.join(frozen_new),
    )
  return report


# What a run keeps as its own when it takes the network of the run it starts from: its head (the
# new classes), the precision it computes in and how hard dropout regularises it.
OWN_MODEL_FIELDS = ('num_classes', 'dtype', 'dropout_rate')
# The pixel scaling the source learned with: its features mean nothing on other pixel values.
_PIXEL_FIELDS = ('mean', 'mean_rgb', 'std_rgb', 'stats_file')


def _has(config: ml_collections.ConfigDict, name: str) -> bool:
  try:
    settings.get_field(config, name)
  except KeyError:
    return False
  return True


def network_of(stored: ml_collections.ConfigDict) -> dict[str, Any]:
  """The fields, dotted, that a run starting from the run of `stored` (its checkpoint's config)
  takes from it: every model field but OWN_MODEL_FIELDS, the pixel scaling, and the crop and resize
  sizes (the crop sets fc6's fan-in) unless pool5 is adaptive, which gives fc6 the same inputs at
  any size: then the sizes stay the new run's."""
  model = stored.model.to_dict()
  taken = {f'model.{k}': v for k, v in settings.dotted(model).items() if k not in OWN_MODEL_FIELDS}
  if not model.get('adaptive_avg_pool'):
    taken.update(image_size=stored.image_size, resize_size=stored.resize_size)
  for name in _PIXEL_FIELDS:
    if name in stored.augment:
      taken[f'augment.{name}'] = stored.augment[name]
  return taken


def take_network(
    config: ml_collections.ConfigDict, workdir: str
) -> tuple[ml_collections.ConfigDict, tuple[str, ...]]:
  """(`config` as the run in `workdir` builds its network, the dotted fields it took).

  A fresh run with init_from a trained run's workdir takes that run's network (`network_of`); a
  resumed one takes the same fields from its own checkpoint, which recorded them, so its source
  may have moved; a weights file, or no init_from, changes nothing. One log line names the fields
  whose values changed. `config` itself is not changed.
  """
  source = config.get('init_from')
  if not source:
    return config, ()
  own = checkpointing.latest_meta(workdir)
  if own is not None:  # resumed: the network is its checkpoint's
    if 'config' not in own:  # written before checkpoints recorded it: train.check_resumable warns
      return config, ()
    recorded = settings.config_from_dict(own['config'])
    names = Report.from_json(own.get('init_from')).network
    if names is None:  # recorded before reports held the fields: those a workdir gives
      names = tuple(network_of(recorded))
    taken = {n: settings.get_field(recorded, n) for n in names if _has(recorded, n)}
    origin = f"{workdir}'s checkpoint (the run took them from init_from when it started)"
  elif os.path.isdir(source):
    taken = network_of(source_config(source))
    origin = f'init_from={source}'
  else:
    return config, ()
  # A field this version's config lacks (one of an older version's, since removed) is left out.
  taken = {name: value for name, value in taken.items() if _has(config, name)}
  config = copy.deepcopy(config)
  changed = []
  for name, value in taken.items():
    *parents, last = name.split('.')
    node = settings.get_field(config, '.'.join(parents)) if parents else config
    before = node.get(last)
    if before != value:
      changed.append(f'{name}={value!r} (config: {before!r})')
    # A field may hold either of two types (model.conv1_padding: the paper's 'ceil' or
    # torchvision's 2 pixels), and ml_collections would refuse to cast an int into a str field.
    with node.ignore_type():
      node[last] = value
  if taken:
    logging.info(
        "The network from %s: %s; %d more fields already equal; %s stay this run's.",
        origin,
        ', '.join(changed) or 'no field changed',
        len(taken) - len(changed),
        ', '.join(f'model.{name}' for name in OWN_MODEL_FIELDS),
    )
  return config, tuple(taken)
