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
