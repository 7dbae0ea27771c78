"""A sweep that outgrows one machine: each run a job of an existing scheduler, through submitit.

    executor = submitit.AutoExecutor(folder='runs/towers/.jobs')  # SLURM where sbatch exists
    executor.update_parameters(slurm_partition='gpu', gpus_per_node=1, timeout_min=240)
    jobs = launch.submit(config, 'runs/towers', executor)
    launch.wait(jobs)  # or come back later: the same call skips finished runs

Each job trains one (variant, seed) of the sweep with `sweep.run_sweep(..., only=[name])` in a
fresh process tuned as every command tunes its own (`runtime.tune_process`), so its workdir is
the one an in-process sweep writes (checkpoints, metrics.jsonl, done.json): `results` reads the
runs whichever way they trained, and a job that is preempted resumes from its checkpoint when it
is submitted again. The scheduler is submitit's (SLURM, or its local executor for a test); nothing
here schedules. Multi-host training of one run stays on `jax.distributed` (`sharding`).
"""

import functools
from typing import Any, Sequence

import ml_collections

from alexnet_jax.sweeps import sweep


def train_one(config: dict[str, Any], parent: str, name: str, options: dict[str, Any]) -> str:
  """A job's body: the run `name` of the sweep of `config` (a ConfigDict's dict, which pickles
  without the config module) under `parent`; returns its status ('done' or 'diverged')."""
  from alexnet_jax.system import runtime  # pylint: disable=g-import-not-at-top

  runtime.tune_process()  # a fresh process: before JAX starts, as a command's first call
  config = ml_collections.ConfigDict(config)
  (run,) = sweep.run_sweep(config, parent, only=[name], **options)
  return sweep.status(run)


def submit(
    config: ml_collections.ConfigDict,
    parent: str,
    executor,
    *,
    variants: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> list:
  """One job of `executor` (a submitit Executor) per run of the sweep that has not finished or
  diverged; returns the jobs. `variants` and `seeds` default to the config's sweep section."""
  options = {'variants': variants, 'seeds': seeds, 'parallel': 1}
  if 'sweep' in config:
    base, spec = sweep.sweep_settings(config)
    options['variants'] = variants if variants is not None else spec['variants']
    options['seeds'] = seeds if seeds is not None else spec['seeds']
    runs = sweep.plan(base, parent, options['variants'], options['seeds'], sweep.defined(spec))
  else:
    runs = sweep.plan(config, parent, variants, seeds)
  todo = [r for r in runs if sweep.status(r) not in ('done', 'diverged')]
  body = functools.partial(train_one, config.to_dict(), parent, options=options)
  return [executor.submit(body, r.name) for r in todo]


def wait(jobs: Sequence) -> list[str]:
  """Each job's result (its run's status), in order; a job's error is raised here."""
  return [job.result() for job in jobs]
