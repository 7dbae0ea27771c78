"""Pretrained weights from elsewhere, as our parameter trees, and as a workdir of their own.

torchvision's AlexNet is the pretrained AlexNet most people have: Krizhevsky's 2014 one-tower net,
`models.TORCHVISION` here. `read_torchvision(path)` reads its `state_dict`, saved by `torch.save`
(.pth, .pt) or as .safetensors, and returns our parameters: a nested dict shaped like
`nnx.to_pure_dict` of the model's `nnx.Param` state, `{'conv1': {'kernel': ..., 'bias': ...}, ...}`,
of float32 numpy arrays. `read(path)` picks the reader by the file's type (`READERS`), so other
formats (our own exports, say) are one entry more. `import_to_workdir` writes the weights as the
step-0 checkpoint of a new workdir, which `inference.load`, evaluation, prediction and fine-tuning
(`main` resumes from it) read like any run's.

What changes on the way (PyTorch's layouts to ours):
- names: features.0, 3, 6, 8, 10 are conv1 to conv5 (the indices between them are ReLUs and
  poolings), classifier.1, 4, 6 are fc6, fc7 and fc8 (between them, dropout and ReLUs);
- conv weights (out, in, h, w) become HWIO kernels (h, w, in, out), linear weights (out, in)
  become (in, out) kernels;
- fc6's inputs: torch flattens pool5's NCHW maps, input c * 36 + h * 6 + w; we flatten NHWC maps,
  input h * 6 * C + w * C + c, so fc6's rows are permuted.

A .pth file is read with `torch.load(weights_only=True)`, which refuses anything but tensors and
plain containers: a weights file never runs code. torch is needed only for .pth files, and imported
only then; .safetensors files are read with `safetensors.numpy`, without torch.
"""

import os
import re
from typing import Any, Mapping

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax import checkpointing
from alexnet_jax.data import imagenet
from alexnet_jax.errors import ConfigError
from alexnet_jax.system import files
from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import settings
from alexnet_jax import steps

# torchvision's module names, in the order of the layers.
TORCHVISION_LAYERS = (
    ('features.0', 'conv1'),
    ('features.3', 'conv2'),
    ('features.6', 'conv3'),
    ('features.8', 'conv4'),
    ('features.10', 'conv5'),
    ('classifier.1', 'fc6'),
    ('classifier.4', 'fc7'),
    ('classifier.6', 'fc8'),
)
TORCH_SUFFIXES = ('.pth', '.pt')
SAFETENSORS_SUFFIX = '.safetensors'


def torchvision_shapes(num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
  """The tensor shapes of a torchvision AlexNet `state_dict` with `num_classes` outputs, from
  `models.TORCHVISION` (channels, kernel sizes, the 6x6 average pool)."""
  shapes, channels_in = {}, 3
  channels = models.conv_channels(models.TORCHVISION)[0]
  for (module, _), (_, size, _, _, _), out in zip(TORCHVISION_LAYERS, models.CONV_LAYERS, channels):
    shapes[f'{module}.weight'] = (out, channels_in, size, size)
    shapes[f'{module}.bias'] = (out,)
    channels_in = out
  pooled = models.TORCHVISION.adaptive_avg_pool
  units = (pooled * pooled * channels_in, models.FC_UNITS, models.FC_UNITS, num_classes)
  for (module, _), fan_in, out in zip(TORCHVISION_LAYERS[5:], units[:-1], units[1:]):
    shapes[f'{module}.weight'] = (out, fan_in)
    shapes[f'{module}.bias'] = (out,)
  return shapes


def read(path: str, num_classes: int | None = None) -> dict[str, dict[str, np.ndarray]]:
  """Our parameters from a weights file of any supported type (`READERS`, by its suffix);
  `num_classes`, if given, is checked against fc8's outputs."""
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in READERS:
    raise ConfigError(
        f'Cannot tell what {path} holds from its suffix {suffix!r}: weights are read from '
        f'{", ".join(sorted(READERS))} files (torchvision\'s AlexNet state_dict saved by '
        'torch.save, or as safetensors). Rename the file if it is one of those.'
    )
  return READERS[suffix](path, num_classes)


def read_torchvision(path: str, num_classes: int | None = None) -> dict[str, dict[str, np.ndarray]]:
  """Our parameters from a torchvision AlexNet `state_dict` in a .pth / .pt or .safetensors file.

  fc8's outputs (1000 for torchvision's ImageNet weights) are read from the file; `num_classes`,
  if given, must match them.
  """
  return from_torchvision(read_state_dict(path), num_classes, source=path)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The tensors of a `state_dict` file as numpy arrays, by name."""
  if not os.path.isfile(path):
    raise ConfigError(
        f'No weights file at {path}. Pass --weights=FILE, a .pth or .safetensors file.'
    )
  if path.lower().endswith(SAFETENSORS_SUFFIX):
    return _read_safetensors(path)
  return _read_torch(path)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  # ml_dtypes gives numpy a bfloat16, so bfloat16 files read (jax has imported it already).
  import ml_dtypes  # pylint: disable=g-import-not-at-top,unused-import
  from safetensors import SafetensorError  # pylint: disable=g-import-not-at-top
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top

  try:
    return safetensors_numpy.load_file(path)
  except (SafetensorError, OSError, ValueError, TypeError) as e:
    raise ConfigError(
        f'Cannot read {path} as a safetensors file ({_one_line(e)}). It may be truncated or of '
        'another format: download it again, or save the state_dict with '
        'safetensors.torch.save_file(model.state_dict(), PATH).'
    ) from None


def _read_torch(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError(
        f'Reading {path} needs PyTorch, which is not installed: pip install torch (on a machine '
        'without a GPU, a CPU wheel: --index-url https://download.pytorch.org/whl/cpu). Or convert '
        'the file where torch is, with safetensors.torch.save_file(torch.load(FILE, '
        "weights_only=True), 'weights.safetensors'), and pass that: .safetensors needs no torch."
    ) from None
  import pickle  # pylint: disable=g-import-not-at-top

  with open(path, 'rb') as f:
    start = f.read(4)
  # torch.save writes a zip archive (a pickle before PyTorch 1.6); anything else is no torch file.
  if not start.startswith((b'PK\x03\x04', b'\x80')):
    raise ConfigError(
        f'{path} is not a file torch.save wrote (it starts with {start!r}, not a zip archive or a '
        "pickle). It may be of another format, or a download's error page: download it again, or "
        'pass a .safetensors file.'
    )
  try:
    loaded = torch.load(path, map_location='cpu', weights_only=True)
  except pickle.UnpicklingError as e:
    # torch's own message suggests weights_only=False, i.e. running the file's code: not quoted.
    objects = re.findall(r'Unsupported global: GLOBAL (\S+)', str(e))
    if not objects:
      raise ConfigError(
          f'Cannot read {path} as a PyTorch file: it is not a pickle of tensors (torch says '
          f'{_one_line(e).split("error:")[-1].split("Check the documentation")[0].strip()!r}). It '
          'may be truncated or of another format: download it again, or pass a .safetensors file.'
      ) from None
    raise ConfigError(
        f'{path} holds Python objects besides tensors ({objects[0]}), e.g. a whole model saved '
        'with torch.save(model), which torch.load(weights_only=True) refuses: unpickling them '
        "would run the file's code. Save the weights alone, torch.save(model.state_dict(), "
        'PATH), and pass that file.'
    ) from None
  except (RuntimeError, OSError, EOFError, ValueError) as e:
    raise ConfigError(_unreadable_torch(path, e)) from None
  if not isinstance(loaded, Mapping) or not all(torch.is_tensor(v) for v in loaded.values()):
    raise ConfigError(_not_a_state_dict(path, loaded, torch.is_tensor))
  return {
      name: (t.detach().float() if t.is_floating_point() else t.detach()).numpy()
      for name, t in loaded.items()
  }


def _unreadable_torch(path: str, error: BaseException) -> str:
  return (
      f'Cannot read {path} as a PyTorch file ({_one_line(error).split(". ")[0]}). It may be '
      'truncated or of another format: download it again, or pass a .safetensors file.'
  )


def _not_a_state_dict(path: str, loaded: Any, is_tensor) -> str:
  if not isinstance(loaded, Mapping):
    return (
        f'{path} holds a {type(loaded).__name__}, not a state_dict (a dict of tensors by name). '
        "Save the model's weights with torch.save(model.state_dict(), PATH)."
    )
  nested = [k for k, v in loaded.items() if isinstance(v, Mapping)]
  if nested:
    return (
        f'{path} is a training checkpoint, not a state_dict: a dict with entries {sorted(loaded)}, '
        f'of which {nested} are dicts. If the weights are under one of them, save it alone, '
        f"e.g. torch.save(torch.load(FILE, weights_only=True)[{nested[0]!r}], 'weights.pth'), "
        'and pass that file.'
    )
  others = sorted(k for k, v in loaded.items() if not is_tensor(v))
  return (
      f'{path} is a dict whose entries {others[:5]} are not tensors, so it is not a state_dict. '
      "Save the model's weights with torch.save(model.state_dict(), PATH)."
  )


def from_torchvision(
    state_dict: Mapping[str, np.ndarray], num_classes: int | None = None, source: str = 'the file'
) -> dict[str, dict[str, np.ndarray]]:
  """Our parameters from a torchvision AlexNet `state_dict` of numpy arrays (see module docstring).

  The names and shapes are checked first: a ConfigError names what does not fit.
  """
  names = list(state_dict)
  if names and all(n.startswith('module.') for n in names):
    # torch.nn.DataParallel saves its model's weights under `module.`: the same weights.
    state_dict = {n[len('module.') :]: v for n, v in state_dict.items()}
  # fc8's outputs are the file's own (a fine-tuned net has other classes); the rest is fixed.
  head = state_dict.get('classifier.6.weight')
  found_classes = np.shape(head)[0] if np.ndim(head) == 2 else 1000
  expected = torchvision_shapes(found_classes)
  _check_names(state_dict, expected, source)
  _check_shapes(state_dict, expected, source)
  if num_classes is not None and found_classes != num_classes:
    raise ConfigError(
        f'{source} is an AlexNet for {found_classes} classes (classifier.6.weight is '
        f'{tuple(np.shape(head))}), but the config has model.num_classes={num_classes}. Set '
        f'--config.model.num_classes={found_classes} (and a dataset of {found_classes} classes), '
        f'or pass weights for {num_classes} classes.'
    )

  params = {}
  for module, layer in TORCHVISION_LAYERS:
    weight = np.asarray(state_dict[f'{module}.weight'], np.float32)
    if weight.ndim == 4:
      kernel = weight.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    else:
      if layer == 'fc6':
        # Input rows from torch's (c, h, w) flatten order to our (h, w, c).
        channels = expected['features.10.weight'][0]
        side = models.TORCHVISION.adaptive_avg_pool
        weight = weight.reshape(-1, channels, side, side).transpose(0, 2, 3, 1)
        weight = weight.reshape(weight.shape[0], -1)
      kernel = weight.T  # (out, in) -> (in, out)
    params[layer] = {
        'kernel': np.ascontiguousarray(kernel),
        'bias': np.asarray(state_dict[f'{module}.bias'], np.float32),
    }
  return params


def _check_names(state_dict: Mapping[str, Any], expected: dict, source: str) -> None:
  have = set(state_dict)
  missing = [n for n in expected if n not in have]
  extra = sorted(have - set(expected))
  if len(missing) > len(expected) // 2:
    raise ConfigError(
        f'{source} is not a torchvision AlexNet state_dict: it has {len(have)} tensors, '
        f'{_looks_like(sorted(have))}, and lacks {len(missing)} of the {len(expected)} of '
        'torchvision.models.alexnet (features.0.weight ... classifier.6.bias). Pass the weights of '
        'an AlexNet (torchvision publishes alexnet-owt-7be5be79.pth): alexnet_jax builds no other.'
    )
  if missing or extra:
    problems = []
    if missing:
      problems.append(f'lacks {missing}')
    if extra:
      problems.append(f"has tensors torchvision's AlexNet does not: {extra[:20]}")
    raise ConfigError(
        f'{source} looks like a torchvision AlexNet state_dict but {" and ".join(problems)}. '
        'It was saved from a modified network; save the state_dict of torchvision.models.alexnet '
        '(or rename its tensors to those names), and pass that file.'
    )


def _looks_like(names: list[str]) -> str:
  """What a state_dict's names say about its network, in a phrase."""
  shown = f'named like {names[:4]}' if names else 'none at all'
  if any(n.startswith('layer1.') for n in names) and 'fc.weight' in names:
    return f'{shown}: a ResNet (conv1, bn1, layer1 to layer4, fc)'
  if any(n.startswith('features.') for n in names) and any(
      n.startswith('classifier.') for n in names
  ):
    return f'{shown}: another torchvision network with features and classifier (VGG, say)'
  return shown


def _check_shapes(
    state_dict: Mapping[str, Any], expected: dict[str, tuple[int, ...]], source: str
) -> None:
  wrong = [
      f'{name} is {tuple(np.shape(state_dict[name]))}, not {shape}'
      for name, shape in expected.items()
      if tuple(np.shape(state_dict[name])) != shape
  ]
  not_float = [
      f'{name} is {np.asarray(state_dict[name]).dtype}'
      for name in expected
      if not jnp.issubdtype(np.asarray(state_dict[name]).dtype, jnp.floating)  # bfloat16 too
  ]
  if wrong:
    raise ConfigError(
        f'{source} has the names of a torchvision AlexNet state_dict but not its shapes: '
        f'{"; ".join(wrong)}. It was saved from a network of other widths; this one is '
        "torchvision.models.alexnet's (models.TORCHVISION)."
    )
  if not_float:
    raise ConfigError(
        f'{source} has tensors that are not floating point ({"; ".join(not_float)}), e.g. a '
        'quantised model. Pass the float weights of torchvision.models.alexnet.'
    )


def _one_line(error: BaseException) -> str:
  return ' '.join(str(error).split()) or type(error).__name__


READERS = {suffix: read_torchvision for suffix in TORCH_SUFFIXES + (SAFETENSORS_SUFFIX,)}


# --- A workdir of imported weights ---


def import_to_workdir(run: settings.RunConfig, weights_path: str, workdir: str) -> dict[str, Any]:
  """Writes the weights in `weights_path` (any file `read` reads) as the step-0 checkpoint of a
  new `workdir`; see `params_to_workdir`. Returns {'workdir', 'step', 'class_names_from'}."""
  _check_new_workdir(os.path.abspath(workdir))  # before reading a large file
  params = read(weights_path, run.model.num_classes)
  return params_to_workdir(run, params, workdir, source=weights_path)


def params_to_workdir(
    run: settings.RunConfig,
    params: dict[str, dict[str, np.ndarray]],
    workdir: str,
    source: str = 'the weights',
) -> dict[str, Any]:
  """Writes `params` (our tree, e.g. from `read`) as the step-0 checkpoint of a new `workdir`.

  `run` (typed from a config such as configs/torchvision.py's) is recorded in
  the checkpoint's meta with the class names (`class_names_to_record`), as a training run's, so that
  `inference.load(workdir)` needs nothing else, and `main` with that config fine-tunes from it. An
  existing `workdir` that is not empty is an error: nothing is overwritten. The checkpoint is
  written next to it under a temporary name and renamed into place when complete, so a failure
  leaves no half-written workdir.
  """
  workdir = os.path.abspath(workdir)
  _check_new_workdir(workdir)
  # The network's structure without initialising it: the weights are all its parameters.
  abstract = nnx.eval_shape(
      lambda: steps.create_model(run.model, run.data.image_size, run.loop.seed)
  )
  graphdef, shapes, rest = nnx.split(abstract, nnx.Param, ...)
  _check_fits(params, nnx.to_pure_dict(shapes), source)
  if jax.tree.leaves(rest):
    raise ConfigError(
        f"The config's model has state besides its parameters (model.norm={run.model.norm!r}), "
        f'which {source} does not hold. Use --config=torchvision.'
    )
  model = nnx.merge(graphdef, jax.tree.map(jnp.asarray, params), nnx.to_pure_dict(rest))
  # The optimiser's state is momentum, zero at step 0; the schedule's length does not shape it.
  _, state = steps.create_train_state(
      model, optim.create_optimizer(run.optim, 1), optim.create_plateau(run.optim), run.loop.seed
  )
  del model
  names, names_from = class_names_to_record(run)

  # Written beside the workdir and renamed into place when complete: a failure leaves none.
  with files.staged(
      workdir,
      whole=True,
      before_publishing=lambda: _check_new_workdir(workdir),  # nothing appeared there meanwhile
      flag='--workdir',
      holds='the imported checkpoint',
  ) as staging:
    checkpointer = checkpointing.Checkpointer(staging, max_to_keep=1)
    try:
      meta = {
          'config': run.source,
          'class_names': names,
          'colour_statistics': settings.colour_statistics(run),
      }
      checkpointer.save(0, state, None, meta)
      checkpointer.wait()
    finally:
      checkpointer.close()
  logging.info('Imported %s into %s (step 0, class names %s).', source, workdir, names_from)
  return {'workdir': workdir, 'step': 0, 'class_names_from': names_from}


def _check_new_workdir(workdir: str) -> None:
  if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
    raise ConfigError(
        f'{workdir} already exists and is not an empty directory. Importing weights makes a new '
        'workdir and overwrites nothing: pass a --workdir that does not exist yet (or remove that '
        'one yourself).'
    )


def _check_fits(params: dict, model_params: dict, source: str) -> None:
  """ConfigError unless `params` has exactly the model's tree of shapes."""
  want = {
      jax.tree_util.keystr(p): tuple(x.shape)
      for p, x in jax.tree_util.tree_leaves_with_path(model_params)
  }
  have = {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(params)}
  diffs = [
      f'{name}: {have.get(name, "absent")} in the weights, {want.get(name, "absent")} in the model'
      for name in sorted(set(want) | set(have))
      if have.get(name) != want.get(name)
  ]
  if diffs:
    raise ConfigError(
        f"The weights in {source} are torchvision's AlexNet, but the config's model is another "
        f'network: {"; ".join(diffs[:4])}{"; ..." if len(diffs) > 4 else ""}. Use '
        '--config=torchvision (its model is models.TORCHVISION), without changes to model.width, '
        'model.conv_channels, model.towers or model.adaptive_avg_pool.'
    )


def class_names_to_record(run: settings.RunConfig) -> tuple[list[str], str]:
  """The class names to record, and where they came from: the dataset's when it is prepared (what
  evaluation will read; ImageNet's WordNet ids as their names), else ImageNet's names
  (`data.imagenet`, shipped with the package) for 1000 classes, else the class indices."""
  count = run.model.num_classes
  names = _prepared_dataset_names(run)
  if names is not None:
    if len(names) != count:
      raise ConfigError(
          f'Dataset {run.data.dataset!r} has {len(names)} classes but the weights have {count}. '
          'Set --config.dataset to the dataset the weights were trained on (imagenet2012 for '
          "torchvision's)."
      )
    return list(imagenet.readable(names)), f'of dataset {run.data.dataset}'
  if count == imagenet.NUM_CLASSES:
    return list(imagenet.names()), "of ImageNet (torchvision's weights are in its label order)"
  return [str(i) for i in range(count)], 'as indices (the dataset is not prepared)'


def _prepared_dataset_names(run: settings.RunConfig) -> list[str] | None:
  # The builder only reads what is on disk: an unprepared dataset is left as it is, not prepared.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from alexnet_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  try:
    builder = tfds.builder(run.data.dataset, data_dir=run.data.data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    return None
  if not builder.is_prepared():
    return None
  label = builder.info.features[pipeline.LABEL_KEY]
  return list(label.names or (str(i) for i in range(label.num_classes)))
