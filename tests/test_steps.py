"""The jitted steps: error rates, masking, and one SGD step against a second code path."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alexnet_jax.configs import alexnet
from alexnet_jax import optim
from alexnet_jax import settings
from alexnet_jax import sharding
from alexnet_jax import steps


def narrow_paper_config():
  """The paper's recipe (constant lr 0.01, paper init) on a narrow model and small images."""
  c = alexnet.get_config()
  c.model.num_classes = 10
  c.image_size = 67
  c.model.width = 0.25
  c.model.dropout_rate = 0.0
  return c


def test_error_rates_match_a_naive_ranking():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(64, 10)).astype(np.float32)
  labels = rng.integers(0, 10, 64)
  top1, top5 = steps.error_rates(jnp.asarray(logits), jnp.asarray(labels))
  for i in range(64):
    rank = sorted(range(10), key=lambda c: -logits[i, c]).index(labels[i])
    assert top1[i] == (rank >= 1)
    assert top5[i] == (rank >= 5)


def naive_rank(scores, label):
  """The label's place in a descending sort that puts every class tied with it ahead of it."""
  order = sorted(range(len(scores)), key=lambda c: (-scores[c], c == label))
  return order.index(label)


def test_all_equal_logits_are_wrong_not_right():
  """A dead or collapsed network (every logit equal) is wrong on every example: a tie is no hit."""
  for logits in (np.zeros((4, 10)), np.full((4, 10), 3.5), np.tile(np.arange(4.0)[:, None], 10)):
    top1, top5 = steps.error_rates(jnp.asarray(logits, jnp.float32), jnp.arange(4))
    np.testing.assert_array_equal(top1, np.ones(4))
    np.testing.assert_array_equal(top5, np.ones(4))
  # A NaN network is no better: NaN beats nothing and nothing beats it.
  top1, top5 = steps.error_rates(jnp.full((2, 10), jnp.nan), jnp.array([0, 9]))
  np.testing.assert_array_equal(top1, np.ones(2))
  np.testing.assert_array_equal(top5, np.ones(2))


def test_partial_ties_count_against_the_label():
  """Logits from a handful of values (many ties) against the naive sort with ties ahead."""
  rng = np.random.default_rng(1)
  logits = rng.integers(0, 4, size=(256, 10)).astype(np.float32)
  labels = rng.integers(0, 10, 256)
  top1, top5 = steps.error_rates(jnp.asarray(logits), jnp.asarray(labels))
  ranks = np.array([naive_rank(logits[i], labels[i]) for i in range(256)])
  np.testing.assert_array_equal(top1, ranks >= 1)
  np.testing.assert_array_equal(top5, ranks >= 5)
  # The data does tell the rules apart: counting only strictly higher classes (ties in the
  # label's favour) would call some of these examples right.
  strictly_higher = (logits > logits[np.arange(256), labels][:, None]).sum(-1)
  assert np.any((strictly_higher >= 1) != (ranks >= 1))
  assert np.any((strictly_higher >= 5) != (ranks >= 5))


def _setup(config, layout=None):
  run = settings.from_config(config)
  axes = layout.model_axes() if layout is not None else {}
  model = steps.create_model(run.model, run.data.image_size, run.loop.seed, **axes)
  total = 10
  tx = optim.create_optimizer(run.optim, total)
  plateau = optim.create_plateau(run.optim)
  graphdef, state = steps.create_train_state(model, tx, plateau, run.loop.seed)
  return model, graphdef, state, tx, optim.learning_rate_schedule(run.optim, total)


def _logits(model, images):
  """The model called directly, outside the steps (their second code path), under one jit: one
  compile of the forward pass instead of one per operation."""
  return np.asarray(nnx.jit(lambda m, x: m(x))(model, jnp.asarray(images)))


def _batch(n, size, seed=0):
  rng = np.random.default_rng(seed)
  return {
      'image': jnp.asarray(rng.normal(0, 50, (n, size, size, 3)), jnp.float32),
      'label': jnp.asarray(rng.integers(0, 10, n), jnp.int32),
  }


@pytest.mark.slow
def test_train_step_equals_grad_and_sgd_written_out():
  config = narrow_paper_config()
  model, graphdef, state, tx, schedule = _setup(config)
  batch = _batch(8, config.image_size)

  # Second code path: the NNX model called directly, gradients by nnx.grad, the paper's rule.
  def loss_fn(m):
    logits = m(batch['image'], train=True, dropout_rng=jax.random.key(0))
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()

  loss, grads = nnx.jit(nnx.value_and_grad(loss_fn))(model)
  grads = jax.tree.map(np.asarray, nnx.to_pure_dict(grads))
  want = jax.tree_util.tree_map_with_path(  # in numpy's float32, as the step's float32
      lambda path, w, g: w - 0.01 * (g + (5e-4 * w if path[-1].key == 'kernel' else 0.0)),
      jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param))),
      grads,
  )

  train_fn = steps.make_train_step(graphdef, tx, schedule)
  new_state, metrics, finite = train_fn(state, batch)
  assert bool(finite)
  assert int(new_state.step) == 1
  np.testing.assert_allclose(float(metrics.compute()['loss']), float(loss), rtol=1e-5)
  np.testing.assert_allclose(float(metrics.compute()['learning_rate']), 0.01, rtol=1e-6)
  for got, expected in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_plateau_scale_multiplies_the_update():
  config = narrow_paper_config()
  _, graphdef, state, tx, schedule = _setup(config)
  batch = _batch(8, config.image_size)
  train_fn = steps.make_train_step(graphdef, tx, schedule)
  before = jax.tree.map(np.asarray, state.params)
  full, _, _ = train_fn(jax.device_put(jax.tree.map(np.array, state)), batch)  # a copy: donated
  # The scale as the plateau keeps it (float32, not weakly typed): the same compiled step.
  scale = jnp.asarray(0.1, state.plateau.scale.dtype)
  reduced_state = state.replace(plateau=state.plateau._replace(scale=scale))
  reduced, metrics, _ = train_fn(reduced_state, batch)
  np.testing.assert_allclose(float(metrics.compute()['learning_rate']), 0.001, rtol=1e-5)
  leaves = zip(
      jax.tree.leaves(before),
      jax.tree.leaves(full.params),
      jax.tree.leaves(reduced.params),
      strict=True,
  )
  updates = [(np.asarray(f) - b, np.asarray(r) - b) for b, f, r in leaves]
  largest = max(np.abs(full).max() for full, _ in updates)
  assert largest > 1e-4  # the step moved the parameters measurably
  for full_update, reduced_update in updates:
    # Parameters are float32, so each difference carries ~1e-7 * |w| of rounding.
    np.testing.assert_allclose(reduced_update, 0.1 * full_update, atol=1e-3 * largest + 2e-7)


def test_eval_step_counts_only_unmasked_examples():
  config = narrow_paper_config()
  model, graphdef, state, _, _ = _setup(config)
  batch = _batch(12, config.image_size, seed=1)
  mask = np.array([1.0] * 7 + [0.0] * 5, np.float32)
  metrics = steps.make_eval_step(graphdef)(state, dict(batch, mask=jnp.asarray(mask))).compute()

  logits = _logits(model, batch['image'][:7])
  labels = np.asarray(batch['label'][:7])
  log_probs = (
      logits
      - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
      - logits.max(1, keepdims=True)
  )
  np.testing.assert_allclose(metrics['loss'], -log_probs[np.arange(7), labels].mean(), rtol=1e-4)
  np.testing.assert_allclose(metrics['top1_error'], np.mean(logits.argmax(1) != labels), atol=1e-6)


def test_nonfinite_loss_is_flagged():
  config = narrow_paper_config()
  _, graphdef, state, tx, schedule = _setup(config)
  batch = _batch(8, config.image_size)  # the batch of the tests above: their compiled step
  image = np.array(batch['image'])
  image[0, 0, 0, 0] = np.nan
  batch['image'] = jnp.asarray(image)
  _, _, finite = steps.make_train_step(graphdef, tx, schedule)(state, batch)
  assert not bool(finite)


def _numpy_ten_crop_metrics(logits, labels, mask):
  """Section 4.1 by hand: softmax per view, averaged over the views, then loss and ranks."""
  z = logits - logits.max(-1, keepdims=True)
  probs = (np.exp(z) / np.exp(z).sum(-1, keepdims=True)).mean(1)  # (B, C)
  keep = mask > 0
  p_label = probs[np.arange(len(labels)), labels]
  rank = np.array([naive_rank(probs[i], labels[i]) for i in range(len(labels))])
  return {
      'loss': -np.log(p_label)[keep].mean(),
      'top1_error': (rank >= 1)[keep].mean(),
      'top5_error': (rank >= 5)[keep].mean(),
  }


def _ten_crop_setup():
  config = narrow_paper_config()
  config.model.init = 'he'  # predictions that differ from image to image and view to view
  model, graphdef, state, _, _ = _setup(config)
  rng = np.random.default_rng(2)
  batch = {
      'image': rng.normal(0, 50, (16, 10, 67, 67, 3)).astype(np.float32),
      'label': rng.integers(0, 10, 16).astype(np.int32),
      'mask': np.array([1.0] * 13 + [0.0] * 3, np.float32),
  }
  return config, model, graphdef, state, batch


@pytest.fixture(scope='module')
def ten_crop():
  """`_ten_crop_setup`'s config, model and batch, and the one-device ten-crop evaluation of the
  batch, for the tests below."""
  config, model, graphdef, state, batch = _ten_crop_setup()
  return config, model, batch, steps.make_eval_step(graphdef)(state, batch).compute()


@pytest.mark.slow
def test_ten_crop_eval_averages_the_softmax_of_the_views(ten_crop):
  _, model, batch, metrics = ten_crop

  logits = _logits(model, batch['image'].reshape(160, 67, 67, 3)).astype(np.float64)
  logits = logits.reshape(16, 10, 10)
  want = _numpy_ten_crop_metrics(logits, batch['label'], batch['mask'])
  for name in ('loss', 'top1_error', 'top5_error'):
    np.testing.assert_allclose(metrics[name], want[name], rtol=1e-5, atol=1e-6)
  centre = _numpy_ten_crop_metrics(logits[:, :1], batch['label'], batch['mask'])
  for name in ('loss', 'top1_error', 'top5_error'):
    np.testing.assert_allclose(metrics[f'center_{name}'], centre[name], rtol=1e-5, atol=1e-6)
  # The test can tell averaging probabilities from averaging logits.
  by_logits = _numpy_ten_crop_metrics(logits.mean(1, keepdims=True), batch['label'], batch['mask'])
  assert abs(by_logits['loss'] - want['loss']) > 1e-2 * want['loss']


@pytest.mark.parametrize('strategy', ['data', 'towers', 'owt'])
def test_ten_crop_eval_on_8_devices_equals_one_device(strategy, ten_crop):
  config, _, batch, reference = ten_crop
  config = config.copy_and_resolve_references()
  config.strategy = strategy
  layout = sharding.Layout.create(sharding.MeshConfig(strategy), devices=jax.devices())
  _, graphdef, spread_state, _, _ = _setup(config, layout)
  spread = steps.make_eval_step(graphdef, layout)(
      layout.place_state(spread_state), layout.global_batch(batch)
  ).compute()
  assert len(jax.devices()) == 8
  for name, value in reference.items():
    np.testing.assert_allclose(spread[name], value, rtol=1e-5, atol=1e-6)
