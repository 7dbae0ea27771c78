"""A sweep's runs as tables: every logged metric, each run's final numbers, and their spread.

`load(parent)` reads `PARENT/VARIANT/seed_N/metrics.jsonl` (`alexnet_jax.history`) into one
DataFrame, a row per (variant, seed, logged step). `finals` reduces it to a row per run, `aggregate`
to a row per variant (mean, std and n over seeds), and `compare` says whether two variants differ
by more than their seed-to-seed spread. Nothing here needs JAX or TensorFlow.
"""

from collections.abc import Sequence
import dataclasses
import glob
import json
import math
import os

import numpy as np
import pandas as pd

from alexnet_jax import history

KEYS = ('variant', 'seed', 'step')
# Not metrics: the keys, the run's state (done, diverged, started) and its clock.
NOT_METRICS = KEYS + ('status', 'elapsed_s')


def load(parent: str) -> pd.DataFrame:
  """Every logged metric of every run under `parent`: columns variant, seed, step, elapsed_s,
  status ('done', 'diverged' or 'started': still training, or stopped) and one per metric
  (train_loss, train_top1_error, eval_top1_error, ..., NaN where a step did not log it). Variants
  keep the sweep's order (its `sweep.json`)."""
  rows = []
  for path in sorted(glob.glob(os.path.join(parent, '*', 'seed_*', history.FILENAME))):
    workdir = os.path.dirname(path)
    variant = os.path.basename(os.path.dirname(workdir))
    seed = int(os.path.basename(workdir)[len('seed_') :])
    for record in history.read(workdir):
      rows.append({'variant': variant, 'seed': seed, **record})
  if not rows:
    raise FileNotFoundError(f'No run under {parent} has written metrics yet ({history.FILENAME}).')
  frame = pd.DataFrame(rows)
  # One row per logged step: the loop writes train, eval and progress scalars separately (`last`
  # takes each column's last non-missing value).
  frame = frame.groupby(list(KEYS), sort=False).last().reset_index()
  status = {}
  for (variant, seed), _ in frame.groupby(['variant', 'seed'], sort=False):
    workdir = os.path.join(parent, variant, f'seed_{seed}')
    status[variant, seed] = (
        'done'
        if os.path.exists(os.path.join(workdir, history.DONE_FILE))
        else 'diverged'
        if os.path.exists(os.path.join(workdir, history.FAILED_FILE))
        else 'started'
    )
  frame['status'] = [status[v, s] for v, s in zip(frame['variant'], frame['seed'])]
  order = _variant_order(parent, frame['variant'].unique())
  frame['variant'] = pd.Categorical(frame['variant'], categories=order, ordered=True)
  return frame.sort_values(list(KEYS)).reset_index(drop=True)


def _variant_order(parent: str, found) -> list[str]:
  path = os.path.join(parent, history.PLAN_FILE)
  planned = []
  if os.path.exists(path):
    with open(path) as f:
      planned = json.load(f)['variants']
  return [v for v in planned if v in set(found)] + sorted(set(found) - set(planned))


def steps_to(table: pd.DataFrame, target: float, metric: str = 'train_top1_error') -> pd.DataFrame:
  """Per run: the first logged step (and its elapsed seconds) at which `metric` <= `target`;
  NaN for a run that never got there."""
  out = []
  for (variant, seed), run in table.groupby(['variant', 'seed'], observed=True, sort=True):
    run = run.sort_values('step')
    reached = run[run[metric] <= target]
    first = reached.iloc[0] if len(reached) else None
    out.append(
        {
            'variant': variant,
            'seed': seed,
            'steps_to_target': np.nan if first is None else float(first['step']),
            'seconds_to_target': np.nan if first is None else float(first['elapsed_s']),
        }
    )
  return pd.DataFrame(out)


# `tune`'s metric that ranks rates by speed rather than by where they end.
STEPS_TO_TARGET = 'steps_to_target'


def rate_scores(
    table: pd.DataFrame,
    metric: str = 'eval_top1_error',
    target: float | None = None,
    target_metric: str = 'train_top1_error',
) -> pd.DataFrame:
  """Per tuning variant (`VARIANT@lrRATE`), over its finished runs: `score` and `tiebreak`, the
  lower the better (`sweeps.sweep.tune` keeps the rate that is lowest in both, in that order).

  A final metric: its mean, with no tiebreak. `STEPS_TO_TARGET` (Figure 1, where each network's
  rate was "chosen independently to make training as fast as possible"): the mean steps until
  `target_metric` first fell to `target`; a rate with a run that never got there scores infinity,
  behind every rate whose runs all did, and such rates are told apart by how close they came (the
  mean final `target_metric`, the tiebreak for all). A rate with no finished run (every run
  diverged) has no row.
  """
  per_run = finals(table)
  by_variant = per_run.groupby('variant', observed=True)
  if metric != STEPS_TO_TARGET:
    return pd.DataFrame({'score': by_variant[metric].mean(), 'tiebreak': 0.0}).dropna()
  if target is None:
    raise ValueError(f'metric={STEPS_TO_TARGET!r} needs a target.')
  per_run = per_run.merge(steps_to(table, target, target_metric), on=['variant', 'seed'])
  by_variant = per_run.groupby('variant', observed=True)
  every_run_reached = by_variant['steps_to_target'].apply(lambda s: s.notna().all())
  score = by_variant['steps_to_target'].mean().where(every_run_reached, np.inf)
  return pd.DataFrame({'score': score, 'tiebreak': by_variant[target_metric].mean()})


def finals(
    table: pd.DataFrame,
    target: float | None = None,
    target_metric: str = 'train_top1_error',
    finished_only: bool = True,
) -> pd.DataFrame:
  """A row per run: its last step and elapsed seconds, its median steps/s, the last logged value
  of every metric, and with `target` the steps and seconds to reach it (`steps_to`).

  Only finished runs, unless `finished_only=False`: a run still training, or one that diverged,
  has no final numbers to average with the others (`table['status']` says which is which).
  """
  if finished_only and 'status' in table:
    table = table[table['status'] == 'done']
  metrics = [c for c in table.columns if c not in NOT_METRICS]
  out = []
  for (variant, seed), run in table.groupby(['variant', 'seed'], observed=True, sort=True):
    row = {'variant': variant, 'seed': seed, 'steps': run['step'].max()}
    row['elapsed_s'] = run['elapsed_s'].max()
    for column in metrics:
      valid = run[column].dropna()
      if column == 'steps_per_sec':
        row[column] = valid.median() if len(valid) else np.nan
      else:
        row[column] = valid.iloc[-1] if len(valid) else np.nan
    out.append(row)
  frame = pd.DataFrame(out)
  if 'trainset_top1_error' in frame and 'eval_top1_error' in frame:
    # Section 4.2's overfitting: validation error minus the error on the images trained on.
    frame['generalisation_gap'] = frame['eval_top1_error'] - frame['trainset_top1_error']
  if target is not None:
    frame = frame.merge(steps_to(table, target, target_metric), on=['variant', 'seed'])
  categories = (
      table['variant'].cat.categories
      if isinstance(table['variant'].dtype, pd.CategoricalDtype)
      else list(dict.fromkeys(table['variant']))
  )
  frame['variant'] = pd.Categorical(frame['variant'], categories=categories, ordered=True)
  return frame.sort_values(['variant', 'seed']).reset_index(drop=True)


def plateau(
    table: pd.DataFrame, metric: str = 'eval_top1_error', last: float = 0.2
) -> pd.DataFrame:
  """Has each variant's `metric` stopped improving? A row per variant: how much the mean over its
  finished seeds fell over the last `last` of the run (from the logged step nearest the start of
  that stretch to the final one; negative: it rose), the spread of its final values over seeds
  (std, ddof=1), and `plateaued`: the fall is smaller than the spread, the ablation issue's test
  that a run is long enough for its final number to measure the variant rather than how fast it
  starts. Lower is better for `metric` (an error or a loss)."""
  done = table[table['status'] == 'done'] if 'status' in table else table
  rows = []
  for variant, runs in done.groupby('variant', observed=True, sort=True):
    logged = runs.dropna(subset=[metric])
    end = logged['step'].max()
    steps = np.sort(logged['step'].unique())
    start = steps[np.argmin(np.abs(steps - (1 - last) * end))]
    at = logged.pivot_table(index='seed', columns='step', values=metric)
    finals = at[end].dropna()
    fall = float(at[start].mean() - at[end].mean())
    spread = float(finals.std(ddof=1)) if len(finals) > 1 else math.nan
    rows.append(
        {
            'variant': variant,
            'n': len(finals),
            'from_step': int(start),
            'to_step': int(end),
            'fall': fall,
            'spread': spread,
            'plateaued': bool(fall < spread),
        }
    )
  return pd.DataFrame(rows).set_index('variant')


def aggregate(per_run: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
  """A row per variant: mean, std (over seeds, ddof=1) and n (runs with a value) of `columns`
  (default: every numeric column but the seed); columns are (column, stat) pairs."""
  if columns is None:
    columns = [
        c
        for c in per_run.columns
        if c not in ('variant', 'seed') and pd.api.types.is_numeric_dtype(per_run[c])
    ]
  grouped = per_run.groupby('variant', observed=True, sort=True)[columns]
  return grouped.agg(['mean', 'std', 'count']).rename(columns={'count': 'n'}, level=1)


def summary(
    table: pd.DataFrame, target: float | None = None, target_metric: str | None = None
) -> pd.DataFrame:
  """`aggregate(finals(table, ...))`: the sweep's result, a row per variant."""
  return aggregate(finals(table, target, target_metric or 'train_top1_error'))


def against_baseline(
    per_run: pd.DataFrame, column: str | Sequence[str], baseline: str
) -> pd.DataFrame:
  """A row per other variant: its paired difference from `baseline` in `column` by seed
  (`statistics.paired`: n, mean, the 95% interval, effect size, p), Holm's p over the table's
  rows, and the verdict (`statistics.verdict`: 'higher', 'lower' or 'inconclusive (could detect
  >= X)'). Runs without a value in `column` are left out of their pair (n says how many
  remained); time to a target is `statistics.reached`'s, where such runs count.

  With several columns (a claim measured two ways, e.g. the error and the generalisation gap),
  a row per (column, variant), and Holm's correction over all of them: one table, one family.
  """
  from alexnet_jax.sweeps import statistics  # pylint: disable=g-import-not-at-top  (scipy)

  columns = [column] if isinstance(column, str) else list(column)
  keys, differences = [], []
  for name in columns:
    by_seed = {
        variant: dict(zip(runs['seed'], runs[name]))
        for variant, runs in per_run.dropna(subset=[name]).groupby('variant', observed=True)
    }
    if baseline not in by_seed:
      raise ValueError(f'No run of the baseline {baseline!r} has a {name}.')
    for variant in by_seed:
      if variant != baseline:
        keys.append((name, variant))
        differences.append(statistics.paired(by_seed[variant], by_seed[baseline]))
  adjusted = statistics.holm([d.p for d in differences])
  if isinstance(column, str):
    index = pd.Index([variant for _, variant in keys], name='variant')
  else:
    index = pd.MultiIndex.from_tuples(keys, names=['column', 'variant'])
  frame = pd.DataFrame([dataclasses.asdict(d) for d in differences], index=index)
  frame['p_holm'] = adjusted
  frame['verdict'] = [statistics.verdict(d, p) for d, p in zip(differences, adjusted)]
  return frame


def format_differences(
    frame: pd.DataFrame, scale: float = 100.0, digits: int | None = None
) -> pd.DataFrame:
  """`against_baseline`'s table for a reader, in the units of the column times `scale` (100:
  errors in points of %): n, the mean difference, its 95% interval, d_z, Holm's p and the
  verdict, whose detectable effect is given in the same units. `digits` after the point: by
  default 2 for points of %, 4 for anything else (a loss); 0 suits steps."""
  from alexnet_jax.sweeps import statistics  # pylint: disable=g-import-not-at-top  (scipy)

  def verdict(row) -> str:
    """statistics.verdict of the row, the detectable effect in the table's units."""
    fields = {f.name: row[f.name] for f in dataclasses.fields(statistics.Difference)}
    return statistics.verdict(statistics.Difference(**fields), row['p_holm'], scale=scale)

  if digits is None:
    digits = 2 if scale == 100.0 else 4  # points of %, or a loss in its own units
  return pd.DataFrame(
      {
          'n': frame['n'],
          'difference': [f'{m * scale:+.{digits}f}' for m in frame['mean']],
          '95% CI': [
              f'[{lo * scale:+.{digits}f}, {hi * scale:+.{digits}f}]'
              for lo, hi in zip(frame['low'], frame['high'])
          ],
          # NaN: every seed's difference the same, where d_z is undefined (statistics.paired).
          'd_z': [f'{e:+.2f}' if math.isfinite(e) else '-' for e in frame['effect_size']],
          'p (Holm)': [f'{p:.3g}' for p in frame['p_holm']],
          'verdict': [verdict(row) for _, row in frame.iterrows()],
      },
      index=frame.index,
  )


def format_mean_std(summary_frame: pd.DataFrame, column: str, scale: float = 100.0) -> pd.Series:
  """'12.3 +- 0.4 (n=3)' per variant (scale 100: errors as percentages)."""
  stats = summary_frame[column]
  return pd.Series(
      [
          f'{m * scale:.1f} +- {"n/a" if np.isnan(s) else f"{s * scale:.1f}"} (n={int(n)})'
          for m, s, n in zip(stats['mean'], stats['std'], stats['n'])
      ],
      index=summary_frame.index,
      name=column,
  )


def save(table: pd.DataFrame, summary_frame: pd.DataFrame, parent: str) -> dict[str, str]:
  """Writes `metrics.csv` (every logged metric) and `summary.csv` into `parent`."""
  paths = {'metrics': os.path.join(parent, 'metrics.csv')}
  table.to_csv(paths['metrics'], index=False)
  flat = summary_frame.copy()
  flat.columns = [f'{column}_{stat}' for column, stat in flat.columns]
  paths['summary'] = os.path.join(parent, 'summary.csv')
  flat.to_csv(paths['summary'])
  return paths


@dataclasses.dataclass
class Report:
  """A sweep's answer for one metric, as the command prints it and the notebooks show it."""

  metric: str
  baseline: str
  variants: pd.DataFrame  # a row per variant: n, mean, its 95% interval, std
  differences: pd.DataFrame | None  # against_baseline's, where there are two variants and seeds
  plateau: pd.DataFrame
  rates: pd.DataFrame | None  # the tuned rates: each variant's choice and every rate's score
  # With a target: per variant, k of n runs reached it, the median steps over all n (censored
  # runs counted as never) and Fisher's p against the baseline's k of n, Holm-corrected.
  reached: pd.DataFrame | None = None

  def __str__(self) -> str:
    scale = _scale(self.metric)
    unit = ' (points of %)' if scale == 100.0 else ''
    parts = [
        f'{self.metric}{unit}: mean over seeds, its 95% interval (t), std',
        self.variants.to_string(),
    ]
    if self.rates is not None:
      parts += [
          "learning rates (each variant's tuning runs: mean final value per rate; at_edge: the "
          'chosen rate is the smallest or largest tried, and a better one may lie beyond)'
      ]
      parts += [self.rates.to_string()]
    if self.differences is not None:
      parts += [
          f"each variant minus {self.baseline}, paired by seed, its 95% interval, Cohen's d_z "
          "and Holm's p over the table:",
          format_differences(self.differences, scale).to_string(),
      ]
    parts += [
        "its fall over the last fifth of each variant's runs against its spread over seeds "
        '(plateaued: the fall is smaller):',
        self.plateau.round(4).to_string(),
    ]
    if self.reached is not None:
      parts += [
          'steps to the target: k of n runs reached it within the budget, the median over all n '
          "(the runs that never did counted as never; None: half or more never did), Fisher's p "
          "of k of n against the baseline's, Holm-corrected:",
          self.reached.to_string(),
      ]
    return '\n'.join(parts)


def _scale(metric: str) -> float:
  return 100.0 if 'error' in metric or 'gap' in metric else 1.0


def report(
    table: pd.DataFrame,
    metric: str,
    parent: str | None = None,
    target: float | None = None,
    target_metric: str = 'train_top1_error',
) -> Report:
  """The sweep's table read for `metric` against its first variant (the baseline): each
  variant's mean with its 95% interval, the paired differences with Holm's correction (where
  there are two variants or more and two seeds or more), the plateau check, where the sweep
  tuned its rates (`parent`'s tuning.json) what each variant chose, and with `target` how many
  runs reached it (`reached_target`)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top  (jax depends on scipy)

  per_run = finals(table)
  names = [v for v in per_run['variant'].cat.categories if (per_run['variant'] == v).any()]
  scale = _scale(metric)
  rows = []
  for variant in names:
    values = per_run.loc[per_run['variant'] == variant, metric].dropna().to_numpy(float) * scale
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    sd = float(values.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else math.nan
    rows.append(
        {
            'variant': variant,
            'n': n,
            'mean': mean,
            'low': mean - half,
            'high': mean + half,
            'std': sd,
        }
    )
  # Points of % to 2 decimals; a loss (or another metric in its own units) to 4.
  variants = pd.DataFrame(rows).set_index('variant').round(2 if scale == 100.0 else 4)
  differences = None
  if len(names) > 1 and per_run['seed'].nunique() > 1:
    differences = against_baseline(per_run, metric, names[0])
  answer = Report(metric, names[0], variants, differences, plateau(table, metric), _rates(parent))
  if target is not None:
    answer.reached = reached_target(table, target, target_metric)
  return answer


def reached_target(
    table: pd.DataFrame, target: float, metric: str = 'train_top1_error'
) -> pd.DataFrame:
  """Per variant of the finished runs: how many reached `metric` <= `target` (k of n), the
  median steps to it over all n with the others censored at the run's length
  (`statistics.reached`), and Fisher's exact p of its k of n against the first variant's,
  Holm-corrected over the other variants. No run is dropped for not getting there."""
  from alexnet_jax.sweeps import statistics  # pylint: disable=g-import-not-at-top  (scipy)

  per_run = finals(table, target, metric)
  names = [v for v in per_run['variant'].cat.categories if (per_run['variant'] == v).any()]
  counts = {}
  for variant in names:
    runs = per_run[per_run['variant'] == variant]
    counts[variant] = statistics.reached(list(runs['steps_to_target']), float(runs['steps'].min()))
  others = names[1:]
  p = [statistics.reached_difference(counts[v], counts[names[0]]) for v in others]
  adjusted = dict(zip(others, statistics.holm(p)))
  return pd.DataFrame(
      [
          {
              'variant': v,
              'reached': f'{c.k}/{c.n}',
              'median_steps': c.median,
              'budget': c.budget,
              'p_holm': adjusted.get(v, math.nan),
          }
          for v, c in counts.items()
      ]
  ).set_index('variant')


def _rates(parent: str | None) -> pd.DataFrame | None:
  path = os.path.join(parent, 'tuning.json') if parent else None
  if not path or not os.path.exists(path):
    return None
  with open(path) as f:
    record = json.load(f)
  rows = {}
  tried = [float(r) for r in record['rates']]
  for variant, entry in record['variants'].items():
    scores = next(v for k, v in entry.items() if k.startswith('mean_'))  # the ranked one first
    rows[variant] = {'chosen': entry['chosen'], **{f'lr {r}': s for r, s in scores.items()}}
    # A choice at either end of the grid may not be the best rate: the best may lie beyond it.
    rows[variant]['at_edge'] = len(tried) > 1 and entry['chosen'] in (min(tried), max(tried))
  return pd.DataFrame.from_dict(rows, orient='index').rename_axis('variant')
