"""The notebook in experiments/ runs headless, top to bottom, on the built-in dataset."""

import os

import nbformat
from nbclient import NotebookClient
import pytest

pytestmark = pytest.mark.slow  # a kernel, and a short training run in it

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_and_evaluate_notebook_runs(tiny_data_dir, tmp_path, monkeypatch):
  monkeypatch.setenv('ALEXNET_JAX_TINY', '1')
  monkeypatch.setenv('ALEXNET_JAX_DATA_DIR', tiny_data_dir)
  monkeypatch.setenv('ALEXNET_JAX_WORKDIR', str(tmp_path / 'run'))
  path = os.path.join(REPO, 'experiments', '01_train_and_evaluate.ipynb')
  nb = nbformat.read(path, as_version=4)
  NotebookClient(
      nb,
      timeout=600,
      kernel_name='python3',
      resources={'metadata': {'path': os.path.join(REPO, 'experiments')}},
  ).execute()
  text = '\n'.join(
      o.get('text', '')
      for cell in nb.cells
      if cell.cell_type == 'code'
      for o in cell.get('outputs', [])
  )
  assert 'step 6: validation top-1 error' in text
  assert 'Process tuning:' in text  # the first cell tunes the process and says how
  assert 'conv1  (64, 15, 15, 12) + (64, 15, 15, 12)' in text  # 67 px: ceil(56/4)+1; per tower
  assert 'confusion matrix' in text
  assert sorted(os.listdir(tmp_path / 'run' / 'checkpoints')) == ['3', '6']
