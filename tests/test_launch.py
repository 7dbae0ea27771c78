"""A sweep's runs as jobs of a scheduler (submitit's local executor, as SLURM would run them):
the same workdirs and numbers as the sweep trained in this process."""

import concurrent.futures
import json
import os

import jax
import numpy as np
import pytest
import submitit

from alexnet_jax import history
from alexnet_jax.configs import normalisation
from alexnet_jax.sweeps import launch
from alexnet_jax.sweeps import results
from alexnet_jax.sweeps import sweep
from tests import commands

TIMING = ('elapsed_s', 'steps_per_sec', 'uptime', 'train_steps_per_sec')


def values(workdir: str) -> list[dict]:
  kept = [{k: v for k, v in r.items() if k not in TIMING} for r in history.read(workdir)]
  return [r for r in kept if set(r) != {'step'}]


def close(a: list[dict], b: list[dict]) -> bool:
  """The same records, each value to float32's last bits: this process simulates 8 CPU devices
  and a job's has 1, whose compiled step sums in another order (measured: 6e-8 of the loss)."""
  return [sorted(r) for r in a] == [sorted(r) for r in b] and all(
      np.allclose([r[k] for k in sorted(r)], [q[k] for k in sorted(q)], rtol=1e-5, atol=0)
      for r, q in zip(a, b)
  )


@pytest.mark.slow
def test_each_run_is_a_job_and_the_sweep_reads_them_as_its_own(
    tiny_data_dir, tmp_path, compilation_cache
):
  """The sweep command with --launcher=local: each run a job process submitit starts, as SLURM
  would; then the table and plots, as the command always writes them."""
  parent = str(tmp_path / 'by_jobs')
  overrides = [
      f'--config.data_dir={tiny_data_dir}',
      '--config.sweep.seeds=(0,)',
      '--config.num_train_steps=4',
  ]
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    by_jobs = pool.submit(
        commands.run_module,
        'alexnet_jax.tools.sweep',
        '--config=normalisation:tiny',
        f'--workdir={parent}',
        '--launcher=local',
        '--timeout_min=10',
        '--cpus_per_job=1',
        *overrides,
        env=compilation_cache,
        timeout=600,
    )
    # While the jobs train: the same sweep in this process, on one device as each job's process
    # has, to give the same numbers.
    config = normalisation.get_config('tiny')
    config.data_dir, config.sweep.seeds, config.num_train_steps = tiny_data_dir, (0,), 4
    here = str(tmp_path / 'here')
    runs = sweep.run_sweep(config, here, devices=jax.devices()[:1], report=lambda _: None)
    out = by_jobs.result()
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'submitted 2 jobs to local' in out.stdout and 'jobs ended: 2 done' in out.stdout
  assert 'wrote ' in out.stdout  # the plots, after the jobs
  jobs_logs = os.listdir(os.path.join(parent, '.jobs'))
  assert any(name.endswith('_log.out') for name in jobs_logs), jobs_logs  # submitit's own files

  assert [r.name for r in runs] == ['paper/seed_0', 'no_lrn/seed_0']
  for run in runs:
    by_job = values(os.path.join(parent, run.variant, 'seed_0'))
    assert by_job and close(by_job, values(run.workdir))
    with open(os.path.join(parent, run.variant, 'seed_0', sweep.DONE_FILE)) as f:
      assert json.load(f)['top1_error'] >= 0
  assert not close(  # the variants trained differently: the comparison above can fail
      values(os.path.join(parent, 'paper', 'seed_0')),
      values(os.path.join(parent, 'no_lrn', 'seed_0')),
  )
  # The jobs' plan names every run, so the table has both variants.
  assert sorted(results.load(parent)['variant'].unique()) == ['no_lrn', 'paper']
  # Submitting again submits nothing: every run is done.
  executor = submitit.LocalExecutor(folder=str(tmp_path / 'again'))
  assert launch.submit(config, parent, executor) == []
