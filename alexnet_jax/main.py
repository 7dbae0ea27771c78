r"""Trains and evaluates AlexNet: `python -m alexnet_jax.main --config=CONFIG --workdir=DIR`.

CONFIG is a config file, with an optional argument (`configs/quickstart.py:tiny`); a name such as
`quickstart` or `alexnet:runlocal` means that file of the installed `alexnet_jax.configs`, so the
command works without a clone. Any config field can be overridden on the command line, e.g.
`--config.batch_size=64` or `--config.model.norm=batchnorm`. Running the same command again
resumes from the latest checkpoint in DIR. All the logic lives in `alexnet_jax.train`, which
notebooks import directly; this file tunes the process (`runtime.tune_process`) and parses flags.

Exit status: 0 when the run finished; 2 for a bad config, workdir or dataset, or for processes of
a multi-process run that did not all join (one paragraph saying what to do); 3 when training
diverged; 128 + the signal's number when it was asked to stop (143 for SIGTERM, 130 for SIGINT:
the step it was in is saved first, see `alexnet_jax.stopping`), so a scheduler sees an unfinished
job, and the same command resumes it. A process of a multi-process run that stops answering ends
the others (`--heartbeat_timeout`; `sharding.initialize_processes`).
"""

import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from alexnet_jax.errors import ConfigError
from alexnet_jax import sharding
from alexnet_jax import steps
from alexnet_jax import stopping
from alexnet_jax.system import cli
from alexnet_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and TensorBoard events.')
config_flags.DEFINE_config_file(
    'config',
    None,
    'A config file, e.g. configs/alexnet.py, with an optional argument '
    '(configs/quickstart.py:tiny), or the name of an installed one (quickstart, alexnet:runlocal).',
    lock_config=True,
)
flags.DEFINE_string(
    'coordinator_address',
    None,
    'Multi-process runs: host:port of process 0. '
    'Without it, SLURM, Open MPI and TPU pods are detected automatically.',
)
flags.DEFINE_integer('num_processes', None, 'Multi-process runs: how many processes in all.')
flags.DEFINE_integer('process_id', None, 'Multi-process runs: this process, 0 to num_processes-1.')
flags.DEFINE_integer(
    'initialization_timeout',
    300,
    'Multi-process runs: seconds every process waits for all of them to join; then it exits '
    'naming the one missing.',
)
flags.DEFINE_integer(
    'heartbeat_timeout',
    100,
    'Multi-process runs: seconds without a heartbeat after which a process counts as dead; '
    'JAX then ends every other one, instead of leaving them waiting for it.',
)
cli.define_compilation_cache_flag()
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  cli.begin(argv)
  try:
    sharding.initialize_processes(
        FLAGS.coordinator_address,
        FLAGS.num_processes,
        FLAGS.process_id,
        initialization_timeout=FLAGS.initialization_timeout,
        heartbeat_timeout=FLAGS.heartbeat_timeout,
    )
  except ConfigError as e:
    cli.fail(str(e))
  cli.log_to_workdir(FLAGS.workdir, jax.process_index())
  logging.info(
      'JAX process %d of %d, local devices: %s',
      jax.process_index(),
      jax.process_count(),
      jax.local_devices(),
  )
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except ConfigError as e:
    cli.fail(str(e))
  except steps.TrainingDiverged as e:
    cli.fail(str(e), code=3)
  except stopping.Stopped as e:  # the loop has logged it and saved the step
    sys.exit(e.exit_code)


def run():
  app.run(main, flags_parser=cli.parse_flags)


if __name__ == '__main__':
  run()
