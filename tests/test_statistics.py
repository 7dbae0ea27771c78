"""sweeps/statistics against scipy's own tests, a simulation and hand-computed values."""

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from alexnet_jax.sweeps import statistics


def test_a_paired_difference_is_scipys_paired_t_test_with_its_interval():
  variant = {0: 0.31, 1: 0.35, 2: 0.30, 3: 0.36, 4: 0.33, 7: 0.9}  # seed 7: no baseline run
  baseline = {0: 0.30, 1: 0.32, 2: 0.30, 3: 0.33, 4: 0.31, 5: 0.2}
  d = statistics.paired(variant, baseline)
  a = [variant[s] for s in range(5)]
  b = [baseline[s] for s in range(5)]
  reference = scipy_stats.ttest_rel(a, b)
  interval = reference.confidence_interval(0.95)
  assert d.n == 5  # the seeds only one variant has are left out
  assert d.p == pytest.approx(reference.pvalue, rel=1e-10)
  assert (d.low, d.high) == pytest.approx((interval.low, interval.high), rel=1e-10)
  differences = np.subtract(a, b)
  assert d.mean == pytest.approx(0.018) and d.sd == pytest.approx(differences.std(ddof=1))
  assert d.effect_size == pytest.approx(0.018 / differences.std(ddof=1))
  # Unpaired, the seeds' spread would hide it: the pairing is what the test gains.
  assert scipy_stats.ttest_ind(a, b).pvalue > 0.05 > d.p


def test_a_difference_every_seed_shares_is_tested_by_its_signs_not_by_an_infinite_t():
  """Steps counted every 250 steps: five seeds each 250 steps sooner. By hand: five differences
  of one sign by chance, 2 x (1/2)^5 = 0.0625, not significant at 5% with 5 seeds."""
  d = statistics.paired({s: 750.0 for s in range(5)}, {s: 1000.0 for s in range(5)})
  assert (d.mean, d.low, d.high, d.sd) == (-250.0, -250.0, -250.0, 0.0)
  assert d.p == pytest.approx(2 * 0.5**5) == scipy_stats.binomtest(5, 5).pvalue
  assert math.isnan(d.effect_size)
  assert statistics.verdict(d, d.p) == 'inconclusive (all 5 seeds lower, tested by their signs)'
  six = statistics.paired({s: 1.0 for s in range(6)}, {s: 0.0 for s in range(6)})
  assert six.p == pytest.approx(2 * 0.5**6) and statistics.verdict(six, six.p) == 'higher'
  same = statistics.paired({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
  assert (same.p, same.effect_size) == (1.0, 0.0)


def test_the_detectable_effect_is_detected_80_percent_of_the_time():
  """A simulation, independent of the noncentral t: 20,000 experiments of n = 5 paired seeds
  whose true difference is `detectable`, tested at 5%: about 80% reject."""
  sd, n = 1.5, 5
  effect = statistics.detectable(sd, n)
  rng = np.random.default_rng(0)
  samples = rng.normal(effect, sd, (20_000, n))
  rejected = scipy_stats.ttest_1samp(samples, 0.0, axis=1).pvalue < 0.05
  assert rejected.mean() == pytest.approx(0.8, abs=0.015)
  # Large n: the normal approximation (z_0.975 + z_0.8) sd / sqrt(n).
  z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
  assert statistics.detectable(1.0, 400) == pytest.approx(z / math.sqrt(400), rel=0.01)
  # Fewer seeds detect only larger effects.
  assert (
      statistics.detectable(1.0, 3) > statistics.detectable(1.0, 5) > statistics.detectable(1, 10)
  )


def test_holm_by_hand():
  # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> kept at 0.06.
  adjusted = statistics.holm([0.01, 0.04, 0.03, 0.005])
  assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert statistics.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
  assert statistics.holm([]) == []


def test_a_verdict_names_the_direction_or_what_could_have_been_seen():
  d = statistics.paired({0: 1.0, 1: 2.0, 2: 3.5}, {0: 0.5, 1: 1.0, 2: 3.0})
  assert statistics.verdict(d, 0.01) == 'higher'
  flipped = statistics.paired({0: 0.5, 1: 1.0, 2: 3.0}, {0: 1.0, 1: 2.0, 2: 3.5})
  assert statistics.verdict(flipped, 0.01) == 'lower'
  text = statistics.verdict(d, 0.2)
  assert text == f'inconclusive (could detect >= {d.detectable:.2g})'
  # In the table's units, written out: 188.4 steps to two digits is 190, not 1.9e+02.
  steps = dataclasses.replace(d, detectable=1.884)
  assert statistics.verdict(steps, 0.2, scale=100.0) == 'inconclusive (could detect >= 190)'


def test_runs_that_never_reach_the_target_are_counted_not_dropped():
  nan = float('nan')
  r = statistics.reached([300, nan, 100, 200, nan], budget=1000)
  assert (r.k, r.n) == (3, 5)
  assert r.median == 300  # of [100, 200, 300, never, never]: the reached runs alone give 200
  assert statistics.reached([100, nan, nan, 200], budget=1000).median is None  # > budget
  three, none = statistics.reached([1, 2, 3], 10), statistics.reached([nan] * 3, 10)
  assert statistics.reached_difference(three, none) == pytest.approx(0.1)  # Fisher: 2 / C(6, 3)


def test_the_table_against_the_baseline_pairs_by_seed_and_corrects_over_its_rows():
  import pandas as pd  # pylint: disable=g-import-not-at-top

  from alexnet_jax.sweeps import results  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  base = rng.normal(0.30, 0.02, 5)
  values = {
      'paper': base,
      'worse': base + 0.05 + rng.normal(0, 0.005, 5),  # clearly higher error, seed by seed
      'same': base + rng.normal(0, 0.01, 5),
  }
  per_run = pd.DataFrame(
      [
          {'variant': v, 'seed': seed, 'eval_top1_error': x}
          for v, xs in values.items()
          for seed, x in enumerate(xs)
      ]
      + [{'variant': 'same', 'seed': 9, 'eval_top1_error': float('nan')}]  # no value: left out
  )
  table = results.against_baseline(per_run, 'eval_top1_error', 'paper')
  assert list(table.index) == ['same', 'worse']
  for variant in ('same', 'worse'):
    reference = scipy_stats.ttest_rel(values[variant], base)
    assert table.loc[variant, 'p'] == pytest.approx(reference.pvalue, rel=1e-10)
    assert table.loc[variant, 'n'] == 5
  p_same, p_worse = (
      scipy_stats.ttest_rel(values['same'], base).pvalue,
      scipy_stats.ttest_rel(values['worse'], base).pvalue,
  )
  # Holm over the two rows, by hand: the smaller p doubled, the larger kept (not below it).
  small, large = sorted([p_same, p_worse])
  expected = {p_same: None, p_worse: None}
  expected[small] = min(1, 2 * small)
  expected[large] = max(expected[small], min(1, large))
  assert table.loc['same', 'p_holm'] == pytest.approx(expected[p_same])
  assert table.loc['worse', 'p_holm'] == pytest.approx(expected[p_worse])
  assert table.loc['worse', 'verdict'] == 'higher'
  assert table.loc['same', 'verdict'].startswith('inconclusive (could detect >= ')


def test_against_baseline_corrects_over_every_row_of_a_table_of_several_columns():
  """A claim measured two ways (the error and the gap) is one family: Holm over all four rows,
  by hand, each row's p the paired t-test's (scipy)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top

  from alexnet_jax.sweeps import results  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(1)
  base = {'error': rng.normal(0.3, 0.02, 5), 'gap': rng.normal(0.1, 0.02, 5)}
  shifts = {('error', 'a'): 0.04, ('error', 'b'): 0.0, ('gap', 'a'): 0.01, ('gap', 'b'): -0.03}
  values = {key: base[key[0]] + shift + rng.normal(0, 0.01, 5) for key, shift in shifts.items()}
  rows = [
      {'variant': 'paper', 'seed': s, 'error': base['error'][s], 'gap': base['gap'][s]}
      for s in range(5)
  ] + [
      {'variant': v, 'seed': s, 'error': values['error', v][s], 'gap': values['gap', v][s]}
      for v in ('a', 'b')
      for s in range(5)
  ]
  table = results.against_baseline(pd.DataFrame(rows), ('error', 'gap'), 'paper')
  assert list(table.index) == [('error', 'a'), ('error', 'b'), ('gap', 'a'), ('gap', 'b')]
  p = {key: scipy_stats.ttest_rel(values[key], base[key[0]]).pvalue for key in shifts}
  order = sorted(p, key=p.get)
  expected, running = {}, 0.0
  for rank, key in enumerate(order):  # Holm's step-down: (m - rank) * p, never below the last
    running = max(running, min(1.0, (len(order) - rank) * p[key]))
    expected[key] = running
  for key in shifts:
    assert table.loc[key, 'p'] == pytest.approx(p[key], rel=1e-10)
    assert table.loc[key, 'p_holm'] == pytest.approx(expected[key], rel=1e-10)
  # One column alone is its own family: the same rows, corrected over two instead of four.
  alone = results.against_baseline(pd.DataFrame(rows), 'error', 'paper')
  assert list(alone.index) == ['a', 'b']
  assert alone.loc['a', 'p_holm'] <= table.loc[('error', 'a'), 'p_holm']


def test_the_differences_are_printed_in_the_units_asked_for():
  import pandas as pd  # pylint: disable=g-import-not-at-top

  from alexnet_jax.sweeps import results  # pylint: disable=g-import-not-at-top

  frame = pd.DataFrame(
      {
          'n': [5, 5],
          'mean': [-0.0284, -400.0],
          'low': [-0.0514, -570.02],
          'high': [-0.0054, -229.98],
          'sd': [0.0185, 137.0],
          'effect_size': [-1.54, -2.9],
          'p': [0.0265, 0.0028],
          'p_holm': [0.132, 0.0255],
          'detectable': [0.0311, 188.4],
      },
      index=['error', 'steps'],
  )
  errors = results.format_differences(frame.loc[['error']])
  assert errors.loc['error', 'difference'] == '-2.84'  # points of %
  assert errors.loc['error', '95% CI'] == '[-5.14, -0.54]'
  assert errors.loc['error', 'verdict'] == 'inconclusive (could detect >= 3.1)'
  steps = results.format_differences(frame.loc[['steps']], scale=1.0, digits=0)
  assert steps.loc['steps', 'difference'] == '-400'
  assert steps.loc['steps', '95% CI'] == '[-570, -230]'
  assert steps.loc['steps', 'verdict'] == 'lower'  # Holm's p under 5%
