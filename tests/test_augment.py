"""Tests for alexnet_jax.data.augment against independent references.

Each check compares against hand-written slices, replayed generator draws,
naive loops or numpy's own statistics -- never against the function's output.
"""

import numpy as np
import pytest

from alexnet_jax.data import augment as aug


def _img(h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


EIGVAL = np.asarray(aug.IMAGENET_PCA_EIGVAL)
EIGVEC = np.asarray(aug.IMAGENET_PCA_EIGVEC)


# --------------------------------------------------------------------------
# constants


def test_constants():
  np.testing.assert_allclose(EIGVAL, [55.4625, 4.794, 1.1475], rtol=1e-12)
  assert EIGVEC.shape == (3, 3)
  # Published eigenvectors are (nearly) orthonormal columns.
  np.testing.assert_allclose(EIGVEC.T @ EIGVEC, np.eye(3), atol=2e-3)
  assert aug.IMAGENET_MEAN_RGB == (123.68, 116.779, 103.939)


# --------------------------------------------------------------------------
# crops and flips


def test_random_crop_matches_replayed_offsets():
  image = _img(37, 53)
  size = 20
  for seed in range(20):
    out = aug.random_crop(image, size, np.random.default_rng(seed))
    replay = np.random.default_rng(seed)
    top = replay.integers(0, 37 - size + 1)
    left = replay.integers(0, 53 - size + 1)
    np.testing.assert_array_equal(out, image[top : top + size, left : left + size])
    assert out.shape == (size, size, 3) and out.dtype == np.uint8


def test_random_crop_covers_extreme_offsets():
  # Position-encoding image: pixel (y, x) holds (y, x, 0), so the crop's
  # top-left pixel reveals the offset without replaying the generator.
  h, w, size = 12, 15, 8
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  image = np.stack([yy, xx, np.zeros_like(yy)], -1).astype(np.uint8)
  rng = np.random.default_rng(1)
  tops, lefts = set(), set()
  for _ in range(400):
    out = aug.random_crop(image, size, rng)
    tops.add(int(out[0, 0, 0]))
    lefts.add(int(out[0, 0, 1]))
  assert tops == set(range(h - size + 1))
  assert lefts == set(range(w - size + 1))


def test_random_crop_full_size_and_too_large():
  image = _img(10, 10)
  np.testing.assert_array_equal(aug.random_crop(image, 10, np.random.default_rng(0)), image)
  with pytest.raises(ValueError):
    aug.random_crop(image, 11, np.random.default_rng(0))


def test_center_crop_hand_computed():
  image = _img(9, 12)
  # margins: 9-4=5 (odd) -> top 2, bottom 3; 12-4=8 -> left 4, right 4.
  np.testing.assert_array_equal(aug.center_crop(image, 4), image[2:6, 4:8])
  # margins 12-7=5 horizontally (odd) -> left 2, extra pixel on the right.
  image = _img(7, 12)
  np.testing.assert_array_equal(aug.center_crop(image, 7), image[0:7, 2:9])
  image = _img(256, 256)
  np.testing.assert_array_equal(aug.center_crop(image, 224), image[16:240, 16:240])


def test_random_flip_is_reflection_about_half_the_time():
  image = _img(5, 7)
  rng = np.random.default_rng(3)
  flips = 0
  n = 2000
  for _ in range(n):
    out = aug.random_flip(image, rng)
    if np.array_equal(out, image[:, ::-1]):
      flips += 1
    else:
      np.testing.assert_array_equal(out, image)
  # Binomial(2000, 0.5): sd ~ 22; allow ~5 sd.
  assert abs(flips - n / 2) < 110


def test_random_flip_matches_replayed_coin():
  image = _img(4, 6)
  for seed in range(10):
    out = aug.random_flip(image, np.random.default_rng(seed))
    expect = image[:, ::-1] if np.random.default_rng(seed).random() < 0.5 else image
    np.testing.assert_array_equal(out, expect)


def test_ten_crop_exact_windows():
  image = _img(11, 14)
  s = 6
  out = aug.ten_crop(image, s)
  assert out.shape == (10, s, s, 3) and out.dtype == np.uint8
  # centre: (11-6)//2 = 2, (14-6)//2 = 4
  expect = [
      image[2:8, 4:10],  # centre
      image[0:6, 0:6],  # top-left
      image[0:6, 8:14],  # top-right
      image[5:11, 0:6],  # bottom-left
      image[5:11, 8:14],  # bottom-right
  ]
  expect += [e[:, ::-1] for e in expect]
  for i in range(10):
    np.testing.assert_array_equal(out[i], expect[i], err_msg=f'crop {i}')


# --------------------------------------------------------------------------
# resizing


def test_resize_shorter_and_center_crop_shapes_and_constant():
  for h, w in [(300, 500), (500, 300), (256, 256), (100, 120), (257, 999)]:
    image = _img(h, w)
    out = aug.resize_shorter_and_center_crop(image, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
  # A constant image stays constant under (antialiased) bilinear resize.
  const = np.full((90, 200, 3), (10, 200, 77), dtype=np.uint8)
  out = aug.resize_shorter_and_center_crop(const, 45)
  assert (out == np.array([10, 200, 77], np.uint8)).all()


def test_resize_shorter_keeps_centre_content():
  # Left third red, middle third green, right third blue; the 2:1 image is
  # rescaled to height 32 (width 64) and its central 32 columns kept, which
  # must be dominated by green.
  image = np.zeros((60, 120, 3), np.uint8)
  image[:, :40, 0] = 255
  image[:, 40:80, 1] = 255
  image[:, 80:, 2] = 255
  out = aug.resize_shorter_and_center_crop(image, 32)
  mid = out[:, 8:24]
  assert (mid[..., 1] == 255).all() and (mid[..., 0] == 0).all() and (mid[..., 2] == 0).all()


def test_resize_square():
  image = _img(40, 40)
  out = aug.resize_square(image, 17)
  assert out.shape == (17, 17, 3) and out.dtype == np.uint8
  # Same size: returned untouched.
  assert aug.resize_square(image, 40) is image
  # Constant colour survives; a left-red / right-blue split stays split
  # away from the seam (the antialiased filter only blurs near it).
  const = np.full((64, 64, 3), (5, 99, 250), np.uint8)
  assert (aug.resize_square(const, 24) == np.array([5, 99, 250], np.uint8)).all()
  split = np.zeros((64, 64, 3), np.uint8)
  split[:, :32, 0] = 255
  split[:, 32:, 2] = 255
  out = aug.resize_square(split, 16)
  assert (out[:, :6] == np.array([255, 0, 0], np.uint8)).all()
  assert (out[:, 10:] == np.array([0, 0, 255], np.uint8)).all()


# --------------------------------------------------------------------------
# colour


def test_pca_noise_is_same_shift_for_all_pixels_and_matches_alpha():
  image = _img(9, 13).astype(np.float32)
  for seed in range(5):
    out = aug.pca_color_noise(image, EIGVAL, EIGVEC, 0.1, np.random.default_rng(seed))
    assert out.dtype == np.float32 and out.shape == image.shape
    diff = (out.astype(np.float64) - image).reshape(-1, 3)
    # every pixel moved by the same RGB vector
    np.testing.assert_allclose(diff, np.broadcast_to(diff[0], diff.shape), atol=1e-4)
    alpha = np.random.default_rng(seed).normal(0.0, 0.1, size=3)
    expect = np.array(
        [sum(EIGVEC[c, i] * alpha[i] * EIGVAL[i] for i in range(3)) for c in range(3)]
    )
    np.testing.assert_allclose(diff[0], expect, rtol=1e-5, atol=1e-4)
  # the input is not modified
  assert np.array_equal(image, _img(9, 13).astype(np.float32))


def test_pca_noise_covariance():
  std = 0.1
  rng = np.random.default_rng(0)
  image = np.zeros((1, 1, 3), np.float32)
  shifts = np.stack(
      [aug.pca_color_noise(image, EIGVAL, EIGVEC, std, rng)[0, 0] for _ in range(20000)]
  ).astype(np.float64)
  expect = EIGVEC @ np.diag((std * EIGVAL) ** 2) @ EIGVEC.T
  np.testing.assert_allclose(shifts.mean(0), 0.0, atol=0.15)
  # Relative error of a 20000-sample covariance is ~1%; compare on the
  # scale of the dominant eigenvalue (std*l1)^2 ~ 30.8.
  np.testing.assert_allclose(np.cov(shifts, rowvar=False), expect, atol=0.05 * expect.max())


def test_pca_noise_std_zero_is_identity():
  image = _img(6, 6).astype(np.float32)
  rng = np.random.default_rng(0)
  out = aug.pca_color_noise(image, EIGVAL, EIGVEC, 0.0, rng)
  np.testing.assert_array_equal(out, image)
  assert out.dtype == np.float32


def test_subtract_mean_per_channel_matches_loop():
  image = _img(4, 5).astype(np.float32)
  mean = np.array(aug.IMAGENET_MEAN_RGB)
  out = aug.subtract_mean(image, mean)
  assert out.dtype == np.float32
  expect = np.empty_like(image)
  for y in range(4):
    for x in range(5):
      for c in range(3):
        expect[y, x, c] = np.float32(image[y, x, c]) - np.float32(mean[c])
  np.testing.assert_array_equal(out, expect)


def test_subtract_mean_image():
  image = _img(4, 5).astype(np.float32)
  mean_img = np.random.default_rng(9).uniform(0, 255, (4, 5, 3)).astype(np.float32)
  np.testing.assert_array_equal(aug.subtract_mean(image, mean_img), image - mean_img)


def test_compute_pca_statistics_matches_numpy():
  rng = np.random.default_rng(0)
  # Correlated channels so the spectrum is well separated.
  mix = np.array([[1.0, 0.6, 0.3], [0.0, 0.5, 0.2], [0.0, 0.0, 0.2]])
  images = []
  for h, w in [(10, 12), (7, 9), (15, 4), (1, 1)]:
    z = rng.normal(0, 1, (h, w, 3)) @ mix
    images.append(np.clip(120 + 40 * z, 0, 255).astype(np.uint8))
  mean, eigval, eigvec = aug.compute_pca_statistics(iter(images))

  pixels = np.concatenate([im.reshape(-1, 3) for im in images]).astype(np.float64)
  ref_cov = np.cov(pixels, rowvar=False)
  ref_val, ref_vec = np.linalg.eigh(ref_cov)
  ref_val, ref_vec = ref_val[::-1], ref_vec[:, ::-1]

  np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-12)
  np.testing.assert_allclose(eigval, ref_val, rtol=1e-9)
  assert eigval[0] >= eigval[1] >= eigval[2]
  for i in range(3):
    sign = np.sign(eigvec[:, i] @ ref_vec[:, i])
    np.testing.assert_allclose(eigvec[:, i], sign * ref_vec[:, i], atol=1e-8)
  # eigenvectors are columns: cov @ v_i = l_i v_i
  np.testing.assert_allclose(ref_cov @ eigvec, eigvec * eigval, atol=1e-8)


# --------------------------------------------------------------------------
# full transforms

TRAIN_KW = dict(
    image_size=224,
    resize_size=256,
    eigval=EIGVAL,
    eigvec=EIGVEC,
    pca_std=0.1,
    mean=aug.IMAGENET_MEAN_RGB,
    flip=True,
)


def test_train_transform_deterministic_and_seed_dependent():
  image = _img(256, 256)
  a = aug.train_transform(image, rng=np.random.default_rng(7), **TRAIN_KW)
  b = aug.train_transform(image, rng=np.random.default_rng(7), **TRAIN_KW)
  c = aug.train_transform(image, rng=np.random.default_rng(8), **TRAIN_KW)
  assert a.shape == (224, 224, 3) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_train_transform_equals_composed_steps():
  # Independent composition of the documented steps with a replayed rng.
  image = _img(256, 256, seed=4)
  mean = np.array(aug.IMAGENET_MEAN_RGB)
  for seed in range(6):
    out = aug.train_transform(image, rng=np.random.default_rng(seed), **TRAIN_KW)
    r = np.random.default_rng(seed)
    top, left = r.integers(0, 33), r.integers(0, 33)
    crop = image[top : top + 224, left : left + 224].astype(np.float64)
    if r.random() < 0.5:
      crop = crop[:, ::-1]
    alpha = r.normal(0, 0.1, 3)
    expect = crop + EIGVEC @ (alpha * EIGVAL) - mean
    np.testing.assert_allclose(out, expect, atol=1e-3)


def test_train_transform_mean_image_cut_with_crop():
  # A resize_size mean image must be cut with the same window/flip as the
  # image: subtracting the image itself as its "mean" (no PCA) gives zeros.
  image = _img(40, 40, seed=2)
  kw = dict(TRAIN_KW, image_size=32, resize_size=40, pca_std=0.0)
  kw['mean'] = image.astype(np.float32)
  for seed in range(8):
    out = aug.train_transform(image, rng=np.random.default_rng(seed), **kw)
    np.testing.assert_array_equal(out, np.zeros((32, 32, 3), np.float32))
  # Also when the crop is the whole image: the mean is reflected with it.
  kw = dict(kw, image_size=40)
  for seed in range(8):
    out = aug.train_transform(image, rng=np.random.default_rng(seed), **kw)
    np.testing.assert_array_equal(out, np.zeros((40, 40, 3), np.float32))


def test_transforms_resize_non_square_and_square_inputs():
  rng = np.random.default_rng(0)
  for shape in [(300, 451), (451, 300), (500, 500), (146, 146)]:
    image = _img(*shape)
    out = aug.train_transform(image, rng=rng, **dict(TRAIN_KW, image_size=128, resize_size=146))
    assert out.shape == (128, 128, 3) and out.dtype == np.float32
    ev = aug.eval_transform(image, image_size=128, resize_size=146, mean=aug.IMAGENET_MEAN_RGB)
    assert ev.shape == (128, 128, 3) and ev.dtype == np.float32


def test_eval_transform_is_center_crop_minus_mean():
  image = _img(256, 256, seed=3)
  mean = np.array(aug.IMAGENET_MEAN_RGB)
  out = aug.eval_transform(image, image_size=224, resize_size=256, mean=mean)
  expect = image[16:240, 16:240].astype(np.float64) - mean
  np.testing.assert_allclose(out, expect, atol=1e-4)
  assert out.dtype == np.float32
  # A square input of another size goes through resize_square first; a
  # constant colour must come out as colour - mean everywhere.
  const = np.full((512, 512, 3), (10, 20, 30), np.uint8)
  out2 = aug.eval_transform(const, image_size=224, resize_size=256, mean=mean)
  np.testing.assert_allclose(
      out2, np.broadcast_to(np.array([10, 20, 30]) - mean, out2.shape), atol=1e-4
  )


def test_no_jax_or_tf_import():
  import subprocess
  import sys

  code = (
      'import sys, alexnet_jax.data.augment;'
      "bad=[m for m in ('jax','tensorflow','flax','torch') if m in sys.modules];"
      'assert not bad, bad'
  )
  subprocess.run([sys.executable, '-c', code], check=True)


def test_train_transform_mean_image_variants_and_noncontiguous_input():
  image = _img(48, 48, seed=6)
  rng_mean = np.random.default_rng(11)
  big_mean = rng_mean.uniform(0, 255, (48, 48, 3)).astype(np.float32)
  crop_mean = rng_mean.uniform(0, 255, (40, 40, 3)).astype(np.float32)
  kw = dict(TRAIN_KW, image_size=40, resize_size=48)
  for seed in range(8):
    for mean in (big_mean, crop_mean):
      out = aug.train_transform(image, rng=np.random.default_rng(seed), **dict(kw, mean=mean))
      r = np.random.default_rng(seed)
      top, left = r.integers(0, 9), r.integers(0, 9)
      crop = image[top : top + 40, left : left + 40].astype(np.float64)
      m = mean[top : top + 40, left : left + 40] if mean.shape[0] == 48 else mean
      if r.random() < 0.5:
        crop, m = crop[:, ::-1], (m[:, ::-1] if mean.shape[0] == 48 else m)
      expect = crop + EIGVEC @ (r.normal(0, 0.1, 3) * EIGVAL) - m
      np.testing.assert_allclose(out, expect, atol=1e-3)
  # A strided / reflected input view gives the same result as its copy.
  view = _img(48, 96, seed=8)[:, ::-2]
  a = aug.train_transform(view, rng=np.random.default_rng(1), **kw)
  b = aug.train_transform(np.ascontiguousarray(view), rng=np.random.default_rng(1), **kw)
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError):
    aug.train_transform(image, rng=np.random.default_rng(0), **dict(kw, mean=np.zeros((7, 7, 3))))


def test_ten_crop_float_and_noncontiguous():
  image = _img(9, 9).astype(np.float32)[:, ::-1]
  out = aug.ten_crop(image, 5)
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out[0], image[2:7, 2:7])
  np.testing.assert_array_equal(out[9], image[4:9, 4:9][:, ::-1])


def test_ten_crop_transform_subtracts_the_mean_of_each_window():
  image = _img(12, 12, seed=4)  # already resize_size: no resize
  mean_rgb = np.array([100.5, 90.25, 80.0])
  mean_img = np.random.default_rng(5).uniform(0, 255, (12, 12, 3)).astype(np.float32)
  windows = [(1, 1), (0, 0), (0, 3), (3, 0), (3, 3)]  # centre (margin 3: top = 1), corners
  by_rgb = aug.ten_crop_transform(image, image_size=9, resize_size=12, mean=mean_rgb)
  by_img = aug.ten_crop_transform(image, image_size=9, resize_size=12, mean=mean_img)
  precut = aug.ten_crop_transform(
      image, image_size=9, resize_size=12, mean=aug.ten_crop(mean_img, 9)
  )
  assert by_rgb.shape == by_img.shape == (10, 9, 9, 3) and by_img.dtype == np.float32
  for k, (t, l) in enumerate(windows):
    crop = image[t : t + 9, l : l + 9].astype(np.float32)
    mean_crop = mean_img[t : t + 9, l : l + 9]
    centred = crop - mean_rgb.astype(np.float32)
    np.testing.assert_allclose(by_rgb[k], centred, rtol=1e-6)
    np.testing.assert_allclose(by_rgb[k + 5], centred[:, ::-1], rtol=1e-6)
    np.testing.assert_array_equal(by_img[k], crop - mean_crop)
    np.testing.assert_array_equal(by_img[k + 5], (crop - mean_crop)[:, ::-1])
  np.testing.assert_array_equal(precut, by_img)
  # The centre patch is eval_transform's crop.
  np.testing.assert_array_equal(
      by_img[0], aug.eval_transform(image, image_size=9, resize_size=12, mean=mean_img)
  )
  with pytest.raises(ValueError):
    aug.ten_crop_transform(image, image_size=9, resize_size=12, mean=np.zeros((7, 7, 3)))


def test_eigval_on_imagenet_scale_is_the_covariance_of_pixels_over_255_times_255():
  pixels = np.random.default_rng(6).integers(0, 256, (500, 3)).astype(np.float64)
  raw = np.linalg.eigvalsh(np.cov(pixels, rowvar=False))
  unit = np.linalg.eigvalsh(np.cov(pixels / 255.0, rowvar=False))
  np.testing.assert_allclose(aug.eigval_on_imagenet_scale(raw), 255.0 * unit, rtol=1e-12)


def test_train_transform_without_random_crop_takes_the_centre_and_draws_no_offsets():
  image = _img(256, 256, seed=5)
  mean = np.array(aug.IMAGENET_MEAN_RGB)
  for seed in range(4):
    out = aug.train_transform(image, rng=np.random.default_rng(seed), random_crop=False, **TRAIN_KW)
    r = np.random.default_rng(seed)  # the flip coin and alpha come first: no offsets drawn
    crop = image[16:240, 16:240].astype(np.float64)  # (256 - 224) / 2 = 16 on every side
    if r.random() < 0.5:
      crop = crop[:, ::-1]
    alpha = r.normal(0, 0.1, 3)
    np.testing.assert_allclose(out, crop + EIGVEC @ (alpha * EIGVAL) - mean, atol=1e-3)
