"""The figures of a sweep, drawn with matplotlib from `results` tables.

Each function returns a `matplotlib.figure.Figure` built without pyplot (no global figure state, so
it is safe from threads and never pops up a window); `save_sweep_plots` writes the standard set as
PNG files into the sweep's parent workdir, which notebooks then show inline.
"""

import os
from typing import Sequence

from matplotlib import figure as mpl_figure
import numpy as np
import pandas as pd

PERCENT = 100.0
LABELS = {
    'step': 'training step',
    'elapsed_s': 'seconds (this machine)',
    'epoch': 'epochs through the training set',
    'train_top1_error': 'training error (%, running batches)',
    'eval_top1_error': 'validation top-1 error (%)',
    'eval_top5_error': 'validation top-5 error (%)',
    'trainset_top1_error': 'top-1 error on the training images (%)',
    'generalisation_gap': 'validation minus training-image error (points)',
    'eval_loss': 'validation loss',
    'train_loss': 'training loss',
}


def _colours(n: int):
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top

  cmap = colormaps['tab10']
  return [cmap(i % 10) for i in range(n)]


def _variants(table: pd.DataFrame) -> list[str]:
  column = table['variant']
  if isinstance(column.dtype, pd.CategoricalDtype):
    return [v for v in column.cat.categories if (column == v).any()]
  return list(dict.fromkeys(column))


def _scale(metric: str) -> float:
  return PERCENT if 'error' in metric or 'gap' in metric else 1.0


def learning_curves(
    table: pd.DataFrame,
    metric: str = 'eval_top1_error',
    x: str = 'step',
    ax=None,
    styles: dict[str, str] | None = None,
    target: float | None = None,
    label: str = '{variant} (n={n})',
):
  """`metric` against `x` (step, elapsed_s or epoch) per variant: every seed as a thin line, the
  mean over seeds (at the steps they share) bold. `styles` maps variants to line styles; `label`
  names each mean in the legend ({variant}, {n} and {metric} are filled in), so two metrics drawn
  on one axis are told apart."""
  fig = None
  if ax is None:
    fig = mpl_figure.Figure(figsize=(6.4, 4.2), layout='constrained')
    ax = fig.add_subplot()
  scale = _scale(metric)
  for variant, colour in zip(_variants(table), _colours(len(_variants(table)))):
    rows = table[(table['variant'] == variant) & table[metric].notna()]
    style = (styles or {}).get(variant, '-')
    for _, run in rows.groupby('seed'):
      ax.plot(run[x], run[metric] * scale, style, color=colour, lw=0.8, alpha=0.35)
    mean = rows.groupby('step').agg({x: 'mean', metric: 'mean', 'seed': 'count'})
    mean = mean[mean['seed'] == rows['seed'].nunique()]  # steps every seed logged
    n = rows['seed'].nunique()
    ax.plot(
        mean[x],
        mean[metric] * scale,
        style,
        color=colour,
        lw=2.2,
        label=label.format(variant=variant, n=n, metric=LABELS.get(metric, metric)),
    )
  if target is not None:
    ax.axhline(target * scale, color='0.4', lw=0.8, ls=':')
  ax.set_xlabel(LABELS.get(x, x))
  ax.set_ylabel(LABELS.get(metric, metric))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return fig if fig is not None else ax.figure


def dots(
    per_run: pd.DataFrame,
    column: str,
    ax=None,
    title: str | None = None,
    ylabel: str | None = None,
    budget: float | None = None,
):
  """Every run of each variant as a dot, and the mean over its seeds with the mean's 95%
  confidence interval (Student's t, n - 1 degrees of freedom) as a whisker, said so in the
  legend. A dot plot, not bars: no bar's length claims a zero the axis does not show, and the
  axis spans every dot and whisker, none clipped.

  Runs without a value (a target never reached within `budget` steps) stay in the figure: open
  triangles above `budget`, and 'k/n reached' under the variant. Where any run of a variant is
  such, its mean is not defined and none is drawn: its median over all runs
  (`statistics.reached`), where more than half reached it, is marked instead.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top  (jax depends on scipy)

  from alexnet_jax.sweeps import statistics  # pylint: disable=g-import-not-at-top

  fig = None
  if ax is None:
    fig = mpl_figure.Figure(figsize=(6.4, 3.8), layout='constrained')
    ax = fig.add_subplot()
  scale = _scale(column)
  variants = _variants(per_run)
  labels, labelled = [], set()

  def once(name: str) -> str:
    """A legend entry the first time, none after."""
    if name in labelled:
      return '_nolegend_'
    labelled.add(name)
    return name

  for i, (variant, colour) in enumerate(zip(variants, _colours(len(variants)))):
    all_runs = per_run.loc[per_run['variant'] == variant, column].to_numpy(float)
    values = all_runs[~np.isnan(all_runs)] * scale
    jitter = np.linspace(-0.12, 0.12, len(all_runs)) if len(all_runs) > 1 else np.zeros(1)
    shown = jitter[: len(values)]
    ax.plot(i + shown, values, 'o', color=colour, ms=4, alpha=0.8, label=once('each seed'))
    label = variant
    missing = len(all_runs) - len(values)
    if missing and budget is not None:
      above = np.full(missing, budget * scale * 1.05)
      ax.plot(
          i + jitter[len(values) :],
          above,
          '^',
          mfc='none',
          color=colour,
          ms=6,
          label=once(f'not reached within {budget:g} steps'),
      )
    if missing:
      label += f'\n{len(values)}/{len(all_runs)} reached'
      median = statistics.reached(list(all_runs), budget or np.inf).median
      if median is not None:
        ax.plot(i + 0.3, median * scale, 'D', color='k', ms=5, label=once('median of all runs'))
    elif len(values) > 1:
      mean = values.mean()
      half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
      ax.errorbar(
          i + 0.3,
          mean,
          yerr=half,
          fmt='_',
          color='k',
          ms=14,
          capsize=4,
          label=once('mean, 95% CI (t over seeds)'),
      )
    labels.append(label)
  ax.set_xticks(range(len(variants)), labels, fontsize=8)
  ax.set_xlim(-0.6, len(variants) - 0.4)
  if column.startswith('steps') or column.startswith('seconds'):
    ax.set_ylim(bottom=0)  # a count of steps starts at zero
  ax.set_ylabel(ylabel or LABELS.get(column, column))
  if title:
    ax.set_title(title, fontsize=10)
  ax.grid(axis='y', alpha=0.3)
  ax.legend(fontsize=7)
  return fig if fig is not None else ax.figure


def save_sweep_plots(
    table: pd.DataFrame,
    parent: str,
    metric: str = 'eval_top1_error',
    target: float | None = None,
    target_metric: str = 'train_top1_error',
) -> dict[str, str]:
  """The standard figures of a sweep as PNG files in `parent`; returns {name: path}.

  learning_curves_steps.png and learning_curves_seconds.png (`metric`), final_error.png (the last
  `metric` of each run) and, with `target`, steps_to_target.png (the steps until `target_metric`
  first reached `target`).
  """
  from alexnet_jax.sweeps import results  # pylint: disable=g-import-not-at-top

  per_run = results.finals(table, target, target_metric)
  figures = {
      'learning_curves_steps': learning_curves(table, metric, 'step'),
      'learning_curves_seconds': learning_curves(table, metric, 'elapsed_s'),
      'final_error': dots(per_run, metric, title=f'final {LABELS.get(metric, metric)}'),
  }
  if target is not None:
    figures['steps_to_target'] = dots(
        per_run,
        'steps_to_target',
        title=f'steps until {LABELS.get(target_metric, target_metric)} <= {target * 100:g}%',
        ylabel='steps',
        budget=float(per_run['steps'].max()),
    )
  paths = {}
  for name, fig in figures.items():
    paths[name] = os.path.join(parent, f'{name}.png')
    fig.savefig(paths[name], dpi=110)
  return paths


def image_grid(
    images: Sequence[np.ndarray] | np.ndarray,
    titles: Sequence[str] | None = None,
    columns: int = 8,
    size: float = 1.3,
    suptitle: str | None = None,
):
  """Images (HxWx3, any range: each is stretched to [0, 1] on its own) in a grid."""
  images = list(images)
  rows = -(-len(images) // columns)
  fig = mpl_figure.Figure(figsize=(columns * size, rows * size + 0.4), layout='constrained')
  axes = fig.subplots(rows, columns, squeeze=False)
  for i, ax in enumerate(axes.flat):
    ax.axis('off')
    if i >= len(images):
      continue
    image = np.asarray(images[i], np.float32)
    low, high = image.min(), image.max()
    ax.imshow((image - low) / (high - low) if high > low else np.zeros_like(image))
    if titles is not None:
      ax.set_title(titles[i], fontsize=7)
  if suptitle:
    fig.suptitle(suptitle, fontsize=10)
  return fig


def ensemble_curve(errors: pd.DataFrame):
  """Top-1 error against the number of averaged networks (`analysis.ensemble_errors`), +- the std
  over the subsets of that size."""
  fig = mpl_figure.Figure(figsize=(5.0, 3.4), layout='constrained')
  ax = fig.add_subplot()
  ax.errorbar(
      errors['models'],
      errors['top1_error_mean'] * PERCENT,
      yerr=errors['top1_error_std'] * PERCENT,
      marker='o',
      capsize=4,
  )
  ax.set_xticks(errors['models'])
  ax.set_xlabel('networks averaged (softmax)')
  ax.set_ylabel(LABELS['eval_top1_error'])
  ax.grid(alpha=0.3)
  return fig
