r"""Writes any layer's activations over a split or image files, and finds nearest neighbours.

    python -m alexnet_jax.tools.features --workdir=runs/quickstart                 # fc7, eval split
    python -m alexnet_jax.tools.features --workdir=runs/quickstart --layer=conv5 --split=train
    python -m alexnet_jax.tools.features --workdir=runs/quickstart --query=0,17 --k=5
    python -m alexnet_jax.tools.features --workdir=runs/quickstart --images=photos/ --query=a.jpg

writes, in `--output` (default `<workdir>/features/<split or images>_<layer>`), features.npy
(float32, one row per example or image: the layer's activations from the centre crop, both towers
side by side on the channel axis; conv and pool layers keep their H x W x C shape), labels.npy (a
split's labels) or files.txt (the images read, one per line), and info.json (workdir, step,
layer, shape, class names, and the images skipped). The layers are the keys of
`models.AlexNet.features`: conv1..conv5, norm1, norm2, pool1, pool2, pool5, fc6, fc7, fc8.

With `--query`, rows of those features (indices, e.g. `--query=0,17`; a row leaves itself out)
or image files are matched to their `--k` nearest rows in Euclidean distance, what Figure 4 of
the paper shows for fc7: printed as a table and written to nearest.json. Batches are streamed to
disk, so a large split's images are never held. Bad input (a workdir without checkpoints, a step,
split or layer that does not exist, no readable image) is one paragraph on stderr, exit status 2,
and nothing written; unreadable images among readable ones are skipped and named on stderr.
"""

import os
import sys


from alexnet_jax.errors import ConfigError
from alexnet_jax.system import cli
from alexnet_jax.system import files
from alexnet_jax.trained import inference
from alexnet_jax.trained import retrieval

USAGE = (
    'python -m alexnet_jax.tools.features --workdir=DIR [--layer=fc7] [--split=SPLIT | '
    '--images=FILE_OR_DIR[,...]] [--query=ROW,... | --query=FILE,...] [--k=5] [--step=STEP] '
    '[--data_dir=DIR] [--batch_size=N] [--output=DIR]'
)
FILES = ('features.npy', 'labels.npy', 'files.txt', 'info.json', 'nearest.json')


def main(argv, flags) -> None:
  cli.begin(argv, USAGE)
  images = cli.listed(flags.images) or None
  query = cli.listed(flags.query)
  if query and all(q.isdigit() for q in query):
    query = [int(q) for q in query]  # rows of the features, not files
  overrides = {'data_dir': flags.data_dir} if flags.data_dir else {}
  try:
    if images and flags.split:
      raise ConfigError('Pass --split or --images, not both: the features are of one or the other.')
    trained = inference.load(flags.workdir, cli.step_flag(flags.step), **overrides)
    (layer,) = inference.check_layers(trained, flags.layer)
    split = None if images else flags.split or trained.run.data.eval_split
    if query and isinstance(query[0], int) and not images:  # before the split is read
      retrieval.check_rows(query, inference.split_data(trained, split)[1])
    output = flags.output or inference.default_features_dir(flags.workdir, split, layer)
    with files.staged(output, replaces=FILES) as stage:
      info = retrieval.write_features(trained, stage, layer, split, images, flags.batch_size)
      found = retrieval.retrieve(stage, query, flags.k, trained) if query else None
      if found:
        files.write_json(os.path.join(stage, 'nearest.json'), found)
  except ConfigError as e:
    cli.fail(str(e))
  for role, skipped in [
      ('', info.get('skipped', [])),
      ('query ', found['skipped'] if found else []),
  ]:
    for image in skipped:
      sys.stderr.write(f'Skipped {role}{image["file"]}: {image["error"]}\n')
  print(
      f'{layer} of {info["count"]} {"images" if images else "examples of " + split}, '
      f'shape {tuple(info["shape"])}: written to {output} (features.npy, '
      f'{"files.txt" if images else "labels.npy"}, info.json{", nearest.json" if found else ""})'
  )
  if found:
    print(f'\nThe {found["k"]} nearest rows in {layer} space (Euclidean distance, Figure 4):')
    print(neighbours_table(found))


def neighbours_table(found: dict) -> str:
  """One line per (query, neighbour): the query, the rank, the row, its class or file, distance."""
  rows = []
  for query in found['queries']:
    about = query.get('class', query.get('file'))
    shown = f'{query["row"]} ({about})' if 'row' in query else about
    for rank, n in enumerate(query['neighbours'], 1):
      about = n.get('class', n.get('file'))
      rows.append([shown if rank == 1 else '', rank, n['row'], about, f'{n["distance"]:.4g}'])
  of_files = any('file' in n for q in found['queries'] for n in q['neighbours'])
  return cli.table(['query', 'rank', 'row', 'file' if of_files else 'class', 'distance'], rows)


def run() -> None:
  # Flags are defined here, not at import, so that importing this module changes nothing.
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string('workdir', None, 'A trained run.')
  flags.DEFINE_string(
      'layer', 'fc7', 'conv1..conv5, norm1, norm2, pool1, pool2, pool5, fc6, fc7 or fc8.'
  )
  flags.DEFINE_string('split', None, "A split or TFDS slice (default: the run's eval_split).")
  flags.DEFINE_multi_string(
      'images', None, 'Image files and directories of them, instead of a split.'
  )
  flags.DEFINE_multi_string(
      'query', None, 'Rows of the features (0,17) or image files: find their nearest rows.'
  )
  flags.DEFINE_integer('k', 5, 'How many nearest rows per query.')
  flags.DEFINE_string('step', None, 'The checkpoint step (default: the latest).')
  cli.define_reading_flags()
  flags.DEFINE_string('output', None, 'Directory for features.npy and the rest.')
  cli.run_plain_command(main, USAGE)


if __name__ == '__main__':
  run()
