"""The smoke runs of the notebooks that read trained networks (07_ensembles, 08_kernels): they
sweep the same runs, so the second finds them done, as in use. The checks are
tests/test_notebook.py's; this file only lets the two run beside that file's notebooks."""

import os

import pytest

from tests import test_notebook


@pytest.fixture(scope='module')
def shared_runs(tmp_path_factory):
  return tmp_path_factory.mktemp('paper_seeds')


@pytest.mark.slow  # a kernel and a sweep of tiny runs in it
@pytest.mark.parametrize('name', test_notebook.TRAINED)
def test_notebook_reads_the_shared_runs(
    name, tiny_data_dir, monkeypatch, compilation_cache, shared_runs
):
  path = os.path.join(test_notebook.REPO, 'experiments', name)
  test_notebook.check_smoke_run(path, shared_runs, monkeypatch, tiny_data_dir, compilation_cache)
