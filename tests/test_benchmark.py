"""The benchmark (`tools.benchmark`, `step_runners`, `flops`) and its PyTorch reference: a second
framework computes our step, the counted FLOPs match XLA's, and the command runs (and writes its
JSON) with no TensorFlow, tfds, grain or ml_collections importable, as on the GPU machines."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alexnet_jax.tools import benchmark
from alexnet_jax.tools import flops
from alexnet_jax.tools import step_runners
from alexnet_jax import models
from alexnet_jax import steps
from alexnet_jax.errors import ConfigError

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


def test_counted_flops_match_xla_and_hand_arithmetic():
  cfg = models.ModelConfig()
  macs = flops.count_macs(cfg, 224)
  # By hand from Figure 2: conv1 55x55 outputs x 11x11x3 window x 96 maps; conv2 27x27 x 5x5 x 48
  # (one tower's input) x 256; fc6 6x6x256 -> 4096.
  assert macs['conv1'] == 55 * 55 * 11 * 11 * 3 * 96 == 105_415_200
  assert macs['conv2'] == 223_948_800
  assert macs['fc6'] == 37_748_736
  # XLA's own count of the forward pass (it skips the zero padding at the borders, so a few
  # percent lower).
  model = nnx.eval_shape(lambda: models.AlexNet(cfg, 224, rngs=nnx.Rngs(params=0)))
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  xla_flops = forward.lower(state, jnp.zeros((2, 224, 224, 3))).cost_analysis()['flops'] / 2
  assert 2 * sum(macs.values()) == pytest.approx(xla_flops, rel=0.1)
  assert flops.train_flops_per_image(cfg, 224) == 6 * sum(macs.values())


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


def test_bad_flags_are_config_errors():
  for bad in (
      dict(dtypes=('float16',)),
      dict(strategies=('pipeline',)),
      dict(batch_sizes=(0,)),
      dict(image_sizes=(32,)),
      dict(torch=('jit',)),
      dict(width=-1.0),
      dict(width=0.01),
  ):
    with pytest.raises(ConfigError):
      benchmark.validate(dataclasses.replace(TINY, **bad))


@pytest.mark.slow
def test_command_runs_without_tensorflow_and_writes_its_table_and_json(tmp_path):
  output = tmp_path / 'bench.json'
  torch_flag = 'eager' if _has_torch() else 'none'
  script = textwrap.dedent(f"""
      import os, runpy, sys
      for name in ('tensorflow', 'tensorflow_datasets', 'grain', 'ml_collections',
                   'clu.metric_writers'):
        sys.modules[name] = None  # any import of them fails
      sys.argv = ['benchmark', '--width=0.25', '--num_classes=10', '--image_sizes=67',
                  '--batch_sizes=4', '--dtypes=float32', '--strategies=data,towers',
                  '--steps=1', '--windows=1', '--warmup=0', '--peak_matmul_size=256',
                  '--torch={torch_flag}', '--torch_threads=1', '--output={output}']
      print('benchmark pid', os.getpid())
      runpy.run_module('alexnet_jax.tools.benchmark', run_name='__main__')
  """)
  env = dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, '-c', script],
      capture_output=True,
      text=True,
      env=env,
      cwd=os.path.dirname(os.path.dirname(__file__)),
      timeout=300,
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
  assert result['machine']['cpu'] and result['machine']['jax'] == jax.__version__
  assert result['machine']['device_count'] == 1
  assert result['peak']['float32']['flops_per_s'] > 0
  assert 'jnp.dot' in result['peak']['float32']['source']
  # towers needs two devices: skipped, with the reason.
  (skip,) = result['skipped']
  assert skip['strategy'] == 'towers' and 'even number of devices' in skip['reason']
  rows = {(r['framework'], r['mode']): r for r in result['rows']}
  jax_row = rows['jax', 'jit']
  assert jax_row['ms_per_step'] == pytest.approx(4 / jax_row['images_per_s'] * 1e3)
  assert jax_row['compile_s'] > 0 and jax_row['peak_mb'] > 0
  assert 'memory_analysis' in jax_row['peak_source']
  step_flops = flops.train_flops_per_image(step_runners.model_config(TINY, 'float32'), 67) * 4
  assert jax_row['mfu'] == pytest.approx(
      step_flops / (jax_row['ms_per_step'] / 1e3) / result['peak']['float32']['flops_per_s']
  )
  # The machine's limit is the fastest library's matmul, XLA's among them, so never below XLA's.
  limit = result['machine_limit']['float32']
  assert 'xla float32' in limit['rates'] and 'numpy float32' in limit['rates']
  assert limit['flops_per_s'] == max(limit['rates'].values())
  assert limit['rates'][limit['by']] == limit['flops_per_s']
  assert jax_row['of_machine_limit'] == pytest.approx(
      step_flops / (jax_row['ms_per_step'] / 1e3) / limit['flops_per_s']
  )
  assert jax_row['of_machine_limit'] <= jax_row['mfu'] * (1 + 1e-9)
  assert 'machine limit float32' in proc.stdout and 'images/s at 67px' in proc.stdout
  if torch_flag == 'eager':
    (check,) = result['checks']
    assert check['passed'] and check['loss_rel_diff'] <= 1e-4
    torch_row = rows['torch', 'eager']
    assert torch_row['ratio_vs_torch_eager'] == 1.0
    # In a process of its own, without the package's malloc settings.
    assert torch_row['pid'] != int(proc.stdout.split('benchmark pid ')[1].split()[0])
    assert torch_row['malloc'] == 'glibc defaults'
    assert jax_row['ratio_vs_torch_eager'] == pytest.approx(
        torch_row['ms_per_step'] / jax_row['ms_per_step']
    )
  # The printed table: a header and one line per row.
  table = [line for line in proc.stdout.splitlines() if line.startswith('| ')]
  assert table[0].startswith('| framework | mode | batch |') and len(table) == 2 + len(rows)


def _has_torch() -> bool:
  try:
    import torch  # noqa: F401

    return True
  except ImportError:
    return False
