r"""Trains a sweep's runs and writes its table, summary and plots (`sweeps.sweep` says how).

    python -m alexnet_jax.tools.sweep --config=configs/normalisation.py --workdir=runs/normalisation
    python -m alexnet_jax.tools.sweep --config=normalisation:tiny --workdir=runs/smoke  # seconds

Running the same command again skips the finished runs and resumes the others; SIGTERM or SIGINT
saves the running runs' steps and exits.
"""

import sys

from absl import logging

from alexnet_jax.errors import ConfigError
from alexnet_jax import stopping
from alexnet_jax.sweeps import sweep


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from alexnet_jax.system import cli  # pylint: disable=g-import-not-at-top

  cli.begin(argv)
  logging.set_verbosity(logging.WARNING)  # the progress line speaks; the runs' metrics go to files
  from alexnet_jax.sweeps import results  # pylint: disable=g-import-not-at-top

  config = flags.FLAGS.config
  try:
    _, summary, figures = sweep.run_and_collect(config, flags.FLAGS.workdir)
  except ConfigError as e:
    cli.fail(str(e))
  except stopping.Stopped as e:  # SIGTERM or SIGINT: the running runs saved their steps
    sys.stderr.write(f'\n{e}\n')
    raise SystemExit(e.exit_code) from None
  spec = sweep.sweep_settings(config)[1] if 'sweep' in config else {}
  metric = spec.get('metric', 'eval_top1_error')
  print(f'{metric} (%), mean +- std over seeds:', flush=True)
  print(results.format_mean_std(summary, metric).to_string(), flush=True)
  if spec.get('target') is not None and 'steps_to_target' in summary:
    stats = summary['steps_to_target']
    print(f"steps until {spec['target_metric']} <= {spec['target']:g} (mean, std, runs there):")
    print(stats.round(1).to_string(), flush=True)
  print(f'every metric of every run: {flags.FLAGS.workdir}/metrics.csv, summary.csv', flush=True)
  for path in figures.values():
    print(f'wrote {path}', flush=True)


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
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=cli.parse_flags)


if __name__ == '__main__':
  run()
