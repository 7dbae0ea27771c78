"""Features on disk and Figure 4's retrieval: one layer's activations of a split or of image files
streamed to `.npy` (`write_features`), and the rows nearest to a query in Euclidean distance
(`nearest`, `retrieve`), read a chunk at a time so a large split's features never sit in memory
whole. The activations come from `inference`'s forward pass; `python -m alexnet_jax.tools.features`
is flags around these functions."""

import json
import os
import shutil
from typing import Sequence

import numpy as np

from alexnet_jax.errors import ConfigError
from alexnet_jax.trained import analysis
from alexnet_jax.trained import inference


class _RowFile:
  """A .npy file whose rows arrive batch by batch: they go to a scratch file as they come, and
  the .npy is written when their number is known (a file of images may skip some)."""

  def __init__(self, path: str):
    self.path, self.count, self.row_shape = path, 0, None
    self.scratch = open(f'{path}.rows', 'w+b')

  def append(self, rows: np.ndarray) -> None:
    rows = np.ascontiguousarray(rows, np.float32)
    self.row_shape = rows.shape[1:]
    self.count += len(rows)
    self.scratch.write(rows.tobytes())

  def finish(self) -> None:
    header = {'descr': '<f4', 'fortran_order': False, 'shape': (self.count,) + self.row_shape}
    with open(self.path, 'wb') as f:
      np.lib.format.write_array_header_1_0(f, header)
      self.scratch.seek(0)
      shutil.copyfileobj(self.scratch, f, 1 << 24)
    self.scratch.close()
    os.remove(self.scratch.name)


def write_features(
    trained: inference.Trained,
    directory: str,
    layer: str = 'fc7',
    split: str | None = None,
    images: Sequence[str] | None = None,
    batch_size: int | None = None,
) -> dict:
  """One layer's activations (centre crop, towers joined) of every example of `split`, or of
  image files, streamed into `directory` (a `files.staged` one for all or nothing): features.npy
  (float32, N x ...), labels.npy (split) or files.txt (images, one per line), and info.json,
  which this returns."""
  (layer,) = inference.check_layers(trained, layer)
  info = {
      'workdir': os.path.abspath(trained.workdir),
      'step': trained.step,
      'layer': layer,
      'class_names': list(inference.class_names(trained)),
  }
  if images is None:
    data, expected = inference.split_data(trained, split, 1, batch_size)
    rows, labels = _RowFile(os.path.join(directory, 'features.npy')), []
    for out in inference.split_outputs(trained, split, layers=(layer,), batch_size=batch_size):
      rows.append(out[layer])
      labels.append(out['labels'])
    inference.check_count(rows.count, expected, data.eval_split)
    np.save(os.path.join(directory, 'labels.npy'), np.concatenate(labels))
    info['split'] = data.eval_split
  else:
    rows, files, skipped = _RowFile(os.path.join(directory, 'features.npy')), [], []
    for out in inference.image_outputs(
        trained, images, layers=(layer,), batch_size=batch_size, skipped=skipped
    ):
      rows.append(out[layer])
      files.extend(out['files'])
    if not files:
      raise inference.no_images_error(images, skipped)
    with open(os.path.join(directory, 'files.txt'), 'w') as f:
      f.writelines(f'{name}\n' for name in files)
    info['skipped'] = [{'file': f, 'error': why} for f, why in skipped]
  rows.finish()
  info.update(count=rows.count, shape=[rows.count, *rows.row_shape])
  with open(os.path.join(directory, 'info.json'), 'w') as f:
    json.dump(info, f, indent=1)
  return info


def nearest(
    query: np.ndarray,
    database: np.ndarray,
    k: int,
    exclude: Sequence[int] | None = None,
    chunk_rows: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
  """The `k` rows of `database` nearest to each row of `query` in Euclidean distance (Figure 4:
  over fc7), nearest first, and their distances; rows are flattened. `exclude` holds, per query,
  a database row to leave out (its own, for a query taken from the database) or -1.

  The database is read `chunk_rows` at a time, each chunk searched by `analysis.nearest` and the
  candidates merged, so a memory-mapped features.npy of a large split never sits in memory whole.
  """
  query = np.asarray(query, np.float64).reshape(len(query), -1)
  exclude = np.full(len(query), -1) if exclude is None else np.asarray(exclude, np.int64)
  k = min(k, len(database) - int(np.any(exclude >= 0)))
  found_rows, found_distances = [], []
  for start in range(0, len(database), chunk_rows):
    block = np.asarray(database[start : start + chunk_rows], np.float64).reshape(-1, query.shape[1])
    own = np.where((exclude >= start) & (exclude < start + len(block)), exclude - start, -1)
    local = analysis.nearest(query, block, min(k, len(block)), exclude=own)
    distance = np.linalg.norm(block[local] - query[:, None], axis=-1)
    distance[local == own[:, None]] = np.inf  # a chunk smaller than k returns its excluded row
    found_rows.append(local + start)
    found_distances.append(distance)
  rows, distances = np.concatenate(found_rows, 1), np.concatenate(found_distances, 1)
  order = np.argsort(distances, axis=1, kind='stable')[:, :k]
  return np.take_along_axis(rows, order, 1), np.take_along_axis(distances, order, 1)


def retrieve(
    directory: str,
    query: Sequence[int] | Sequence[str],
    k: int = 5,
    trained: inference.Trained | None = None,
) -> dict:
  """Figure 4's retrieval over a `write_features` directory: for each query, the `k` rows nearest
  to it, nearest first, each with its distance and its class (a split's rows) or its file.

  A query is a row of the directory's features (an index; its own row is left out), or an image
  file, whose features at the directory's layer `trained` computes. Returns what nearest.json
  holds: the layer, k, and per query its neighbours; 'skipped' names query images not read.
  """
  if k < 1:
    raise ConfigError(f'k={k}: ask for at least one nearest row (--k=5, as Figure 4 shows).')
  with open(os.path.join(directory, 'info.json')) as f:
    info = json.load(f)
  database = np.load(os.path.join(directory, 'features.npy'), mmap_mode='r')
  if 'split' in info:
    labels, names = np.load(os.path.join(directory, 'labels.npy')), info['class_names']
    describe = lambda row: {'row': int(row), 'class': names[labels[row]]}
  else:
    with open(os.path.join(directory, 'files.txt')) as f:
      files = f.read().splitlines()
    describe = lambda row: {'row': int(row), 'file': files[row]}
  skipped = []
  if all(isinstance(q, (int, np.integer)) for q in query):
    check_rows(query, len(database))
    vectors, exclude, queries = database[list(query)], list(query), [describe(q) for q in query]
  else:
    if trained is None:
      raise ValueError('Image queries need the network (`trained`) to compute their features.')
    out = inference.image_features(trained, query, info['layer'])
    vectors, exclude, queries = out[info['layer']], None, [{'file': f} for f in out['files']]
    skipped = [{'file': f, 'error': why} for f, why in out['skipped']]
  rows, distances = nearest(vectors, database, k, exclude)
  for record, found, distance in zip(queries, rows, distances):
    record['neighbours'] = [{**describe(j), 'distance': float(d)} for j, d in zip(found, distance)]
  del database  # the memory map, before the directory's files move
  return {'layer': info['layer'], 'k': int(rows.shape[1]), 'queries': queries, 'skipped': skipped}


def check_rows(rows: Sequence[int], count: int) -> None:
  """ConfigError unless every query row is one of `count` rows of features."""
  outside = [r for r in rows if not 0 <= r < count]
  if outside:
    raise ConfigError(
        f'Query row {outside[0]} is not one of the {count} rows of the features; pass rows 0 to '
        f'{count - 1}, or image files.'
    )
