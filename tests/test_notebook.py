"""The notebooks in experiments/ run headless, top to bottom, on the built-in dataset's tiny split,
and are saved with the outputs of their full run, so a reader on GitHub sees the results.
(01_train_and_evaluate.ipynb runs in tests/test_package.py, in a kernel of an installed wheel.)"""

import glob
import os

import nbformat
from nbclient import NotebookClient
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, 'experiments', '*.ipynb')))
SWEEPS = [path for path in NOTEBOOKS if not path.endswith('01_train_and_evaluate.ipynb')]
# The notebooks that read trained networks share one sweep's runs; their smoke runs are in
# tests/test_notebook_trained.py, a file of its own so that pytest-xdist's `loadfile` gives them
# to the other worker.
TRAINED = ('07_ensembles.ipynb', '08_kernels.ipynb')
# What each tiny run must print: its sweep finished, and the experiment's own result.
EXPECTED = {
    '02_relu_tanh.ipynb': ['sweep: 4/4 runs done', 'steps to the target: k of n', 'no ratio'],
    '03_normalisation.ipynb': ['sweep: 4/4 runs done', 'each variant minus paper, paired by seed'],
    '04_pooling.ipynb': [
        'sweep: 4/4 runs done',
        'each claim: plain_pool minus paper, paired by seed',
    ],
    '05_towers.ipynb': ['sweep: 4/4 runs done', 'each variant minus paper, paired by seed'],
    '06_regularisation.ipynb': [
        'sweep: 4/4 runs done',
        'each claim: each variant minus paper, paired by seed',
    ],
    '07_ensembles.ipynb': [
        'sweep: 3/3 runs done',
        'models  top1_error_mean',
        'one long network minus',
    ],
    '08_kernels.ipynb': [
        'sweep: 3/3 runs done',
        "the towers' colour shares differ beyond the shuffled null",
        "conv1's smoothness: trained",
        'pixels 32x32',
        'top-5:',
    ],
}


def outputs_text(nb) -> str:
  return '\n'.join(
      o.get('text', '')
      for cell in nb.cells
      if cell.cell_type == 'code'
      for o in cell.get('outputs', [])
  )


def execute(path, workdir, monkeypatch, data_dir, cache=None):
  if cache:
    for name, value in cache.items():
      monkeypatch.setenv(name, value)
  monkeypatch.setenv('ALEXNET_JAX_TINY', '1')
  monkeypatch.setenv('ALEXNET_JAX_DATA_DIR', data_dir)
  monkeypatch.setenv('ALEXNET_JAX_WORKDIR', str(workdir))
  nb = nbformat.read(path, as_version=4)
  NotebookClient(
      nb,
      timeout=600,
      kernel_name='python3',
      resources={'metadata': {'path': os.path.join(REPO, 'experiments')}},
  ).execute()
  return nb


def check_smoke_run(path, parent, monkeypatch, data_dir, cache):
  """Runs notebook `path` tiny into `parent`; checks what it printed, wrote and showed."""
  name = os.path.basename(path)
  nb = execute(path, parent, monkeypatch, data_dir, cache)
  text = outputs_text(nb)
  for phrase in EXPECTED[name]:
    assert phrase in text, phrase
  for file in ('metrics.csv', 'summary.csv', 'learning_curves_steps.png', 'final_error.png'):
    assert (parent / file).exists(), file
  images = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if 'data' in o]
  assert all('image/png' in o['data'] for o in images) and images  # the plots are shown inline


@pytest.mark.slow  # a kernel and a sweep of tiny runs in it
@pytest.mark.parametrize(
    'path', [p for p in SWEEPS if os.path.basename(p) not in TRAINED], ids=os.path.basename
)
def test_experiment_notebook_runs_its_sweep(
    path, tiny_data_dir, tmp_path, monkeypatch, compilation_cache
):
  check_smoke_run(path, tmp_path / 'run', monkeypatch, tiny_data_dir, compilation_cache)


def test_every_experiment_has_a_notebook():
  assert [os.path.basename(p) for p in SWEEPS] == sorted(EXPECTED)


@pytest.mark.parametrize('path', SWEEPS, ids=os.path.basename)
def test_notebooks_are_saved_with_the_outputs_of_their_full_run(path):
  nb = nbformat.read(path, as_version=4)
  code = [cell for cell in nb.cells if cell.cell_type == 'code']
  assert all(cell.get('outputs') for cell in code), 'a code cell without outputs'
  errors = [o for cell in code for o in cell.outputs if o.get('output_type') == 'error']
  assert not errors
  text = outputs_text(nb)
  assert 'seeds: (0, 1, 2' in text  # the full sweep, not the tiny one
  assert 'runs done' in text and 'image/png' in str([cell.outputs for cell in code])
  # The closing cell states what the saved run measured.
  assert nb.cells[-1].cell_type == 'markdown' and 'Measured' in nb.cells[-1].source


def test_every_figure_in_the_docs_is_written_by_a_notebook():
  """A figure the README or docs show is one a notebook's full run writes into docs/figures,
  never a copy made by hand that can go stale; and docs/figures holds nothing else."""
  import re  # pylint: disable=g-import-not-at-top

  docs = [os.path.join(REPO, 'README.md')] + glob.glob(os.path.join(REPO, 'docs', '*.md'))
  shown = set()
  for path in docs:
    with open(path) as f:
      shown |= set(re.findall(r'figures/([\w.-]+\.png)', f.read()))
  sources = '\n'.join(
      cell.source
      for path in SWEEPS
      for cell in nbformat.read(path, as_version=4).cells
      if cell.cell_type == 'code'
  )
  assert shown
  for name in sorted(shown):
    assert f"'{name}'" in sources, f'no notebook writes docs/figures/{name}'
  assert sorted(os.listdir(os.path.join(REPO, 'docs', 'figures'))) == sorted(shown)
