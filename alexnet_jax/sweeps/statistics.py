"""The statistics of an ablation table: what a difference between two variants is, and how sure.

Every variant of a sweep trains the same seeds, and a seed fixes the initialisation's draws and the
data order, so a variant and its baseline are compared seed by seed: a paired test, whose
differences carry less of the seed-to-seed spread than two independent groups would (`paired`).
Each difference comes with its 95% confidence interval, its effect size (Cohen's d_z: the mean
difference over the differences' standard deviation) and the smallest difference the test would
have detected with 80% power (`detectable`), so a result that is not significant reads
"inconclusive (could detect >= X)", never "no difference". A table of several comparisons is
corrected with Holm's step-down method (`holm`), which keeps the chance of any false claim in the
table at 5% without assuming the tests independent. Runs that never reach a target are censored,
never dropped: `reached` counts k of n and bounds the time of those that did not, and
`reached_difference` compares two variants' counts with Fisher's exact test.

Written here, not taken from a library: scipy has the t and noncentral t distributions and
Fisher's test (used below) but no paired comparison with a detectable effect, and no Holm
correction (statsmodels has one, and is not a dependency of this project).
"""

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np
from scipy import optimize
from scipy import stats

ALPHA = 0.05
POWER = 0.8


@dataclasses.dataclass(frozen=True)
class Difference:
  """`variant` minus `baseline` over the seeds both have, paired by seed."""

  n: int  # seeds both variants have a value for
  mean: float
  low: float  # the 95% confidence interval of the mean difference
  high: float
  sd: float  # of the per-seed differences
  effect_size: float  # Cohen's d_z: mean / sd (NaN for a constant nonzero difference)
  p: float  # two-sided paired t-test; the exact sign test where every difference is the same
  detectable: float  # the smallest |mean| this test detects with POWER at ALPHA (inf: signs)


def paired(
    variant: Mapping[int, float], baseline: Mapping[int, float], alpha: float = ALPHA
) -> Difference:
  """The paired comparison of two variants' values by seed ({seed: value}); seeds that either
  lacks (a run that failed) are left out, and `n` says how many remained. ValueError below 2."""
  seeds = sorted(set(variant) & set(baseline))
  if len(seeds) < 2:
    raise ValueError(f'A paired comparison needs at least 2 seeds both variants ran; got {seeds}.')
  d = np.array([variant[s] - baseline[s] for s in seeds], float)
  n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
  critical = float(stats.t.ppf(1 - alpha / 2, n - 1))
  half = critical * sd / math.sqrt(n)
  if sd == 0 and mean != 0:
    # Every seed moved by the same amount (steps counted at a coarse evaluation interval do):
    # the t statistic is infinite and says nothing about n = 5. The exact sign test asks only how
    # likely n differences of one sign are by chance, 2 / 2^n (0.0625 for 5), and d_z is undefined.
    p = float(stats.binomtest(n, n, 0.5).pvalue)
    return Difference(n, mean, mean, mean, sd, math.nan, p, math.inf)
  if sd == 0:
    p, effect = 1.0, 0.0
  else:
    p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    effect = mean / sd
  return Difference(n, mean, mean - half, mean + half, sd, effect, p, detectable(sd, n, alpha))


def detectable(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
  """The smallest true mean difference a two-sided paired t-test of `n` pairs whose differences
  have standard deviation `sd` detects with probability `power` at level `alpha`: the effect at
  which the noncentral t with n - 1 degrees of freedom and noncentrality effect * sqrt(n) / sd
  falls outside +-t_crit that often."""
  if sd == 0:
    return 0.0
  df = n - 1
  critical = stats.t.ppf(1 - alpha / 2, df)

  def power_at(effect: float) -> float:
    nc = effect * math.sqrt(n) / sd
    # The far tail below -t_crit underflows to NaN in scipy's nct where it is negligible.
    below = float(np.nan_to_num(stats.nct.cdf(-critical, df, nc), nan=0.0))
    return float(stats.nct.sf(critical, df, nc)) + below

  high = sd / math.sqrt(n)
  while power_at(high) < power:
    high *= 2
  return float(optimize.brentq(lambda e: power_at(e) - power, 0.0, high, xtol=1e-12 * high))


def holm(pvalues: Sequence[float]) -> list[float]:
  """Holm's adjusted p-values, in the order given: the i-th smallest p times (m - i), made
  non-decreasing in that order and capped at 1. A comparison is significant where its adjusted p
  is below alpha, which bounds the chance of any false claim among the m at alpha."""
  m = len(pvalues)
  order = sorted(range(m), key=lambda i: pvalues[i])
  adjusted, running = [0.0] * m, 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * pvalues[i]))
    adjusted[i] = running
  return adjusted


def verdict(
    difference: Difference, adjusted_p: float, alpha: float = ALPHA, scale: float = 1.0
) -> str:
  """'higher' or 'lower' (the variant's value against the baseline's) where the corrected test
  says so, else 'inconclusive (could detect >= X)', X the detectable effect times `scale` (100:
  errors in points of %) to two significant digits, written out (190, not 1.9e+02)."""
  if adjusted_p < alpha:
    return 'higher' if difference.mean > 0 else 'lower'
  if math.isinf(difference.detectable):  # one shared difference: no t-test, `paired` says why
    direction = 'higher' if difference.mean > 0 else 'lower'
    return f'inconclusive (all {difference.n} seeds {direction}, tested by their signs)'
  return f'inconclusive (could detect >= {float(f"{difference.detectable * scale:.2g}"):g})'


@dataclasses.dataclass(frozen=True)
class Reached:
  """How many of a variant's runs reached a target, and when."""

  k: int  # runs that reached it
  n: int  # runs
  median: float | None  # median steps over all n runs, the censored ones counted as never; None
  # where half or more never reached it (the median is then only known to exceed `budget`)
  budget: float  # the steps every run had: a run that did not reach the target took > budget


def reached(steps: Sequence[float], budget: float) -> Reached:
  """`steps`: each run's steps to the target, NaN (or None) where it never got there within
  `budget` steps. The censored runs stay in: they sort after every run that reached it."""
  values = [math.inf if s is None or math.isnan(s) else float(s) for s in steps]
  k, n = sum(math.isfinite(v) for v in values), len(values)
  ordered = sorted(values)
  median = None
  if n and math.isfinite(ordered[(n - 1) // 2]) and math.isfinite(ordered[n // 2]):
    median = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
  return Reached(k, n, median, budget)


def reached_difference(variant: Reached, baseline: Reached) -> float:
  """Fisher's exact two-sided p of the two variants' k of n: does one reach the target more
  often? (3 of 3 against 0 of 3 gives 0.1: three seeds a side cannot show it at 5%.)"""
  table = [[variant.k, variant.n - variant.k], [baseline.k, baseline.n - baseline.k]]
  return float(stats.fisher_exact(table).pvalue)
