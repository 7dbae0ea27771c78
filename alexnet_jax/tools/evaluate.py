r"""Evaluates a trained network, or an ensemble of them, on a split of its dataset.

    python -m alexnet_jax.tools.evaluate --workdir=runs/quickstart
    python -m alexnet_jax.tools.evaluate --workdir=runs/a,runs/b,runs/c --eval_crops=10

prints the loss, top-1 and top-5 error over every example of the split (section 6; a tie counts
against the label) and writes them, with the split, crops, workdirs and steps, to metrics.json,
and each class's top-1 and top-5 accuracy to per_class.csv, in `--output` (default
`<first workdir>/eval/<split>_<crops>crop[_ensemble]`). Several workdirs are one ensemble: their
softmax averaged (section 6), each network reading the split with its own run's preprocessing;
they must be runs of one dataset, classes and image size. `--eval_crops=10` averages each
network's softmax over section 4.1's ten patches. Bad input (a workdir without checkpoints, a
step or split that does not exist, runs that cannot be one ensemble) is one paragraph on stderr,
exit status 2, and nothing written.
"""

from alexnet_jax.errors import ConfigError
from alexnet_jax.system import cli
from alexnet_jax.system import files
from alexnet_jax.trained import inference

USAGE = (
    'python -m alexnet_jax.tools.evaluate --workdir=DIR[,DIR...] [--split=SPLIT] '
    '[--eval_crops=1|10] [--step=STEP] [--data_dir=DIR] [--batch_size=N] [--output=DIR]'
)


def main(argv, flags) -> None:
  cli.begin(argv, USAGE)
  workdirs = cli.listed(flags.workdir)
  overrides = {'data_dir': flags.data_dir} if flags.data_dir else {}
  try:
    members = inference.load_ensemble(workdirs, cli.step_flag(flags.step), **overrides)
    split = flags.split or members[0].run.data.eval_split
    output = flags.output or inference.default_eval_dir(workdirs, split, flags.eval_crops)
    files.check_writable(output)
    evaluation = inference.evaluate(members, split, flags.eval_crops, flags.batch_size)
    with files.staged(output) as stage:
      inference.write_evaluation(evaluation, stage)
  except ConfigError as e:
    cli.fail(str(e))
  print(summary(evaluation, output))


def summary(evaluation: inference.Evaluation, output: str) -> str:
  runs = ', '.join(f'{w} (step {s})' for w, s in zip(evaluation.workdirs, evaluation.steps))
  what = (
      f'an ensemble of {len(evaluation.workdirs)}: {runs}' if len(evaluation.workdirs) > 1 else runs
  )
  crops = 'the ten patches of section 4.1' if evaluation.crops == 10 else 'the centre crop'
  m = evaluation.metrics
  return '\n'.join(
      [
          f'{what}, on {m["count"]} examples of {evaluation.split}, {crops}:',
          f'loss {m["loss"]:.6g}  top-1 error {m["top1_error"]:.2%}  '
          f'top-5 error {m["top5_error"]:.2%}',
          f'written to {output}: metrics.json, per_class.csv',
      ]
  )


def run() -> None:
  # Flags are defined here, not at import, so that importing this module changes nothing.
  from absl import flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_multi_string(
      'workdir', None, 'A trained run; several (repeated, or A,B,C) are one ensemble.'
  )
  flags.DEFINE_string('split', None, "A split or TFDS slice (default: the run's eval_split).")
  flags.DEFINE_integer(
      'eval_crops', 1, "1: the centre crop; 10: section 4.1's four corners, centre and reflections."
  )
  flags.DEFINE_string(
      'step', None, "The checkpoint step of every workdir (default: each one's latest)."
  )
  cli.define_reading_flags()
  flags.DEFINE_string('output', None, 'Directory for metrics.json and per_class.csv.')
  cli.run_plain_command(main, USAGE)


if __name__ == '__main__':
  run()
