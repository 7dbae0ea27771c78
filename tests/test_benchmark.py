"""The benchmark (`tools.benchmark`, `step_runners`, `flops`) and its PyTorch reference: a second
framework computes our step, the counted FLOPs match XLA's, and the command runs (and writes its
JSON) with no TensorFlow, tfds, grain or ml_collections importable, as on the GPU machines."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alexnet_jax.errors import ConfigError
from alexnet_jax import models
from alexnet_jax import steps
from alexnet_jax.tools import benchmark
from alexnet_jax.tools import flops
from alexnet_jax.tools import step_runners

TINY = step_runners.Settings(width=0.25, num_classes=10, image_sizes=(67,), batch_sizes=(4,))


@pytest.fixture(autouse=True)
def _one_torch_thread():
  """torch's spinning OpenMP threads crawl on a CPU shared with other tests; these tests check
  numbers, not speed."""
  try:
    import torch
  except ImportError:
    yield
    return
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def _our_steps(cfg, image_size, params, data, n):
  """`n` of the trainer's own steps from `params`; the losses and the final params (numpy)."""
  state, fn = step_runners.jax_state(cfg, image_size, params, None, seed=0)
  losses = []
  for _ in range(n):
    state, metrics, _ = fn(state, {k: jnp.asarray(v) for k, v in data.items()})
    losses.append(float(metrics.loss.compute()))
  return losses, jax.tree.map(np.asarray, state.params)


@pytest.mark.slow
def test_torch_reference_computes_our_training_step():
  torch = pytest.importorskip('torch')
  from alexnet_jax.tools import torch_reference

  cfg = step_runners.model_config(TINY, 'float32', dropout_rate=0.0)
  params = step_runners.initial_params(TINY, 67)
  data = step_runners.synthetic_batch(4, 67, 10, seed=1)
  losses, ours = _our_steps(cfg, 67, params, data, n=2)

  net = torch_reference.build(cfg, 67)
  torch_reference.load_params(net, params)
  opt = torch_reference.make_optimizer(net, 0.01, 0.9, 5e-4)
  images = torch_reference.to_nchw(data['image'])
  labels = torch.from_numpy(data['label'].astype(np.int64))
  their_losses = [float(torch_reference.train_step(net, opt, images, labels)) for _ in range(2)]
  np.testing.assert_allclose(losses, their_losses, rtol=1e-5)

  # Two steps move the weights by lr * (g + wd w) and momentum: compare the moves, not the weights.
  before, after = torch_reference.torch_layout(params), torch_reference.torch_layout(ours)
  theirs = {k: v.detach().numpy() for k, v in net.state_dict().items()}
  for key in before:
    ours_move, their_move = after[key] - before[key], theirs[key] - before[key]
    assert np.linalg.norm(their_move) > 0 or key.endswith('bias'), key
    # Plus the float32 rounding of the weight: a bias of 1 moving by 1e-7 is known to a few bits.
    rounding = 2 * np.finfo(np.float32).eps * np.abs(theirs[key]).max()
    np.testing.assert_allclose(
        ours_move, their_move, rtol=0, atol=1e-3 * np.abs(their_move).max() + rounding, err_msg=key
    )


@pytest.mark.slow
def test_torch_reference_forward_one_tower_released_alpha():
  """Other layouts the loader must get right: one tower, alpha / n, plain pooling."""
  torch = pytest.importorskip('torch')
  from alexnet_jax.tools import torch_reference

  cfg = models.ModelConfig(
      num_classes=10,
      width=0.25,
      towers=1,
      pool='plain',
      lrn=models.LRNConfig(alpha=0.05, alpha_over_n=True),
  )
  rng = np.random.default_rng(3)
  shapes = nnx.to_pure_dict(nnx.state(step_runners.abstract_model(cfg, 75), nnx.Param))
  # Fan-in scaled weights keep the activations O(1), so LRN's alpha matters.
  params = {
      name: {
          'kernel': rng.normal(
              0, (2 / np.prod(v['kernel'].shape[:-1])) ** 0.5, v['kernel'].shape
          ).astype(np.float32),
          'bias': rng.normal(0, 0.1, v['bias'].shape).astype(np.float32),
      }
      for name, v in shapes.items()
  }
  model = step_runners.model_with_params(cfg, 75, params)
  graphdef, state = nnx.split(model)
  images = step_runners.synthetic_batch(2, 75, 10)['image'] / 32
  ours = np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.asarray(images)))
  net = torch_reference.build(cfg, 75).eval()
  torch_reference.load_params(net, params)
  with torch.no_grad():
    theirs = net(torch_reference.to_nchw(images)).numpy()
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


# Multiply-adds per image of each layer, by hand from Figure 2 (conv: output positions x window x
# input channels per tower for the tower-local conv2, conv4, conv5 x output channels; fc: in x out).
PAPER_MACS_224 = {
    'conv1': 55 * 55 * 11 * 11 * 3 * 96,
    'conv2': 27 * 27 * 5 * 5 * (96 // 2) * 256,
    'conv3': 13 * 13 * 3 * 3 * 256 * 384,  # conv3 reads both towers' maps
    'conv4': 13 * 13 * 3 * 3 * (384 // 2) * 384,
    'conv5': 13 * 13 * 3 * 3 * (384 // 2) * 256,
    'fc6': 6 * 6 * 256 * 4096,
    'fc7': 4096 * 4096,
    'fc8': 4096 * 1000,
}
# TINY (a quarter of the channels: 24, 64, 96, 96, 64 and 1024 fc units, 10 classes) at 67 px:
# conv1 (67 + 3 - 11) // 4 + 1 = 15, pool 7, conv2 7, pool 3, conv3-5 3, pool5 1.
TINY_MACS_67 = {
    'conv1': 15 * 15 * 11 * 11 * 3 * 24,
    'conv2': 7 * 7 * 5 * 5 * (24 // 2) * 64,
    'conv3': 3 * 3 * 3 * 3 * 64 * 96,
    'conv4': 3 * 3 * 3 * 3 * (96 // 2) * 96,
    'conv5': 3 * 3 * 3 * 3 * (96 // 2) * 64,
    'fc6': 1 * 1 * 64 * 1024,
    'fc7': 1024 * 1024,
    'fc8': 1024 * 10,
}


def test_counted_flops_match_xla_and_hand_arithmetic():
  cfg = models.ModelConfig()
  macs = flops.count_macs(cfg, 224)
  assert macs == PAPER_MACS_224  # every layer, exactly
  assert macs['conv1'] == 105_415_200 and macs['conv2'] == 223_948_800
  assert flops.count_macs(step_runners.model_config(TINY, 'float32'), 67) == TINY_MACS_67
  # XLA's own count of the forward pass (it skips the zero padding at the borders, so a few
  # percent lower).
  model = nnx.eval_shape(lambda: models.AlexNet(cfg, 224, rngs=nnx.Rngs(params=0)))
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  xla_flops = forward.lower(state, jnp.zeros((2, 224, 224, 3))).cost_analysis()['flops'] / 2
  assert 2 * sum(macs.values()) == pytest.approx(xla_flops, rel=0.1)
  assert flops.train_flops_per_image(cfg, 224) == 3 * 2 * sum(PAPER_MACS_224.values())


def _naive_macs(cfg, image_size):
  """Multiply-adds per image of the network `cfg` builds, read off the built model: each layer's
  kernel (every weight is used once per output position) times the positions of its output in
  the forward pass (shapes only; nothing is computed)."""
  model = nnx.eval_shape(lambda: models.AlexNet(cfg, image_size, rngs=nnx.Rngs(params=0)))
  graphdef, state = nnx.split(model)
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  outputs = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).features(x), state, images)
  kernels = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  macs = {}
  for name, layer in kernels.items():
    positions = int(np.prod(outputs[name][0].shape[1:-1]))  # H x W for a conv, 1 for an fc layer
    macs[name] = positions * int(np.prod(layer['kernel'].shape))
  return macs


@pytest.mark.parametrize(
    'cfg',
    [
        models.ModelConfig(),
        models.TORCHVISION,
        models.ModelConfig(conv_channels=(48, 128, 192, 192, 256), conv1_padding=0, towers=1),
        models.ModelConfig(conv_channels=(32, 64, 96, 96, 64), conv1_padding=3, width=0.5),
        models.ModelConfig(pool='plain', adaptive_avg_pool=4, num_classes=10),
    ],
    ids=['paper', 'torchvision', 'one_gpu_padding0', 'custom_width', 'plain_pool_avgpool'],
)
@pytest.mark.parametrize('image_size', [224, 131])
def test_counted_macs_are_those_of_the_network_the_config_builds(cfg, image_size):
  assert flops.count_macs(cfg, image_size) == _naive_macs(cfg, image_size)


def test_counted_macs_of_torchvisions_alexnet_are_its_published_figure():
  # torchvision's model card for AlexNet_Weights.IMAGENET1K_V1 gives 0.71 GFLOPS at 224x224, which
  # torchvision counts as multiply-adds (its `_ops` field, 0.714 in torchvision/models/alexnet.py).
  assert sum(flops.count_macs(models.TORCHVISION, 224).values()) == pytest.approx(0.714e9, rel=0.01)


def test_benchmark_times_the_paper_recipe():
  """The benchmark builds its model and optimiser from the typed defaults (it has no
  ml_collections on the GPU machines); the paper recipe, converted, is exactly those."""
  from alexnet_jax import optim
  from alexnet_jax import settings
  from alexnet_jax.configs import alexnet

  run = settings.from_config(alexnet.get_config())
  assert step_runners.model_config(step_runners.Settings(), 'float32') == run.model
  assert step_runners.PAPER_OPTIM == run.optim == optim.OptimConfig()
  # The paper's numbers (section 5), not just whatever the defaults say.
  assert (run.optim.learning_rate, run.optim.momentum, run.optim.weight_decay) == (0.01, 0.9, 5e-4)
  assert (run.model.towers, run.model.norm, run.model.dropout_rate) == (2, 'lrn', 0.5)


def test_the_tiny_settings_are_valid():
  benchmark.validate(TINY)  # the baseline each bad input below changes in one field


WIDTH_TOO_SMALL = r'--width and --num_classes: model.width=.* must be finite and at least 2/96'


@pytest.mark.parametrize(
    'bad, message',
    [
        (
            dict(dtypes=('float16',)),
            r"--dtypes must be among \('float32', 'bfloat16'\), not \['float16'\]",
        ),
        (
            dict(strategies=('pipeline',)),
            r"--strategies must be among \(.*'owt'\), not \['pipeline'\]",
        ),
        (dict(batch_sizes=(0,)), r'--batch_sizes must list positive batch sizes, e.g. 32,128'),
        (
            dict(image_sizes=(32,)),
            r'--image_sizes must be at least 64 \(five layers of pooling\), not \[32\]',
        ),
        (
            dict(torch=('jit',)),
            r"--torch must be among \('eager', 'compile', 'none'\), not \['jit'\]",
        ),
        (dict(width=-1.0), WIDTH_TOO_SMALL.replace('.*', '-1.0')),
        (dict(width=0.01), WIDTH_TOO_SMALL.replace('.*', '0.01')),
    ],
    ids=['dtype', 'strategy', 'batch', 'image_size', 'torch', 'negative_width', 'width_too_small'],
)
def test_bad_flags_are_config_errors_naming_the_flag(bad, message):
  with pytest.raises(ConfigError, match=message) as error:
    benchmark.validate(dataclasses.replace(TINY, **bad))
  # One problem, one sentence: no other flag is blamed.
  assert str(error.value).count('--') == (2 if 'width' in bad else 1), str(error.value)


def test_variants_the_devices_cannot_run_are_skipped_with_the_reason():
  """On one device: towers needs an even number, owt would be data parallelism. Nothing is
  compiled for them; the run records each skip and has no row."""
  settings = dataclasses.replace(
      TINY, dtypes=('float32',), strategies=('towers', 'owt'), torch=(), peak_matmul_size=64
  )
  result = benchmark.run(settings, jax.devices()[:1], log=lambda line: None)
  assert result['rows'] == [] and result['checks'] == []
  reasons = {skip['strategy']: skip['reason'] for skip in result['skipped']}
  assert set(reasons) == {'towers', 'owt'}
  assert 'even number of devices' in reasons['towers']
  assert 'with 1 device it is plain data parallelism' in reasons['owt']
  assert result['macs_per_image'] == {'67': TINY_MACS_67}


@pytest.mark.slow
def test_command_runs_without_tensorflow_and_writes_its_table_and_json(tmp_path):
  """One run of the command: data parallelism and owt on two simulated devices, torch eager and
  torch.compile (which needs a C++ compiler on a CPU), in float32: bfloat16 takes the same paths
  with another dtype (its peak and rows: test_bfloat16_rows_and_peak below), and a second
  torch.compile would double the test's time."""
  output = tmp_path / 'bench.json'
  torch_flag = 'eager,compile' if _has_torch() else 'none'
  script = textwrap.dedent(f"""
      import os, runpy, sys
      for name in ('tensorflow', 'tensorflow_datasets', 'grain', 'ml_collections',
                   'clu.metric_writers'):
        sys.modules[name] = None  # any import of them fails
      sys.argv = ['benchmark', '--width=0.25', '--num_classes=10', '--image_sizes=67',
                  '--batch_sizes=4', '--dtypes=float32', '--strategies=data,owt',
                  '--steps=1', '--windows=1', '--warmup=0', '--peak_matmul_size=256',
                  '--torch={torch_flag}', '--torch_threads=1', '--output={output}']
      print('benchmark pid', os.getpid())
      runpy.run_module('alexnet_jax.tools.benchmark', run_name='__main__')
  """)
  env = dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES='2')
  proc = subprocess.run(
      [sys.executable, '-c', script],
      capture_output=True,
      text=True,
      env=env,
      cwd=os.path.dirname(os.path.dirname(__file__)),
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(output.read_text())

  assert {
      'machine',
      'settings',
      'peak',
      'flop_convention',
      'macs_per_image',
      'checks',
      'rows',
      'skipped',
  } <= set(result)
  # The settings are the flags given, and the FLOPs those counted by hand.
  torch_modes = [] if torch_flag == 'none' else ['eager', 'compile']
  assert result['settings'] == dict(
      dataclasses.asdict(step_runners.Settings()),
      batch_sizes=[4],
      dtypes=['float32'],
      strategies=['data', 'owt'],
      image_sizes=[67],
      steps=1,
      windows=1,
      warmup=0,
      torch=torch_modes,
      torch_threads=1,
      width=0.25,
      num_classes=10,
      peak_matmul_size=256,
  )
  assert result['macs_per_image'] == {'67': TINY_MACS_67}
  step_flops = 3 * 2 * sum(TINY_MACS_67.values()) * 4
  assert result['machine']['cpu'] and result['machine']['jax'] == jax.__version__
  assert result['machine']['device_count'] == result['machine']['benchmark_devices'] == 2
  peaks = {dtype: peak['flops_per_s'] for dtype, peak in result['peak'].items()}
  assert 'jnp.dot of two 256x256 float32 matrices' in result['peak']['float32']['source']
  assert peaks['float32'] > 0

  # A jax row by its strategy, a torch row (strategy '-') by its mode.
  rows = {
      (r['framework'], r['dtype'], r['mode'] if r['framework'] == 'torch' else r['strategy']): r
      for r in result['rows']
  }
  jax_variants = {('jax', 'float32', s) for s in ('data', 'owt')}
  assert jax_variants <= set(rows)
  table = {
      tuple(cells[i] for i in (0, 3, 4, 1)): cells
      for line in proc.stdout.splitlines()
      if line.startswith('| ') and not line.startswith(('| framework', '| ---'))
      for cells in [line.strip('| ').split(' | ')]
  }
  assert len(table) == len(result['rows'])
  for row in result['rows']:
    ms = row['ms_per_step']
    assert row['batch'] == 4 and row['image_size'] == 67
    assert len(row['window_ms']) == 1 and np.isfinite(ms) and ms > 0 and ms == row['window_ms'][0]
    assert row['images_per_s'] == pytest.approx(4 / ms * 1e3)
    devices = 2 if row['framework'] == 'jax' else 1
    assert row['devices'] == devices
    peak = result['peak'][row['dtype']]['flops_per_s'] * devices
    assert row['mfu'] == pytest.approx(step_flops / (ms / 1e3) / peak)
    limit = result['machine_limit'][row['dtype']]['flops_per_s'] * devices
    assert row['of_machine_limit'] == pytest.approx(step_flops / (ms / 1e3) / limit)
    assert row['of_machine_limit'] <= row['mfu'] * (1 + 1e-9)
    # The printed line says what the JSON says.
    cells = table[row['framework'], row['dtype'], row['strategy'], row['mode']]
    assert cells[5:7] == [f"{row['images_per_s']:.1f}", f'{ms:.1f}'], cells
  for variant in jax_variants:
    jax_row = rows[variant]
    assert jax_row['mode'] == 'jit' and jax_row['compile_s'] > 0 and jax_row['peak_mb'] > 0
    assert 'memory_analysis' in jax_row['peak_source']
  # The machine's limit is the fastest library's matmul, XLA's among them, so never below XLA's.
  limit = result['machine_limit']['float32']
  assert 'xla float32' in limit['rates'] and 'numpy float32' in limit['rates']
  assert limit['flops_per_s'] == max(limit['rates'].values())
  assert limit['rates'][limit['by']] == limit['flops_per_s']
  assert 'machine limit float32' in proc.stdout and 'images/s at 67px' in proc.stdout
  if torch_flag == 'none':
    assert result['checks'] == [] and result['skipped'] == []
    return
  (check,) = result['checks']
  assert check['passed'] and check['loss_rel_diff'] <= 1e-4
  assert 'PASSED' in proc.stdout
  pid = int(proc.stdout.split('benchmark pid ')[1].split()[0])
  compiler = shutil.which('c++') or shutil.which('g++') or shutil.which('clang++')
  for dtype in ('float32',):
    eager = rows['torch', dtype, 'eager']
    assert eager['ratio_vs_torch_eager'] == 1.0
    # In a process of its own, without the package's malloc settings.
    assert eager['pid'] != pid and eager['malloc'] == 'glibc defaults'
    for variant in jax_variants:
      if variant[1] == dtype:
        assert rows[variant]['ratio_vs_torch_eager'] == pytest.approx(
            eager['ms_per_step'] / rows[variant]['ms_per_step']
        )
    if compiler:
      compiled = rows['torch', dtype, 'compile']
      assert compiled['compile_s'] > 0 and compiled['pid'] != pid
    else:  # torch.compile's CPU backend builds C++: without a compiler, a skip that says why
      (skip,) = [s for s in result['skipped'] if s['dtype'] == dtype]
      assert skip['mode'] == 'compile' and skip['reason'], skip
  assert result['skipped'] == [] or not compiler, result['skipped']


def test_bfloat16_rows_and_peak():
  """bfloat16 in process, on one device: its peak is the faster of its own matmul and float32's
  (a CPU without fast bfloat16 matmuls casts), and its row's MFU is over that peak. (torch's
  bfloat16 row, channels_last, takes the float32 row's path: a second torch process would double
  this test.)"""
  settings = dataclasses.replace(
      TINY,
      dtypes=('bfloat16',),
      strategies=('data',),
      torch=(),
      steps=1,
      windows=1,
      warmup=0,
      peak_matmul_size=128,
  )
  result = benchmark.run(settings, jax.devices()[:1], log=lambda line: None)
  peak = result['peak']['bfloat16']
  assert 'jnp.dot of two 128x128' in peak['source'] and peak['flops_per_s'] > 0
  assert peak['flops_per_s'] >= result['machine_limit']['bfloat16']['rates']['xla float32']
  (row,) = result['rows']
  assert (row['framework'], row['dtype'], row['strategy']) == ('jax', 'bfloat16', 'data')
  step_flops = 3 * 2 * sum(TINY_MACS_67.values()) * 4
  assert row['mfu'] == pytest.approx(step_flops / (row['ms_per_step'] / 1e3) / peak['flops_per_s'])


def _has_torch() -> bool:
  try:
    import torch  # noqa: F401

    return True
  except ImportError:
    return False
