"""Strategies on 8 simulated CPU devices against one device: same numbers, right placement."""

import jax
import numpy as np
import pytest

from alexnet_jax.configs import alexnet
from alexnet_jax.data import device_augment
from alexnet_jax.errors import ConfigError
from alexnet_jax import optim
from alexnet_jax import settings
from alexnet_jax import sharding
from alexnet_jax import steps
from alexnet_jax import train


def mesh_config(strategy='data', data=-1, model=-1, towers=2):
  return sharding.MeshConfig(strategy, data, model), towers


@pytest.mark.parametrize(
    'strategy,data,model,devices,want',
    [
        ('data', -1, -1, 8, (8, 1)),
        ('data', 8, 1, 8, (8, 1)),
        ('data', -1, 1, 1, (1, 1)),
        ('towers', -1, -1, 8, (4, 2)),
        ('towers', 4, -1, 8, (4, 2)),
        ('towers', -1, 2, 2, (1, 2)),
        ('owt', -1, -1, 8, (8, 1)),
    ],
)
def test_mesh_shapes(strategy, data, model, devices, want):
  assert sharding.mesh_shape(*mesh_config(strategy, data, model), devices) == want


@pytest.mark.parametrize(
    'config,devices,phrase',
    [
        (mesh_config('data', 3, 3), 8, 'does not fit the 8 devices'),
        (mesh_config('data', -1, 3), 8, '3 does not divide the 8 devices'),
        (mesh_config('data', 4, 2), 8, 'mesh.model=1'),
        (mesh_config('owt', 4, 2), 8, 'mesh.model=1'),
        (mesh_config('towers', 2, 4), 8, 'mesh.model must be 2, not 4'),
        (mesh_config('towers', towers=1), 8, 'model.towers=1'),
        (mesh_config('towers'), 1, 'xla_force_host_platform_device_count'),
        (mesh_config('pipeline'), 8, "strategy='pipeline'"),
    ],
)
def test_bad_meshes_are_explained(config, devices, phrase):
  with pytest.raises(ConfigError, match=phrase):
    sharding.mesh_shape(*config, devices)


def small_config(strategy, norm='lrn', **model):
  c = alexnet.get_config()
  c.model.num_classes = 10
  c.image_size = 67
  c.model.width = 0.25
  c.model.norm = norm
  c.model.update(model)
  c.strategy = strategy
  c.batch_size = 16
  return c


def batches(run):
  """A fixed training batch as the run's pipeline makes it (uint8 crops, each with its
  reflection, colour shift and window, finished in the step: device_augment), and an evaluation
  batch of eval_batch_size standardised images."""
  rng = np.random.default_rng(0)
  n, size, crop_room = run.data.batch_size, run.data.image_size, run.data.resize_size
  train = {
      'image': rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8),
      'label': rng.integers(0, 10, n).astype(np.int32),
      'flip': rng.integers(0, 2, n).astype(bool),
      'shift': (rng.normal(0, 5, (n, 3)) - run.data.augment.mean).astype(np.float32),
      'window': rng.integers(0, crop_room - size + 1, (n, 2)).astype(np.int32),
  }
  assert set(train) == {'label', *device_augment.KEYS}
  n = run.data.eval_batch_size
  evaluation = {
      'image': rng.normal(0, 1, (n, size, size, 3)).astype(np.float32),
      'label': rng.integers(0, 10, n).astype(np.int32),
      'mask': np.ones(n, np.float32),
  }
  return train, evaluation


def run_steps(config, devices, n=3):
  """n train steps (dropout on) on a fixed batch, then an evaluation of a fixed batch, with the
  steps `train.train_and_evaluate` builds for `config` (the same programs, so its runs below
  find them compiled)."""
  run = settings.from_config(config)
  layout = sharding.Layout.create(run.mesh, run.model.towers, devices)
  model = steps.create_model(run.model, run.data.image_size, run.loop.seed, **layout.model_axes())
  tx, plateau = optim.create_optimizer(run.optim, 10), optim.create_plateau(run.optim)
  graphdef, state = steps.create_train_state(model, tx, plateau, run.loop.seed)
  state = layout.place_state(state)
  params0 = jax.device_get(state.params)
  train_fn = steps.make_train_step(
      graphdef,
      tx,
      optim.learning_rate_schedule(run.optim, 10),
      layout,
      device_augment.for_data(run.data),
  )
  train_batch, eval_batch = batches(run)
  losses, first_update = [], None
  for i in range(n):
    state, metrics, finite = train_fn(state, layout.global_batch(train_batch))
    assert bool(finite)
    losses.append(float(metrics.compute()['loss']))
    if i == 0:  # from zero momentum, the first update is -lr (grad + decay): it shows the gradient
      first_update = jax.tree.map(
          lambda a, b: np.asarray(a) - b, jax.device_get(state.params), params0
      )
  evaluation = steps.make_eval_step(graphdef, layout)(state, layout.global_batch(eval_batch))
  return losses, first_update, jax.device_get(state), evaluation.compute(), state


# The two networks every strategy is checked with: the paper's (LRN, dropout on fc6's and fc7's
# outputs), and batch norm with torchvision's dropout placement (on fc6's inputs). Normalisation
# (conv1 and conv2) and dropout (fc6 and fc7) are independent choices at different layers, so
# pairing them covers each on every strategy with half the compiled programs.
VARIANTS = {
    'lrn': {},
    'batchnorm,dropout_before': {'norm': 'batchnorm', 'dropout_placement': 'before'},
}


@pytest.fixture(scope='module')
def runs(plateau_config):
  """`run_steps` of (strategy, variant, on) (`on`: 'all' 8 devices, or 'one'), each run once for
  the module: the one-device references serve every strategy, and the placement tests read the
  runs the equality tests made. The network, optimiser and input are the tiny recipe's with the
  paper's schedule (`plateau_config`), which test_checkpoint_moves_from_towers_on_8_devices_to_data_on_1
  trains: its steps find these programs compiled."""
  made = {}

  def get(strategy, variant='lrn', on='all'):
    key = (strategy, variant, on)
    if key not in made:
      config = plateau_config(None, strategy)
      # The paper's N(0, 0.01) start (section 5), whose small first updates the tolerances
      # below were set for: the initial values only, the programs stay the recipe's.
      config.model.init = 'paper'
      config.model.update(VARIANTS[variant])
      devices = jax.devices() if on == 'all' else jax.devices()[:1]
      made[key] = run_steps(config, devices)
    return made[key]

  return get


@pytest.mark.slow
@pytest.mark.parametrize('variant', list(VARIANTS))
@pytest.mark.parametrize('strategy', ['data', 'towers', 'owt'])
def test_strategy_computes_what_one_device_computes(strategy, variant, runs):
  reference = runs('data', variant, on='one')
  spread = runs(strategy, variant)
  assert len(spread[0]) == 3
  np.testing.assert_allclose(spread[0], reference[0], rtol=1e-5)  # training losses, step by step
  for a, b in zip(jax.tree.leaves(spread[1]), jax.tree.leaves(reference[1]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)  # first update, i.e. the gradients
  for a, b in zip(
      jax.tree.leaves(spread[2].params), jax.tree.leaves(reference[2].params), strict=True
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # parameters after 3 steps
  assert bool(jax.tree.leaves(spread[2].batch_stats)) == variant.startswith('batchnorm')
  for a, b in zip(
      jax.tree.leaves(spread[2].batch_stats), jax.tree.leaves(reference[2].batch_stats), strict=True
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # batch-norm statistics
  for name in ('loss', 'top1_error', 'top5_error'):
    np.testing.assert_allclose(spread[3][name], reference[3][name], rtol=1e-5)


def device_bytes(tree, device):
  return sum(
      shard.data.nbytes
      for leaf in jax.tree.leaves(tree)
      for shard in leaf.addressable_shards
      if shard.device == device
  )


@pytest.mark.slow
def test_owt_splits_the_fully_connected_units_over_all_devices(runs):
  *_, state = runs('owt')
  params = jax.device_get(state.params)
  total = sum(x.nbytes for x in jax.tree.leaves(params))
  fc67 = sum(x.nbytes for layer in ('fc6', 'fc7') for x in jax.tree.leaves(params[layer]))
  for device in jax.devices():
    assert device_bytes(state.params, device) == total - fc67 + fc67 // 8


@pytest.mark.slow
def test_towers_hold_half_of_each_tower_layer_per_device(runs):
  *_, state = runs('towers')
  params = jax.device_get(state.params)
  total = sum(x.nbytes for x in jax.tree.leaves(params))
  fc8 = sum(x.nbytes for x in jax.tree.leaves(params['fc8']))
  for device in jax.devices():
    # Each device: its tower's half of conv1-conv5, fc6, fc7, plus the (replicated) fc8.
    assert device_bytes(state.params, device) == (total - fc8) // 2 + fc8
    # The momentum buffer is placed like the parameters (plus the schedule's int32 step count).
    assert device_bytes(state.opt_state, device) == device_bytes(state.params, device) + 4


@pytest.mark.slow
def test_checkpoint_moves_from_towers_on_8_devices_to_data_on_1(
    tiny_data_dir, tmp_path, one_device, plateau_config
):
  workdir = str(tmp_path / 'run')
  half, _ = train.train_and_evaluate(plateau_config(None, 'towers', 3), workdir, jax.devices())
  assert half.params['conv1']['kernel'].sharding.spec[-1] == 'model'

  one = plateau_config()  # the same run, continued data-parallel on one device
  resumed, _ = train.train_and_evaluate(one, workdir, one_device)
  straight, _ = train.train_and_evaluate(one, str(tmp_path / 'straight'), one_device)
  assert int(resumed.step) == 6
  assert float(straight.plateau.scale) < 1  # the learning rate was reduced along the way
  np.testing.assert_allclose(float(resumed.plateau.scale), float(straight.plateau.scale))
  for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(straight.params), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_prefetch_to_devices_overlaps_the_step_and_keeps_tags_with_their_batches(one_device):
  import threading

  layout = sharding.Layout.create(sharding.MeshConfig(), devices=one_device)
  made = [threading.Event() for _ in range(8)]
  events = []  # in the order they happened, from both threads (list.append is atomic)

  def batches(n, fail_at=None):
    for i in range(n):
      if i == fail_at:
        raise ValueError('bad batch')
      events.append(('made', i))  # the host pipeline has made batch i
      made[i].set()
      yield {'after': i}, {'x': np.full((2,), i, np.float32)}

  seen = []
  for tag, batch in sharding.prefetch_to_devices(batches(8), layout, 2):
    assert isinstance(batch['x'], jax.Array)
    i = tag['after']
    seen.append((i, int(batch['x'][0])))
    events.append(('step', i))
    if i + 1 < 8:
      # The step goes on until the pipeline has made the next batch: only a pipeline that runs
      # beside the step gets there (one that waited for the loop to ask would never: the timeout
      # only keeps such a failure from hanging the suite).
      assert made[i + 1].wait(timeout=30), f'batch {i + 1} was not made during step {i}'
    events.append(('step done', i))
  assert seen == [(i, i) for i in range(8)]
  for i in range(7):  # as recorded: batch i + 1 was made before step i was done
    assert events.index(('made', i + 1)) < events.index(('step done', i)), events

  with pytest.raises(ValueError, match='bad batch'):  # the pipeline's errors reach the loop
    list(sharding.prefetch_to_devices(batches(8, fail_at=3), layout, 2))


@pytest.mark.slow
def test_owt_on_a_one_device_axis_is_data_parallelism(runs):
  # One device holds both towers' fc units: the same dropout masks, losses and parameters.
  reference = runs('data', on='one')
  owt = runs('owt', on='one')
  np.testing.assert_allclose(owt[0], reference[0], rtol=1e-5)
  for a, b in zip(
      jax.tree.leaves(owt[2].params), jax.tree.leaves(reference[2].params), strict=True
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize('strategy', ['towers', 'owt'])
def test_dropout_of_fc6s_inputs_is_what_one_device_drops(strategy, runs):
  """torchvision's placement drops the features every device of a tower or fc axis reads: one
  mask for them all, the one a single device draws, so the runs agree step by step. (The runs of
  `VARIANTS`' second network, which test_strategy_computes_what_one_device_computes also reads.)"""
  variant = 'batchnorm,dropout_before'
  assert VARIANTS[variant]['dropout_placement'] == 'before'
  reference = runs('data', variant, on='one')
  spread = runs(strategy, variant)
  np.testing.assert_allclose(spread[0], reference[0], rtol=1e-5)
  for a, b in zip(
      jax.tree.leaves(spread[2].params), jax.tree.leaves(reference[2].params), strict=True
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# --- GPU and TPU readiness, without a device ---

# No accelerator is lent to the project: lowering (not compiling or running) each strategy's steps
# for another platform finds here a construct only XLA:CPU accepts, before a user's GPU does.
OTHER_PLATFORMS = ('cuda', 'rocm', 'tpu')
# Custom calls that only XLA:CPU's runtime has (LAPACK, oneDNN, YNNPACK), or that stop the device
# for the host (callbacks): none belongs in a step.
CPU_ONLY_CALLS = ('cpu', 'lapack', 'onednn', 'ynn', 'callback')


@pytest.mark.parametrize('strategy', ['data', 'towers', 'owt'])
@pytest.mark.parametrize('variant', ['paper', 'batchnorm_bfloat16'])
def test_every_strategys_steps_lower_for_gpus_and_tpus(strategy, variant):
  import re  # pylint: disable=g-import-not-at-top

  from flax import nnx  # pylint: disable=g-import-not-at-top

  config = small_config(strategy, 'lrn' if variant == 'paper' else 'batchnorm')
  if variant != 'paper':
    config.model.dtype = 'bfloat16'
  run = settings.from_config(config)
  layout = sharding.Layout.create(run.mesh, run.model.towers, jax.devices())
  tx, plateau = optim.create_optimizer(run.optim, 10), optim.create_plateau(run.optim)

  def make_model():
    return steps.create_model(run.model, run.data.image_size, 0, **layout.model_axes())

  abstract = jax.eval_shape(lambda: steps.create_train_state(make_model(), tx, plateau, 0)[1])
  graphdef = nnx.split(nnx.eval_shape(make_model), nnx.Param, ...)[0]
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract,
      layout.state_shardings(abstract),
  )
  rows = layout.batch_sharding()
  # The trainer's default path: uint8 crops augmented in the step (device_augment).
  train_batch = {
      'image': jax.ShapeDtypeStruct((16, 67, 67, 3), np.uint8, sharding=rows),
      'label': jax.ShapeDtypeStruct((16,), np.int32, sharding=rows),
      'flip': jax.ShapeDtypeStruct((16,), np.bool_, sharding=rows),
      'shift': jax.ShapeDtypeStruct((16, 3), np.float32, sharding=rows),
      'window': jax.ShapeDtypeStruct((16, 2), np.int32, sharding=rows),
  }
  assert set(train_batch) == {'label', *device_augment.KEYS}
  eval_batch = {
      'image': jax.ShapeDtypeStruct((16, 67, 67, 3), np.float32, sharding=rows),
      'label': jax.ShapeDtypeStruct((16,), np.int32, sharding=rows),
      'mask': jax.ShapeDtypeStruct((16,), np.float32, sharding=rows),
  }
  train_fn = steps.make_train_step(
      graphdef,
      tx,
      optim.learning_rate_schedule(run.optim, 10),
      layout,
      device_augment.for_data(run.data),
  )
  eval_fn = steps.make_eval_step(graphdef, layout)
  data, model = layout.mesh.shape['data'], layout.mesh.shape['model']
  for name, fn, batch in (('train', train_fn, train_batch), ('eval', eval_fn, eval_batch)):
    traced = fn.trace(abstract, batch)  # traced once, lowered for each platform
    for platform in OTHER_PLATFORMS:
      text = traced.lower(lowering_platforms=(platform,)).as_text()
      # One SPMD program over the whole mesh, which the lowering kept.
      assert 'mhlo.num_partitions = 8' in text, (platform, name)
      assert f'"data"={data}, "model"={model}' in text, (platform, name)
      calls = re.findall(r'custom_call @(\w+)', text)
      assert not [c for c in calls if any(k in c.lower() for k in CPU_ONLY_CALLS)], calls
      if name == 'train':
        assert 'tf.aliasing_output' in text  # the state is donated: one copy of it on the device


def test_members_trained_together_lower_for_gpus_and_tpus():
  """`train_members`' steps (the step mapped over 3 stacked members on one device), as the
  strategies' above: lowered for each other platform, with nothing only XLA:CPU runs, and the
  members' states donated."""
  import re  # pylint: disable=g-import-not-at-top

  from flax import nnx  # pylint: disable=g-import-not-at-top

  run = settings.from_config(small_config('data', 'lrn'))
  tx, plateau = optim.create_optimizer(run.optim, 10), optim.create_plateau(run.optim)

  def make_model():
    return steps.create_model(run.model, run.data.image_size, 0)

  one = jax.eval_shape(lambda: steps.create_train_state(make_model(), tx, plateau, 0)[1])
  stacked = jax.tree.map(lambda a: jax.ShapeDtypeStruct((3,) + a.shape, a.dtype), one)
  graphdef = nnx.split(nnx.eval_shape(make_model), nnx.Param, ...)[0]
  shapes = {'image': (16, 67, 67, 3), 'label': (16,), 'flip': (16,), 'shift': (16, 3)}
  shapes['window'] = (16, 2)
  types = {'image': np.uint8, 'label': np.int32, 'flip': np.bool_, 'shift': np.float32}
  types['window'] = np.int32
  train_batch = {k: jax.ShapeDtypeStruct((3,) + s, types[k]) for k, s in shapes.items()}
  eval_batch = {  # one batch for every member
      'image': jax.ShapeDtypeStruct((16, 67, 67, 3), np.float32),
      'label': jax.ShapeDtypeStruct((16,), np.int32),
      'mask': jax.ShapeDtypeStruct((16,), np.float32),
  }
  schedule = optim.learning_rate_schedule(run.optim, 10)
  preprocess = device_augment.for_data(run.data)
  train_fn = steps.make_train_step(graphdef, tx, schedule, None, preprocess, members=True)
  eval_fn = steps.make_eval_step(graphdef, members=True)
  for name, fn, batch in (('train', train_fn, train_batch), ('eval', eval_fn, eval_batch)):
    traced = fn.trace(stacked, batch)
    for platform in OTHER_PLATFORMS:
      text = traced.lower(lowering_platforms=(platform,)).as_text()
      calls = re.findall(r'custom_call @(\w+)', text)
      assert not [c for c in calls if any(k in c.lower() for k in CPU_ONLY_CALLS)], calls
      if name == 'train':
        assert 'tf.aliasing_output' in text
        # The program takes the members' conv1 kernels stacked: (3, 11, 11, 3, C).
        kernel = jax.tree.leaves(stacked.params)[0].shape
        assert f"tensor<{'x'.join(map(str, kernel))}xf32>" in text and kernel[0] == 3
  with pytest.raises(ValueError, match='one device: give no layout'):
    steps.make_train_step(graphdef, tx, schedule, sharding.Layout.create(run.mesh, 2), members=True)
