r"""Exports a trained run for serving without this package (`trained.exporting` says what):

    python -m alexnet_jax.tools.export --workdir=runs/quickstart

writes runs/quickstart/export/: model.jax and weights.npz (a serialized jax.export program with a
symbolic batch size), saved_model/ (TensorFlow), labels.txt and metadata.json. `--step=N` exports
that checkpoint instead of the latest, `--output=DIR` writes elsewhere, `--format=jax` (or
`savedmodel`) writes one format, `--platforms=cpu` lowers for the CPU only, and `--overwrite`
replaces an earlier export.
"""

import json
import os
import sys


from alexnet_jax.errors import ConfigError
from alexnet_jax.system import cli
from alexnet_jax.trained import exporting

COMMAND = 'python -m alexnet_jax.tools.export'
USAGE = (
    f'Usage: {COMMAND} --workdir=DIR [--step=N] [--output=DIR/export] '
    '[--format=jax,savedmodel] [--platforms=cpu,cuda] [--overwrite].'
)


def main(argv, flags) -> None:
  """The command, given absl's parsed flags (or any object with the same attributes)."""
  cli.begin(argv, USAGE)
  try:
    output = exporting.export(
        flags.workdir,
        flags.output,
        flags.step,
        formats=flags.format,
        platforms=flags.platforms,
        overwrite=flags.overwrite,
    )
  except ConfigError as e:
    cli.fail(str(e))
  print(summary(output), flush=True)


def summary(output: str) -> str:
  """What the export holds, from its metadata.json, in a few lines."""
  with open(os.path.join(output, exporting.METADATA_FILE)) as f:
    meta = json.load(f)
  source, shape = meta['source'], meta['input']['shape']
  lines = [f'Exported step {source["step"]} of {source["workdir"]} to {output}:']
  if 'jax' in meta['formats']:
    jax_files = meta['formats']['jax']
    lines.append(
        f'  {jax_files["program"]} + {jax_files["weights"]}: jax.export, '
        f'platforms {", ".join(jax_files["platforms"])}'
    )
  if 'savedmodel' in meta['formats']:
    saved = meta['formats']['savedmodel']
    lines.append(f'  {saved["directory"]}/: TensorFlow SavedModel, signature {saved["signature"]}')
  lines.append(
      f'  input: float32 images ({", ".join(map(str, shape))}), RGB 0..255 crops ('
      f'{meta["input"]["crop"]}); outputs: logits, probabilities over '
      f'{len(meta["class_names"])} classes (labels.txt); metadata.json has the rest.'
  )
  return '\n'.join(lines)


def run() -> None:
  # Flags are defined here, not at import, so that importing this module changes nothing.
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string('workdir', None, 'The run to export: a workdir with checkpoints.')
  flags.DEFINE_integer('step', None, 'The checkpoint to export (default: the latest).')
  flags.DEFINE_string('output', None, 'Where to write the export (default: WORKDIR/export).')
  flags.DEFINE_list('format', list(exporting.FORMATS), 'Formats to write: jax, savedmodel.')
  flags.DEFINE_list(
      'platforms',
      list(exporting.PLATFORMS),
      'Platforms to lower for (cpu, cuda, rocm, tpu); none of them needs to be present.',
  )
  flags.DEFINE_bool('overwrite', False, 'Replace an earlier export at --output.')
  flags.mark_flags_as_required(['workdir'])

  def parse(argv):
    # A missing or malformed flag is one paragraph, as for main, not absl's usage dump.
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      sys.stderr.write(f'\nError: {" ".join(str(e).split()).rstrip(".")}. {USAGE}\n')
      sys.exit(2)

  app.run(lambda argv: main(argv, flags.FLAGS), flags_parser=parse)


if __name__ == '__main__':
  run()
