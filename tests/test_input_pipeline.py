"""The training stream: exact restore, process-count independence, decoding, bad files, pixels."""

import dataclasses
import io
import math
import logging
import multiprocessing
import struct
import zlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from alexnet_jax.data import augment
from alexnet_jax.data.datasets import synthetic_shapes
from alexnet_jax.data import decode
from alexnet_jax.data import examples
from alexnet_jax.data import pipeline
from alexnet_jax.data import workers
from alexnet_jax import settings


def _config(config, workers=0, pca_std=None) -> pipeline.DataConfig:
  """The tiny recipe's data settings, smaller still (images too small for the network, which
  these tests do not run); the dataset checked and prepared."""
  data = settings.from_config(config).data
  augment = data.augment if pca_std is None else dataclasses.replace(data.augment, pca_std=pca_std)
  data = dataclasses.replace(
      data, batch_size=8, data_workers=workers, augment=augment, image_size=40, resize_size=48
  )  # 256 -> DCT 1/4 = 64 -> 48
  pipeline.get_info(data)
  return data


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b, strict=True):
    # A device-augmented batch (the default): uint8 crops with their reflections, shifts, windows.
    assert sorted(x) == sorted(y) == ['flip', 'image', 'label', 'shift', 'window']
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_a_restored_iterator_continues_exactly(tiny_data_dir, tiny_config):
  config = _config(tiny_config())
  # 320 examples / 8 = 40 batches an epoch: start near the end of an epoch so the M batches
  # after the restore cross into the next epoch's permutation.
  first = iter(pipeline.create_train_dataset(config))
  _take(first, 38)
  state = first.get_state()
  expected = _take(first, 4)

  restored = iter(pipeline.create_train_dataset(config))
  restored.set_state(state)
  _assert_same_batches(_take(restored, 4), expected)
  # The two epochs really differ (a new permutation), so the test could tell them apart.
  assert not np.array_equal(expected[1]['image'], expected[2]['image'])


@pytest.mark.slow
def test_worker_processes_yield_the_same_stream_and_restore_exactly(tiny_data_dir, tiny_config):
  threads = iter(pipeline.create_train_dataset(_config(tiny_config())))
  expected = _take(threads, 42)[38:]
  config = _config(tiny_config(), workers=1)
  first = iter(pipeline.create_train_dataset(config))
  _take(first, 38)
  state = first.get_state()
  _assert_same_batches(_take(first, 4), expected)
  restored = iter(pipeline.create_train_dataset(config))
  restored.set_state(state)
  _assert_same_batches(_take(restored, 4), expected)


def test_global_batches_do_not_depend_on_the_process_count(tiny_data_dir, tiny_config):
  config = _config(tiny_config())
  one = _take(iter(pipeline.create_train_dataset(config, 0, 1)), 3)
  halves = [_take(iter(pipeline.create_train_dataset(config, p, 2)), 3) for p in (0, 1)]
  for k in range(3):
    assert halves[0][k]['label'].shape == (4,)
    np.testing.assert_array_equal(
        np.concatenate([halves[0][k]['image'], halves[1][k]['image']]), one[k]['image']
    )
    np.testing.assert_array_equal(
        np.concatenate([halves[0][k]['label'], halves[1][k]['label']]), one[k]['label']
    )


def test_a_batch_is_the_paper_augmentation_of_its_examples(tiny_data_dir, tiny_config):
  """TrainTransform's draws + TrainBatch against the formula, written out naively."""
  config = _config(tiny_config(), pca_std=0.5)  # large enough that a wrong sign or order shows
  source = pipeline.decoding_source(config, config.train_split)
  transform = pipeline.TrainTransform(config)
  elements = [transform.random_map(source[i], np.random.default_rng(i)) for i in range(6)]
  batch = pipeline.TrainBatch(transform)(elements)
  assert batch['image'].shape == (6, 40, 40, 3) and batch['image'].dtype == np.float32

  aug = config.augment
  # The recipe's published constants (configs/quickstart.py), not the pipeline's copies of them.
  eigval = np.asarray(augment.IMAGENET_PCA_EIGVAL)
  eigvec = np.asarray(augment.IMAGENET_PCA_EIGVEC)
  flips = set()
  for i in range(6):
    image = source[i]['image']
    assert image.shape == (64, 64, 3)  # the DCT-scaled decode of the 256x256 JPEG
    image = np.asarray(Image.fromarray(image).resize((48, 48), Image.Resampling.BILINEAR))
    rng = np.random.default_rng(i)
    top, left = rng.integers(0, 9), rng.integers(0, 9)
    crop = image[top : top + 40, left : left + 40].astype(np.float64)
    flipped = rng.random() < 0.5
    flips.add(flipped)
    if flipped:
      crop = crop[:, ::-1]
    shift = eigvec @ (rng.normal(0, 0.5, 3) * eigval)
    expected = (crop + shift - np.asarray(augment.IMAGENET_MEAN_RGB)) / np.asarray(
        augment.IMAGENET_STD_RGB
    )
    np.testing.assert_allclose(batch['image'][i], expected, atol=1e-4)
    assert batch['label'][i] == source[i]['label']
  assert flips == {False, True}


def test_decoding_at_a_dct_scale_covers_the_size_and_matches_a_full_decode():
  image = synthetic_shapes.make_arrays(0, 'train', 1)[0][0][:, :200]  # 256 x 200, not square
  data = synthetic_shapes.encode_jpeg(image)
  full = decode.decode_image(data)
  np.testing.assert_array_equal(full, np.asarray(Image.open(io.BytesIO(data)).convert('RGB')))
  scaled = decode.decode_image(data, 76)
  assert scaled.shape == (128, 100, 3)  # 4/8 scale: 3/8 would make the width 75 < 76
  reference = np.asarray(Image.fromarray(full).resize((100, 128), Image.Resampling.BILINEAR))
  assert np.abs(scaled.astype(int) - reference).mean() < 3  # the same picture, another filter
  # PNG goes through PIL.
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format='PNG')
  np.testing.assert_array_equal(decode.decode_image(buf.getvalue(), 76), image)


def _sixteen_bit_gradient():
  """A 16 x 256 greyscale image whose top byte runs 0..255 along each row, with random low bytes
  (so scaling by 255 / 65535 or clipping would show), as uint16."""
  low = np.random.default_rng(0).integers(0, 256, (16, 256))
  return (np.arange(256)[None, :] * 256 + low).astype(np.uint16)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
  return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))


def _rgb48_png(pixels: np.ndarray) -> bytes:
  """A 16-bit-per-channel RGB PNG written by hand (PNG spec: IHDR colour type 2, bit depth 16)."""
  h, w, _ = pixels.shape
  rows = b''.join(b'\x00' + row.astype('>u2').tobytes() for row in pixels)  # filter 0 per row
  header = struct.pack('>IIBBBBB', w, h, 16, 2, 0, 0, 0)
  return (
      b'\x89PNG\r\n\x1a\n'
      + _png_chunk(b'IHDR', header)
      + _png_chunk(b'IDAT', zlib.compress(rows))
      + _png_chunk(b'IEND', b'')
  )


def _encoded(array, fmt):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format=fmt)
  return buf.getvalue()


@pytest.mark.parametrize(
    'mode, encode',
    [
        ('I;16', lambda g: _encoded(g, 'PNG')),
        ('I;16B', lambda g: _encoded(g.astype('>u2'), 'TIFF')),
        ('I', lambda g: b'P5 256 16 65535\n' + g.astype('>u2').tobytes()),  # 16-bit PGM
        ('I', lambda g: _encoded(g.astype(np.int32), 'TIFF')),
        ('F', lambda g: _encoded(g.astype(np.float32) + 0.5, 'TIFF')),
    ],
    ids=['png_I;16', 'tiff_I;16B', 'pgm_I', 'tiff_I', 'tiff_F'],
)
def test_sixteen_bit_greyscale_keeps_its_top_eight_bits(mode, encode):
  grey = _sixteen_bit_gradient()
  data = encode(grey)
  assert Image.open(io.BytesIO(data)).mode == mode  # the PIL mode this case is about
  expected = np.repeat((grey >> 8).astype(np.uint8)[..., None], 3, axis=-1)
  decoded = decode.decode_image(data)
  assert decoded.dtype == np.uint8
  np.testing.assert_array_equal(decoded, expected)
  np.testing.assert_array_equal(decode.decode_image(data, min_size=8), expected)


def test_sixteen_bit_colour_and_out_of_range_values_decode_like_greyscale():
  # PIL opens a 48-bit RGB PNG as 8-bit RGB, keeping each channel's top byte: the same rule.
  rgb = np.stack(
      [_sixteen_bit_gradient(), _sixteen_bit_gradient()[::-1], 65535 - _sixteen_bit_gradient()], -1
  )
  np.testing.assert_array_equal(decode.decode_image(_rgb48_png(rgb)), rgb >> 8)
  # Float and 32-bit pixels outside 0..65535 are clipped as 16-bit values would be; NaN is black.
  floats = np.array([[np.nan, -3.0, 255.9, 256.0, 65535.0, 1e9]], np.float32)
  np.testing.assert_array_equal(
      decode.decode_image(_encoded(floats, 'TIFF'))[..., 0], [[0, 0, 0, 1, 255, 255]]
  )
  ints = np.array([[-70000, -1, 511, 512, 70000]], np.int32)
  np.testing.assert_array_equal(
      decode.decode_image(_encoded(ints, 'TIFF'))[..., 0], [[0, 0, 1, 2, 255]]
  )
  # 32-bit and float pixels that stay within 0..255 are 8-bit values, as PIL takes them.
  for small in (np.array([[0, 17, 255]], np.int32), np.array([[0.0, 17.0, 255.0]], np.float32)):
    np.testing.assert_array_equal(
        decode.decode_image(_encoded(small, 'TIFF')), np.repeat([[[0], [17], [255]]], 3, -1)
    )


class _Corrupted:
  """A list-like source with some records' bytes replaced."""

  def __init__(self, records, bad):
    self.records, self.bad = records, bad

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    record = self.records[i]
    return {**record, 'image': self.bad[i]} if i in self.bad else record


def test_an_undecodable_image_is_replaced_by_the_next_one(tiny_data_dir, caplog, tiny_config):
  config = _config(tiny_config())
  records = tfds.data_source(
      config.dataset,
      split='train',
      data_dir=tiny_data_dir,
      decoders={'image': tfds.decode.SkipDecoding()},
  )
  good = records[8]['image']
  bad = {5: b'not an image', 6: good[: len(good) // 2]}  # garbage, then a truncated JPEG
  corrupted = decode.DecodingSource(_Corrupted(records, bad), min_size=48)
  intact = decode.DecodingSource(records, min_size=48)

  with caplog.at_level(logging.WARNING):
    element = corrupted[5]
  np.testing.assert_array_equal(element['image'], intact[7]['image'])
  assert element['label'] == records[7]['label']
  assert corrupted.num_undecodable == 2
  assert 'Example 5 could not be decoded' in caplog.text
  assert 'Example 6 could not be decoded' in caplog.text

  # The whole stream: the same as a source in which records 5 and 6 are copies of record 7.
  class Substituted(_Corrupted):

    def __getitem__(self, i):
      return records[7] if i in (5, 6) else records[i]

  expected = decode.DecodingSource(Substituted(records, {}), min_size=48)
  got = _take(iter(pipeline.train_dataset(corrupted, config)), 40)  # one epoch
  want = _take(iter(pipeline.train_dataset(expected, config)), 40)
  _assert_same_batches(got, want)


def test_a_dataset_that_cannot_be_decoded_stops_with_a_message():
  from alexnet_jax.errors import ConfigError

  source = decode.DecodingSource([{'image': b'x', 'label': 0}] * 5, max_consecutive_bad=3)
  with pytest.raises(ConfigError, match='could not be decoded'):
    source[0]
  assert source.num_undecodable == 4


def test_prefetch_buffer_counts_batches_not_examples(tiny_data_dir, tiny_config):
  config = dataclasses.replace(
      _config(tiny_config()), batch_size=128, prefetch_batches=2, data_threads=3
  )
  options = pipeline._read_options(config)
  assert (options.num_threads, options.prefetch_buffer_size) == (3, 3)


def test_worker_shared_memory_is_the_batches_grain_holds_with_margin():
  # ImageNet's device-augmented batches of 128: 128 x 224 x 224 x 3 bytes = 4704 pages, plus a
  # page for each of label, flip, shift and window; 2 workers hold 4 each, the loop 2 + 2.
  config = pipeline.DataConfig('imagenet2012', data_workers=2, prefetch_batches=2)
  assert workers.worker_shm_bytes(config, 128) == 1.5 * (4 * 2 + 2 + 2) * (4704 + 4) * 4096
  host_float = dataclasses.replace(config, device_augment=False)  # float32: 4 bytes a value
  assert workers.worker_shm_bytes(host_float, 128) == 1.5 * 12 * (4 * 4704 + 4) * 4096
  assert workers.workers_fit(None, 10**15)  # no /dev/shm to measure (macOS, Windows)
  assert workers.workers_fit(10**9, 10**9) and not workers.workers_fit(10**9 - 1, 10**9)


def test_a_missing_dev_shm_is_measured_without_crashing(tmp_path, monkeypatch):
  missing = str(tmp_path / 'no_shm')
  assert workers.shm_free_bytes(missing, platform='linux') == 0  # Linux needs it for workers
  assert workers.shm_free_bytes(missing, platform='darwin') is None  # macOS shares without it
  monkeypatch.delattr(workers.os, 'statvfs')  # Windows has no statvfs
  assert workers.shm_free_bytes() is None


def test_too_little_shared_memory_reads_the_same_batches_with_threads(
    tiny_data_dir, tiny_config, monkeypatch, caplog
):
  config = dataclasses.replace(_config(tiny_config(), workers=2), data_threads=3)
  needed = workers.worker_shm_bytes(config, config.batch_size)
  monkeypatch.setattr(workers, 'shm_free_bytes', lambda: needed)
  assert pipeline.create_train_dataset(config).workers == 2  # just enough: worker processes

  monkeypatch.setattr(workers, 'shm_free_bytes', lambda: needed - 1)
  children = set(multiprocessing.active_children())
  with caplog.at_level(logging.WARNING):
    stream = pipeline.create_train_dataset(config)
    got = _take(iter(stream), 5)
  assert (stream.workers, stream.read_options.num_threads) == (0, 2 * 3)  # the workers' threads
  assert set(multiprocessing.active_children()) <= children  # no worker process started
  notes = [r.getMessage() for r in caplog.records if '/dev/shm' in r.getMessage()]
  assert len(notes) == 1 and '\n' not in notes[0]
  assert 'data_workers=2' in notes[0] and '--shm-size' in notes[0]
  assert '--config.data_workers=0' in notes[0]
  threads = dataclasses.replace(config, data_workers=0)
  _assert_same_batches(got, _take(iter(pipeline.create_train_dataset(threads)), 5))


def test_runs_side_by_side_read_with_threads_when_their_workers_do_not_all_fit(
    tiny_config, monkeypatch, caplog
):
  """Each run of a sweep side by side checks /dev/shm alone before the others allocate: the
  sweep checks them together first (one run's need fits, two runs' do not)."""
  config = dataclasses.replace(_config(tiny_config(), workers=2), data_threads=3)
  one_run = workers.worker_shm_bytes(config, config.batch_size)
  monkeypatch.setattr(workers, 'shm_free_bytes', lambda: 2 * one_run)
  assert workers.side_by_side(config, 2) is config
  monkeypatch.setattr(workers, 'shm_free_bytes', lambda: 2 * one_run - 1)
  with caplog.at_level(logging.WARNING):
    shared = workers.side_by_side(config, 2)
  assert (shared.data_workers, shared.data_threads) == (0, 2 * 3)
  for field in dataclasses.fields(config):  # nothing else changes
    if field.name not in ('data_workers', 'data_threads'):
      assert getattr(shared, field.name) is getattr(config, field.name), field.name
  assert any('2 runs side by side' in r.getMessage() for r in caplog.records)
  assert workers.side_by_side(config, 1) is config  # a single run checks itself


def test_a_data_state_restores_under_any_number_of_workers(tiny_data_dir, tiny_config):
  threads = _config(tiny_config())
  expected = _take(iter(pipeline.create_train_dataset(threads)), 42)[38:]
  first = iter(pipeline.create_train_dataset(_config(tiny_config(), workers=1)))
  _take(first, 38)
  state = first.get_state()
  first.close()
  restored = iter(pipeline.create_train_dataset(threads))  # e.g. the fallback on another host
  restored.set_state(state)
  _assert_same_batches(_take(restored, 4), expected)
  # A state grain's mp_prefetch wrote before the state was one number: 2 workers, 19 batches each.
  legacy = {
      'next_index_in_cycle': 0,
      'next_index_in_datasets': 2,
      'iterators_in_use_indices': [0, 1],
      'iterators_in_use_states': [{'next_index': 19}, {'next_index': 19}],
      'exhausted': [0, 0],
      'future_states': {},
  }
  restored = iter(pipeline.create_train_dataset(threads))
  restored.set_state(legacy)
  _assert_same_batches(_take(restored, 4), expected)
  with pytest.raises(pipeline.ConfigError, match='another --workdir'):
    restored.set_state({'position': 3})


def test_batch_arrays_are_reused_only_when_nothing_holds_them(tiny_data_dir, tiny_config):
  buffers = pipeline._BatchBuffers(keep=2)
  first = buffers.get((2, 3))
  assert buffers.get((2, 3)) is not first  # `first` is held
  view = first[1:]
  del first
  assert buffers.get((2, 3)) is not buffers._arrays[0]  # a view holds it too
  del view
  assert buffers.get((2, 3)) is buffers._arrays[0]  # now free: handed out again

  # In the pipeline: batches a consumer keeps are never overwritten by later ones.
  it = iter(pipeline.create_train_dataset(_config(tiny_config())))
  kept = _take(it, 3)
  copies = [b['image'].copy() for b in kept]
  _take(it, 12)
  for b, c in zip(kept, copies, strict=True):
    np.testing.assert_array_equal(b['image'], c)


def test_a_slice_of_a_split_is_a_smaller_training_set(tiny_data_dir, tiny_config):
  config = dataclasses.replace(_config(tiny_config()), train_split='train[:100]')
  info = pipeline.get_info(config)
  assert info.num_train_examples == 100 and info.num_eval_examples == 160
  first = pipeline.decoding_source(config, config.train_split)
  whole = pipeline.decoding_source(dataclasses.replace(config, train_split='train'), 'train')
  assert len(first) == 100
  np.testing.assert_array_equal(first[99]['image'], whole[99]['image'])  # the first 100, in order
  with pytest.raises(pipeline.ConfigError, match=r"no split 'trian'.*'train\[:1000\]'"):
    pipeline.get_info(dataclasses.replace(config, train_split='trian'))


def _placements(resized: np.ndarray, image: np.ndarray, size: int) -> set[tuple[int, int, bool]]:
  """The (top, left, reflected) windows of `resized` whose pixels are `image`, found by trying
  every one."""
  windows = np.lib.stride_tricks.sliding_window_view(resized, (size, size, 3))[:, :, 0]
  found = set()
  for flipped, view in ((False, image), (True, image[:, ::-1])):
    error = np.abs(windows - view).max(axis=(-3, -2, -1))
    found |= {(int(t), int(l), flipped) for t, l in zip(*np.nonzero(error < 1e-3))}
  return found


@pytest.mark.parametrize('device_augment', [True, False], ids=['device', 'host'])
@pytest.mark.parametrize(
    'flip, random_crop', [(False, False), (True, False), (False, True), (True, True)]
)
def test_flip_and_random_crop_switch_off_in_the_training_stream(
    tiny_data_dir, tiny_config, flip, random_crop, device_augment
):
  """Section 4.1's translations and reflections, each on or off (the `no_flip` and `no_crop_flip`
  variants), through the training stream and, by default, the step's device half: every image is
  found by trying every window of its example's resized image (PIL) and its mirror."""
  from alexnet_jax.data import device_augment as device  # pylint: disable=g-import-not-at-top

  config = _config(tiny_config(), pca_std=0.0)  # 40-pixel crops of 48: 9 x 9 windows
  config = dataclasses.replace(
      config,
      device_augment=device_augment,
      augment=dataclasses.replace(config.augment, flip=flip, random_crop=random_crop),
  )
  finish = device.for_data(config)  # what the train step does to a batch (train.py)
  batches = _take(iter(pipeline.create_train_dataset(config)), 10)  # 80 examples
  source = pipeline.decoding_source(config, config.train_split)
  # Epoch 0's order (the pipeline's docstring): which example each row is.
  order = np.random.default_rng([config.seed, 0]).permutation(len(source))
  mean, std = np.asarray(augment.IMAGENET_MEAN_RGB), np.asarray(augment.IMAGENET_STD_RGB)
  seen = set()
  for b, batch in enumerate(batches):
    assert ('flip' in batch) == device_augment  # uint8 crops with their reflections, or floats
    images = np.asarray(finish(batch))
    for row, image in enumerate(images):
      example = source[int(order[b * 8 + row])]
      assert batch['label'][row] == example['label']
      resized = np.asarray(
          Image.fromarray(example['image']).resize((48, 48), Image.Resampling.BILINEAR)
      )
      found = _placements((resized - mean) / std, image, 40)
      assert len(found) == 1, found  # noisy pixels: no other window, nor the mirror, looks alike
      top, left, flipped = found.pop()
      if not random_crop:
        assert (top, left) == (4, 4)  # the centre: (48 - 40) // 2
      if not flip:
        assert not flipped
      seen.add((top, left, flipped))
  # With each on, its draws do vary (so the checks above could fail): both reflections, and many
  # of the 81 windows.
  assert {f for _, _, f in seen} == ({False, True} if flip else {False})
  offsets = {(t, l) for t, l, _ in seen}
  assert len(offsets) > 20 if random_crop else offsets == {(4, 4)}


def test_kept_images_give_the_stream_decoding_gives(tiny_data_dir, tiny_config):
  """Three epochs of the tiny split (320 examples, 40 batches each) read with every resized
  image kept, with a limit that keeps some, and with none: the same batches, and each cache
  holds what its limit allows."""
  none = _config(tiny_config())
  none = dataclasses.replace(none, cache_images_mib=0)
  expected = _take(iter(pipeline.create_train_dataset(none)), 120)
  image_bytes = 48 * 48 * 3  # one resized image
  for limit, kept in ((1024 * 2**20, 320), (100 * image_bytes, 100)):
    stream = pipeline.create_train_dataset(none)
    stream.train_examples.resized = examples.ResizedImages(limit)
    _assert_same_batches(_take(iter(stream), 120), expected)
    assert len(stream.train_examples.resized) == kept
    assert stream.train_examples.resized.used == kept * image_bytes
  # The loop's default keeps them, and decodes the whole split before the first step where it
  # fits (prefill); where it does not, only the first image is kept and reading goes on as above.
  stream = pipeline.create_train_dataset(_config(tiny_config()))
  stream.prefill()
  assert len(stream.train_examples.resized) == 320
  _assert_same_batches(_take(iter(stream), 120), expected)
  stream = pipeline.create_train_dataset(none)
  stream.train_examples.resized = examples.ResizedImages(319 * image_bytes)
  assert stream.train_examples.prefill(2) is False
  assert len(stream.train_examples.resized) == 1


def test_an_evaluation_pass_is_kept_and_reading_it_again_gives_what_decoding_gives(
    tiny_config, monkeypatch
):
  """The second pass with the same data and transform decodes nothing and gives the batches a
  fresh decode gives, read-only; another transform, a pass over the limit and a pass read only
  in part are decoded again; a kept pass that no longer fits with a newer one goes first."""
  pipeline.KEPT_PASSES.clear()
  decoded = []
  source = pipeline.decoding_source
  monkeypatch.setattr(
      pipeline, 'decoding_source', lambda c, split: decoded.append(split) or source(c, split)
  )
  config = dataclasses.replace(_config(tiny_config()), eval_batch_size=24)
  first, again = list(pipeline.eval_batches(config)), list(pipeline.eval_batches(config))
  assert len(decoded) == 1 and len(first) == len(again) > 1
  nbytes = sum(v.nbytes for batch in first for v in batch.values())
  with pytest.raises(ValueError, match='read-only'):
    again[0]['image'][0, 0, 0, 0] = 1.0
  # The independent reference: a pass decoded with nothing kept (limit 0), twice.
  nothing_kept = dataclasses.replace(config, cache_images_mib=0)
  for _ in range(2):
    fresh = list(pipeline.eval_batches(nothing_kept))
    for x, y in zip(again, fresh, strict=True):
      assert sorted(x) == sorted(y) == ['image', 'label', 'mask']
      for key in x:
        np.testing.assert_array_equal(x[key], y[key])
  assert len(decoded) == 3
  # Another view of the same split (the training images' evaluation, 10 patches) is not the kept
  # one; a pass read in part is not kept.
  ten = dataclasses.replace(config, eval_crops=10)
  assert next(pipeline.eval_batches(ten))['image'].shape[1:] == (10, 40, 40, 3)
  trainset = dataclasses.replace(config, eval_split=config.train_split)
  assert len(list(pipeline.eval_batches(trainset))) > len(first)
  assert len(decoded) == 5
  list(pipeline.eval_batches(ten))
  list(pipeline.eval_batches(ten))
  assert len(decoded) == 6
  # A limit that holds one validation pass but not two: reading the 10-patch pass (ten times the
  # bytes, over the limit) keeps nothing; the centre-crop pass stays until a newer one needs room.
  pipeline.KEPT_PASSES.clear()
  mib = math.ceil(nbytes * 1.5 / 2**20)
  small = dataclasses.replace(config, cache_images_mib=mib)
  shifted = dataclasses.replace(small, image_size=36)  # another crop: another pass, as large
  list(pipeline.eval_batches(small))
  list(pipeline.eval_batches(dataclasses.replace(small, eval_crops=10)))
  list(pipeline.eval_batches(dataclasses.replace(small, eval_crops=10)))
  list(pipeline.eval_batches(small))
  assert len(decoded) == 9  # the centre-crop pass was kept, the 10-patch one was not
  list(pipeline.eval_batches(shifted))
  list(pipeline.eval_batches(shifted))
  list(pipeline.eval_batches(small))
  assert len(decoded) == 11  # `shifted` is kept, `small` made room for it
  pipeline.KEPT_PASSES.clear()
