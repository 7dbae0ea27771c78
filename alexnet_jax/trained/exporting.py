"""A trained network as files that run without this package: a serialized `jax.export` program and
a TensorFlow SavedModel, with the run's evaluation preprocessing inside.

    python -m alexnet_jax.tools.export --workdir=runs/quickstart

writes `runs/quickstart/export/`:

    model.jax        jax.export.Exported.serialize(): serve(weights, images), for cpu and cuda
    weights.npz      its first argument: every parameter and batch statistic, by 'params/conv1/kernel'
    saved_model/     TensorFlow: signature 'serving_default', images -> logits, probabilities
    labels.txt       the class names, one a line, line i = class i (also saved_model/assets/)
    metadata.json    input shape, dtype and preprocessing, outputs, class names, source run and step

The signature, the same in both formats: `images` is a float32 (batch, image_size, image_size, 3)
batch of RGB crops in 0..255, any batch size of at least 1. A crop is what the evaluation pipeline
cuts (`augment.eval_transform`): the image resized to resize_size (shorter side, central square),
then its central image_size square. The run's mean subtraction (per channel, or the centre of its
mean image) and its division by the channels' standard deviation, if it trained with one, happen
inside. The outputs are `logits` (batch, classes) and their softmax, `probabilities`.

Why the weights are an argument and not constants inside model.jax: constants would make one
self-contained file, but with the paper's 61M parameters (244 MB) its first call, the compilation,
took 15 s and 2.9 GB on a 2-core CPU, against 2 s and 0.9 GB with the weights passed in. The
SavedModel keeps them as variables for the same reason (jax2tf's advice: constants would sit in
the graph).

Both programs are lowered for ('cpu', 'cuda') by default: `jax.export` lowers for several
platforms without their devices, so the same file runs on a GPU machine, and XlaCallModule picks
the platform the SavedModel runs on.
"""

import dataclasses
import importlib.util
import json
import os
from typing import Any, Callable, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax.data import augment
from alexnet_jax.data import pipeline
from alexnet_jax.errors import ConfigError
from alexnet_jax import settings
from alexnet_jax.system import files
from alexnet_jax.trained import inference

FORMATS = ('jax', 'savedmodel')
PLATFORMS = ('cpu', 'cuda')
KNOWN_PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')  # those jax.export lowers for
JAX_FILE = 'model.jax'
WEIGHTS_FILE = 'weights.npz'
SAVED_MODEL_DIR = 'saved_model'
LABELS_FILE = 'labels.txt'
METADATA_FILE = 'metadata.json'
SIGNATURE = 'serving_default'


def crop_preprocessing(data: pipeline.DataConfig) -> tuple[np.ndarray, np.ndarray | None]:
  """(mean, inv_std) to apply to an evaluation crop as `(crop - mean) * inv_std`, exactly as
  `pipeline.EvalTransform` does: a per-channel mean (3,), or the crop's window of the run's mean
  image (section 2: subtracted before the centre crop); inv_std None when the run kept the
  paper's raw 0..255 scale."""
  mean = np.asarray(data.augment.mean, np.float32)
  size = data.image_size
  if mean.ndim == 3 and mean.shape[:2] == (data.resize_size, data.resize_size):
    mean = np.ascontiguousarray(augment.center_crop(mean, size))
  elif mean.ndim == 3 and mean.shape[:2] != (size, size):
    raise ConfigError(
        f"The run's mean image is {mean.shape}; an exported network needs it at resize_size "
        f'({data.resize_size}) or image_size ({size}). Check --config.augment.stats_file.'
    )
  inv_std = data.augment.inv_std
  return mean, None if inv_std is None else np.asarray(inv_std, np.float32)


def flat_weights(trained: inference.Trained) -> dict[str, np.ndarray]:
  """Every parameter and batch statistic as numpy, keyed 'params/conv1/kernel',
  'batch_stats/norm1/mean', ...: the first argument of `serving_function`, and weights.npz (one
  flat dict, so that `dict(np.load('weights.npz'))` is that argument as it stands)."""
  tree = {'params': trained.params, 'batch_stats': trained.batch_stats}
  return {
      '/'.join(str(k.key) for k in path): np.asarray(leaf)
      for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


def serving_function(trained: inference.Trained) -> Callable[[dict, jax.Array], dict]:
  """serve(weights, images) -> {'logits', 'probabilities'}: the pure function both formats hold.

  `weights` is `flat_weights(trained)` (or any dict of arrays with its keys and shapes); `images`
  a float32 (batch, image_size, image_size, 3) batch of 0..255 crops (see the module docstring).
  """
  mean, inv_std = crop_preprocessing(trained.run.data)
  graphdef = trained.graphdef

  def serve(weights, images):
    x = images.astype(jnp.float32) - mean
    if inv_std is not None:
      x = x * inv_std
    tree = {'params': {}, 'batch_stats': {}, **settings.nested(weights, '/')}
    logits = nnx.merge(graphdef, tree['params'], tree['batch_stats'])(x, train=False)
    return {'logits': logits, 'probabilities': jax.nn.softmax(logits, axis=-1)}

  return serve


def export_jax(
    trained: inference.Trained, platforms: Sequence[str] = PLATFORMS
) -> jax.export.Exported:
  """`serving_function` lowered with a symbolic batch size for `platforms`."""
  weights = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flat_weights(trained).items()}
  size = trained.run.data.image_size
  # One symbolic dimension: any batch size >= 1 runs the same program.
  (batch,) = jax.export.symbolic_shape('batch')
  images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  return jax.export.export(jax.jit(serving_function(trained)), platforms=tuple(platforms))(
      weights, images
  )


def write_jax(directory: str, trained: inference.Trained, platforms: Sequence[str]) -> None:
  """model.jax (the serialized program) and weights.npz (its first argument) in `directory`."""
  with open(os.path.join(directory, JAX_FILE), 'wb') as f:
    f.write(export_jax(trained, platforms).serialize())
  np.savez(os.path.join(directory, WEIGHTS_FILE), **flat_weights(trained))


def write_savedmodel(directory: str, trained: inference.Trained, platforms: Sequence[str]) -> None:
  """A TensorFlow SavedModel of `serving_function` in `directory`/saved_model, through jax2tf.

  The weights are non-trainable tf.Variables; the signature takes `images` with any batch size
  (jax2tf's polymorphic 'b', the same symbolic dimension as model.jax's 'batch'). Needs
  `directory`/labels.txt, which becomes the SavedModel's asset `labels`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (seconds to import; only here)
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top  (imports tensorflow)

  serve = jax2tf.convert(
      serving_function(trained),
      polymorphic_shapes=[None, '(b, ...)'],
      native_serialization_platforms=tuple(platforms),
      with_gradient=False,  # a network for serving; its gradient would be a second program
  )
  module = tf.Module()
  module.weights = {
      key: tf.Variable(value, trainable=False, name=key.replace('/', '.'))
      for key, value in flat_weights(trained).items()
  }
  module.labels = tf.saved_model.Asset(os.path.join(directory, LABELS_FILE))
  size = trained.run.data.image_size

  @tf.function(
      input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name='images')],
      autograph=False,
  )
  def serving(images):
    return serve(module.weights, images)

  module.serve = serving
  tf.saved_model.save(
      module, os.path.join(directory, SAVED_MODEL_DIR), signatures={SIGNATURE: serving}
  )


def metadata(
    trained: inference.Trained,
    workdir: str,
    formats: Sequence[str],
    platforms: Sequence[str],
) -> dict[str, Any]:
  """What metadata.json says: enough to feed the network and read its outputs without the run."""
  data = trained.run.data
  mean, inv_std = crop_preprocessing(data)
  size = data.image_size
  classes = len(inference.class_names(trained))
  mean_value = mean.tolist()
  if mean.ndim == 3:  # a mean image is too long to list: its shape and average say what it is
    mean_value = {'image': list(mean.shape), 'average': mean.reshape(-1, 3).mean(axis=0).tolist()}
  files = {}
  if 'jax' in formats:
    files['jax'] = {
        'program': JAX_FILE,
        'weights': WEIGHTS_FILE,
        'call': 'jax.export.deserialize(program).call(dict(np.load(weights)), images)',
        'platforms': list(platforms),
        'jax_version': jax.__version__,
    }
  if 'savedmodel' in formats:
    files['savedmodel'] = {
        'directory': SAVED_MODEL_DIR,
        'signature': SIGNATURE,
        'call': f"tf.saved_model.load(directory).signatures['{SIGNATURE}'](images=images)",
        'platforms': list(platforms),
    }
  return {
      'source': {'workdir': os.path.abspath(workdir), 'step': int(trained.step)},
      'input': {
          'name': 'images',
          'shape': ['batch', size, size, 3],
          'dtype': 'float32',
          'layout': 'NHWC, RGB, values 0..255',
          'crop': (
              f'resize to {data.resize_size}x{data.resize_size} (the shorter side, then the '
              f'central square), then take the central {size}x{size} square'
          ),
      },
      'preprocessing': {
          'inside': True,
          'formula': '(images - mean) * inv_std' if inv_std is not None else 'images - mean',
          'mean': mean_value,
          'inv_std': None if inv_std is None else inv_std.tolist(),
      },
      'outputs': {
          'logits': ['batch', classes],
          'probabilities': ['batch', classes],
      },
      'class_names': list(inference.class_names(trained)),
      'labels': LABELS_FILE,
      'formats': files,
      'model': dataclasses.asdict(trained.run.model),
  }


def check_request(
    workdir: str, output: str, formats: Sequence[str], platforms: Sequence[str], overwrite: bool
) -> None:
  """ConfigError for an unknown format or platform, or an output that must not be written."""
  unknown = [f for f in formats if f not in FORMATS]
  if unknown or not formats:
    raise ConfigError(
        f'Unknown export format {", ".join(unknown) or "(none given)"}: choose one or more of '
        f'{", ".join(FORMATS)}, e.g. --format=jax,savedmodel.'
    )
  if 'savedmodel' in formats and importlib.util.find_spec('tensorflow') is None:
    raise ConfigError(
        'The savedmodel format needs TensorFlow, which is not installed here (the GPU machines '
        'have none): pip install tensorflow-cpu, or pass --format=jax.'
    )
  unknown = [p for p in platforms if p not in KNOWN_PLATFORMS]
  if unknown or not platforms:
    raise ConfigError(
        f'Unknown platform {", ".join(unknown) or "(none given)"}: jax.export lowers for '
        f'{", ".join(KNOWN_PLATFORMS)}; e.g. --platforms=cpu,cuda.'
    )
  output, workdir = os.path.abspath(output), os.path.abspath(workdir)
  if os.path.commonpath([output, workdir]) == output:
    raise ConfigError(
        f"--output={output} is the run's workdir or holds it; replacing it would delete the "
        f'run. Leave --output out for {os.path.join(workdir, "export")}, or pass a new directory.'
    )
  if os.path.exists(output) and not os.path.isdir(output):
    raise ConfigError(f'--output={output} is a file; pass a directory to create.')
  if os.path.isdir(output) and os.listdir(output):
    if not overwrite:
      raise ConfigError(
          f'--output={output} already holds files. Pass --overwrite to replace an earlier '
          'export, or another --output.'
      )
    if not os.path.exists(os.path.join(output, METADATA_FILE)):
      raise ConfigError(
          f'--output={output} holds files but no {METADATA_FILE}, so it is not an earlier export; '
          '--overwrite replaces only those. Pass another --output.'
      )


def export(
    workdir: str,
    output: str | None = None,
    step: int | None = None,
    formats: Sequence[str] = FORMATS,
    platforms: Sequence[str] = PLATFORMS,
    overwrite: bool = False,
) -> str:
  """Exports the network of `workdir` (its latest checkpoint, or `step`'s) to `output` (default
  `workdir`/export) in `formats`; returns the output directory.

  Everything is written into a temporary directory beside `output` and renamed to it when
  complete, so `output` is never half written; on any error the temporary directory is removed
  and nothing is left. With `overwrite` an earlier export at `output` is replaced.
  """
  output = os.path.abspath(output or os.path.join(workdir, 'export'))
  formats, platforms = tuple(formats), tuple(platforms)
  check_request(workdir, output, formats, platforms, overwrite)  # before loading the run
  trained = inference.load(workdir, step)
  with files.staged(
      output,
      whole=True,
      # Again: the output may have changed meanwhile.
      before_publishing=lambda: check_request(workdir, output, formats, platforms, overwrite),
  ) as staging:
    with open(os.path.join(staging, LABELS_FILE), 'w') as f:
      f.write(''.join(f'{name}\n' for name in inference.class_names(trained)))
    if 'jax' in formats:
      write_jax(staging, trained, platforms)
    if 'savedmodel' in formats:
      write_savedmodel(staging, trained, platforms)
    with open(os.path.join(staging, METADATA_FILE), 'w') as f:
      json.dump(metadata(trained, workdir, formats, platforms), f, indent=2)
      f.write('\n')
  return output
