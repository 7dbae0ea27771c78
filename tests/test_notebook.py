"""The notebooks in experiments/ run headless, top to bottom, on the built-in dataset's tiny split,
and are saved with the outputs of their full run, so a reader on GitHub sees the results."""

import glob
import os

import nbformat
from nbclient import NotebookClient
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, 'experiments', '*.ipynb')))
SWEEPS = [path for path in NOTEBOOKS if not path.endswith('01_train_and_evaluate.ipynb')]
# What each tiny run must print: its sweep finished, and the experiment's own result.
EXPECTED = {
    '02_relu_tanh.ipynb': ['sweep: 4/4 runs done', 'tanh runs never reached 25%'],
    '03_normalisation.ipynb': ['sweep: 4/4 runs done', 'no_lrn - paper ='],
    '04_pooling.ipynb': ['sweep: 4/4 runs done', 'generalisation_gap: plain_pool - paper ='],
    '05_towers.ipynb': ['sweep: 4/4 runs done', 'one_tower - paper ='],
    '06_regularisation.ipynb': ['sweep: 4/4 runs done', 'generalisation_gap: no_dropout - paper'],
    '07_ensembles.ipynb': ['sweep: 3/3 runs done', 'models  top1_error_mean'],
    '08_kernels.ipynb': ['sweep: 3/3 runs done', 'towers differ by more than', 'top-5:'],
}


def outputs_text(nb) -> str:
  return '\n'.join(
      o.get('text', '')
      for cell in nb.cells
      if cell.cell_type == 'code'
      for o in cell.get('outputs', [])
  )


@pytest.fixture(scope='session')
def compilation_cache(tmp_path_factory):
  """A JAX compilation cache the notebooks' kernels share: their tiny runs compile the same few
  programs (each seed, and every notebook's `paper` run), which then compile once."""
  return str(tmp_path_factory.mktemp('jax_cache'))


def execute(path, tmp_path, monkeypatch, data_dir, cache=None):
  if cache:
    monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', cache)
    monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
    monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
  monkeypatch.setenv('ALEXNET_JAX_TINY', '1')
  monkeypatch.setenv('ALEXNET_JAX_DATA_DIR', data_dir)
  monkeypatch.setenv('ALEXNET_JAX_WORKDIR', str(tmp_path / 'run'))
  nb = nbformat.read(path, as_version=4)
  NotebookClient(
      nb,
      timeout=600,
      kernel_name='python3',
      resources={'metadata': {'path': os.path.join(REPO, 'experiments')}},
  ).execute()
  return nb


@pytest.mark.slow  # a kernel, and a short training run in it
def test_train_and_evaluate_notebook_runs(tiny_data_dir, tmp_path, monkeypatch):
  nb = execute(NOTEBOOKS[0], tmp_path, monkeypatch, tiny_data_dir)
  text = outputs_text(nb)
  assert 'step 6: validation top-1 error' in text
  assert 'Process tuning:' in text  # the first cell tunes the process and says how
  assert 'conv1  (64, 15, 15, 12) + (64, 15, 15, 12)' in text  # 67 px: ceil(56/4)+1; per tower
  assert 'confusion matrix' in text
  assert sorted(os.listdir(tmp_path / 'run' / 'checkpoints')) == ['3', '6']


@pytest.mark.slow  # a kernel and a sweep of tiny runs in it
@pytest.mark.parametrize('path', SWEEPS, ids=os.path.basename)
def test_experiment_notebook_runs_its_sweep(
    path, tiny_data_dir, tmp_path, monkeypatch, compilation_cache
):
  nb = execute(path, tmp_path, monkeypatch, tiny_data_dir, compilation_cache)
  text = outputs_text(nb)
  for phrase in EXPECTED[os.path.basename(path)]:
    assert phrase in text, phrase
  parent = tmp_path / 'run'
  for name in ('metrics.csv', 'summary.csv', 'learning_curves_steps.png', 'final_error.png'):
    assert (parent / name).exists(), name
  images = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if 'data' in o]
  assert all('image/png' in o['data'] for o in images) and images  # the plots are shown inline


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
