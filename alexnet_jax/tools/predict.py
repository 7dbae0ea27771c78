r"""Predicts image files with a trained network: the five most probable classes of each.

    python -m alexnet_jax.tools.predict --workdir=runs/quickstart --images=photo.jpg,more_photos/

prints a table, one row per image, of its five most probable classes with their probabilities
(Figure 4, left), and with `--json=FILE` writes them there. `--images` takes files (JPEG, PNG,
anything PIL opens) and directories (their image files, by extension, not recursively).

Each image is prepared exactly as the run's evaluation prepared its own (`inference.read_image`,
then `pipeline.EvalTransform`): decoded as the training pipeline decodes (grayscale repeated
into R, G and B, CMYK converted to RGB, alpha dropped, EXIF orientation ignored), its shorter side
resized to the run's resize_size (also up, for images smaller than the crop) and the central
square kept (section 2), then the centre crop, or with `--crops=10` the ten patches of section
4.1 with their softmax averaged, and the run's mean and std. An image that cannot be read is
skipped, named on stderr (one line each), and the rest are predicted; the exit status is 2 only
if none could be read (or for other bad input: one paragraph on stderr, nothing written).
"""

import os
import sys


from alexnet_jax.errors import ConfigError
from alexnet_jax.system import cli
from alexnet_jax.system import files
from alexnet_jax.trained import inference

USAGE = (
    'python -m alexnet_jax.tools.predict --workdir=DIR --images=FILE_OR_DIR[,...] [--crops=1|10] '
    '[--step=STEP] [--json=FILE] [--batch_size=N]'
)


def main(argv, flags) -> None:
  cli.begin(argv, USAGE)
  try:
    if flags.json:
      files.check_writable(os.path.dirname(os.path.abspath(flags.json)))
    trained = inference.load(flags.workdir, cli.step_flag(flags.step))
    predictions = inference.predict(
        trained, cli.listed(flags.images), flags.crops, flags.batch_size
    )
  except ConfigError as e:
    cli.fail(str(e))
  for path, why in predictions.skipped:
    sys.stderr.write(f'Skipped {path}: {why}\n')
  top5 = predictions.top5()
  header = ['image'] + [f'top-{i + 1}' for i in range(len(top5[0]))]
  rows = [[f] + [f'{name} {p:.1%}' for name, p in t] for f, t in zip(predictions.files, top5)]
  print(cli.table(header, rows))
  if flags.json:
    os.makedirs(os.path.dirname(os.path.abspath(flags.json)), exist_ok=True)
    files.write_json(flags.json, record(trained, predictions))
    print(f'written to {flags.json}')


def record(trained, predictions: inference.Predictions) -> dict:
  """What --json writes: the network, and each image's five classes with their probabilities."""
  return {
      'workdir': os.path.abspath(trained.workdir),
      'step': trained.step,
      'crops': predictions.crops,
      'predictions': [
          {'file': f, 'top5': [{'class': name, 'probability': p} for name, p in t]}
          for f, t in zip(predictions.files, predictions.top5())
      ],
      'skipped': [{'file': f, 'error': why} for f, why in predictions.skipped],
  }


def run() -> None:
  # Flags are defined here, not at import, so that importing this module changes nothing.
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string('workdir', None, 'A trained run.')
  flags.DEFINE_multi_string(
      'images', None, 'Image files and directories of them (repeated, or A,B,C).'
  )
  flags.DEFINE_integer(
      'crops', 1, "1: the centre crop; 10: section 4.1's ten patches, their softmax averaged."
  )
  flags.DEFINE_string('step', None, 'The checkpoint step (default: the latest).')
  flags.DEFINE_string('json', None, 'Also write the predictions to this JSON file.')
  cli.define_reading_flags(data_dir=False)
  cli.run_plain_command(main, USAGE, ('workdir', 'images'))


if __name__ == '__main__':
  run()
