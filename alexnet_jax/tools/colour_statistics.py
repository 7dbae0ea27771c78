r"""Computes a training set's colour statistics and writes them: the mean image and the RGB PCA.

    python -m alexnet_jax.tools.colour_statistics --config=configs/alexnet.py --output=stats.npz

then train with `--config.augment.stats_file=stats.npz`, adding `--config.augment.mean=image` for
the paper's mean image (section 2). Any config field can be overridden as in `main`
(`--config.data_dir=...`); `--max_images=N` reads N images spread evenly over the split.

Every image of `config.train_split` goes through the resize the training transform applies
(shorter side to `config.resize_size`, central square: `augment.to_resize_size`), and one streaming
pass of `colour.ColourMoments` accumulates the sums; `alexnet_jax.data.colour` says what the file
holds and loads it for training.
"""

import os
import sys
import time
from typing import Any

from absl import logging
import grain
import numpy as np

from alexnet_jax import configs
from alexnet_jax.data import augment
from alexnet_jax.data import colour
from alexnet_jax.data import pipeline
from alexnet_jax.errors import ConfigError
from alexnet_jax import settings
from alexnet_jax.system import files
from alexnet_jax.system import runtime

COMMAND = colour.COMMAND


def subsample(num_examples: int, max_images: int | None) -> np.ndarray:
  """Indices of `max_images` examples spread evenly over the split (all of them if None)."""
  if max_images is None or max_images <= 0 or max_images >= num_examples:
    return np.arange(num_examples)
  return np.arange(max_images, dtype=np.int64) * num_examples // max_images


def compute_statistics(
    config: pipeline.DataConfig,
    max_images: int | None = None,
    threads: int | None = None,
    log_every_s: float = 30.0,
) -> dict[str, Any]:
  """The colour statistics of `config`'s training split at `config.resize_size` (see above).

  Images are read, decoded and resized by `threads` reader threads (grain; default: one per
  CPU), in order, and summed in this thread.
  """
  pipeline.get_info(config)  # checks the dataset and split, prepares a built-in one
  # The training pixels exactly as the input pipeline decodes them.
  source = pipeline.decoding_source(config, config.train_split)
  indices = subsample(len(source), max_images)
  size = config.resize_size

  def resized(k: int):
    # The resize the training transform applies (section 2).
    image = augment.to_resize_size(source[int(indices[k])][pipeline.IMAGE_KEY], size)
    return (image,) + colour.image_moments(image)

  threads = threads or os.cpu_count() or 1
  ds = (
      grain.MapDataset.range(len(indices))
      .map(resized)
      .to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4 * threads))
  )
  moments = colour.ColourMoments(size)
  start = last_log = time.time()
  logging.info(
      'Colour statistics of %s/%s: %d of %d images at %dx%d, %d threads.',
      config.dataset,
      config.train_split,
      len(indices),
      len(source),
      size,
      size,
      threads,
  )
  for image, pixel_sum, outer_sum in ds:
    moments.add(image, pixel_sum, outer_sum)
    now = time.time()
    if now - last_log >= log_every_s:
      last_log, done = now, moments.num_images
      rate = done / (now - start)
      logging.info(
          '%d / %d images (%.1f%%), %.0f images/s, %.1f min to go.',
          done,
          len(indices),
          100 * done / len(indices),
          rate,
          (len(indices) - done) / rate / 60,
      )
  stats = moments.result()
  logging.info('Read %d images in %.1f s.', moments.num_images, time.time() - start)
  stats.update(dataset=np.str_(config.dataset), split=np.str_(config.train_split))
  return stats


def save(stats: dict[str, Any], path: str) -> None:
  """Writes `stats` to exactly `path` (np.savez would append .npz), all at once."""
  with files.written(path, 'wb') as f:
    np.savez(f, **stats)


def summary(stats: dict[str, Any], path: str) -> str:
  """What was computed, and the flags that use it."""
  fmt = lambda v: '(' + ', '.join(f'{x:.4f}' for x in np.ravel(v)) + ')'
  vec = stats['pca_eigvec']
  return '\n'.join(
      [
          f'{int(stats["num_images"])} images of {stats["dataset"]}/{stats["split"]} at '
          f'{int(stats["resize_size"])}x{int(stats["resize_size"])} -> {path}',
          f'  mean_rgb   {fmt(stats["mean_rgb"])}   (0..255)',
          f'  std_rgb    {fmt(stats["std_rgb"])}',
          f'  pca_eigval {fmt(stats["pca_eigval"])}   (255 * eig(cov(pixels / 255)), the scale of '
          f'augment.IMAGENET_PCA_EIGVAL {fmt(augment.IMAGENET_PCA_EIGVAL)})',
          '  pca_eigvec (columns) ' + ', '.join(fmt(vec[:, i]) for i in range(3)),
          'Train with it (mean_rgb, pca_eigval and pca_eigvec come from the file):',
          f'  --config.augment.stats_file={path}',
          "and for the paper's mean image (section 2) instead of the per-channel mean:",
          f'  --config.augment.mean=image --config.augment.stats_file={path}',
          "To also standardise pixels with this set's deviation:",
          f'  --config.augment.std_rgb="{fmt(stats["std_rgb"])}"',
      ]
  )


# --- Command line ---


def main(argv, flags) -> None:
  if len(argv) > 1:
    sys.stderr.write(
        f'\nError: unexpected arguments {" ".join(argv[1:])!r}. Everything is a flag: '
        '--config=FILE, --output=FILE.npz, --config.FIELD=VALUE overrides.\n'
    )
    sys.exit(2)
  runtime.tune_process()
  config, output = flags.config, flags.output
  try:
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
      raise ConfigError(
          f'Cannot write --output={output!r}: {directory} is not a directory you '
          'can write to. Pass a path in a writable directory.'
      )
    # The statistics are what this computes: the data settings must not need a file yet.
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.augment.stats_file, config.augment.mean = None, 'rgb'
    stats = compute_statistics(settings.from_config(config).data, flags.max_images, flags.threads)
  except ConfigError as e:
    sys.stderr.write(f'\nError: {e}\n')
    sys.exit(2)
  save(stats, output)
  print(summary(stats, output))


def run() -> None:
  # Flags are defined here, not at import, so that tests and notebooks can import this module next
  # to main's flags.
  from absl import app
  from absl import flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file(
      'config',
      None,
      'A config file (configs/alexnet.py) or an installed config by name (alexnet, quickstart).',
      lock_config=True,
  )
  flags.DEFINE_string('output', None, 'Where to write the statistics (.npz).')
  flags.DEFINE_integer(
      'max_images',
      None,
      'Read only this many training images, spread evenly ' 'over the split (default: all).',
  )
  flags.DEFINE_integer('threads', None, 'Reader threads (default: one per CPU).')
  flags.mark_flags_as_required(['config', 'output'])

  def parse(argv):
    # As main's parser: a config that fails to load, a missing flag or a bad override is one
    # paragraph, not a traceback.
    try:
      argv = flags.FLAGS(configs.resolve_config_flags(argv))
      flags.FLAGS.config.get('dataset')  # a config file that failed to load raises only when used
      return argv
    except (
        OSError,
        ImportError,
        AttributeError,
        KeyError,
        flags.Error,
        TypeError,
        ValueError,
    ) as e:
      problem = ' '.join(str(e).split()).rstrip('.')
      sys.stderr.write(
          f'\nError: {problem}. Usage: {COMMAND} '
          '[--max_images=N] [--config.FIELD=VALUE ...]; CONFIG is a config file or an '
          'installed config by name (alexnet, quickstart:tiny); the config fields are listed in '
          'configs/alexnet.py.\n'
      )
      sys.exit(2)

  app.run(lambda argv: main(argv, flags.FLAGS), flags_parser=parse)


if __name__ == '__main__':
  run()
