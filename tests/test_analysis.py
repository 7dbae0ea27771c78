"""The analysis functions (ensembles, colour specificity, nearest neighbours) against naive loops
and hand-made inputs."""

import itertools

import numpy as np
import pytest

from alexnet_jax.trained import analysis


def naive_top1_error(probs, labels):
  wrong = 0
  for p, y in zip(probs, labels):
    # Wrong unless the label's probability is strictly the largest.
    wrong += any(p[c] >= p[y] for c in range(len(p)) if c != y)
  return wrong / len(labels)


def test_ensembles_average_every_subset_of_models():
  rng = np.random.default_rng(0)
  members = rng.dirichlet(np.ones(5), size=(4, 30))  # 4 models, 30 examples, 5 classes
  labels = rng.integers(0, 5, 30)
  table = analysis.ensemble_errors(members, labels)
  assert list(table['models']) == [1, 2, 3, 4]
  assert list(table['ensembles']) == [4, 6, 4, 1]
  for k in range(1, 5):
    errors = [
        naive_top1_error(np.mean([members[i] for i in subset], axis=0), labels)
        for subset in itertools.combinations(range(4), k)
    ]
    row = table[table['models'] == k]
    assert row['top1_error_mean'].item() == pytest.approx(np.mean(errors))
    assert row['top1_error_std'].item() == pytest.approx(np.std(errors, ddof=1) if k < 4 else 0)


def test_averaging_fixes_what_no_single_model_gets_right():
  # Two models, each confidently wrong on a different half, right but unsure on the other half.
  labels = np.array([0, 0])
  a = np.array([[0.45, 0.55, 0.0], [0.9, 0.1, 0.0]])
  b = np.array([[0.9, 0.0, 0.1], [0.45, 0.0, 0.55]])
  table = analysis.ensemble_errors(np.stack([a, b]), labels)
  assert table['top1_error_mean'].tolist() == [0.5, 0.0]


def test_a_tie_or_a_nan_counts_against_the_label():
  assert analysis.top1_error(np.array([[0.5, 0.5]]), np.array([0])) == 1.0
  assert analysis.top1_error(np.array([[0.6, 0.4]]), np.array([0])) == 0.0
  # A diverged network's NaN scores are wrong, not right (numpy's comparisons with NaN are False).
  assert analysis.top1_error(np.array([[np.nan, np.nan], [0.1, 0.9]]), np.array([0, 1])) == 0.5


def test_colour_specificity_of_grey_opponent_and_random_kernels():
  rng = np.random.default_rng(1)
  grey = np.repeat(rng.normal(size=(11, 11, 1)), 3, axis=-1)
  assert analysis.colour_specificity(grey) == pytest.approx(0.0, abs=1e-12)
  opponent = rng.normal(size=(11, 11, 1)) * np.array([1.0, -1.0, 0.0])  # red minus green
  assert analysis.colour_specificity(opponent) == pytest.approx(1.0)
  # Independent channels (the random start): 2 of the 3 dimensions per pixel are colour.
  random = analysis.colour_specificity(rng.normal(size=(500, 11, 11, 3)))
  assert random.shape == (500,)
  assert random.mean() == pytest.approx(2 / 3, abs=0.01)
  # A grey kernel plus a little colour: the share is the colour's energy over the total.
  mixed = grey + 0.1 * opponent
  expected = np.sum((0.1 * opponent) ** 2) / np.sum(mixed**2)
  assert analysis.colour_specificity(mixed) == pytest.approx(expected)


def test_nearest_matches_a_brute_force_search():
  rng = np.random.default_rng(2)
  database = rng.normal(size=(40, 16))
  got = analysis.nearest(database[:5], database, 3, exclude_self=True)
  for q in range(5):
    distances = [np.linalg.norm(database[q] - database[j]) if j != q else np.inf for j in range(40)]
    np.testing.assert_array_equal(got[q], np.argsort(distances)[:3])
  assert list(analysis.nearest(database[:2], database, 1)[:, 0]) == [0, 1]  # itself first


def naive_smoothness(kernel):
  """The neighbour correlation of one HxWxC kernel by loops over its positions."""
  k = kernel - kernel.mean()
  h, w, c = k.shape
  products = squares = 0.0
  for ch in range(c):
    for y in range(h):
      for x in range(w):
        for dy, dx in ((0, 1), (1, 0)):
          if y + dy < h and x + dx < w:
            a, b = k[y, x, ch], k[y + dy, x + dx, ch]
            products += a * b
            squares += (a * a + b * b) / 2
  return products / squares


def test_smoothness_against_loops_and_what_it_separates():
  rng = np.random.default_rng(0)
  random = rng.normal(size=(200, 11, 11, 3))
  got = analysis.smoothness(random)
  for i in range(3):
    assert got[i] == pytest.approx(naive_smoothness(random[i]), rel=1e-12)
  # Independent draws: about 0 (within a few standard errors of 1/sqrt(440 pairs) each).
  assert abs(got.mean()) < 0.02
  # An oriented edge (a smooth step across a rotated line) and a colour blob: close to 1.
  y, x = np.mgrid[-5:6, -5:6] / 5.0
  edge = np.tanh(3 * (0.8 * x + 0.6 * y))[..., None] * np.ones(3)
  blob = np.exp(-(x**2 + y**2) / 0.3)[..., None] * np.array([1.0, -0.5, -0.5])
  assert analysis.smoothness(edge) > 0.8 and analysis.smoothness(blob) > 0.8
  # A checkerboard alternates: -1 exactly.
  checker = ((-1.0) ** (np.add.outer(np.arange(11), np.arange(11))))[..., None] * np.ones(3)
  assert analysis.smoothness(checker - checker.mean()) == pytest.approx(-1.0, abs=0.02)


def test_tower_split_p_against_the_exact_permutation_distribution():
  a = np.array([0.61, 0.55, 0.70, 0.64, 0.58])
  b = np.array([0.72, 0.80, 0.66, 0.75, 0.69])
  pooled = np.concatenate([a, b])
  observed = b.mean() - a.mean()
  # Every way of calling five of the ten kernels tower 1: the exact null.
  splits = list(itertools.combinations(range(10), 5))
  null = [np.delete(pooled, list(s)).mean() - pooled[list(s)].mean() for s in splits]
  exact = np.mean(np.abs(null) >= abs(observed) - 1e-12)
  difference, p = analysis.tower_split(a, b, permutations=20000, seed=1)
  assert difference == pytest.approx(observed)
  # A Monte Carlo p: within 4 standard errors of the exact one.
  assert abs(p - exact) < 4 * np.sqrt(exact * (1 - exact) / 20000) + 1e-4
  # Identical towers: the observed split is typical, p near 1.
  assert analysis.tower_split(a, a[::-1], permutations=2000)[1] > 0.9


def test_neighbour_agreement_and_its_chance_levels_by_hand():
  labels = np.array([0, 0, 1, 1, 10, 10, 11, 11])  # the hard variant's labels: palette = l // 10
  groups = labels // 10
  # Each image's one neighbour: rows 0-2 right; row 3 the other palette; the rest the same
  # palette, the wrong shape.
  neighbours = np.array([[1], [0], [3], [4], [6], [7], [4], [5]])
  out = analysis.neighbour_agreement(labels, neighbours, groups)
  assert out['same_label'] == pytest.approx(3 / 8)  # rows 0, 1 and 2
  assert out['chance'] == pytest.approx(1 / 7)  # one other image of each label among 7
  assert out['same_group'] == pytest.approx(7 / 8)  # all but row 3
  assert out['chance_within_group'] == pytest.approx(1 / 3)  # one of the 3 others in the palette


def test_pixel_vectors_are_block_means():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
  got = analysis.pixel_vectors(images, size=32)
  blocks = images.reshape(3, 32, 2, 32, 2, 3).astype(np.float64).mean(axis=(2, 4))
  # PIL's fixed-point box filter lands on a uint8 level next to each block's mean.
  np.testing.assert_allclose(got, blocks.reshape(3, -1), atol=1.0)
