"""Tests of the built-in ``synthetic_shapes`` dataset.

They check that it is deterministic, that neither colour nor a linear model of
the pixels solves it while a spatial model does, and that the TFDS builder
round-trips through ArrayRecord and ``tfds.data_source`` without TensorFlow.
For the 20-class ``hard`` variant they check that the palette is in the main
shape's hue and not its luma, that neither the mean colour nor spatial
features without colour solve it, the bar's coverage, and its round trip.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from alexnet_jax.data.datasets import shapes_drawing as drawing
from alexnet_jax.data.datasets import synthetic_shapes as ss
from alexnet_jax.errors import ConfigError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TRAIN, NUM_VAL = 1000, 500
VERSION = str(ss.SyntheticShapes.VERSION)


def _digests(images: np.ndarray) -> set[str]:
  return {hashlib.sha1(im.tobytes()).hexdigest() for im in images}


# --------------------------------------------------------------------------
# 1. Determinism and geometry.


def test_same_seed_same_arrays_and_independent_reference():
  x1, y1 = ss.make_arrays(7, 'train', 12)
  x2, y2 = ss.make_arrays(7, 'train', 12)
  assert x1.dtype == np.uint8 and x1.shape == (12, 256, 256, 3)
  np.testing.assert_array_equal(x1, x2)
  np.testing.assert_array_equal(y1, y2)
  # Labels are balanced by position.
  np.testing.assert_array_equal(y1, np.arange(12) % drawing.NUM_CLASSES)
  # Example i is a pure function of default_rng([seed, split_id, i]).
  for i in (0, 5, 11):
    ref = drawing.draw_example(np.random.default_rng([7, 0, i]), i % 10)
    np.testing.assert_array_equal(x1[i], ref)
  ref_val = drawing.draw_example(np.random.default_rng([7, 1, 3]), 3)
  np.testing.assert_array_equal(ss.make_arrays(7, 'validation', 4)[0][3], ref_val)


def test_seeds_and_splits_differ_and_do_not_overlap():
  train, _ = ss.make_arrays(0, 'train', 200)
  val, _ = ss.make_arrays(0, 'validation', 200)
  other_seed, _ = ss.make_arrays(1, 'train', 200)
  h_train, h_val, h_other = _digests(train), _digests(val), _digests(other_seed)
  assert len(h_train) == len(h_val) == len(h_other) == 200  # no duplicates
  assert not h_train & h_val
  assert not h_train & h_other
  # Not just different bytes: genuinely different drawings.
  assert np.abs(train[:10].astype(int) - val[:10]).mean() > 20


def test_shapes_stay_away_from_borders():
  # Random crops of 88% of the side must keep the whole shape, so a frame
  # of 10% of the side must hold background only: no strong edges there.
  images, labels = ss.make_arrays(3, 'train', 60)
  luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
  grad = np.maximum(
      np.abs(np.diff(luma, axis=1))[:, :, :-1],
      np.abs(np.diff(luma, axis=2))[:, :-1, :],
  )
  m = int(0.10 * 256)
  frame = np.ones((255, 255), bool)
  frame[m:-m, m:-m] = False
  inner = ~frame
  # Shape edges are at least 60 luma levels high (spread over ~2 pixels).
  assert grad[:, frame].max() < 25, grad[:, frame].max()
  assert (grad[:, inner].max(axis=1) > 25).all()  # every image has a shape
  assert len(set(labels.tolist())) == drawing.NUM_CLASSES


def test_draw_example_is_fast_and_validates_label():
  import time

  rng = np.random.default_rng(0)
  t = time.perf_counter()
  for i in range(100):
    drawing.draw_example(rng, i % drawing.NUM_CLASSES)
  per_image = (time.perf_counter() - t) / 100
  # ~1.5 ms here; a per-pixel Python loop would take seconds. Loose: CI machines are shared.
  assert per_image < 0.05, f'{per_image * 1e3:.1f} ms per image'
  with pytest.raises(ValueError):
    drawing.draw_example(rng, drawing.NUM_CLASSES)
  t = time.perf_counter()
  for i in range(100):
    drawing.draw_example(rng, i % drawing.HARD_NUM_CLASSES, hard=True)
  per_image = (time.perf_counter() - t) / 100
  # ~1.6 ms here (clutter and the bar add ~50%).
  assert per_image < 0.05, f'hard: {per_image * 1e3:.1f} ms per image'


# --------------------------------------------------------------------------
# 2./3. Baselines: colour and linear-on-pixels fail, a spatial model works.


@pytest.fixture(scope='module')
def features():
  """Reduced-resolution views of 1000 train / 500 validation images."""

  def load(split, n):
    images, labels = ss.make_arrays(0, split, n)
    px32, luma64, mean_rgb = [], [], []
    for im in images:
      pil = Image.fromarray(im)
      px32.append(np.asarray(pil.resize((32, 32), Image.BOX)))
      small = np.asarray(pil.resize((64, 64), Image.BOX), dtype=np.float32)
      mean_rgb.append(small.mean(axis=(0, 1)))
      luma64.append(small @ np.array([0.299, 0.587, 0.114], np.float32))
    return (
        np.stack(px32).reshape(n, -1).astype(np.float32),
        np.stack(mean_rgb),
        np.stack(luma64),
        labels,
    )

  return load('train', NUM_TRAIN), load('validation', NUM_VAL)


def _softmax_regression(
    x_tr, y_tr, x_va, y_va, l2s=(1e-3, 1e-2, 1e-1), steps=300, num_classes=drawing.NUM_CLASSES
):
  """Multinomial logistic regression with L2, full-batch Nesterov GD.

  Features are centred and scaled (a linear reparametrisation: the model
  class is still linear in the input). Returns (train error, validation
  error) of the L2 strength with the best validation error, which is
  generous to the baseline.
  """
  return _fit_softmax(x_tr, y_tr, x_va, y_va, l2s, steps, num_classes)[:2]


def _fit_softmax(x_tr, y_tr, x_va, y_va, l2s, steps, num_classes):
  """``_softmax_regression``, also returning the best model's validation predictions."""
  mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
  a = np.c_[(x_tr - mu) / sd, np.ones(len(x_tr))].astype(np.float32)
  b = np.c_[(x_va - mu) / sd, np.ones(len(x_va))].astype(np.float32)
  onehot = np.eye(num_classes, dtype=np.float32)[y_tr]
  # Lipschitz constant of the gradient of the mean softmax loss <= ||A||^2/(2n).
  lip = 0.5 * np.linalg.norm(a, 2) ** 2 / len(a)
  best = None
  for l2 in l2s:
    w = np.zeros((a.shape[1], num_classes), np.float32)
    look = w
    lr = np.float32(1.0 / (lip + l2))
    for step in range(steps):
      z = a @ look
      z -= z.max(1, keepdims=True)
      p = np.exp(z)
      p /= p.sum(1, keepdims=True)
      grad = a.T @ (p - onehot) / len(a) + l2 * look
      w_new = look - lr * grad
      look = w_new + np.float32(step / (step + 3)) * (w_new - w)
      w = w_new
    pred_va = (b @ w).argmax(1)
    err_tr = float(np.mean((a @ w).argmax(1) != y_tr))
    err_va = float(np.mean(pred_va != y_va))
    if best is None or err_va < best[1]:
      best = (err_tr, err_va, pred_va)
  return best


def _centred_orientation_histograms(luma, flip=False, n_bins=8, grid=4, extent=2.0):
  """HOG-like features measured relative to the shape, not to the image.

  Gradient orientations (unsigned: contrast polarity is random) are
  histogrammed in a grid x grid layout of cells centred on the centroid of
  the edge energy and scaled by its spread, so the features are invariant to
  position, size and colours but keep the spatial arrangement of edges.
  """
  if flip:
    luma = luma[:, :, ::-1]
  n, h, w = luma.shape
  gx = np.zeros_like(luma)
  gy = np.zeros_like(luma)
  gx[:, :, 1:-1] = luma[:, :, 2:] - luma[:, :, :-2]
  gy[:, 1:-1] = luma[:, 2:] - luma[:, :-2]
  mag = np.sqrt(gx * gx + gy * gy)
  mag = np.where(mag > 20.0, mag, 0.0)  # edges only, not the pixel noise
  wgt = mag / (mag.sum((1, 2), keepdims=True) + 1e-6)
  orient = np.mod(np.arctan2(gy, gx), np.pi)
  obin = np.minimum((orient * (n_bins / np.pi)).astype(np.int64), n_bins - 1)
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  dx = xx - (wgt * xx).sum((1, 2))[:, None, None]
  dy = yy - (wgt * yy).sum((1, 2))[:, None, None]
  spread = np.sqrt((wgt * (dx * dx + dy * dy)).sum((1, 2)))[:, None, None] + 1e-6
  cu = np.clip(((dx / spread + extent) * (grid / (2 * extent))).astype(np.int64), 0, grid - 1)
  cv = np.clip(((dy / spread + extent) * (grid / (2 * extent))).astype(np.int64), 0, grid - 1)
  n_feat = grid * grid * n_bins
  idx = (cv * grid + cu) * n_bins + obin + np.arange(n)[:, None, None] * n_feat
  hist = np.bincount(idx.ravel(), weights=wgt.ravel(), minlength=n * n_feat)
  return hist.reshape(n, n_feat).astype(np.float32)


@pytest.fixture(scope='module')
def pixel_baseline(features):
  """(train error, validation error) of softmax regression on pixels."""
  (px_tr, _, _, y_tr), (px_va, _, _, y_va) = features
  return _softmax_regression(px_tr, y_tr, px_va, y_va, l2s=(1e-3, 1e-2))


def test_colour_and_linear_pixel_baselines_fail(features, pixel_baseline):
  """Mean colour is at chance and a linear model of the pixels is far off.

  The pixel baseline uses the raw RGB pixels box-downsampled to 32x32
  (3,072 features): at full resolution (196,608 features) full-batch
  training on 1,000 images would need ~800 MB and minutes on 2 cores.
  Downsampling only removes pixel noise, so it helps a linear model rather
  than hurting it. (Seen here: pixels ~84% error, mean colour ~90%.)
  """
  (_, rgb_tr, _, y_tr), (_, rgb_va, _, y_va) = features
  pix_train_err, pix_err = pixel_baseline
  _, rgb_err = _softmax_regression(rgb_tr, y_tr, rgb_va, y_va)
  print(
      f'pixel logreg: train err {pix_train_err:.3f}, val err {pix_err:.3f}; '
      f'mean-RGB logreg val err {rgb_err:.3f}'
  )
  # The pixel model is not simply under-trained: it fits the train set
  # much better than it generalises.
  assert pix_train_err < pix_err - 0.2
  assert pix_err > 0.5
  assert rgb_err > 0.7


def test_spatial_features_solve_it_and_flips_keep_classes(features, pixel_baseline):
  """Positive control: the classes are learnable from spatial structure.

  A linear model on shape-centred orientation histograms (64x64 luma)
  separates the classes almost perfectly (seen: ~0% error, vs ~84% for
  pixels), and it still does on horizontally flipped validation images:
  flipping never turns one class into another.
  """
  (_, _, l_tr, y_tr), (_, _, l_va, y_va) = features
  h_tr = _centred_orientation_histograms(l_tr)
  h_va = _centred_orientation_histograms(l_va)
  _, err = _softmax_regression(h_tr, y_tr, h_va, y_va, l2s=(1e-2,))
  # Same model on flipped validation images (trained on originals only).
  h_va_flip = _centred_orientation_histograms(l_va, flip=True)
  _, err_flip = _softmax_regression(h_tr, y_tr, h_va_flip, y_va, l2s=(1e-2,))
  pix_err = pixel_baseline[1]
  print(f'centred-HOG logreg val err {err:.3f} (flipped {err_flip:.3f}); ' f'pixels {pix_err:.3f}')
  assert err < 0.10
  assert err < pix_err - 0.4
  assert err_flip < 0.15


# --------------------------------------------------------------------------
# 4. TFDS round trip: prepare with TF, read with tfds.data_source without TF.

_READER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow_datasets as tfds
    import alexnet_jax.data.datasets  # registers synthetic_shapes
    from alexnet_jax.data.datasets import synthetic_shapes as ss

    data_dir = sys.argv[1]
    src = tfds.data_source('synthetic_shapes/tiny', split='validation',
                           data_dir=data_dir)
    ref_x, ref_y = ss.make_arrays(0, 'validation', 160)
    ref = ref_x.astype(np.int16)
    shapes, dtypes, labels, best, second, match = set(), set(), [], [], [], []
    for i in range(len(src)):
        ex = src[i]
        img, lab = ex['image'], int(ex['label'])
        shapes.add(tuple(img.shape)); dtypes.add(str(img.dtype))
        labels.append(lab)
        cand = np.flatnonzero(ref_y == lab)
        d = np.abs(ref[cand] - img.astype(np.int16)).mean(axis=(1, 2, 3))
        order = np.argsort(d)
        best.append(float(d[order[0]])); second.append(float(d[order[1]]))
        match.append(int(cand[order[0]]))
    names = src.dataset_info.features['label'].names
    print(json.dumps(dict(
        n=len(src), shapes=sorted(shapes), dtypes=sorted(dtypes),
        labels=labels, best=best, second=second, match=match, names=names,
        splits=sorted(src.dataset_info.splits.keys()),
        tf_loaded='tensorflow' in sys.modules)))
    """)


@pytest.mark.slow
def test_tfds_round_trip_without_tensorflow(tmp_path):
  pytest.importorskip('tensorflow')  # only preparing needs TensorFlow
  from alexnet_jax.data import datasets

  data_dir = str(tmp_path / 'tfds')
  datasets.ensure_prepared('synthetic_shapes/tiny', data_dir)
  variant = tmp_path / 'tfds' / 'synthetic_shapes' / 'tiny' / VERSION
  records = sorted(p.name for p in variant.iterdir() if 'array_record' in p.name)
  assert any('train' in r for r in records) and any('validation' in r for r in records)
  stamp = {p: p.stat().st_mtime_ns for p in variant.iterdir()}
  datasets.ensure_prepared('synthetic_shapes/tiny', data_dir)  # no-op now
  assert {p: p.stat().st_mtime_ns for p in variant.iterdir()} == stamp

  env = dict(os.environ)
  env['PYTHONPATH'] = REPO_ROOT + os.pathsep + env.get('PYTHONPATH', '')
  proc = subprocess.run(
      [sys.executable, '-c', _READER, data_dir],
      capture_output=True,
      text=True,
      env=env,
      timeout=120,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out['n'] == 160
  assert out['shapes'] == [[256, 256, 3]] and out['dtypes'] == ['uint8']
  assert out['splits'] == ['train', 'validation']
  assert out['names'] == list(drawing.CLASS_NAMES)
  assert np.bincount(out['labels'], minlength=10).tolist() == [16] * 10
  # Every stored image decodes to within JPEG error of exactly one
  # make_arrays image, and the matching is a bijection.
  best, second = np.array(out['best']), np.array(out['second'])
  assert best.mean() < 4.0 and best.max() < 6.0, (best.mean(), best.max())
  assert (second > 3 * best).all()
  assert sorted(out['match']) == list(range(160))
  assert out['tf_loaded'] is False


def test_ensure_prepared_without_tensorflow_explains(tmp_path, monkeypatch):
  import importlib.util

  from alexnet_jax.data import datasets

  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(
      importlib.util,
      'find_spec',
      lambda name, *a, **k: (None if name == 'tensorflow' else real_find_spec(name, *a, **k)),
  )
  with pytest.raises(ConfigError, match='pip install tensorflow-cpu'):
    datasets.ensure_prepared('synthetic_shapes/tiny', str(tmp_path))
  assert not (tmp_path / 'synthetic_shapes' / 'tiny' / VERSION).exists()


# --------------------------------------------------------------------------
# 5. The hard variant: 20 classes (shape x palette), clutter and a bar.

HARD_NUM_TRAIN, HARD_NUM_VAL = 600, 300


def _best_threshold_accuracy(feature, target):
  """Accuracy of the best 1-D threshold rule (either direction) for a binary ``target``."""
  order = np.argsort(feature, kind='stable')
  t = np.asarray(target)[order]
  # Predicting 1 above the cut after k sorted samples: the 0s among the first
  # k plus the 1s among the rest are right.
  zeros_below = np.concatenate([[0], np.cumsum(t == 0)])
  ones_above = (t == 1).sum() - np.concatenate([[0], np.cumsum(t == 1)])
  acc = (zeros_below + ones_above) / len(t)
  return float(max(acc.max(), (1 - acc).max()))


def test_hard_is_deterministic_and_labelled_by_position():
  x1, y1 = ss.make_arrays(0, 'train', 40, hard=True)
  x2, y2 = ss.make_arrays(0, 'train', 40, hard=True)
  np.testing.assert_array_equal(x1, x2)
  np.testing.assert_array_equal(y1, y2)
  np.testing.assert_array_equal(y1, np.arange(40) % 20)
  for i in (0, 13, 39):
    ref = drawing.draw_hard_scene(np.random.default_rng([0, 0, i]), i % 20).image
    np.testing.assert_array_equal(x1[i], ref)
  # The same generators draw different pictures in the default variant.
  default, _ = ss.make_arrays(0, 'train', 40)
  assert np.abs(x1.astype(int) - default).mean(axis=(1, 2, 3)).min() > 10
  val, _ = ss.make_arrays(0, 'validation', 40, hard=True)
  assert len(_digests(x1)) == 40 and not _digests(x1) & _digests(val)
  # names[label] is shape label % 10 in palette label // 10.
  names = ss.class_names(hard=True)
  assert len(names) == 20 and names[0] == 'disk_warm' and names[19] == 'vertical_stripes_cool'
  for label, name in enumerate(names):
    assert name == f"{drawing.CLASS_NAMES[label % 10]}_{('warm', 'cool')[label // 10]}"
  assert ss.class_names() == drawing.CLASS_NAMES
  with pytest.raises(ValueError):
    drawing.draw_example(np.random.default_rng(0), 20, hard=True)


def test_hard_palette_is_in_the_hue_not_the_luma():
  """A threshold on the main shape's luma is at chance, one on R - B is not.

  The shape's visible pixels (fully inside it, not under the bar) are read
  from the stored JPEG, as a network would see them. (Seen here: luma 53%,
  R - B 100%, with warm R - B >= 65 and cool <= 30.)
  """
  luma, r_minus_b, palette = [], [], []
  for i in range(400):
    label = ss.example_label(i, hard=True)
    scene = drawing.draw_hard_scene(ss.example_rng(0, 'train', i), label)
    image = np.asarray(Image.open(io.BytesIO(ss.encode_jpeg(scene.image))), dtype=np.float64)
    visible = (scene.shape_alpha == 1) & (scene.bar_alpha == 0)
    assert visible.sum() > 1000
    rgb = image[visible].mean(axis=0)
    # The visible pixels are the main shape's colour (plus zero-mean noise).
    assert np.abs(rgb - scene.shape_rgb).max() < 4.0, (i, rgb, scene.shape_rgb)
    luma.append(rgb @ np.array([0.299, 0.587, 0.114]))
    r_minus_b.append(rgb[0] - rgb[2])
    palette.append(label // 10)
  luma, palette = np.array(luma), np.array(palette)
  luma_acc = _best_threshold_accuracy(luma, palette)
  hue_acc = _best_threshold_accuracy(np.array(r_minus_b), palette)
  print(f'palette from shape luma {luma_acc:.3f}, from shape R-B {hue_acc:.3f}')
  assert luma_acc < 0.65
  assert hue_acc > 0.95
  # Both palettes span the same wide luma range (drawn uniform on 70..190: 5% and 95% points 76
  # and 184), with the same centre: seen here 130.4 and 129.9, 5-95% 76-180 in both. A palette
  # drawn darker or narrower (e.g. cool colours redrawn until in gamut) fails one of these.
  warm, cool = luma[palette == 0], luma[palette == 1]
  assert abs(warm.mean() - cool.mean()) < 5.0
  for values in (warm, cool):
    low, high = np.percentile(values, [5, 95])
    assert low < 85 and high > 170
    assert values.min() < 85 and values.max() > 175


def test_hard_colours_have_the_palette_hue_and_a_uniform_luma():
  """Each palette's colours: hue in its arc, chroma 35-70, luma uniform on 70..190.

  Decoded with the BT.601 YCbCr formulas (not the module's inverse). The
  luma is checked against the uniform distribution with a Kolmogorov-Smirnov
  statistic: redrawing luma with the hue when a colour is out of gamut (a
  tempting shortcut) makes cool colours darker and fails it (seen: KS 0.06
  and 0.03, against < 0.02 here).
  """
  rng = np.random.default_rng(0)
  n = 20_000
  for palette, (lo, hi) in enumerate([(100, 180), (220, 350)]):
    rgb = np.array([drawing._draw_palette_colour(rng, palette) for _ in range(n)])
    assert rgb.min() >= 0 and rgb.max() <= 255
    y = rgb @ np.array([0.299, 0.587, 0.114])
    cb, cr = (rgb[:, 2] - y) / 1.772, (rgb[:, 0] - y) / 1.402
    hue = np.mod(np.degrees(np.arctan2(cr, cb)), 360)
    chroma = np.hypot(cb, cr)
    assert hue.min() >= lo - 1e-6 and hue.max() <= hi + 1e-6
    assert chroma.min() >= 35 - 1e-6 and chroma.max() <= 70 + 1e-6
    u = np.sort((y - 70) / 120)
    ks = max((np.arange(1, n + 1) / n - u).max(), (u - np.arange(n) / n).max())
    assert ks < 1.95 / np.sqrt(n), (palette, ks)  # p = 0.001
  grey = drawing._draw_palette_colour(rng, None)
  assert grey[0] == grey[1] == grey[2]


@pytest.fixture(scope='module')
def hard_features():
  """Mean RGB and 64x64 luma of 600 train / 300 validation hard images."""

  def load(split, n):
    images, labels = ss.make_arrays(0, split, n, hard=True)
    mean_rgb, luma64 = [], []
    for im in images:
      small = np.asarray(Image.fromarray(im).resize((64, 64), Image.BOX), dtype=np.float32)
      mean_rgb.append(small.mean(axis=(0, 1)))
      luma64.append(small @ np.array([0.299, 0.587, 0.114], np.float32))
    return np.stack(mean_rgb), np.stack(luma64), labels

  return load('train', HARD_NUM_TRAIN), load('validation', HARD_NUM_VAL)


def test_hard_needs_both_spatial_and_colour_information(hard_features):
  """Mean colour is at chance, and spatial features without colour miss the palette.

  The whole image's mean RGB predicts neither the 20 classes nor even the
  palette (the background, clutter and bar dominate it); shape-centred
  orientation histograms of the luma find the shape far above chance but
  the palette only at chance. (Seen here: mean-RGB error ~94% of 20 and
  ~50% of 2, luma-HOG shape accuracy ~50%, its palette ~50% right.)
  """
  (rgb_tr, l_tr, y_tr), (rgb_va, l_va, y_va) = hard_features
  _, rgb_err = _softmax_regression(rgb_tr, y_tr, rgb_va, y_va, num_classes=20)
  _, rgb_palette_err = _softmax_regression(rgb_tr, y_tr // 10, rgb_va, y_va // 10, num_classes=2)
  h_tr = _centred_orientation_histograms(l_tr)
  h_va = _centred_orientation_histograms(l_va)
  _, hog_err, pred = _fit_softmax(h_tr, y_tr, h_va, y_va, (1e-2,), 300, 20)
  shape_acc = float(np.mean(pred % 10 == y_va % 10))
  palette_acc = float(np.mean(pred // 10 == y_va // 10))
  print(
      f'mean-RGB val err {rgb_err:.3f} (palette {rgb_palette_err:.3f}); luma-HOG val err '
      f'{hog_err:.3f}, shape right {shape_acc:.3f}, palette right {palette_acc:.3f}'
  )
  assert rgb_err > 0.85  # chance: 0.95
  assert rgb_palette_err > 0.35
  assert shape_acc > 0.3  # chance: 0.1
  assert palette_acc < 0.6


def test_hard_bar_clutter_and_margins():
  """The bar hides 2-25% of the main shape and is on top; the shape is the largest object."""
  counts = set()
  for i in range(100):
    scene = drawing.draw_hard_scene(ss.example_rng(1, 'validation', i), i % 20)
    shape, bar = scene.shape_alpha, scene.bar_alpha
    coverage = float((shape * bar).sum() / shape.sum())
    assert 0.02 <= coverage <= 0.25, (i, coverage)
    assert abs(coverage - scene.bar_coverage) < 1e-4
    # Drawn over everything: under the bar the image is one flat colour plus
    # the pixel noise (std <= 5).
    under = scene.image[bar == 1].astype(np.float64)
    assert under.std(axis=0).max() < 6.5, (i, under.std(axis=0))
    # The main shape is larger than every distractor, and keeps its margin.
    assert len(scene.distractor_areas) in (2, 3, 4)
    counts.add(len(scene.distractor_areas))
    assert shape.sum() > max(scene.distractor_areas)
    m = int(0.10 * 256)
    assert shape[:m].max() == 0 and shape[-m:].max() == 0
    assert shape[:, :m].max() == 0 and shape[:, -m:].max() == 0
  assert counts == {2, 3, 4}


def test_hard_tfds_round_trip(tmp_path):
  pytest.importorskip('tensorflow')  # preparing needs TensorFlow
  import tensorflow_datasets as tfds

  from alexnet_jax.data import datasets

  info = tfds.builder('synthetic_shapes/hard', data_dir=str(tmp_path)).info
  assert info.features['label'].num_classes == 20 and 'hue' in info.description
  assert tfds.builder('synthetic_shapes', data_dir=str(tmp_path)).info.features[
      'label'
  ].names == list(drawing.CLASS_NAMES)

  datasets.ensure_prepared('synthetic_shapes/hard_tiny', str(tmp_path))
  assert (tmp_path / 'synthetic_shapes' / 'hard_tiny' / VERSION).is_dir()
  src = tfds.data_source('synthetic_shapes/hard_tiny', split='validation', data_dir=str(tmp_path))
  assert len(src) == 160
  assert src.dataset_info.features['label'].names == list(drawing.HARD_CLASS_NAMES)
  ref_x, ref_y = ss.make_arrays(0, 'validation', 160, hard=True)
  ref = ref_x.astype(np.int16)
  labels, match = [], []
  for i in range(len(src)):
    ex = src[i]
    img, lab = ex['image'], int(ex['label'])
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    labels.append(lab)
    cand = np.flatnonzero(ref_y == lab)
    d = np.abs(ref[cand] - img.astype(np.int16)).mean(axis=(1, 2, 3))
    assert d.min() < 6.0
    match.append(int(cand[np.argmin(d)]))
  assert np.bincount(labels, minlength=20).tolist() == [8] * 20
  assert sorted(match) == list(range(160))
  train = tfds.data_source('synthetic_shapes/hard_tiny', split='train', data_dir=str(tmp_path))
  assert len(train) == 320


# --------------------------------------------------------------------------
# 6. The medium variant: the hard variant's 20 classes with 0-2 distractors and no bar.


def test_medium_keeps_the_classes_and_drops_the_bar_and_most_clutter():
  counts = set()
  for i in range(60):
    label = ss.example_label(i, hard=True)
    scene = drawing.draw_hard_scene(ss.example_rng(0, 'train', i), label, clutter='medium')
    assert scene.bar_alpha.max() == 0 and scene.bar_coverage == 0
    counts.add(len(scene.distractor_areas))
    # Nothing is drawn over the main shape: inside it the image is its colour plus the noise.
    inside = scene.image[scene.shape_alpha == 1].astype(np.float64)
    assert np.abs(inside.mean(axis=0) - scene.shape_rgb).max() < 2.0, i
    assert inside.std(axis=0).max() < 6.5, i
    # The palette is the label's. From the arcs and chroma 35-70: R - B >= 59 for warm hues
    # (1.402 Cr - 1.772 Cb at 100 and 180 degrees), <= 32 for cool ones (at 220 degrees).
    r, _, b = scene.shape_rgb
    assert (r - b > 45) == (label < 10), (i, scene.shape_rgb)
  assert counts == {0, 1, 2}
  images, labels = ss.make_arrays(0, 'validation', 20, hard=True, clutter='medium')
  np.testing.assert_array_equal(labels, np.arange(20))
  hard, _ = ss.make_arrays(0, 'validation', 20, hard=True)
  assert np.abs(images.astype(int) - hard).mean(axis=(1, 2, 3)).min() > 1  # other pictures
  with pytest.raises(ValueError, match='clutter'):
    drawing.draw_hard_scene(np.random.default_rng(0), 0, clutter='none')


def test_medium_builder_writes_make_arrays_pixels(tmp_path):
  import tensorflow_datasets as tfds

  builder = tfds.builder('synthetic_shapes/medium', data_dir=str(tmp_path))
  assert builder.info.features['label'].names == list(drawing.HARD_CLASS_NAMES)
  assert '0-2 distractor' in builder.info.description
  assert builder.builder_config.num_train == 10_000
  ref, ref_labels = ss.make_arrays(0, 'validation', 4, hard=True, clutter='medium')
  examples = list(builder._generate_examples('validation', 4, builder.builder_config))
  for (key, ex), image, label in zip(examples, ref, ref_labels):
    decoded = np.asarray(Image.open(io.BytesIO(ex['image'])), dtype=np.int16)
    assert ex['label'] == label
    assert np.abs(decoded - image).mean() < 6.0, key
