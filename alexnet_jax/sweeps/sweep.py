r"""Ablations and seeds: many training runs of one config, collected into one table.

    python -m alexnet_jax.tools.sweep --config=configs/normalisation.py --workdir=runs/normalisation

A sweep is a base config, named variants (each a set of field changes, e.g. `no_lrn`:
model.norm='none') and seeds. Each (variant, seed) trains in its own workdir,
`PARENT/VARIANT/seed_N`, with `train.train_and_evaluate`, so everything a run does (checkpoints,
resumption, TensorBoard events) is a single run's. Running the same sweep again skips the finished
runs and resumes the others from their checkpoints; a run directory that holds another config is an
error, never overwritten. An experiment config (configs/relu_tanh.py and the others) carries its
sweep in `config.sweep`: `variants`, `seeds`, `parallel` (runs side by side on disjoint sets of the
devices), `together` (seeds of a variant trained as one program, `train.train_members`), what
the plots measure (`metric`, `target`, `target_metric`), and what each variant name
changes: `named` (the recipes' ablations, configs/common.py's VARIANTS) and `custom` (the
experiment's own). The sweep takes the variants from the config it is given and imports no recipe.

Afterwards `PARENT/metrics.csv` holds every logged metric of every run (`results.load`),
`PARENT/summary.csv` the final numbers aggregated over seeds, and `PARENT/*.png` the plots
(`plots.save_sweep_plots`). `tensorboard --logdir=PARENT` shows every run, with its variant and seed
among the hparams.
"""

import concurrent.futures
import dataclasses
import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax
import ml_collections

from alexnet_jax import checkpointing
from alexnet_jax.data import workers
from alexnet_jax.errors import ConfigError
from alexnet_jax import history
from alexnet_jax import settings
from alexnet_jax import steps
from alexnet_jax import stopping
from alexnet_jax.system import files
from alexnet_jax import train

RUN_FILE, DONE_FILE, FAILED_FILE = history.RUN_FILE, history.DONE_FILE, history.FAILED_FILE


@dataclasses.dataclass(frozen=True)
class Run:
  variant: str
  seed: int
  config: ml_collections.ConfigDict
  workdir: str

  @property
  def name(self) -> str:
    return f'{self.variant}/seed_{self.seed}'


def sweep_settings(config: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, dict]:
  """An experiment config split into its base run config and its `sweep` section (as a dict)."""
  if 'sweep' not in config:
    raise ConfigError(
        'This config has no `sweep` section, so there is nothing to sweep. Use an experiment '
        'config (configs/relu_tanh.py, configs/normalisation.py, ...), or give the variants and '
        'seeds to sweep.run_sweep(config, parent, variants=..., seeds=...).'
    )
  base = ml_collections.ConfigDict(config.to_dict())
  spec = base.sweep.to_dict()
  del base.sweep
  return base, spec


def plan(
    base: ml_collections.ConfigDict,
    parent: str,
    variants: Sequence[str] | Mapping[str, Mapping[str, Any]],
    seeds: Sequence[int],
    known: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Run]:
  """The runs of a sweep, variant-major. `variants` are names of `known` (name -> overrides,
  nested as the sweep section holds them, {'optim': {'learning_rate': 0.005}}, or dotted:
  `defined(config.sweep)` for an experiment's), or a mapping of new names to dotted overrides
  ({'wide': {'model.width': 2.0}}) for a notebook's own ablation."""
  variants = resolved(variants, known)
  if not variants or not seeds:
    raise ConfigError('A sweep needs at least one variant and one seed.')
  if len(set(seeds)) != len(seeds):
    raise ConfigError(f'seeds={tuple(seeds)} repeats a seed; each seed is one run directory.')
  runs = []
  for name, overrides in variants.items():
    for seed in seeds:
      config = ml_collections.ConfigDict(base.to_dict())
      for field, value in overrides.items():
        *parents, last = field.split('.')
        node = config
        try:
          for part in parents:
            node = node[part]
          node[last]  # pylint: disable=pointless-statement  (a typo must not add a field)
        except (AttributeError, KeyError, TypeError):
          raise ConfigError(
              f'Variant {name!r} overrides {field!r}, which the config does not have; every '
              'field is listed in configs/alexnet.py.'
          ) from None
        node[last] = value
      config.seed = int(seed)
      runs.append(Run(name, int(seed), config, os.path.join(parent, name, f'seed_{seed}')))
  return runs


def defined(spec: Mapping[str, Any]) -> dict[str, Any]:
  """The variants a sweep section defines, name -> nested overrides: its `named` ones (the
  recipes' ablations) and its `custom` ones (the experiment's own, which win a shared name)."""
  return {**dict(spec.get('named') or {}), **dict(spec.get('custom') or {})}


def planned(config: ml_collections.ConfigDict, parent: str) -> list[Run]:
  """The runs of an experiment config's sweep (its `sweep` section) under `parent`: each with
  the config it trains and the workdir it trains in, e.g. for `inference.load(run.workdir)`."""
  base, spec = sweep_settings(config)
  variants = resolved(spec['variants'], defined(spec))
  if spec.get('learning_rates'):
    variants = at_rates(variants, chosen_rates(parent, variants))
  return plan(base, parent, variants, spec['seeds'])


def resolved(
    variants: Sequence[str] | Mapping[str, Mapping[str, Any]],
    known: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
  """`variants` as `plan` takes them (names of `known`, or a mapping) as a mapping of names to
  dotted overrides."""
  if isinstance(variants, Mapping):
    return {name: dict(overrides) for name, overrides in variants.items()}
  known = {k: settings.dotted(v) for k, v in (known or {}).items()}
  unknown = [v for v in variants if v not in known]
  if unknown:
    raise ConfigError(
        f"Unknown variants {unknown}; the named ones are {sorted(known)} (the sweep section's "
        "`named` and `custom`: an experiment config's), or pass a mapping of names to "
        "overrides, e.g. {'paper': {}, 'no_lrn': {'model.norm': 'none'}} (configs/common.py's "
        "VARIANTS holds the paper's ablations)."
    )
  return {v: dict(known[v]) for v in variants}


# --- Each variant at its best learning rate ---
#
# One learning rate tuned for the baseline favours the baseline: before the reported runs, every
# variant trains at each of `sweep.learning_rates` on `sweep.tuning_seeds`, seeds the reported
# runs never use, and its reported runs train at the rate whose tuning runs end with the lowest
# mean `sweep.tuning_metric` (`sweep.metric` unless set; 'steps_to_target' ranks the rates by
# their steps to `sweep.target`, `results.rate_scores`). Both are kept: the tuning runs in
# PARENT/tuning/VARIANT@lrRATE/seed_N (a sweep of their own, with its table), the choice in
# PARENT/tuning.json.

TUNING_DIR, TUNING_FILE = 'tuning', 'tuning.json'


def rate_name(variant: str, rate: float) -> str:
  return f'{variant}@lr{rate:g}'


def at_rates(variants: Mapping[str, Mapping[str, Any]], rates: Mapping[str, float]):
  """Each variant's overrides with its chosen learning rate."""
  return {v: {**o, 'optim.learning_rate': float(rates[v])} for v, o in variants.items()}


def chosen_rates(parent: str, variants: Mapping[str, Any]) -> dict[str, float]:
  """The rates `tune` chose (PARENT/tuning.json); ConfigError where a variant has none yet."""
  path = os.path.join(parent, TUNING_FILE)
  recorded = {}
  if os.path.exists(path):
    with open(path) as f:
      recorded = json.load(f)['variants']
  missing = [v for v in variants if v not in recorded]
  if missing:
    raise ConfigError(
        f'{path} has no learning rate chosen for {missing}: run the sweep here once '
        '(python -m alexnet_jax.tools.sweep without --launcher) to train the tuning runs, or '
        'set --config.sweep.learning_rates=() to train every variant at optim.learning_rate.'
    )
  return {v: recorded[v]['chosen'] for v in variants}


def tune_experiment(config: ml_collections.ConfigDict, parent: str) -> None:
  """Trains an experiment config's tuning runs here, where its sweep tunes rates and they are
  not all done: what the scheduler's jobs, each training one reported run, need first."""
  base, spec = sweep_settings(config)
  if spec.get('learning_rates'):
    tune(base, parent, resolved(spec['variants'], defined(spec)), spec, spec['seeds'])


def tune(
    base: ml_collections.ConfigDict,
    parent: str,
    variants: Mapping[str, Mapping[str, Any]],
    spec: Mapping[str, Any],
    seeds: Sequence[int],
    **options,
) -> dict[str, float]:
  """Trains the tuning runs (`run_sweep`'s `options`), chooses each variant's rate, records it."""
  rates = tuple(float(r) for r in spec['learning_rates'])
  tuning_seeds = tuple(int(s) for s in spec.get('tuning_seeds') or ())
  metric = spec.get('tuning_metric') or spec.get('metric', 'eval_top1_error')
  if not tuning_seeds or set(tuning_seeds) & set(seeds):
    raise ConfigError(
        f'sweep.tuning_seeds={tuning_seeds} must name at least one seed and none of the reported '
        f'seeds {tuple(seeds)}: a rate chosen on the reported runs would flatter them. '
        'E.g. --config.sweep.tuning_seeds="(100,)".'
    )
  if len(set(rates)) != len(rates) or min(rates, default=0) <= 0:
    raise ConfigError(f'sweep.learning_rates={rates}: give distinct positive rates.')
  from alexnet_jax.sweeps import results  # pylint: disable=g-import-not-at-top  (pandas)

  target, target_metric = spec.get('target'), spec.get('target_metric', 'train_top1_error')
  if metric == results.STEPS_TO_TARGET and target is None:
    raise ConfigError(
        f'sweep.tuning_metric={metric!r} ranks the rates by their steps to sweep.target, which '
        'is not set: give one, e.g. --config.sweep.target=0.25.'
    )
  tuning = {
      rate_name(v, r): {**o, 'optim.learning_rate': r} for v, o in variants.items() for r in rates
  }
  tuning_parent = os.path.join(parent, TUNING_DIR)
  run_sweep(base, tuning_parent, variants=tuning, seeds=tuning_seeds, **options)
  scored = results.rate_scores(results.load(tuning_parent), metric, target, target_metric)
  record, chosen = {}, {}
  for v in variants:
    scores = {r: scored.loc[rate_name(v, r)] for r in rates if rate_name(v, r) in scored.index}
    if not scores:
      raise ConfigError(
          f'Every tuning run of {v!r} diverged or failed at the rates {rates}; add smaller '
          'rates to sweep.learning_rates.'
      )
    # The lowest score, then the lowest tiebreak; a tie goes to the smaller rate.
    chosen[v] = min(scores, key=lambda r: (scores[r]['score'], scores[r]['tiebreak'], r))
    name = metric if metric == results.STEPS_TO_TARGET else f'final_{metric}'
    record[v] = {
        'chosen': chosen[v],
        # None: every run diverged, or (steps) one never got to the target.
        f'mean_{name}': {
            f'{r:g}': (_finite_or_none(scores[r]['score']) if r in scores else None) for r in rates
        },
    }
    if metric == results.STEPS_TO_TARGET:  # how close the rates that never got there came
      record[v][f'mean_final_{target_metric}'] = {
          f'{r:g}': float(scores[r]['tiebreak']) for r in scores
      }
  if jax.process_index() == 0:
    files.write_json(
        os.path.join(parent, TUNING_FILE),
        {'metric': metric, 'seeds': list(tuning_seeds), 'rates': list(rates), 'variants': record},
    )
  return chosen


def _finite_or_none(value: float) -> float | None:
  return float(value) if math.isfinite(value) else None


def _claim(run: Run) -> bool:
  """Writes the run's record, or checks the one there; True if the run already finished."""
  os.makedirs(run.workdir, exist_ok=True)
  path = os.path.join(run.workdir, RUN_FILE)
  identity = settings.identity(run.config)
  if os.path.exists(path) and status(run) != 'new':
    with open(path) as f:
      recorded = json.load(f)['config']
    differ = settings.differences(recorded, identity)  # EXECUTION_FIELDS may change
    if differ:
      shown = ', '.join(differ)
      raise ConfigError(
          f'{run.workdir} holds a run of another config ({shown[:400]}). Sweep into another '
          'parent workdir, or delete that directory to train it again.'
      )
  elif jax.process_index() == 0:
    # A record of a run that never trained (a sweep stopped by a later variant's error) is
    # rewritten: nothing was computed under it.
    files.write_json(path, {'variant': run.variant, 'seed': run.seed, 'config': identity})
  return os.path.exists(os.path.join(run.workdir, DONE_FILE))


def status(run: Run) -> str:
  """'done', 'diverged', 'started' (it has logged metrics) or 'new'."""
  if os.path.exists(os.path.join(run.workdir, DONE_FILE)):
    return 'done'
  if os.path.exists(os.path.join(run.workdir, FAILED_FILE)):
    return 'diverged'
  if history.read(run.workdir):
    return 'started'
  return 'new'


class Progress:
  """One line for the whole sweep: runs done of all, steps done of all, elapsed and ETA.

  The ETA is the remaining steps at the rate of the steps this session has run (compiles and
  evaluations included, the runs side by side together). A resumed run starts from its
  checkpoint's step; a diverged run counts as done, its remaining steps as never to be run.
  """

  def __init__(
      self,
      runs: Sequence[Run],
      total_steps: Mapping[str, int],
      report,
      every_s: float,
      start_steps: Mapping[str, int] | None = None,
      clock: Callable[[], float] = time.monotonic,
  ):
    self.total_runs = len(runs)
    self.total_steps = dict(total_steps)
    self.step = {r.name: (start_steps or {}).get(r.name, 0) for r in runs}
    self.ran = {r.name: 0 for r in runs}  # steps this session, for the rate
    self.done = 0
    self.diverged = 0
    self.running: set[str] = set()
    self.report = report
    self.every_s = every_s
    self.clock = clock
    self.start = clock()
    self.last = self.start
    self.lock = threading.Lock()

  def finished(self, run: Run, skipped: bool = False, diverged: bool = False) -> None:
    """`skipped`: finished before this session, counted without a line of its own."""
    with self.lock:
      self.done += 1
      self.diverged += diverged
      self.step[run.name] = self.total_steps[run.name]
      self.running.discard(run.name)
      if not skipped:
        self._report()

  def started(self, run: Run) -> None:
    with self.lock:
      self.running.add(run.name)

  def update(self, run: Run, step: int) -> None:
    with self.lock:
      self.ran[run.name] += max(0, step - self.step[run.name])
      self.step[run.name] = step
      if self.clock() - self.last >= self.every_s:
        self._report()

  def line(self) -> str:
    elapsed = self.clock() - self.start
    done_steps = sum(self.step.values())
    total = sum(self.total_steps.values())
    ran = sum(self.ran.values())
    eta = '?'
    if done_steps >= total:
      eta = '0s'
    elif ran > 0:
      eta = _duration(elapsed / ran * (total - done_steps))
    running = ', '.join(f'{n} @ {self.step[n]}/{self.total_steps[n]}' for n in sorted(self.running))
    return (
        f'sweep: {self.done}/{self.total_runs} runs done'
        + (f' ({self.diverged} diverged)' if self.diverged else '')
        + (f' (running {running})' if running else '')
        + f'; {done_steps}/{total} steps; elapsed {_duration(elapsed)}, ETA {eta}'
    )

  def _report(self) -> None:
    self.last = self.clock()
    self.report(self.line())


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds}s'
  minutes, seconds = divmod(seconds, 60)
  if minutes < 60:
    return f'{minutes}m{seconds:02d}s'
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m'


def _print(line: str) -> None:
  print(line, flush=True)


def run_sweep(
    config: ml_collections.ConfigDict,
    parent: str,
    *,
    variants: Sequence[str] | Mapping[str, Mapping[str, Any]] | None = None,
    seeds: Sequence[int] | None = None,
    parallel: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    report: Callable[[str], None] = _print,
    report_every_s: float = 30.0,
    only: Sequence[str] | None = None,
    together: int | None = None,
) -> list[Run]:
  """Trains every (variant, seed) of the sweep that has not finished; returns the runs.

  `config` is an experiment config (its `sweep` section gives the defaults of `variants`, `seeds`
  and `parallel`, and defines the variant names) or a plain run config with `variants` (a mapping
  of names to overrides: a plain config defines no names) and `seeds` given here. `parallel` runs
  train side by side, each on its own `len(devices) // parallel` of `devices` (default: all of
  this process's; any remainder stays idle); `parallel=1` runs them one after the other on all of
  them, so a run's numbers equal those of a run side by side when both get as many devices. A run
  that diverges is recorded (`diverged.json`) and the sweep goes on; any other error stops it.
  SIGTERM or SIGINT stops it as it stops a single run (`stopping`): every run training saves the
  step it is in, queued runs do not start, and `Interrupted` is raised; the same call resumes.
  `only` (run names, 'VARIANT/seed_N'): this call trains those runs alone; the plan still lists
  every run, so a scheduler's jobs (`sweeps.launch`) each train one and `results` reads them all.
  `together` (default: the sweep section's, else 1): up to this many seeds of a variant that
  resume from the same step train as one group, in one compiled program on one device
  (`train.train_members`); each still writes its own run directory.
  """
  spec = {}
  if 'sweep' in config:
    config, spec = sweep_settings(config)
  variants = variants if variants is not None else spec.get('variants')
  seeds = seeds if seeds is not None else spec.get('seeds')
  parallel = parallel if parallel is not None else spec.get('parallel', 1)
  together = together if together is not None else spec.get('together', 1)
  if variants is None or seeds is None:
    raise ConfigError('Give the sweep its variants and seeds (or use an experiment config).')
  variants = resolved(variants, defined(spec))
  if spec.get('learning_rates'):
    if only is None:
      tune(
          config,
          parent,
          variants,
          spec,
          seeds,
          parallel=parallel,
          devices=devices,
          report=report,
          report_every_s=report_every_s,
          together=together,
      )
    variants = at_rates(variants, chosen_rates(parent, variants))
  planned_runs = plan(config, parent, variants, seeds)
  unknown = sorted(set(only or ()) - {r.name for r in planned_runs})
  if unknown:
    raise ConfigError(f'only={unknown} names no run of this sweep ({planned_runs[0].name}, ...).')
  runs = [r for r in planned_runs if only is None or r.name in only]
  devices = list(devices if devices is not None else jax.local_devices())
  if parallel < 1 or parallel > len(devices):
    raise ConfigError(
        f'parallel={parallel} runs side by side need at least that many devices; this process '
        f'has {len(devices)}. Use --config.sweep.parallel=1 to run them one after the other.'
    )
  if parallel > 1 and jax.process_count() > 1:
    raise ConfigError(
        'Runs side by side (sweep.parallel > 1) need a single process; on several hosts each run '
        'spans all of them, so use --config.sweep.parallel=1.'
    )
  per_run = len(devices) // parallel
  if together < 1:
    raise ConfigError(f'together={together}: train at least 1 member at a time.')
  if together > 1 and per_run > 1:
    raise ConfigError(
        f'together={together} trains each group of members on one device, but each run side by '
        f"side would get {per_run} of this process's {len(devices)} devices. Set "
        f'--config.sweep.parallel={len(devices)} (a group per device), or '
        '--config.sweep.together=1.'
    )
  groups = [devices[i * per_run : (i + 1) * per_run] for i in range(parallel)]

  # Every run is checked before the first one starts, and before any directory is claimed: a
  # typo in the last variant, or a batch its devices cannot split, costs seconds, not the sweep.
  typed, total = {}, {}
  for r in runs:
    typed[r.name] = run = train.run_settings(r.config, r.workdir)
    try:
      _, _, total[r.name] = train.preflight(run, groups[0])
    except ConfigError as e:
      raise ConfigError(f'{r.name}: {e}') from None
  os.makedirs(parent, exist_ok=True)
  if jax.process_index() == 0:
    names = list(dict.fromkeys(r.variant for r in planned_runs))
    files.write_json(
        os.path.join(parent, history.PLAN_FILE),
        {'variants': names, 'seeds': [int(s) for s in seeds]},
    )
  finished = {r.name: _claim(r) for r in runs}
  progress = Progress(
      runs,
      total,
      report,
      report_every_s,
      {r.name: checkpointing.latest_step(r.workdir) or 0 for r in runs},
  )
  todo = []
  for r in runs:
    if finished[r.name] or status(r) == 'diverged':
      progress.finished(r, skipped=True, diverged=status(r) == 'diverged')
    else:
      todo.append(r)
  report(progress.line())
  # Seeds of one variant at the same step train together; the plan's order is kept.
  batches: dict[tuple[str, int], list[Run]] = {}
  for r in todo:
    batches.setdefault((r.variant, progress.step[r.name]), []).append(r)
  work = [
      tuple(same[i : i + together])
      for same in batches.values()
      for i in range(0, len(same), together)
  ]

  free = list(range(parallel))
  free_lock = threading.Lock()
  stop = threading.Event()  # set when a run side by side fails: the others stop at their next step
  stopped: dict[str, int] = {}  # run -> the step it saved when a signal stopped it
  unstarted: list[str] = []  # runs a signal kept from starting

  def on_step(members: tuple[Run, ...], step: int) -> None:
    if stop.is_set():
      raise SweepStopped(
          f'{members[0].name} stopped at step {step}: another run of the sweep failed.'
      )
    for run in members:
      progress.update(run, step)

  def prepared(run: Run) -> settings.RunConfig:
    typed_run = typed[run.name]
    loop, data = typed_run.loop, typed_run.data
    if parallel > 1:
      # JAX traces one profile per process at a time: runs side by side are not profiled.
      loop = dataclasses.replace(loop, profile_steps=0)
      data = workers.side_by_side(data, parallel)  # their workers share one /dev/shm
    return dataclasses.replace(
        typed_run,
        loop=loop,
        data=data,
        hparams={**typed_run.hparams, 'sweep.variant': run.variant, 'sweep.seed': run.seed},
    )

  def execute(members: tuple[Run, ...], request: stopping.StopRequest) -> None:
    if stop.is_set():  # another run failed while this one waited in the queue
      return
    if request.signum:
      unstarted.extend(run.name for run in members)
      return
    with free_lock:
      group = free.pop()
    try:
      for run in members:
        progress.started(run)
      outcomes = train.train_members(
          [prepared(run) for run in members],
          [run.workdir for run in members],
          devices=groups[group],
          step_callback=lambda step, _: on_step(members, step),
      )
      for run, outcome in zip(members, outcomes):
        if isinstance(outcome, steps.TrainingDiverged):
          logging.warning('%s diverged: %s', run.name, outcome)
          if jax.process_index() == 0:
            files.write_json(os.path.join(run.workdir, FAILED_FILE), {'message': str(outcome)})
          progress.finished(run, diverged=True)
        else:
          if jax.process_index() == 0:
            files.write_json(os.path.join(run.workdir, DONE_FILE), outcome[1])
          progress.finished(run)
    except stopping.Stopped as e:
      # Not `stop`: the runs beside it heard the same signal and stop after their own steps,
      # saving them; stopped at their next step instead, they would lose those.
      for run in members:
        stopped[run.name] = e.step
    except BaseException:
      stop.set()  # set here, not by the thread that waits: no queued run starts in between
      raise
    finally:
      with free_lock:
        free.append(group)

  # The handlers are installed here, in the main thread, and every run's loop listens through
  # this request (stopping.listening): a signal stops each running run after its step.
  with stopping.listening() as request:
    if parallel == 1:
      for members in work:
        execute(members, request)
    else:
      with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        futures = [pool.submit(execute, members, request) for members in work]
        try:
          for future in concurrent.futures.as_completed(futures):
            future.result()  # re-raises a run's error
        except BaseException:
          # Stop the sweep: queued runs never start, running ones stop at their next step (their
          # checkpoints stay, so running the sweep again resumes them).
          stop.set()
          for future in futures:
            future.cancel()
          raise
  if stopped or unstarted:  # a signal in a run's last step changes nothing: it finished
    raise Interrupted(request.signum, stopped, parent)
  return runs


class Interrupted(stopping.Stopped):
  """The sweep stopped on a signal, after each run that was training saved its step (`steps`)."""

  def __init__(self, signum: int, steps_saved: Mapping[str, int], parent: str):
    super().__init__(signum, max(steps_saved.values(), default=0), parent)
    self.steps, self.parent = dict(sorted(steps_saved.items())), parent

  def __str__(self) -> str:
    saved = ', '.join(f'{name} at step {step}' for name, step in self.steps.items())
    return (
        f'The sweep stopped on {signal.Signals(self.signum).name}: '
        + (f'{saved} saved in {self.parent}' if saved else 'between runs, with nothing to save')
        + '. Run the same command again to resume.'
    )


class SweepStopped(RuntimeError):
  """A run stopped because another run of the same sweep failed."""


def run_and_collect(config: ml_collections.ConfigDict, parent: str, **kwargs):
  """`run_sweep`, then the table, the summary and the plots: what the command does.

  Returns (metrics DataFrame, summary DataFrame, {plot name: PNG path}).
  """
  from alexnet_jax.sweeps import plots  # pylint: disable=g-import-not-at-top  (matplotlib: seconds)
  from alexnet_jax.sweeps import results  # pylint: disable=g-import-not-at-top

  spec = sweep_settings(config)[1] if 'sweep' in config else {}
  for field in ('metric', 'target_metric'):
    _check_logged(config, field, spec.get(field, 'eval_top1_error'))
  run_sweep(config, parent, **kwargs)
  table = results.load(parent)
  summary = results.summary(
      table, target=spec.get('target'), target_metric=spec.get('target_metric')
  )
  results.save(table, summary, parent)
  figures = plots.save_sweep_plots(
      table,
      parent,
      metric=spec.get('metric', 'eval_top1_error'),
      target=spec.get('target'),
      target_metric=spec.get('target_metric', 'train_top1_error'),
  )
  return table, summary, figures


def _check_logged(config: ml_collections.ConfigDict, field: str, metric: str) -> None:
  """A metric the plots need must be one the runs log: found out before training, not after."""
  needs = {'trainset_': ('eval_trainset', True)}
  prefixes = ('train_', 'eval_', 'trainset_', 'final_eval_', 'steps_per_sec')
  if not metric.startswith(prefixes):
    raise ConfigError(
        f'sweep.{field}={metric!r} is not a metric the runs log; use one of train_*, eval_*, '
        'trainset_* (with eval_trainset=True) or final_eval_*, e.g. eval_top1_error.'
    )
  for prefix, (flag, value) in needs.items():
    if metric.startswith(prefix) and config.get(flag) != value:
      raise ConfigError(
          f'sweep.{field}={metric!r} needs --config.{flag}={value}: without it the runs never '
          'evaluate the training split.'
      )
