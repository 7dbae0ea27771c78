"""The sweep runner on the tiny recipe: resuming a half-finished sweep trains only what is missing,
runs side by side give the numbers of runs one after the other, and the tables read what the
trainer wrote."""

import json
import os
import subprocess
import sys
import time

import jax
import ml_collections
import pytest

from alexnet_jax import checkpointing
from alexnet_jax.configs import common
from alexnet_jax.errors import ConfigError
from alexnet_jax import history
from alexnet_jax import settings
from alexnet_jax import sharding
from alexnet_jax import steps
from alexnet_jax.sweeps import results
from alexnet_jax.sweeps import sweep
from alexnet_jax import train
from alexnet_jax.trained import analysis
from alexnet_jax.trained import inference

pytestmark = pytest.mark.slow  # several short training runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Wall-clock fields differ between any two runs; everything else is computed.
TIMING = ('elapsed_s', 'steps_per_sec', 'uptime')
TRAIN = train.train_members  # the real one, whatever a test patched in
# A plain run config defines no variant names: the sweep is given them with their changes.
PAPER = {'paper': common.VARIANTS['paper']}


class Crash(Exception):
  """What a killed process looks like to the sweep: the run stops between two steps."""


class Recorder:
  """Wraps train.train_members: which runs trained (in which groups), from which step, and
  optionally stops one of them after a given step, as a crash would, or has it diverge."""

  def __init__(self, monkeypatch, stop: dict[str, int] | None = None, diverge=None, hold=()):
    self.first_step = {}
    self.devices = {}
    self.groups = []
    self.stop = stop or {}
    self.diverge = diverge or {}
    self.stopped = []  # runs the sweep stopped (SweepStopped from its step callback)
    real = TRAIN

    def wrapped(runs, workdirs, devices=None, step_callback=None):
      names = ['/'.join(w.split(os.sep)[-2:]) for w in workdirs]
      self.groups.append(names)
      for name in names:
        self.devices[name] = tuple(devices)

      def callback(step, state):
        for name in names:
          self.first_step.setdefault(name, step)
        deadline = time.monotonic() + 120
        while True:  # a run in `hold` waits at its first step until the sweep stops it
          try:
            step_callback(step, state)
          except sweep.SweepStopped:
            self.stopped.extend(names)
            raise
          if not set(names) & set(hold) or time.monotonic() > deadline:
            break
          time.sleep(0.01)
        for name in names:
          if self.stop.get(name) == step:
            raise Crash(f'stopped {name} after step {step}')
          if self.diverge.get(name) == step:
            raise steps.TrainingDiverged(f'{name} diverged at step {step}')

      try:
        return real(runs, workdirs, devices=devices, step_callback=callback)
      except steps.TrainingDiverged as e:  # as the loop reports a member that diverged
        return [e]

    monkeypatch.setattr(sweep.train, 'train_members', wrapped)


def values(workdir: str) -> list[dict]:
  """The computed metrics of a run's history (records of timings alone dropped)."""
  kept = [{k: v for k, v in r.items() if k not in TIMING} for r in history.read(workdir)]
  return [r for r in kept if set(r) != {'step'}]


def test_rerunning_a_half_finished_sweep_trains_only_what_is_missing_and_tables_agree(
    tiny_config, one_device, tmp_path, monkeypatch
):
  parent = str(tmp_path / 'sweep')
  config = tiny_config()
  config.eval_trainset = True
  lines = []
  # First pass: seed 0 finishes, seed 1 dies after step 4 (its checkpoint is step 3's).
  # First pass: seed 0 finishes, seed 1 dies after step 4 (its checkpoint is step 3's); seed 3
  # diverges at step 2 beforehand, which is recorded and does not stop the sweep.
  seeds = [3, 0, 1, 2]
  first = Recorder(monkeypatch, stop={'paper/seed_1': 4}, diverge={'paper/seed_3': 2})
  with pytest.raises(Crash):
    sweep.run_sweep(
        config, parent, variants=PAPER, seeds=seeds, devices=one_device, report=lines.append
    )
  assert first.first_step == {'paper/seed_3': 1, 'paper/seed_0': 1, 'paper/seed_1': 1}
  done = os.path.join(parent, 'paper', 'seed_0')
  before = open(os.path.join(done, history.FILENAME)).read()
  statuses = [sweep.status(r) for r in sweep.plan(config, parent, PAPER, seeds)]
  assert statuses == ['diverged', 'done', 'started', 'new']
  with open(os.path.join(parent, 'paper', 'seed_3', sweep.FAILED_FILE)) as f:
    assert json.load(f)['message'] == 'paper/seed_3 diverged at step 2'

  second = Recorder(monkeypatch)
  lines.clear()
  sweep.run_sweep(
      config, parent, variants=PAPER, seeds=seeds, devices=one_device, report=lines.append
  )
  # seeds 3 and 0 are skipped, seed 1 resumes after its checkpoint at step 3, seed 2 starts.
  assert second.first_step == {'paper/seed_1': 4, 'paper/seed_2': 1}
  assert open(os.path.join(done, history.FILENAME)).read() == before
  # The first line counts the finished runs and seed 1's checkpointed steps (6 + 6 + 3).
  assert lines[0].startswith('sweep: 2/4 runs done (1 diverged); 15/24 steps')
  assert lines[-1].startswith('sweep: 4/4 runs done (1 diverged); 24/24 steps')
  # The resumed run's history holds each step once, and it matches a run never interrupted
  # (seed 1 again, in a directory of its own).
  resumed = values(os.path.join(parent, 'paper', 'seed_1'))
  assert [r['step'] for r in resumed] == [3, 3, 3, 6, 6, 6]  # train, eval, trainset per log
  clean_parent = str(tmp_path / 'clean')
  sweep.run_sweep(config, clean_parent, variants=PAPER, seeds=[1], devices=one_device)
  assert resumed == values(os.path.join(clean_parent, 'paper', 'seed_1'))

  # The tables read what the trainer wrote, and the restored networks agree with both.
  table = results.load(parent)
  per_run = results.finals(table)
  assert sorted(per_run['seed']) == [0, 1, 2]  # not the diverged run
  for run in sweep.plan(config, parent, PAPER, [0, 2]):
    with open(os.path.join(run.workdir, sweep.DONE_FILE)) as f:
      final = json.load(f)  # what train_and_evaluate returned
    row = per_run[per_run['seed'] == run.seed]
    assert row['eval_top1_error'].item() == pytest.approx(final['top1_error'])
    # A second code path: the restored network's own predictions on the validation split, and
    # on the training split for the trainset_* metrics.
    trained = inference.load(run.workdir)
    assert trained.step == 6
    out = inference.features(trained)
    assert analysis.top1_error(out['probs'], out['labels']) == pytest.approx(final['top1_error'])
    fit = inference.features(trained, split='train')
    assert len(fit['labels']) == 320
    assert analysis.top1_error(fit['probs'], fit['labels']) == pytest.approx(
        row['trainset_top1_error'].item()
    )
    with open(os.path.join(run.workdir, sweep.RUN_FILE)) as f:
      assert json.load(f)['config']['seed'] == run.seed


def test_side_by_side_gives_the_numbers_of_one_after_the_other(tiny_config, tmp_path, monkeypatch):
  config = tiny_config()
  devices = jax.devices()[:2]
  # Two variants that train with one program on other data (without PCA colour noise): each
  # device's program is compiled once for both (the first device's by the test above).
  variants = {name: common.VARIANTS[name] for name in ('paper', 'no_pca_noise')}
  kwargs = dict(variants=variants, seeds=[0], report=lambda line: None)
  recorder = Recorder(monkeypatch)
  sweep.run_sweep(config, str(tmp_path / 'apart'), parallel=2, devices=devices, **kwargs)
  assert sorted(recorder.devices.values(), key=str) == [(devices[0],), (devices[1],)]  # disjoint
  sweep.run_sweep(config, str(tmp_path / 'after'), parallel=1, devices=devices[:1], **kwargs)
  for variant in ('paper', 'no_pca_noise'):
    apart = values(str(tmp_path / 'apart' / variant / 'seed_0'))
    after = values(str(tmp_path / 'after' / variant / 'seed_0'))
    assert len(apart) == 4 and apart == after
  # Different variants did train differently (the comparison above is not vacuous).
  assert values(str(tmp_path / 'after' / 'paper' / 'seed_0')) != values(
      str(tmp_path / 'after' / 'no_pca_noise' / 'seed_0')
  )


def test_seeds_trained_together_give_their_runs_alone_and_resume_together(
    tiny_config, one_device, tmp_path, monkeypatch
):
  """Members of one program (`together=2`) against the same seeds one after another: the same
  numbers, to float rounding (the mapped convolutions add up in another order), each in its own
  run directory; a group stopped by a crash resumes as a group, a run at another step alone."""
  config = tiny_config()
  kwargs = dict(variants=PAPER, seeds=[0, 1, 2], devices=one_device, report=lambda line: None)
  alone = Recorder(monkeypatch)
  sweep.run_sweep(config, str(tmp_path / 'alone'), **{**kwargs, 'seeds': [0, 1]})
  assert alone.groups == [['paper/seed_0'], ['paper/seed_1']]

  parent = str(tmp_path / 'together')
  crashed = Recorder(monkeypatch, stop={'paper/seed_1': 4})
  with pytest.raises(Crash):
    sweep.run_sweep(config, parent, together=2, **kwargs)
  assert crashed.groups == [['paper/seed_0', 'paper/seed_1']]  # seed 2 never started
  runs = sweep.plan(config, parent, PAPER, [0, 1, 2])
  assert [sweep.status(r) for r in runs] == ['started', 'started', 'new']
  resumed = Recorder(monkeypatch)
  sweep.run_sweep(config, parent, together=2, **kwargs)
  assert resumed.groups == [['paper/seed_0', 'paper/seed_1'], ['paper/seed_2']]
  assert resumed.first_step == {'paper/seed_0': 4, 'paper/seed_1': 4, 'paper/seed_2': 1}
  for seed in (0, 1):
    mine = values(os.path.join(parent, 'paper', f'seed_{seed}'))
    theirs = values(str(tmp_path / 'alone' / 'paper' / f'seed_{seed}'))
    assert [r['step'] for r in mine] == [3, 3, 6, 6]  # each step once, after the resumption
    assert mine == [pytest.approx(r, rel=1e-5) for r in theirs]
    assert sweep.status(runs[seed]) == 'done'
  # The members are not one network twice: their seeds trained differently.
  assert values(os.path.join(parent, 'paper', 'seed_0')) != values(
      os.path.join(parent, 'paper', 'seed_1')
  )

  # A member whose loss turns NaN after step 4 stops alone: its last good checkpoint (step 3)
  # stays, and the other member trains on to the numbers of its run alone.
  real = steps.make_train_step

  def nan_for_seed_1(*args, **kw):
    step_fn = real(*args, **kw)

    def step(state, batch):
      new, metrics, finite = step_fn(state, batch)
      return new, metrics, finite.at[1].set(finite[1] & (new.step[1] <= 4))

    return step

  monkeypatch.setattr(sweep.train.steps, 'make_train_step', nan_for_seed_1)
  diverging = str(tmp_path / 'diverging')
  sweep.run_sweep(config, diverging, together=2, **{**kwargs, 'seeds': [0, 1]})
  first, second = sweep.plan(config, diverging, PAPER, [0, 1])
  assert [sweep.status(first), sweep.status(second)] == ['done', 'diverged']
  with open(os.path.join(second.workdir, sweep.FAILED_FILE)) as f:
    assert 'between steps 3 and 6' in json.load(f)['message']
  assert checkpointing.latest_step(second.workdir) == 3
  assert values(first.workdir) == [
      pytest.approx(r, rel=1e-5) for r in values(str(tmp_path / 'alone' / 'paper' / 'seed_0'))
  ]


def test_each_variant_trains_at_the_rate_its_tuning_runs_chose(tiny_config, one_device, tmp_path):
  """`sweep.learning_rates`: every variant first trains at each rate on the tuning seeds, and its
  reported runs at the rate whose tuning runs ended lowest (read here from their done.json)."""
  config = tiny_config()
  # The recipe's own rate and a tenfold one: the variant's program at the recipe's rate is the
  # one the sweep command below runs (each rate is a program of its own, compiled once).
  rates = (config.optim.learning_rate, 0.05)
  assert rates[0] == 0.005
  config.sweep = ml_collections.ConfigDict(
      {
          'variants': ('no_lrn',),
          'seeds': (0,),
          'learning_rates': rates,
          'tuning_seeds': (100,),
          'metric': 'eval_top1_error',
          'named': {'no_lrn': settings.nested(common.VARIANTS['no_lrn'])},
          'custom': {},
      }
  )
  parent = str(tmp_path / 'tuned')
  sweep.run_sweep(config, parent, devices=one_device, report=lambda line: None)
  with open(os.path.join(parent, sweep.TUNING_FILE)) as f:
    recorded = json.load(f)
  assert recorded['seeds'] == [100] and recorded['rates'] == list(rates)
  for variant in ('no_lrn',):
    final = {}
    for rate in rates:
      run = os.path.join(parent, 'tuning', f'{variant}@lr{rate:g}', 'seed_100')
      with open(os.path.join(run, sweep.DONE_FILE)) as f:
        final[rate] = json.load(f)['top1_error']
      with open(os.path.join(run, sweep.RUN_FILE)) as f:
        assert json.load(f)['config']['optim.learning_rate'] == rate
    best = min(final, key=lambda r: (final[r], r))
    assert recorded['variants'][variant]['chosen'] == best
    with open(os.path.join(parent, variant, 'seed_0', sweep.RUN_FILE)) as f:
      assert json.load(f)['config']['optim.learning_rate'] == best  # the reported run's rate
  assert sorted(os.listdir(parent + '/tuning')) == ['no_lrn@lr0.005', 'no_lrn@lr0.05', 'sweep.json']
  # The table of the reported runs holds them alone; `planned` gives them with their rates.
  assert set(results.load(parent)['variant']) == {'no_lrn'}
  for run in sweep.planned(config, parent):
    assert run.config.optim.learning_rate == recorded['variants'][run.variant]['chosen']
  config.sweep.tuning_seeds = (0,)
  with pytest.raises(ConfigError, match='none of the reported seeds'):
    sweep.run_sweep(config, str(tmp_path / 'x'), devices=one_device)


def test_rates_tuned_for_speed_rank_by_steps_to_the_target_and_never_drop_a_slow_rate(
    tmp_path, monkeypatch
):
  """`tuning_metric='steps_to_target'` (Figure 1: each rate "chosen ... to make training as fast as
  possible"): the rate whose tuning runs all reached the target in the fewest mean steps; a rate
  with a run that never got there ranks behind every rate whose runs all did, and where no rate
  got there, the one that came closest wins. Counted by hand from the curves below."""
  curves = {  # train_top1_error at steps 10, 20 and 30 of each tuning run, by (variant, seed)
      ('a@lr0.01', 100): [0.5, 0.3, 0.24],  # reached at 30
      ('a@lr0.01', 101): [0.4, 0.25, 0.2],  # at 20 (<= the target): a mean of 25 steps
      ('a@lr0.02', 100): [0.2, 0.1, 0.1],  # at 10, the fastest run of all ...
      ('a@lr0.02', 101): [0.4, 0.3, 0.3],  # ... but its other seed never got there
      ('a@lr0.04', 100): [0.6, 0.5, 0.3],
      ('a@lr0.04', 101): [0.6, 0.5, 0.4],
      ('b@lr0.01', 100): [0.6, 0.55, 0.5],  # b never gets there: final means 0.5, 0.35
      ('b@lr0.01', 101): [0.6, 0.55, 0.5],
      ('b@lr0.02', 100): [0.5, 0.4, 0.3],
      ('b@lr0.02', 101): [0.5, 0.45, 0.4],
      # b@lr0.04: every run diverged before logging, so it has no runs to rank
  }

  def trained(base, parent, variants, seeds, **options):
    del base, options
    for (name, seed), errors in curves.items():
      assert name in variants and seed in seeds
      workdir = os.path.join(parent, name, f'seed_{seed}')
      os.makedirs(workdir)
      with open(os.path.join(workdir, history.FILENAME), 'w') as f:
        for i, error in enumerate(errors):
          record = {'step': 10 * (i + 1), 'elapsed_s': i, 'train_top1_error': error}
          f.write(json.dumps(record) + '\n')
      with open(os.path.join(workdir, history.DONE_FILE), 'w') as f:
        json.dump({}, f)

  monkeypatch.setattr(sweep, 'run_sweep', trained)
  spec = {
      'learning_rates': (0.01, 0.02, 0.04),
      'tuning_seeds': (100, 101),
      'metric': 'train_loss',  # what the report compares; the rates are ranked by speed
      'tuning_metric': 'steps_to_target',
      'target': 0.25,
      'target_metric': 'train_top1_error',
  }
  chosen = sweep.tune(None, str(tmp_path), {'a': {}, 'b': {}}, spec, seeds=(0, 1))
  assert chosen == {'a': 0.01, 'b': 0.02}
  with open(tmp_path / sweep.TUNING_FILE) as f:
    recorded = json.load(f)
  assert recorded['metric'] == 'steps_to_target' and recorded['seeds'] == [100, 101]
  a, b = recorded['variants']['a'], recorded['variants']['b']
  assert a['mean_steps_to_target'] == {'0.01': 25.0, '0.02': None, '0.04': None}
  assert b['mean_steps_to_target'] == {'0.01': None, '0.02': None, '0.04': None}
  assert b['mean_final_train_top1_error'] == pytest.approx({'0.01': 0.5, '0.02': 0.35})
  # The report's table of the choices reads the ranked scores.
  rates = results._rates(str(tmp_path))  # pylint: disable=protected-access
  assert rates.loc['a', 'chosen'] == 0.01 and rates.loc['a', 'lr 0.01'] == 25.0
  assert rates.loc['b', 'at_edge'] == False  # pylint: disable=singleton-comparison
  spec.pop('target')
  with pytest.raises(ConfigError, match='sweep.target'):
    sweep.tune(None, str(tmp_path / 'x'), {'a': {}}, spec, seeds=(0,))


def test_a_failing_run_side_by_side_stops_the_sweep(tiny_config, tmp_path, monkeypatch):
  """The others stop at their next step and the queued ones never start; all resume later."""
  config = tiny_config()
  # seed 1 waits at its first step until the sweep stops it, so that it is under way when seed 0
  # fails, whatever the two threads' speeds.
  recorder = Recorder(monkeypatch, stop={'paper/seed_0': 2}, hold=('paper/seed_1',))
  runs = sweep.plan(config, str(tmp_path), PAPER, [0, 1, 2])
  with pytest.raises((Crash, sweep.SweepStopped)):
    sweep.run_sweep(
        config,
        str(tmp_path),
        variants=PAPER,
        seeds=[0, 1, 2],
        parallel=2,
        devices=jax.devices()[:2],
        report=lambda line: None,
    )
  assert recorder.stopped == ['paper/seed_1']  # stopped at its next step
  assert set(recorder.first_step) == {'paper/seed_0', 'paper/seed_1'}  # seed 2 never started
  assert not any(sweep.status(r) == 'done' for r in runs)


def test_a_run_directory_of_another_config_is_an_error(
    tiny_config, tiny_data_dir, one_device, tmp_path
):
  config = tiny_config()
  run = sweep.plan(config, str(tmp_path), PAPER, [0])[0]
  assert sweep._claim(run) is False  # pylint: disable=protected-access
  with open(os.path.join(run.workdir, history.FILENAME), 'w') as f:
    f.write('{"step": 3, "elapsed_s": 1.0, "train_loss": 2.0}\n')  # it has trained
  config.model.width = 0.5
  os.symlink(tiny_data_dir, tmp_path / 'moved')
  config.data_dir = str(tmp_path / 'moved')  # where the data lives is not part of a run's identity
  with pytest.raises(ConfigError, match=r'model.width: 0.25 there, 0.5 now\). Sweep into'):
    sweep.run_sweep(config, str(tmp_path), variants=PAPER, seeds=[0], devices=one_device)
  with pytest.raises(ConfigError, match='Unknown variants'):
    sweep.plan(config, str(tmp_path), ['no_such_thing'], [0])
  with pytest.raises(ConfigError, match="overrides 'eval_trainst', which the config does not"):
    sweep.plan(config, str(tmp_path), {'typo': {'eval_trainst': True}}, [0])
  with pytest.raises(ConfigError, match='repeats a seed'):
    sweep.plan(config, str(tmp_path), PAPER, [0, 0])
  # A run recorded but never trained (a sweep stopped by another variant's error) is claimed anew.
  assert sweep._claim(sweep.plan(config, str(tmp_path), PAPER, [1])[0]) is False
  config.model.width = 0.25
  assert sweep._claim(sweep.plan(config, str(tmp_path), PAPER, [1])[0]) is False
  wide = config.copy_and_resolve_references()
  wide.model.width = 0.5
  with pytest.raises(ConfigError, match=r'differ in their seed alone; these differ in model.width'):
    train.check_members(
        [settings.from_config(config), settings.from_config(wide)],
        sharding.Layout.create(settings.from_config(config).mesh, 2, one_device),
    )
  # Devices the runs cannot be given: runs side by side, or a group of members on several.
  for option, message in (
      ({'parallel': 3}, 'parallel=3'),
      ({'together': 2}, 'together=2 trains each group of members on one device'),
  ):
    with pytest.raises(ConfigError, match=message):
      sweep.run_sweep(
          config,
          str(tmp_path / 'x'),
          variants=PAPER,
          seeds=[0],
          devices=jax.devices()[:2],
          **option,
      )


def test_progress_line_counts_runs_and_steps_and_estimates_the_rest():
  runs = [sweep.Run('paper', s, None, f'/x/paper/seed_{s}') for s in (0, 1, 2)]
  lines, clock = [], [0.0]
  progress = sweep.Progress(
      runs,
      {r.name: 10 for r in runs},
      lines.append,
      every_s=1e9,
      start_steps={'paper/seed_1': 4},  # resumed from its checkpoint at step 4
      clock=lambda: clock[0],
  )
  progress.finished(runs[0], skipped=True)  # finished before: no line, no rate from it
  assert not lines
  line = progress.line()
  assert line.startswith('sweep: 1/3 runs done; 14/30 steps') and 'ETA ?' in line
  progress.started(runs[1])
  clock[0] = 30.0
  for step in range(5, 8):  # 3 steps in 30 s
    progress.update(runs[1], step)
  line = progress.line()
  assert 'running paper/seed_1 @ 7/10' in line and '17/30 steps' in line
  assert 'ETA 2m10s' in line  # 13 steps left at 10 s a step
  # A diverged run is done: its remaining steps are never run, and not counted in the rate.
  progress.finished(runs[1], diverged=True)
  assert lines[-1].startswith('sweep: 2/3 runs done (1 diverged); 20/30 steps')
  assert 'ETA 1m40s' in lines[-1]
  assert sweep._duration(3725) == '1h02m'  # pylint: disable=protected-access


def test_the_sweep_command_runs_an_experiment_config(tiny_data_dir, tmp_path, compilation_cache):
  """One seed of two variants: the runs, the files and the report's sections (the report's
  numbers against scipy: tests/test_results.py)."""
  out = subprocess.run(
      [
          sys.executable,
          '-m',
          'alexnet_jax.tools.sweep',
          '--config=normalisation:tiny',
          f'--workdir={tmp_path}',
          f'--config.data_dir={tiny_data_dir}',
          '--config.sweep.seeds=(0,)',
          '--config.num_train_steps=3',
          # The tiny recipe's rate (the experiment's is 0.02): the steps the tests above compiled,
          # read from the shared compilation cache.
          '--config.optim.learning_rate=0.005',
      ],
      capture_output=True,
      text=True,
      cwd=str(tmp_path),
      timeout=600,
      env={**os.environ, **compilation_cache},
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'sweep: 2/2 runs done; 6/6 steps' in out.stdout
  for name in ('metrics.csv', 'summary.csv', 'learning_curves_steps.png', 'steps_to_target.png'):
    assert os.path.exists(tmp_path / name), name
  assert sorted(os.listdir(tmp_path / 'paper')) + sorted(os.listdir(tmp_path / 'no_lrn')) == [
      'seed_0',
      'seed_0',
  ]
  # The report of the runs' own final numbers (their done.json), one seed: no interval yet.
  final = {
      v: json.load(open(tmp_path / v / 'seed_0' / sweep.DONE_FILE))['top1_error']
      for v in ('paper', 'no_lrn')
  }
  lines = out.stdout.splitlines()
  header = next(i for i, line in enumerate(lines) if 'mean over seeds, its 95% interval' in line)
  for variant, error in final.items():
    printed = next(line for line in lines[header:] if line.startswith(variant + ' '))
    n, mean = printed.split()[1:3]
    assert int(n) == 1 and float(mean) == pytest.approx(100 * error, abs=0.006), printed
  assert 'plateaued: the fall is smaller' in out.stdout
  assert "Fisher's p" in out.stdout  # the experiment has a target: k of n reached it
  assert 'each variant minus paper' not in out.stdout  # one seed: nothing to pair
  # TensorBoard sees each run with its variant and seed among its hparams.
  run = tmp_path / 'no_lrn' / 'seed_0'
  events = [f for f in os.listdir(run) if 'events.out.tfevents' in f]
  assert events
  written = b''.join(open(run / f, 'rb').read() for f in events)
  assert b'sweep.variant' in written and b'no_lrn' in written and b'sweep.seed' in written
