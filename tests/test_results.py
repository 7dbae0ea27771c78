"""The sweep's tables and figures against numbers computed by hand from metrics files written here
(no training: every value is known)."""

import json
import math
import os
import statistics

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from alexnet_jax import history
from alexnet_jax.sweeps import plots
from alexnet_jax.sweeps import results

# variant -> seed -> the validation error logged at steps 10, 20, 30 and the training error at
# steps 5..30 (every 5).
EVAL = {
    'paper': {0: [0.50, 0.30, 0.20], 1: [0.55, 0.35, 0.24], 2: [0.52, 0.28, 0.22]},
    'no_lrn': {0: [0.60, 0.40, 0.30], 1: [0.58, 0.42, 0.26], 2: [0.62, 0.45, 0.31]},
}
TRAIN = {
    ('paper', 0): [0.9, 0.6, 0.4, 0.24, 0.2, 0.1],
    ('paper', 1): [0.9, 0.7, 0.5, 0.3, 0.25, 0.2],
    ('paper', 2): [0.9, 0.5, 0.3, 0.2, 0.15, 0.1],
    ('no_lrn', 0): [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
    ('no_lrn', 1): [0.9, 0.8, 0.6, 0.4, 0.3, 0.2],
    ('no_lrn', 2): [0.9, 0.85, 0.8, 0.7, 0.6, 0.5],
}


def write_sweep(parent) -> None:
  # Variants listed in the order the sweep ran them, not alphabetically.
  os.makedirs(parent, exist_ok=True)
  with open(os.path.join(parent, history.PLAN_FILE), 'w') as f:
    json.dump({'variants': ['paper', 'no_lrn'], 'seeds': [0, 1, 2]}, f)
  for variant, seeds in EVAL.items():
    for seed, evals in seeds.items():
      workdir = os.path.join(parent, variant, f'seed_{seed}')
      os.makedirs(workdir)
      lines = []
      for i, error in enumerate(TRAIN[variant, seed]):
        step = 5 * (i + 1)
        lines.append({'step': step, 'elapsed_s': 2.0 * step, 'train_top1_error': error})
        if step % 10 == 0:
          # Written separately, as the loop does: one row per step after loading.
          lines.append(
              {'step': step, 'elapsed_s': 2.0 * step + 1, 'eval_top1_error': evals[step // 10 - 1]}
          )
      lines.append({'step': 30, 'elapsed_s': 61.0, 'steps_per_sec': 0.5 + seed})
      with open(os.path.join(workdir, history.FILENAME), 'w') as f:
        f.writelines(json.dumps(line) + '\n' for line in lines)
        f.write('{"step": 35, "elapsed')  # a line cut short by a crash: skipped
      with open(os.path.join(workdir, history.DONE_FILE), 'w') as f:
        json.dump({'top1_error': evals[-1]}, f)


def test_load_has_one_row_per_logged_step_in_sweep_order(tmp_path):
  write_sweep(tmp_path)
  table = results.load(str(tmp_path))
  assert list(table['variant'].cat.categories) == ['paper', 'no_lrn']
  assert len(table) == 2 * 3 * 6  # six logged steps per run; eval and progress merged in
  row = table[(table['variant'] == 'no_lrn') & (table['seed'] == 1) & (table['step'] == 20)]
  assert row['eval_top1_error'].item() == 0.42
  assert row['train_top1_error'].item() == 0.4  # TRAIN's fourth value: step 20
  assert row['elapsed_s'].item() == 41.0  # the last record of the step
  assert math.isnan(table.loc[table['step'] == 5, 'eval_top1_error'].iloc[0])
  assert set(table['status']) == {'done'}


def test_runs_that_did_not_finish_are_left_out_of_the_finals(tmp_path):
  write_sweep(tmp_path)
  os.remove(tmp_path / 'no_lrn' / 'seed_2' / history.DONE_FILE)  # still training
  os.remove(tmp_path / 'paper' / 'seed_1' / history.DONE_FILE)
  (tmp_path / 'paper' / 'seed_1' / history.FAILED_FILE).write_text('{"message": "NaN"}')
  table = results.load(str(tmp_path))
  per_run = results.finals(table)
  assert sorted(zip(per_run['variant'].astype(str), per_run['seed'])) == [
      ('no_lrn', 0),
      ('no_lrn', 1),
      ('paper', 0),
      ('paper', 2),
  ]
  every = results.finals(table, finished_only=False)
  assert len(every) == 6
  status = table.groupby(['variant', 'seed'], observed=True)['status'].first()
  assert status['paper', 1] == 'diverged' and status['no_lrn', 2] == 'started'


def test_finals_aggregate_and_steps_to_match_hand_computed_values(tmp_path):
  write_sweep(tmp_path)
  table = results.load(str(tmp_path))
  per_run = results.finals(table, target=0.25, target_metric='train_top1_error')
  summary = results.aggregate(per_run)
  for variant, seeds in EVAL.items():
    finals = [evals[-1] for evals in seeds.values()]
    stats = summary.loc[variant, 'eval_top1_error']
    assert stats['mean'] == pytest.approx(statistics.mean(finals))
    assert stats['std'] == pytest.approx(statistics.stdev(finals))
    assert stats['n'] == 3
    # A naive scan for the first step at or under 25%.
    for seed in seeds:
      expected = next(
          (5 * (i + 1) for i, e in enumerate(TRAIN[variant, seed]) if e <= 0.25), math.nan
      )
      got = per_run[(per_run['variant'] == variant) & (per_run['seed'] == seed)]
      assert got['steps_to_target'].item() == pytest.approx(expected, nan_ok=True)
  assert summary.loc['no_lrn', ('steps_to_target', 'n')] == 1  # two runs never got there
  assert summary.loc['paper', ('steps_per_sec', 'mean')] == pytest.approx(1.5)


def test_save_writes_tables_that_read_back(tmp_path):
  write_sweep(tmp_path)
  table = results.load(str(tmp_path))
  summary = results.summary(table)
  paths = results.save(table, summary, str(tmp_path))
  back = pd.read_csv(paths['metrics'])
  assert len(back) == len(table)
  flat = pd.read_csv(paths['summary'], index_col=0)
  assert flat.loc['paper', 'eval_top1_error_mean'] == pytest.approx((0.20 + 0.24 + 0.22) / 3)


def test_learning_curves_draw_each_seed_and_their_mean(tmp_path):
  write_sweep(tmp_path)
  table = results.load(str(tmp_path))
  fig = plots.learning_curves(table, 'eval_top1_error')
  lines = fig.axes[0].lines
  assert len(lines) == 2 * (3 + 1)  # per variant: three seeds, one mean
  mean = lines[3]  # paper's bold line comes after its seeds
  assert mean.get_linewidth() > lines[0].get_linewidth()
  expected = [100 * statistics.mean(EVAL['paper'][s][i] for s in range(3)) for i in range(3)]
  np.testing.assert_allclose(mean.get_ydata(), expected)
  np.testing.assert_array_equal(mean.get_xdata(), [10, 20, 30])


def test_sweep_plots_are_written_as_png(tmp_path):
  write_sweep(tmp_path)
  table = results.load(str(tmp_path))
  paths = plots.save_sweep_plots(table, str(tmp_path), target=0.25)
  assert set(paths) == {
      'learning_curves_steps',
      'learning_curves_seconds',
      'final_error',
      'steps_to_target',
  }
  for path in paths.values():
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  # The dots: every run, the mean with its 95% interval where every run has a value, and the
  # runs that never reached the target drawn above the budget and counted, not dropped.
  fig = plots.dots(results.finals(table, 0.25), 'steps_to_target', budget=30)
  ax = fig.axes[0]
  labels = [t.get_text() for t in ax.get_xticklabels()]
  assert labels == ['paper', 'no_lrn\n1/3 reached']
  (interval,) = ax.containers  # no_lrn has no mean: two of its runs have no value
  assert interval.get_label() == 'mean, 95% CI (t over seeds)'
  paper = [20, 25, 20]
  half = scipy.stats.t.ppf(0.975, 2) * statistics.stdev(paper) / math.sqrt(3)
  (_, low), (_, high) = interval.lines[2][0].get_segments()[0]
  assert (low, high) == pytest.approx(
      (statistics.mean(paper) - half, statistics.mean(paper) + half)
  )
  never = [line for line in ax.lines if line.get_marker() == '^']
  assert len(never) == 1 and list(never[0].get_ydata()) == [31.5, 31.5]
  assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= statistics.mean(paper) + half
  legend = [t.get_text() for t in ax.get_legend().get_texts()]
  assert sorted(legend) == [
      'each seed',
      'mean, 95% CI (t over seeds)',
      'not reached within 30 steps',
  ]


def test_history_writer_resumes_where_the_checkpoint_was(tmp_path, monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(history.time, 'monotonic', lambda: clock[0])
  writer = history.HistoryWriter(str(tmp_path))
  for step in (10, 20, 30):
    clock[0] += 5.0  # five seconds a log
    writer.write_scalars(step, {'train_loss': np.float32(step), 'bad': float('nan')})
  writer.close()
  first = history.read(str(tmp_path))
  assert [r['step'] for r in first] == [10, 20, 30]
  assert first[0]['bad'] is None  # JSON has no NaN
  assert [r['elapsed_s'] for r in first] == [5.0, 10.0, 15.0]
  # A crash after step 30, an hour down, a restart from the checkpoint at 20: step 30 is computed
  # again, 7 s after the restart.
  clock[0] += 3600.0
  writer = history.HistoryWriter(str(tmp_path), resume_step=20)
  clock[0] += 7.0
  writer.write_scalars(30, {'train_loss': 31.0})
  writer.close()
  again = history.read(str(tmp_path))
  assert [(r['step'], r['train_loss']) for r in again] == [(10, 10.0), (20, 20.0), (30, 31.0)]
  assert again[2]['elapsed_s'] == 10.0 + 7.0  # step 20's time, then the 7 s: not the downtime


def test_console_lines_are_short_with_four_significant_digits(monkeypatch):
  """What a person sees at each log step, against values and a pace worked out by hand."""
  clock = [50.0]
  monkeypatch.setattr(history.time, 'monotonic', lambda: clock[0])
  lines = []
  writer = history.ConsoleWriter(total_steps=800, start_step=100, log=lines.append)
  clock[0] += 40.0  # 100 steps in 40 s: 2.5 steps/s, 600 steps left: 240 s
  train = {
      'train_loss': np.float32(2.3456789),
      'train_top1_error': 0.675,
      'train_top5_error': 0.30123456,
      'train_learning_rate': 0.01,
      'train_grad_norm': 3.0,  # not shown
  }
  writer.write_scalars(200, train)
  writer.write_scalars(200, {'eval_loss': 1.0, 'eval_top1_error': 0.5, 'eval_top5_error': 0.25})
  writer.write_scalars(200, {'steps_per_sec': 2.5, 'uptime': 40.0})  # clu's: no line
  clock[0] += 4000.0  # 100 more steps in 4000 s: 0.025 steps/s, 500 left: 5 h 33 min 20 s
  writer.write_scalars(300, train)
  assert lines == [
      'step 200/800 | loss 2.346 | top-1 67.5% | top-5 30.12% | lr 0.01 | 2.5 steps/s | ETA 4m00s',
      'eval at step 200 | loss 1 | top-1 50% | top-5 25%',
      'step 300/800 | loss 2.346 | top-1 67.5% | top-5 30.12% | lr 0.01 | 0.025 steps/s | ETA 5h33m',
  ]


def test_importing_the_sweep_module_defines_no_command_line_flags():
  """The runner is a library: its command's flags are defined when the command runs."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  code = (
      'import alexnet_jax.sweeps.sweep, alexnet_jax.tools.sweep\nfrom absl import flags\n'
      'print("workdir" in flags.FLAGS or "config" in flags.FLAGS)'
  )
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == 'False'


def test_plateau_compares_the_last_fifths_fall_with_the_seed_spread(tmp_path):
  write_sweep(tmp_path)
  table = results.load(str(tmp_path))
  # Evaluations at steps 10, 20 and 30: the last fifth starts nearest step 24, at 20.
  falling = results.plateau(table, 'eval_top1_error').loc['paper']
  assert (falling['from_step'], falling['to_step'], falling['n']) == (20, 30, 3)
  at_20 = statistics.mean(EVAL['paper'][s][1] for s in range(3))
  at_30 = statistics.mean(EVAL['paper'][s][2] for s in range(3))
  assert falling['fall'] == pytest.approx(at_20 - at_30)  # 9 points, against a 2-point spread
  assert falling['spread'] == pytest.approx(statistics.stdev(EVAL['paper'][s][2] for s in range(3)))
  assert not falling['plateaued']
  # A variant whose last fifth moves less than its seeds differ has plateaued.
  values = {0: [0.5, 0.3, 0.25, 0.205, 0.2], 1: [0.5, 0.3, 0.25, 0.225, 0.22]}
  values[2] = [0.5, 0.3, 0.25, 0.245, 0.24]
  flat = pd.DataFrame(
      [
          {'variant': 'flat', 'seed': s, 'step': 10 * (i + 1), 'eval_top1_error': v}
          for s, vs in values.items()
          for i, v in enumerate(vs)
      ]
  )
  row = results.plateau(flat).loc['flat']
  assert (row['from_step'], row['to_step']) == (40, 50)
  assert row['fall'] == pytest.approx(0.005) and row['spread'] == pytest.approx(0.02)
  assert row['plateaued']


def test_report_against_scipy_and_hand_counts(tmp_path):
  """The report's interval is scipy's t interval, its difference scipy's paired t-test, its
  reached counts the runs' own, censored runs included; the tuned rates come from tuning.json."""
  write_sweep(tmp_path)
  with open(tmp_path / 'tuning.json', 'w') as f:
    json.dump(
        {
            'metric': 'eval_top1_error',
            'seeds': [100],
            'rates': [0.01, 0.02],
            'variants': {
                'paper': {'chosen': 0.02, 'mean_final_eval_top1_error': {'0.01': 0.3, '0.02': 0.2}},
                'no_lrn': {
                    'chosen': 0.01,
                    'mean_final_eval_top1_error': {'0.01': 0.3, '0.02': None},
                },
            },
        },
        f,
    )
  table = results.load(str(tmp_path))
  answer = results.report(table, 'eval_top1_error', str(tmp_path), target=0.25)
  finals = {v: [100 * EVAL[v][s][-1] for s in range(3)] for v in EVAL}
  for variant, values in finals.items():
    row = answer.variants.loc[variant]
    low, high = scipy.stats.t.interval(0.95, 2, loc=np.mean(values), scale=scipy.stats.sem(values))
    assert row['n'] == 3 and row['mean'] == pytest.approx(np.mean(values), abs=0.005)
    assert (row['low'], row['high']) == pytest.approx((low, high), abs=0.005)
  p = scipy.stats.ttest_rel(finals['no_lrn'], finals['paper']).pvalue
  assert answer.differences.loc['no_lrn', 'p_holm'] == pytest.approx(p)  # one test: Holm is p
  assert answer.rates.loc['paper', 'chosen'] == 0.02
  assert answer.rates.loc['no_lrn', 'chosen'] == 0.01
  # Two rates tried: either choice is at an end of the grid.
  assert answer.rates['at_edge'].all()
  # Training error <= 0.25 by step 30: paper 3 of 3 (steps 20, 25, 20), no_lrn 1 of 3 (step 30).
  reached = answer.reached
  assert list(reached['reached']) == ['3/3', '1/3']
  assert reached.loc['paper', 'median_steps'] == 20
  assert reached.loc['no_lrn', 'median_steps'] is None or np.isnan(
      reached.loc['no_lrn', 'median_steps']
  )
  fisher = scipy.stats.fisher_exact([[1, 2], [3, 0]]).pvalue
  assert reached.loc['no_lrn', 'p_holm'] == pytest.approx(fisher)
  text = str(answer)
  assert 'each variant minus paper, paired by seed' in text and 'plateaued' in text
  assert 'learning rates' in text and "Fisher's p" in text
