r"""Trains a sweep's runs and writes its table, summary and plots (`sweeps.sweep` says how).

    python -m alexnet_jax.tools.sweep --config=configs/normalisation.py --workdir=runs/normalisation
    python -m alexnet_jax.tools.sweep --config=normalisation:tiny --workdir=runs/smoke  # seconds

Running the same command again skips the finished runs and resumes the others; SIGTERM or SIGINT
saves the running runs' steps and exits. `--launcher=slurm` trains each run as a SLURM job
(submitit, `sweeps.launch`), waits for them and then writes the same table and plots; `local`
runs the jobs as processes of this machine, as SLURM would run them.

    python -m alexnet_jax.tools.sweep --config=configs/towers.py --workdir=runs/towers \
        --launcher=slurm --slurm_partition=gpu --gpus_per_job=1 --timeout_min=240
"""

import os
import sys

from absl import logging

from alexnet_jax.errors import ConfigError
from alexnet_jax import stopping
from alexnet_jax.sweeps import sweep


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from alexnet_jax.system import cli  # pylint: disable=g-import-not-at-top

  cli.begin(argv)
  # The progress line speaks; the runs' metrics go to files. Restored after, for a caller that
  # runs this command inside its own process (a notebook, a test).
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.WARNING)
  try:
    _sweep(flags.FLAGS)
  finally:
    logging.set_verbosity(verbosity)


def _sweep(values) -> None:
  """Trains the sweep (here or as jobs), then prints its report and writes its files."""
  from alexnet_jax.sweeps import results  # pylint: disable=g-import-not-at-top
  from alexnet_jax.system import cli  # pylint: disable=g-import-not-at-top

  config = values.config
  try:
    if values.launcher != 'here':
      _train_as_jobs(config, values)
    table, _, figures = sweep.run_and_collect(config, values.workdir)
  except ConfigError as e:
    cli.fail(str(e))
  except stopping.Stopped as e:  # SIGTERM or SIGINT: the running runs saved their steps
    sys.stderr.write(f'\n{e}\n')
    raise SystemExit(e.exit_code) from None
  spec = sweep.sweep_settings(config)[1] if 'sweep' in config else {}
  metric = spec.get('metric', 'eval_top1_error')
  answer = results.report(
      table,
      metric,
      values.workdir,
      spec.get('target'),
      spec.get('target_metric', 'train_top1_error'),
  )
  print(answer, flush=True)
  if answer.differences is not None:
    answer.differences.to_csv(os.path.join(values.workdir, 'differences.csv'))
  print(
      f'every metric of every run: {values.workdir}/metrics.csv, summary.csv, differences.csv',
      flush=True,
  )
  for path in figures.values():
    print(f'wrote {path}', flush=True)


def _train_as_jobs(config, values) -> None:
  """Every unfinished run as a job of the scheduler `values.launcher` names; returns when all
  have ended (the collection after it then trains nothing)."""
  from alexnet_jax.sweeps import launch  # pylint: disable=g-import-not-at-top

  try:
    import submitit  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError(
        f"--launcher={values.launcher} needs submitit: pip install submitit (or the package's "
        '[slurm] extra), or leave --launcher out to train here.'
    ) from None
  folder = os.path.join(values.workdir, '.jobs')  # submitit's scripts and each job's log
  executor = submitit.AutoExecutor(folder=folder, cluster=values.launcher)
  executor.update_parameters(timeout_min=values.timeout_min, cpus_per_task=values.cpus_per_job)
  if values.launcher == 'slurm':
    executor.update_parameters(
        slurm_partition=values.slurm_partition, gpus_per_node=values.gpus_per_job
    )
  # A sweep that tunes each variant's rate trains its tuning runs here first (`sweep.tune`): the
  # jobs' reported runs train at the rates they choose.
  sweep.tune_experiment(config, values.workdir)
  jobs = launch.submit(config, values.workdir, executor)
  print(f'submitted {len(jobs)} jobs to {values.launcher} (logs in {folder})', flush=True)
  statuses = launch.wait(jobs)
  print(f'jobs ended: {statuses.count("done")} done, {statuses.count("diverged")} diverged')


def run() -> None:
  """`python -m alexnet_jax.tools.sweep`: the flags are defined here, not on import (a library)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  from alexnet_jax.system import cli  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string('workdir', None, 'Parent directory: one subdirectory per run, and the plots.')
  config_flags.DEFINE_config_file(
      'config', None, 'An experiment config with a `sweep` section, e.g. configs/pooling.py.'
  )
  cli.define_compilation_cache_flag()
  flags.DEFINE_enum(
      'launcher',
      'here',
      ['here', 'slurm', 'local'],
      'here: train in this process | slurm: each '
      'run a SLURM job | local: each run a job process of this machine (submitit).',
  )
  flags.DEFINE_string('slurm_partition', None, 'The SLURM partition of the jobs.')
  flags.DEFINE_integer('gpus_per_job', 0, 'GPUs each SLURM job asks for.')
  flags.DEFINE_integer('cpus_per_job', 2, 'CPU cores each job asks for.')
  flags.DEFINE_integer('timeout_min', 240, "Each job's time limit in minutes.")
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=cli.parse_flags)


if __name__ == '__main__':
  run()
