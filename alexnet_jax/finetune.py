"""Fine-tuning: a run that starts from another run's weights, or a weights file, where they fit.

`--config.init_from=PATH` names a trained run's workdir (its latest checkpoint, read with
`inference.load`) or a weights file (`weights.read`: torchvision's .pth / .safetensors). On a fresh
run every layer whose parameters and batch-norm statistics all have this model's shapes is copied;
the others keep their fresh initialisation (fc8 for another `num_classes`, a layer the source does
not have), and the `Report` says which and why. A source of which nothing fits is another
architecture, an error. The optimiser state starts fresh: momentum zero, the schedule at step 0.

Two optimiser fields go with it (`optim.create_optimizer`): `optim.freeze`, layers whose
parameters never change, and `optim.new_layer_lr_mult`, Caffe's `lr_mult` for the layers
init_from did not load. Which layers those are belongs to the run: every checkpoint's meta records
the report, and a resumed run takes it from there and ignores init_from (its checkpoint already
holds the weights; the source may have moved).

`init_from(params, batch_stats, source)` is the loading on its own, for notebooks; `start` is what
`train` calls; `take_network` gives a config the network of the run it fine-tunes
(configs/finetune_folder.py, configs/ifood2019.py).
"""

import dataclasses
import os
from typing import Any

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from alexnet_jax import checkpointing
from alexnet_jax import optim
from alexnet_jax import settings
from alexnet_jax.errors import ConfigError

# `inference` (which brings `analysis` and pandas) and `weights` (torchvision's formats) are
# imported where they are used: `train` imports this module and needs neither.


@dataclasses.dataclass(frozen=True)
class Report:
  """What a run started from: the layers loaded from `source`, those re-initialised (with why),
  and the source's layers this model has no place for. Empty without init_from."""

  source: str | None = None
  loaded: tuple[str, ...] = ()
  reinitialised: dict[str, str] = dataclasses.field(default_factory=dict)
  unused: tuple[str, ...] = ()

  @property
  def new_layers(self) -> tuple[str, ...]:
    """The layers `optim.new_layer_lr_mult` applies to."""
    return tuple(self.reinitialised)

  def to_json(self) -> dict | None:
    if self.source is None:
      return None
    return dict(
        source=self.source,
        loaded=list(self.loaded),
        reinitialised=dict(self.reinitialised),
        unused=list(self.unused),
    )

  @classmethod
  def from_json(cls, value: dict | None) -> 'Report':
    if not value:
      return cls()
    return cls(
        value['source'],
        tuple(value['loaded']),
        dict(value['reinitialised']),
        tuple(value.get('unused', ())),
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


def merge(
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
        'architecture: give this run the model fields (and image_size) of the run that made it, '
        'e.g. with configs/finetune_folder.py:init_from=WORKDIR, which takes them from the workdir.'
    )
  ours = set(params) | set(batch_stats)
  theirs = dict.fromkeys([*source_params, *given['batch_stats']])
  unused = tuple(layer for layer in theirs if layer not in ours)
  report = Report(source, tuple(loaded), reinitialised, unused)
  return out['params'], out['batch_stats'], report


def read_source(path: str) -> tuple[dict, dict]:
  """(params, batch_stats) of a trained run's workdir or a weights file; ConfigError if neither."""
  if os.path.isdir(path):
    from alexnet_jax import inference  # pylint: disable=g-import-not-at-top

    try:
      trained = inference.load(path)
    except ConfigError as e:
      raise ConfigError(f'init_from={path!r}: {e}') from None
    return trained.params, trained.batch_stats
  if os.path.isfile(path):
    from alexnet_jax import weights  # pylint: disable=g-import-not-at-top

    return weights.read(path), {}
  raise ConfigError(
      f'init_from={path!r} does not exist. Pass the --workdir of a trained run, or a weights file '
      "(torchvision's AlexNet as .pth or .safetensors)."
  )


def init_from(params: dict, batch_stats: dict, source: str) -> tuple[dict, dict, Report]:
  """`params` and `batch_stats` of a fresh model with the layers of `source` (a trained run's
  workdir or a weights file) that fit: see `merge`."""
  return merge(params, batch_stats, *read_source(source), source=source)


def recorded(workdir: str) -> Report | None:
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


def start(run: settings.RunConfig, workdir: str, model: nnx.Module) -> Report:
  """What the run in `workdir` starts from. A fresh run with `run.init_from` gets the source's
  weights in `model` (in place) where they fit; a resumed one the report its checkpoint holds."""
  if run.init_from is None and run.optim.new_layer_lr_mult == 1.0:
    return Report()  # nothing here depends on the split: no need to look at the checkpoints
  report = recorded(workdir)
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


# What a fine-tuning config takes from the run it starts from: the network, and the input it
# learned on (crop size, which sets fc6's fan-in, and the pixel scaling).
_NETWORK_FIELDS = ('image_size', 'resize_size')
_INPUT_FIELDS = ('mean', 'mean_rgb', 'std_rgb', 'stats_file')


def take_network(config: ml_collections.ConfigDict, source: str) -> ml_collections.ConfigDict:
  """`config` with the model (all but num_classes), crop and resize sizes and pixel scaling of
  the run in workdir `source`, so that every layer but the classifier fits; unchanged for a
  weights file, whose architecture the config itself must match."""
  if not os.path.isdir(source):
    return config
  from alexnet_jax import inference  # pylint: disable=g-import-not-at-top

  try:
    stored, _ = inference.stored_config(source)
  except ConfigError as e:
    raise ConfigError(f'init_from={source!r}: {e}') from None
  # The stored values replace the config's whatever their types: a field may hold either of two
  # (model.conv1_padding is the paper's 'ceil' or torchvision's 2 pixels), and ml_collections
  # would refuse to cast an int into the paper's str field.
  with config.ignore_type():
    for name, value in stored.model.items():
      if name != 'num_classes' and name in config.model:
        config.model[name] = value
    for name in _NETWORK_FIELDS:
      config[name] = stored[name]
    for name in _INPUT_FIELDS:
      if name in stored.augment and name in config.augment:
        config.augment[name] = stored.augment[name]
  return config
