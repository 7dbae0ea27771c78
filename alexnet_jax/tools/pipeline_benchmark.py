r"""The host input pipeline against an equivalent tf.data pipeline, in images per second per core.

    python -m alexnet_jax.tools.pipeline_benchmark --output=pipeline.json

What runs. Both pipelines read the same JPEG bytes from memory (`--images` 256x256 pictures of the
built-in `synthetic_shapes` drawer, JPEG quality 90 with 4:2:0 chroma like most photos; or
`--tfds=NAME` for the first images of a prepared TFDS split) and make float32 batches of 128 with
section 4.1's augmentation: decode, random crop, random horizontal flip, PCA colour noise with the
same eigen-values, mean subtraction.
- ours: `pipeline.train_dataset` exactly as training builds it (grain, `DecodingSource`,
  `TrainTransform`, `TrainBatch`), with `data_threads` threads and no worker processes, making
  float32 batches (`device_augment=False`), like for like with tf.data;
- ours, uint8: the same with `device_augment=True` (the default in training): uint8 crops and
  each example's draws, the rest left to the train step (`device_augment.py`). Its images/s per
  core is what a training host spends per image;
- tf.data: `tf.io.decode_jpeg` (integer-accurate DCT, as libjpeg-turbo's default that we use),
  crop, `tf.reverse`, cast, one add of (PCA shift - mean), `map(num_parallel_calls=k)`,
  `batch(128)`. When the stored images are larger than resize_size, each side uses the same trick:
  tf.data decodes at 1/2, 1/4 or 1/8 scale through `decode_jpeg(ratio=)` where that still covers
  resize_size and then `tf.image.resize(antialias=True)`; ours decodes at the smallest M/8 scale
  and resizes with PIL.

Per core, honestly: each pipeline runs in a process of its own (no shared interpreter, GIL or
idle TensorFlow threads), and for the k-core rows every thread of that process is pinned to the
same k cores (`os.sched_setaffinity` on each task of /proc/self/task, before the pipeline starts
its threads); grain gets `data_threads=k` and no worker processes, tf.data
`private_threadpool_size=k`, `max_intra_op_parallelism=1` and `num_parallel_calls=k`. The
2-core row adds ours with k grain worker processes of one thread each. Each pipeline is started
and warmed up once, then they are timed in alternation (`--repeats` times `--batches` batches
each, the order swapped every repeat), and the medians and their ratio are reported. Other
processes on the machine add noise to all alike; the ratio is the number to read.

The needed rate: a training step must never wait for data. `NEEDED` holds the images/s that the
paper's step at batch 32 and the quickstart's 112-pixel step of 32 consume, as measured on the
2-core CPU this was written on (docs/benchmark_history.md says by what); the table prints the
pipeline's rate as a multiple of each.
`stages` times the pieces of ours on one core, without grain (medians of 5 passes over a batch):
decoding (and, for comparison, PIL's decode with `Image.draft`), the per-example draws
(`TrainTransform.random_map`), the batch assembly (`TrainBatch`, the only pass over the output
pixels) into a fresh array and into a reused one, the uint8 batch `device_augment` sends instead,
and, for reference, a uint8 crop and stack alone and the float conversion alone.
"""

import dataclasses
import io
import json
import multiprocessing
import os
import statistics
import time
from typing import Any, Iterator, Sequence

from absl import app
from absl import flags
import numpy as np
from PIL import Image

from alexnet_jax.data import augment
from alexnet_jax.data.datasets import synthetic_shapes
from alexnet_jax.data import decode
from alexnet_jax.data import pipeline
from alexnet_jax.system import runtime
from alexnet_jax.tools import machine

NEEDED = {'paper step, batch 32 (~1.1 s)': 28.0, 'quickstart step, batch 32 (~0.29 s)': 110.0}
# (name, resize_size, image_size, cores)
ROWS = (
    ('paper 256 -> 224', 256, 224, 1),
    ('paper 256 -> 224', 256, 224, 2),
    ('quickstart 256 -> 128 -> 112', 128, 112, 1),
)


def make_jpegs(n: int, size: int = 256, quality: int = 90) -> list[dict[str, Any]]:
  """`n` records {'image': JPEG bytes, 'label'} of synthetic_shapes pictures (4:2:0 chroma)."""
  images, labels = synthetic_shapes.make_arrays(0, 'train', n, size)
  records = []
  for image, label in zip(images, labels):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format='JPEG', quality=quality)
    records.append({'image': buf.getvalue(), 'label': int(label)})
  return records


def tfds_jpegs(
    name: str, n: int, data_dir: str | None, split: str = 'train'
) -> list[dict[str, Any]]:
  """The first `n` records of a prepared TFDS split, images left encoded."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  source = tfds.data_source(
      name, split=split, data_dir=data_dir, decoders={'image': tfds.decode.SkipDecoding()}
  )
  return [
      {'image': source[i]['image'], 'label': int(source[i]['label'])}
      for i in range(min(n, len(source)))
  ]


def pipeline_config(
    resize_size: int, image_size: int, threads: int, batch_size: int = 128
) -> pipeline.DataConfig:
  """The paper's data (`pipeline.DataConfig`'s and `AugmentConfig`'s defaults, which are
  configs/alexnet.py's: tests/test_configs.py holds them equal) with this benchmark's sizes and
  threads (the sizes may be too small for the network, which this benchmark does not run)."""
  return pipeline.DataConfig(
      dataset='imagenet2012',
      resize_size=resize_size,
      image_size=image_size,
      batch_size=batch_size,
      data_threads=threads,
      data_workers=0,
      prefetch_batches=2,
      device_augment=False,  # float32 batches, as tf.data's: like for like
      cache_images_mib=0,  # every read decodes, as tf.data's does: like for like again
  )


def ours(
    records: Sequence[dict[str, Any]], config, workers: int = 0
) -> Iterator[dict[str, np.ndarray]]:
  """Our training pipeline; `workers` > 0: that many grain processes of one thread each."""
  if workers:
    config = dataclasses.replace(config, data_workers=workers, data_threads=1)
  source = decode.DecodingSource(records, min_size=config.resize_size)
  stream = pipeline.train_dataset(source, config)
  if stream.workers != workers:  # /dev/shm too small: a row of threads would pass for workers'
    raise RuntimeError(
        f'{workers} grain worker processes do not fit in /dev/shm here (the pipeline would read '
        'with threads); give the host a larger /dev/shm, or leave the workers rows out.'
    )
  return iter(stream)


# --- The tf.data reference ---


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  return tf


def tf_example(data, top, left, flip, alpha, config, stored_size: int | None = None):
  """One training example the tf.data way, given its draws (the tests feed both the same)."""
  tf = _tf()
  size, resize_size = config.image_size, config.resize_size
  ratio = 1
  while stored_size and ratio < 8 and stored_size // (2 * ratio) >= resize_size:
    ratio *= 2
  image = tf.io.decode_jpeg(data, channels=3, ratio=ratio, dct_method='INTEGER_ACCURATE')
  shape = tf.shape(image)
  if stored_size is None or stored_size // ratio != resize_size:
    # Shorter side to resize_size, centre square (augment.resize_shorter_and_center_crop).
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = resize_size / tf.minimum(h, w)
    new = tf.maximum(resize_size, tf.cast(tf.round(tf.stack([h, w]) * scale), tf.int32))
    image = tf.image.resize(image, new, antialias=True)
    image = tf.image.resize_with_crop_or_pad(image, resize_size, resize_size)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  image = image[top : top + size, left : left + size]
  image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
  aug = config.augment
  eigval = tf.constant(aug.eigval, tf.float32)
  eigvec = tf.constant(aug.eigvec, tf.float32)
  shift = tf.linalg.matvec(eigvec, alpha * eigval)
  return tf.cast(image, tf.float32) + (shift - tf.constant(aug.mean, tf.float32))


def tf_pipeline(
    records: Sequence[dict[str, Any]], config, stored_size: int | None
) -> Iterator[dict[str, np.ndarray]]:
  tf = _tf()
  margin = config.resize_size - config.image_size + 1
  pca_std = float(config.augment.pca_std)

  def augment_one(data, label):
    top = tf.random.uniform([], 0, margin, tf.int32)
    left = tf.random.uniform([], 0, margin, tf.int32)
    flip = tf.random.uniform([]) < 0.5
    alpha = tf.random.normal([3], 0.0, pca_std)
    return {
        'image': tf_example(data, top, left, flip, alpha, config, stored_size),
        'label': tf.cast(label, tf.int32),
    }

  threads = config.data_threads
  ds = tf.data.Dataset.from_tensor_slices(
      ([r['image'] for r in records], [r['label'] for r in records])
  )
  ds = ds.repeat().map(augment_one, num_parallel_calls=threads, deterministic=True)
  ds = ds.batch(config.batch_size, drop_remainder=True).prefetch(config.prefetch_batches)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  options.autotune.enabled = False
  return ds.with_options(options).as_numpy_iterator()


# --- Measurement ---


def pin_to_cores(cores: set[int]) -> None:
  """Every thread of this process (and any it starts later) runs on `cores` only."""
  for task in os.listdir('/proc/self/task'):
    try:
      os.sched_setaffinity(int(task), cores)
    except OSError:
      pass  # a thread that just ended


def _images_per_second(iterator: Iterator, batches: int, batch_size: int) -> float:
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def _serve(conn, kind: str, records, config, stored_size, cores: set[int], workers: int):
  """One pipeline in a process of its own, pinned to `cores`: times batches when asked."""
  runtime.tune_process()  # as a training process is
  pin_to_cores(cores)
  if kind == 'tf.data':
    it = tf_pipeline(records, config, stored_size)
  else:
    if kind == 'ours, uint8':  # what the host does when the step finishes the augmentation
      config = dataclasses.replace(config, device_augment=True)
    it = ours(records, config, workers)
  next(it)  # start threads and workers, trace tf functions
  conn.send('ready')
  while (request := conn.recv()) is not None:
    drain, batches = request
    for _ in range(drain):
      next(it)
    conn.send(_images_per_second(it, batches, config.batch_size))


def compare(
    pipelines: dict[str, tuple[str, int]],
    records,
    config,
    stored_size,
    cores: set[int],
    batches: int,
    repeats: int,
    drain: int,
) -> dict[str, list[float]]:
  """Images/s of each pipeline, timed in alternation (order swapped every repeat).

  `pipelines` maps a name to (kind, grain worker processes). Each runs in a process of its own,
  so neither shares an interpreter, a GIL or idle spinning threads with the other. A pipeline's
  threads keep working ahead after its timing until its buffers are full, so after each timing
  we wait until they must be (1.5 times the time `drain` batches took) before timing the other,
  and before each timing `drain` untimed batches (at least what the pipeline buffers) empty its
  buffers, so no batch made outside the timed window is counted.
  """
  context = multiprocessing.get_context('spawn')
  conns, procs = {}, []
  try:
    for name, (kind, workers) in pipelines.items():
      conns[name], child = context.Pipe()
      procs.append(
          context.Process(
              target=_serve,
              daemon=False,
              args=(child, kind, records, config, stored_size, cores, workers),
          )
      )
      procs[-1].start()
    for conn in conns.values():
      assert conn.recv() == 'ready'
    rates = {name: [] for name in pipelines}
    names = list(pipelines)
    for r in range(repeats):
      for name in (names if r % 2 == 0 else names[::-1]):
        conns[name].send((drain, batches))
        rate = conns[name].recv()
        rates[name].append(rate)
        time.sleep(1.5 * drain * config.batch_size / rate)
    return rates
  finally:
    for conn in conns.values():
      conn.send(None)
    for proc in procs:
      proc.join(timeout=60)
      if proc.is_alive():
        proc.terminate()


def stages(records: Sequence[dict[str, Any]], config) -> dict[str, float]:
  """Microseconds per image of each piece of ours, one thread, no grain (and PIL's decode)."""
  n = len(records)
  size = config.resize_size
  tp = time.perf_counter()
  for r in records:
    with Image.open(io.BytesIO(r['image'])) as image:
      image.draft('RGB', (size, size))
      np.asarray(image.convert('RGB'))
  t0 = time.perf_counter()
  decoded = [{'image': decode.decode_image(r['image'], size), 'label': r['label']} for r in records]
  t1 = time.perf_counter()
  transform = pipeline.TrainTransform(config)
  drawn = [
      transform.random_map(e, np.random.Generator(np.random.Philox(key=[i, 0])))
      for i, e in enumerate(decoded)
  ]
  t2 = time.perf_counter()
  assemble = pipeline.TrainBatch(transform)
  assemble(drawn)  # into a fresh array
  t2b = time.perf_counter()
  assemble(drawn)  # into the first call's array, as in a running pipeline
  t3 = time.perf_counter()
  uint8 = pipeline.TrainBatch(transform, device_augment=True)
  uint8(drawn)
  t3a = time.perf_counter()
  uint8(drawn)  # reused, as above
  t3b = time.perf_counter()
  s = config.image_size
  t3 = time.perf_counter()
  crops = np.stack(
      [augment.window_rows(e['image'], *e['window'][:2], s, e['window'][2]) for e in drawn]
  )
  t4 = time.perf_counter()
  np.add(crops, np.float32(1.0), dtype=np.float32)
  t5 = time.perf_counter()
  us = lambda a, b: (b - a) / n * 1e6
  return {
      'pil_decode_us': us(tp, t0),
      'decode_us': us(t0, t1),
      'draws_us': us(t1, t2),
      'batch_assembly_fresh_array_us': us(t2, t2b),
      'batch_assembly_us': us(t2b, t3),
      'uint8_batch_assembly_us': us(t3a, t3b),
      'uint8_crop_and_stack_us': us(t3, t4),
      'float_conversion_alone_us': us(t4, t5),
  }


def run(
    records: Sequence[dict[str, Any]],
    rows=ROWS,
    batches: int = 8,
    repeats: int = 5,
    batch_size: int = 128,
    stored_size: int | None = 256,
) -> dict[str, Any]:
  """The benchmark on `records`; returns the table's rows (and per-stage times) as a dict."""
  all_cores = sorted(os.sched_getaffinity(0))
  results = []
  for name, resize_size, image_size, cores in rows:
    if cores > len(all_cores):
      continue
    pin_to_cores(set(all_cores[:cores]))
    config = pipeline_config(resize_size, image_size, cores, batch_size)
    # One core, nothing else of ours running: each piece of our pipeline, without grain.
    stage_times = None
    if cores == 1:  # medians of 5 passes over one batch of images
      passes = [stages(records[:batch_size], config) for _ in range(5)]
      stage_times = {k: statistics.median(p[k] for p in passes) for k in passes[0]}
    pipelines = {
        'ours': ('ours', 0),
        'tf.data': ('tf.data', 0),
        'ours, uint8': ('ours, uint8', 0),
    }
    if cores > 1:  # threads share the GIL for the per-example Python work; processes do not
      pipelines['ours, processes'] = ('ours', cores)
    rates = compare(
        pipelines,
        records,
        config,
        stored_size,
        set(all_cores[:cores]),
        batches,
        repeats,
        drain=config.prefetch_batches + cores + 1,
    )
    row = {
        'name': name,
        'cores': cores,
        'resize_size': resize_size,
        'image_size': image_size,
        'rates': rates,
        **{k: statistics.median(v) for k, v in rates.items()},
    }
    row['ratio'] = {k: row[k] / row['tf.data'] for k in rates if k != 'tf.data'}
    row['per_core'] = {k: row[k] / cores for k in rates}
    if stage_times:
      row['stages'] = stage_times
    results.append(row)
  pin_to_cores(set(all_cores))
  return {
      'rows': results,
      'needed_images_per_second': NEEDED,
      'images': len(records),
      'batch_size': batch_size,
      'batches_per_timing': batches,
      'repeats': repeats,
      'cpu': machine.cpu_name(),
      'cores_available': len(all_cores),
  }


def table(result: dict[str, Any]) -> str:
  need = list(result['needed_images_per_second'].values())
  lines = [
      f'| pipeline | ours | cores | ours img/s | tf.data img/s | ours / tf.data | '
      f'ours per core | ours / {need[0]:g} img/s | ours / {need[1]:g} img/s |',
      '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  for r in result['rows']:
    for k, ratio in r['ratio'].items():
      how = 'processes' if 'processes' in k else 'threads'
      if 'uint8' in k:  # not like for like: the device does the rest
        how = 'threads, uint8 to the device'
      lines.append(
          f"| {r['name']} | {how} | {r['cores']} | {r[k]:.0f} | {r['tf.data']:.0f} | "
          f"{ratio:.2f} | {r['per_core'][k]:.0f} | {r[k] / need[0]:.0f}x | "
          f'{r[k] / need[1]:.0f}x |'
      )
  for r in result['rows']:
    if 'stages' in r:
      parts = ', '.join(f'{k[:-3]} {v:.0f}' for k, v in r['stages'].items())
      lines.append(f"\n{r['name']}, one core, microseconds per image: {parts}")
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def _define_flags():
  # Defined only when run as a command, so that tests and notebooks can import this module next
  # to the other commands (whose flags share names such as --output).
  flags.DEFINE_integer('images', 256, 'Distinct JPEGs held in memory (cycled).')
  flags.DEFINE_string('tfds', None, 'Read the JPEGs from this prepared TFDS dataset instead.')
  flags.DEFINE_string('data_dir', None, 'TFDS data_dir for --tfds.')
  flags.DEFINE_integer('batches', 8, 'Batches of 128 per timing.')
  flags.DEFINE_integer('repeats', 5, 'Alternating timings per pipeline; medians are reported.')
  flags.DEFINE_string('output', None, 'Also write the result as JSON to this file.')


def main(argv):
  del argv
  runtime.tune_process()
  if FLAGS.tfds:
    records, stored_size = tfds_jpegs(FLAGS.tfds, FLAGS.images, FLAGS.data_dir), None
  else:
    records, stored_size = make_jpegs(FLAGS.images), 256
  result = run(records, batches=FLAGS.batches, repeats=FLAGS.repeats, stored_size=stored_size)
  print(table(result))
  print(
      f"\n{result['cpu']}; every thread pinned to the row's cores (os.sched_setaffinity); "
      'grain data_threads=k, no workers; tf.data private_threadpool_size=k, '
      'max_intra_op_parallelism=1, num_parallel_calls=k; medians of alternating timings.'
  )
  if FLAGS.output:
    with open(FLAGS.output, 'w') as f:
      json.dump(result, f, indent=1)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
