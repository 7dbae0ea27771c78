"""The command line: a short successful run, and one clear paragraph for each kind of bad input."""

import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from alexnet_jax import history
from alexnet_jax.trained import inference
from tests import commands

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, env=None):
  return commands.run_module('alexnet_jax.main', *args, env=env)


def tiny_args(data_dir, workdir):
  return [
      f'--workdir={workdir}',
      '--config=configs/quickstart.py',
      '--config.dataset=synthetic_shapes/tiny',
      f'--config.data_dir={data_dir}',
      '--config.image_size=67',
      '--config.resize_size=76',
      '--config.model.width=0.25',
      '--config.batch_size=16',
      '--config.eval_batch_size=32',
      '--config.num_train_steps=4',
      '--config.log_every_steps=2',
      '--config.eval_every_steps=4',
      '--config.checkpoint_every_steps=4',
  ]


@pytest.fixture(scope='module')
def fresh_run(tmp_path_factory):
  """(the finished process, its workdir, its data dir) of one short run of main, profiled, on a
  data dir of its own: the command prepares the built-in dataset first. Two tests read it."""
  tmp_path = tmp_path_factory.mktemp('fresh_run')
  data_dir = tmp_path / 'fresh'
  out = run_main(*tiny_args(str(data_dir), tmp_path / 'run'), '--config.profile_steps=1')
  return out, tmp_path / 'run', data_dir


@pytest.mark.slow
def test_main_trains_logs_and_checkpoints(fresh_run):
  out, workdir, _ = fresh_run
  assert out.returncode == 0, out.stderr[-3000:]
  files = os.listdir(workdir)
  traces = [f for _, _, names in os.walk(workdir / 'plugins' / 'profile') for f in names]
  assert any(f.endswith('.xplane.pb') for f in traces), traces  # clu's Profile hook ran
  assert any(f.startswith('events.out.tfevents') for f in files)
  assert os.listdir(workdir / 'checkpoints') == ['4']
  # A person's console: a short line per log step and evaluation, no absl prefix, no 17 digits.
  assert re.search(
      r'^step 4/4 \| loss [\d.e+-]+ \| top-1 [\d.]+% \| top-5 [\d.]+% \| lr ', out.stderr, re.M
  )
  assert re.search(r'^eval at step 4 \| loss [\d.e+-]+ \| top-1 [\d.]+%', out.stderr, re.M)
  assert not re.search(r'^[IWEF]\d{4} \d\d:\d\d', out.stderr, re.M), out.stderr[:2000]
  assert not re.search(r'\d\.\d{8,}', out.stderr), out.stderr[:2000]
  assert 'orbax' not in out.stderr.lower()  # library chatter stays out of it
  # ...and the full records in the workdir: absl's lines in log.txt, every digit in metrics.jsonl.
  log = (workdir / 'log.txt').read_text()
  assert re.search(r'^I\d{4} .*main\.py:\d+\] JAX process 0 of 1', log, re.M)
  assert 'step 4/4 | loss' in log
  assert 'eval_top1_error' in (workdir / 'metrics.jsonl').read_text()


@pytest.mark.slow
def test_preparing_the_built_in_data_leaves_no_progress_bars_in_a_log(fresh_run):
  """Output to a file, not a terminal: TFDS's progress bars (tqdm redraws with escape codes) are
  off while the quickstart prepares its dataset."""
  out, _, data_dir = fresh_run
  assert out.returncode == 0, out.stderr[-3000:]
  assert (data_dir / 'synthetic_shapes').is_dir()  # prepared by this command
  assert '\x1b[' not in out.stderr + out.stdout and '\r' not in out.stderr


def assert_one_paragraph(out, *phrases):
  assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]
  message = out.stderr.strip().split('Error: ', 1)[-1]
  assert '\n\n' not in message.strip(), message
  for phrase in phrases:
    assert phrase in message, message


def test_unknown_dataset(tiny_data_dir, tmp_path):
  out = run_main(*tiny_args(tiny_data_dir, tmp_path / 'run'), '--config.dataset=no_such_dataset')
  assert_one_paragraph(out, "Unknown dataset 'no_such_dataset'", 'synthetic_shapes')


@pytest.mark.parametrize(
    'flag,phrase',
    [('--config.no_such_field=1', 'no_such_field'), ('--config.batch_size=lots', 'batch_size')],
)
def test_bad_config_field(tiny_data_dir, tmp_path, flag, phrase):
  out = run_main(*tiny_args(tiny_data_dir, tmp_path / 'run'), flag)
  assert_one_paragraph(out, phrase, 'configs/alexnet.py')


def test_batch_size_must_divide_over_devices(tiny_data_dir, tmp_path):
  out = run_main(
      *tiny_args(tiny_data_dir, tmp_path / 'run'),
      '--config.batch_size=12',
      env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'},
  )
  assert_one_paragraph(out, 'batch_size=12', '8 devices', '--config.batch_size=8')


def test_unwritable_workdir(tiny_data_dir, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  out = run_main(*tiny_args(tiny_data_dir, blocker / 'run'))
  assert_one_paragraph(out, 'Cannot write to', '--workdir', 'logs and checkpoints')


def test_missing_imagenet_says_where_to_put_the_files(tmp_path):
  out = run_main(
      '--config=configs/alexnet.py',
      f'--workdir={tmp_path / "run"}',
      f'--config.data_dir={tmp_path / "empty"}',
  )
  assert_one_paragraph(
      out, 'ILSVRC2012_img_train.tar', str(tmp_path / 'empty'), 'configs/quickstart.py'
  )


def test_model_choice_errors_are_config_errors(tiny_data_dir, tmp_path):
  out = run_main(*tiny_args(tiny_data_dir, tmp_path / 'run'), '--config.model.norm=layernorm')
  assert_one_paragraph(out, "model.norm='layernorm'")


def test_negative_width_is_a_config_error_naming_the_smallest_width(tiny_data_dir, tmp_path):
  """`--config.model.width=-1` used to train a model clamped to 2 channels a layer."""
  out = run_main(*tiny_args(tiny_data_dir, tmp_path / 'run'), '--config.model.width=-1')
  assert_one_paragraph(out, 'model.width=-1', '2/96')
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


@pytest.mark.slow
def test_installed_config_by_name_runs_outside_the_repository(tiny_data_dir, tmp_path):
  """`--config=quickstart:tiny` names the installed config: no clone on the path, another cwd."""
  out = subprocess.run(
      [
          sys.executable,
          '-m',
          'alexnet_jax.main',
          f'--workdir={tmp_path / "run"}',
          '--config=quickstart:tiny',
          f'--config.data_dir={tiny_data_dir}',
          '--config.num_train_steps=2',
          '--config.eval_every_steps=2',
          '--config.checkpoint_every_steps=2',
      ],
      cwd=tmp_path,
      capture_output=True,
      text=True,
      timeout=300,
      env=dict(os.environ, PYTHONPATH=''),
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert os.listdir(tmp_path / 'run' / 'checkpoints') == ['2']
  first = [line for line in out.stderr.splitlines() if line.strip()][0]
  assert 'Process tuning' in first, out.stderr[:2000]  # our line comes first, not TensorFlow's


def test_unknown_config_argument_is_one_paragraph(tmp_path):
  out = run_main(f'--workdir={tmp_path}', '--config=configs/quickstart.py:tiniest')
  assert_one_paragraph(out, "'tiniest'", 'tiny')


@pytest.mark.slow
def test_divergence_exits_3_in_one_paragraph_and_keeps_the_last_good_checkpoint(
    tiny_data_dir, tmp_path
):
  """Step 1's update at learning rate 1e6 makes step 2's loss NaN: the run stops there with
  status 3 (not 1, a crash), says so in one paragraph, and keeps step 1's checkpoint."""
  workdir = tmp_path / 'run'
  out = run_main(
      f'--workdir={workdir}',
      '--config=configs/alexnet.py:tiny',
      f'--config.data_dir={tiny_data_dir}',
      '--config.optim.learning_rate=1e6',
      '--config.log_every_steps=1',
      '--config.checkpoint_every_steps=1',
  )
  assert out.returncode == 3, (out.returncode, out.stderr[-3000:])
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]
  message = out.stderr.strip().split('\nError: ', 1)[-1]
  assert '\n' not in message, message
  checkpoints = workdir / 'checkpoints'
  assert str(checkpoints) in message and '--config.optim.learning_rate' in message, message
  good, bad = map(
      int, re.search(r'NaN or infinite between steps (\d+) and (\d+)\.', message).groups()
  )
  assert good >= 1 and bad == good + 1, message  # checked at every step (log_every_steps=1)
  assert os.listdir(checkpoints) == [str(good)]  # the last good step's, nothing after it
  assert [r['step'] for r in history.read(str(workdir))] == list(range(1, good + 1))
  trained = inference.load(str(workdir))  # readable, and what it holds is finite
  assert trained.step == good
  assert all(np.isfinite(p).all() for p in jax.tree.leaves(trained.params))
