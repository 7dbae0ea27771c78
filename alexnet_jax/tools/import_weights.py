r"""Makes a workdir of pretrained weights, for evaluation, prediction or fine-tuning:

    python -m alexnet_jax.tools.import_weights --weights=alexnet-owt-7be5be79.pth \
        --workdir=runs/torchvision [--config=torchvision] [--config.data_dir=...]

The weights (torchvision's AlexNet state_dict, .pth or .safetensors; `alexnet_jax.trained.weights`)
become the step-0 checkpoint of the new workdir DIR, which records the config (default
`torchvision`, configs/torchvision.py) and the class names (the dataset's if it is prepared in
--config.data_dir), as a training run does. Then `python -m alexnet_jax.tools.evaluate
--workdir=DIR` and `alexnet_jax.trained.inference.load(DIR)` use it, and `python -m alexnet_jax.main
--config=torchvision --workdir=DIR` fine-tunes it. DIR must not exist or be empty.
"""

from absl import flags

from alexnet_jax.errors import ConfigError
from alexnet_jax import settings
from alexnet_jax.system import cli
from alexnet_jax.trained import weights

DEFAULT_CONFIG = 'torchvision'


def parse_flags(argv: list[str]) -> list[str]:
  """`cli.parse_flags`, with --config=torchvision unless another config is named."""
  named = any(a == '--config' or a.startswith('--config=') for a in argv[1:])
  return cli.parse_flags(argv if named else [argv[0], f'--config={DEFAULT_CONFIG}', *argv[1:]])


def main(argv):
  cli.begin(argv)
  values = flags.FLAGS
  try:
    run = settings.from_config(values.config)
    report = weights.import_to_workdir(run, values.weights, values.workdir)
  except ConfigError as e:
    cli.fail(str(e))
  print(
      f'\nImported {values.weights} into {report["workdir"]} (step 0, class names '
      f'{report["class_names_from"]}). Evaluate it with:\n  python -m alexnet_jax.tools.evaluate '
      f'--workdir={report["workdir"]}'
  )


def run() -> None:
  """The command: flags are defined here, not on import, so that this module imports next to
  main's flags (tests, notebooks)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string('weights', None, 'A torchvision AlexNet state_dict: .pth, .pt, .safetensors.')
  flags.DEFINE_string('workdir', None, 'The new workdir: must not exist yet, or be empty.')
  config_flags.DEFINE_config_file(
      'config',
      None,
      f"The config of the weights' network (default {DEFAULT_CONFIG}: configs/torchvision.py), "
      'a file with an optional argument or the name of an installed config.',
      lock_config=True,
  )
  flags.mark_flags_as_required(['weights', 'workdir'])
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  run()
