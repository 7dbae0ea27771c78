"""The recipes, installed with the package as `alexnet_jax.configs` (this is the repository's
top-level configs/, mapped into the wheel by pyproject.toml's package-dir).

- `alexnet.py`: the paper's ImageNet recipe; every field with its meaning.
- `quickstart.py`: the paper's network on the built-in dataset, for a laptop CPU.
- `finetune_folder.py`, `ifood2019.py`: fine-tuning a trained run (`init_from`) on your own
  images and on iFood 2019.
- `torchvision.py`: torchvision's AlexNet (`models.TORCHVISION`) with torchvision's preprocessing,
  the config of its pretrained weights (`python -m alexnet_jax.tools.import_weights`).
- `common.py`: the arguments they take (`:tiny`, `:runlocal`, `variant=...`) and the paper's
  ablations as named variants.
- `ablation.py`: the run the paper's experiments vary, and the experiments themselves, each a
  sweep for `python -m alexnet_jax.tools.sweep`: `relu_tanh.py` (section 3.1), `normalisation.py`
  (3.3), `pooling.py` (3.4), `towers.py` (3.2), `regularisation.py` (4.1, 4.2), `ensembles.py` (6) and
  `kernels.py` (Figures 3 and 4).

A config is named on the command line by its file (`--config=configs/quickstart.py:tiny`) or, with
no clone at hand, by its name (`--config=quickstart:tiny`), which `resolve_config_flags` turns into
the installed file. In Python: `from alexnet_jax.configs import quickstart;
quickstart.get_config('tiny')`.
"""

import os

NAMES = (
    'alexnet',
    'quickstart',
    'finetune_folder',
    'ifood2019',
    'torchvision',
    'ablation',
    'relu_tanh',
    'normalisation',
    'pooling',
    'towers',
    'regularisation',
    'ensembles',
    'kernels',
)
_HERE = os.path.dirname(os.path.abspath(__file__))


def path(name: str) -> str:
  """The installed file of config `name` ('quickstart', 'quickstart.py', 'quickstart:tiny')."""
  base, sep, arg = name.partition(':')
  stem = os.path.splitext(os.path.basename(base))[0]
  if stem not in NAMES:
    raise ValueError(f'No installed config {name!r}; the installed ones are {NAMES}.')
  return os.path.join(_HERE, f'{stem}.py') + sep + arg


def _resolved(value: str) -> str:
  file = value.partition(':')[0]
  stem = os.path.splitext(os.path.basename(file))[0]
  if not os.path.isfile(file) and stem in NAMES and os.path.dirname(file) in ('', 'configs'):
    return path(value)
  return value


def resolve_config_flags(argv: list[str], flag: str = 'config') -> list[str]:
  """argv with `--config=NAME[:ARG]` (or `--config NAME[:ARG]`) pointing at the installed file
  when NAME is not a file here."""
  out = []
  for i, token in enumerate(argv):
    prefix = f'--{flag}='
    if token.startswith(prefix):
      token = prefix + _resolved(token[len(prefix) :])
    elif i > 0 and argv[i - 1] == f'--{flag}':
      token = _resolved(token)
    out.append(token)
  return out
