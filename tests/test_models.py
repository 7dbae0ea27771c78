"""The model against the paper: parameter count, layer sizes, towers, initialisation, variants."""

import dataclasses
import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.configs import common
from alexnet_jax import models

PAPER = models.ModelConfig()


def paper_parameter_count(num_classes=1000):
  """Section 3.5 / Figure 2 by hand: (kernel volume x inputs seen + 1) x outputs, towers split."""
  layers = [
      (11 * 11 * 3, 96),  # conv1: the image
      (5 * 5 * 48, 256),  # conv2: own tower's 48 maps
      (3 * 3 * 256, 384),  # conv3: both towers' 256 maps
      (3 * 3 * 192, 384),  # conv4: own tower's 192 maps
      (3 * 3 * 192, 256),  # conv5: own tower's 192 maps
      (6 * 6 * 256, 4096),  # fc6
      (4096, 4096),  # fc7
      (4096, num_classes),  # fc8
  ]
  return sum((fan_in + 1) * out for fan_in, out in layers)


def _shapes(config, image_size):
  """The network of `config`, built abstractly: every parameter's shape, no values drawn (a count
  or a shape depends on nothing else, and drawing 60 million weights costs a compile a shape)."""
  return nnx.eval_shape(lambda: models.AlexNet(config, image_size, rngs=nnx.Rngs(0)))


def test_parameter_count_is_the_papers_60_million():
  model = _shapes(PAPER, 224)
  assert models.count_params(model) == paper_parameter_count() == 60_965_224


def test_one_tower_of_same_width_has_more_parameters_in_tower_layers():
  one = _shapes(dataclasses.replace(PAPER, towers=1), 224)
  # conv2, conv4, conv5 then see all maps of the layer below instead of their tower's half.
  extra = 5 * 5 * 48 * 256 + 3 * 3 * 192 * 384 + 3 * 3 * 192 * 256
  assert models.count_params(one) == paper_parameter_count() + extra


def test_the_papers_one_tower_net_has_half_the_kernels_in_conv1_to_conv4():
  """Section 3.2, footnote 3: conv5 and the fully connected layers keep their size."""
  small = dataclasses.replace(PAPER, towers=1, conv_channels=(48, 128, 192, 192, 256))
  model = _shapes(small, 224)
  shapes = {name: getattr(model, name).kernel.shape for name in ('conv1', 'conv2', 'conv5', 'fc6')}
  assert shapes == {
      'conv1': (11, 11, 3, 48),
      'conv2': (5, 5, 48, 128),
      'conv5': (3, 3, 192, 256),
      'fc6': (6 * 6 * 256, 4096),
  }
  by_hand = [
      (11 * 11 * 3, 48),
      (5 * 5 * 48, 128),
      (3 * 3 * 128, 192),
      (3 * 3 * 192, 192),
      (3 * 3 * 192, 256),
      (6 * 6 * 256, 4096),
      (4096, 4096),
      (4096, 1000),
  ]
  count = sum((fan_in + 1) * out for fan_in, out in by_hand)
  assert models.count_params(model) == count
  # "Approximately the same number of parameters" as the two-tower net: within 5%.
  assert abs(count / paper_parameter_count() - 1) < 0.05
  with pytest.raises(ValueError, match='model.conv_channels'):
    models.validate(dataclasses.replace(PAPER, conv_channels=(48, 128)))


@pytest.mark.parametrize('image_size', [224, 227])
def test_layer_sizes_match_the_paper(image_size):
  shapes = jax.eval_shape(
      lambda x: models.AlexNet(PAPER, image_size, rngs=nnx.Rngs(0)).features(x),
      jax.ShapeDtypeStruct((2, image_size, image_size, 3), jnp.float32),
  )
  # Figure 2: 55x55x48 per tower after conv1, 27x27x128 after conv2, 13x13x192 after conv3 and
  # conv4, 13x13x128 after conv5, 6x6 after the last pooling, 2048 units per tower in fc6/fc7.
  want = {
      'conv1': (55, 48),
      'pool1': (27, 48),
      'conv2': (27, 128),
      'pool2': (13, 128),
      'conv3': (13, 192),
      'conv4': (13, 192),
      'conv5': (13, 128),
      'pool5': (6, 128),
  }
  for name, (size, channels) in want.items():
    assert [s.shape for s in shapes[name]] == [(2, size, size, channels)] * 2, name
  assert [s.shape for s in shapes['fc6']] == [(2, 2048)] * 2
  assert [s.shape for s in shapes['fc7']] == [(2, 2048)] * 2
  assert [s.shape for s in shapes['fc8']] == [(2, 1000)]


def test_feature_sizes_of_small_images():
  # The quickstart's 112: ceil((112 - 11) / 4) + 1 = 27, then (27-3)//2+1 = 13, 6, 2.
  assert models.feature_sizes(112) == {
      'conv1': 27,
      'pool1': 13,
      'conv2': 13,
      'pool2': 6,
      'conv3': 6,
      'conv4': 6,
      'conv5': 6,
      'pool5': 2,
  }
  with pytest.raises(ValueError, match='too small'):
    models.AlexNet(PAPER, models.min_image_size() - 1, rngs=nnx.Rngs(0))


def _small(**changes):
  return dataclasses.replace(PAPER, num_classes=10, width=0.25, **changes)


def _perturbed(model, layer, tower, amount=0.05):
  """A copy of `model` whose `layer` kernel changes only in `tower`'s output slice."""
  graphdef, state = nnx.split(model)
  state = jax.tree.map(lambda x: x, state)
  kernel = np.asarray(state[layer]['kernel'].get_value())
  per_tower = kernel.shape[-1] // model.config.towers
  noise = amount * np.random.default_rng(7).normal(size=kernel.shape)
  mask = np.zeros(kernel.shape[-1])
  mask[tower * per_tower : (tower + 1) * per_tower] = 1.0
  state[layer]['kernel'].set_value(jnp.asarray(kernel + noise * mask, jnp.float32))
  return nnx.merge(graphdef, state)


def _changed(a, b):
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) > 0


def _pixels(shape, seed=1):
  """Mean-subtracted pixels (section 2) have a standard deviation of ~50."""
  return np.random.default_rng(seed).normal(0.0, 50.0, shape).astype(np.float32)


@nnx.jit
def _features(model, images, dropout_rng=None):
  """`model.features` under one jit (one compile, not one per operation); training mode with a
  dropout key."""
  return model.features(images, train=dropout_rng is not None, dropout_rng=dropout_rng)


@pytest.mark.slow
def test_towers_talk_only_at_conv3_and_the_fully_connected_layers():
  model = models.AlexNet(_small(), 67, rngs=nnx.Rngs(0))
  images = _pixels((2, 67, 67, 3))
  base = _features(model, images)

  # Tower A (0) gets different conv1 maps. Tower B's conv2 must not move; its conv3 must.
  after = _features(_perturbed(model, 'conv1', tower=0), images)
  assert _changed(after['conv1'][0], base['conv1'][0])
  np.testing.assert_array_equal(after['conv1'][1], base['conv1'][1])
  np.testing.assert_array_equal(after['conv2'][1], base['conv2'][1])
  assert _changed(after['conv2'][0], base['conv2'][0])
  assert _changed(after['conv3'][1], base['conv3'][1])

  # Tower A's conv3 maps change: tower B's conv4 and conv5 must not move; fc6 (both towers) must.
  after = _features(_perturbed(model, 'conv3', tower=0), images)
  assert _changed(after['conv4'][0], base['conv4'][0])
  np.testing.assert_array_equal(after['conv4'][1], base['conv4'][1])
  np.testing.assert_array_equal(after['conv5'][1], base['conv5'][1])
  assert _changed(after['fc6'][1], base['fc6'][1])

  # Tower A's fc6 units change: tower B's fc7 units must move (fc7 reads both towers).
  after = _features(_perturbed(model, 'fc6', tower=0), images)
  np.testing.assert_array_equal(after['fc6'][1], base['fc6'][1])
  assert _changed(after['fc7'][1], base['fc7'][1])


@pytest.mark.slow
def test_lrn_normalises_within_a_tower():
  model = models.AlexNet(_small(), 67, rngs=nnx.Rngs(0))
  features = _features(model, _pixels((2, 67, 67, 3)))  # the program of the test above
  from alexnet_jax.ops import local_response_norm

  local_response_norm = jax.jit(local_response_norm)
  for tower in range(2):
    np.testing.assert_allclose(
        features['norm1'][tower], local_response_norm(features['conv1'][tower]), rtol=1e-6
    )
  # Normalising the joined maps instead would couple the channels at the tower boundary.
  joined = local_response_norm(jnp.concatenate(features['conv1'], -1))
  assert _changed(joined, jnp.concatenate(features['norm1'], -1))


@pytest.mark.parametrize('init,positive_bias,fc_std', [('paper', 1.0, 0.01), ('caffe', 0.1, 0.005)])
def test_initialisation(init, positive_bias, fc_std):
  model = models.AlexNet(dataclasses.replace(PAPER, init=init), 224, rngs=nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  for layer in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8'):
    kernel = np.asarray(params[layer]['kernel'])
    std = fc_std if layer in ('fc6', 'fc7') else 0.01
    # Thousands of draws at least: the sample mean and std are within a few percent.
    assert abs(kernel.mean()) < 0.05 * std, layer
    assert abs(kernel.std() / std - 1) < 0.03, layer
    bias = positive_bias if layer in ('conv2', 'conv4', 'conv5', 'fc6', 'fc7') else 0.0
    np.testing.assert_array_equal(params[layer]['bias'], np.float32(bias))


@pytest.mark.parametrize('init,gain', [('he', 2.0), ('lecun', 1.0)])
def test_fan_in_initialisations(init, gain):
  """N(0, gain / fan_in) with zero biases, fan_in counted by hand from Figure 2: a tower-local
  layer sees half the channels below it."""
  model = models.AlexNet(dataclasses.replace(PAPER, init=init), 224, rngs=nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  fan_in = {
      'conv1': 11 * 11 * 3,
      'conv2': 5 * 5 * 48,
      'conv3': 3 * 3 * 256,
      'conv4': 3 * 3 * 192,
      'conv5': 3 * 3 * 192,
      'fc6': 6 * 6 * 256,
      'fc7': 4096,
      'fc8': 4096,
  }
  for layer, fan in fan_in.items():
    kernel = np.asarray(params[layer]['kernel'])
    assert abs(kernel.std() / np.sqrt(gain / fan) - 1) < 0.03, layer
    np.testing.assert_array_equal(params[layer]['bias'], np.float32(0))


def test_same_seed_same_parameters_different_seed_different():
  a = nnx.state(models.AlexNet(_small(), 67, rngs=nnx.Rngs(3)), nnx.Param)
  b = nnx.state(models.AlexNet(_small(), 67, rngs=nnx.Rngs(3)), nnx.Param)
  c = nnx.state(models.AlexNet(_small(), 67, rngs=nnx.Rngs(4)), nnx.Param)
  np.testing.assert_array_equal(a['conv1']['kernel'].get_value(), b['conv1']['kernel'].get_value())
  assert _changed(a['conv1']['kernel'].get_value(), c['conv1']['kernel'].get_value())


VARIANTS = [
    {},
    {'norm': 'batchnorm'},
    {'norm': 'none'},
    {'towers': 1},
    {'activation': 'tanh'},
    {'pool': 'plain'},
    {'dropout_rate': 0.0},
    {'dtype': 'bfloat16'},
    {'init': 'caffe'},
]
# The quick pass keeps the paper's model and batch norm (the one variant with batch statistics).
QUICK_VARIANTS = ({}, {'norm': 'batchnorm'})


@pytest.mark.parametrize(
    'changes',
    [c if c in QUICK_VARIANTS else pytest.param(c, marks=pytest.mark.slow) for c in VARIANTS],
    ids=lambda c: ','.join(f'{k}={v}' for k, v in c.items()) or 'paper',
)
def test_variant_runs_forward_and_backward(changes):
  model = models.AlexNet(_small(**changes), 67, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
  images = _pixels((4, 67, 67, 3))
  labels = np.arange(4) % 10

  @jax.jit
  def loss_and_grads(params):
    def loss_fn(params):
      logits = nnx.merge(graphdef, params, rest)(images, train=True, dropout_rng=jax.random.key(2))
      assert logits.dtype == jnp.float32
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])

    return jax.value_and_grad(loss_fn)(params)

  loss, grads = loss_and_grads(params)
  assert np.isfinite(float(loss))
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)
    assert g.dtype == np.float32, path  # parameters stay float32 in every variant
    assert np.all(np.isfinite(g)), path
    # Every parameter receives gradient, except biases followed by batch norm, whose effect the
    # normalisation removes (their gradient is zero up to rounding).
    if changes.get('norm') == 'batchnorm' and jax.tree_util.keystr(path) in (
        "['conv1']['bias']",
        "['conv2']['bias']",
    ):
      continue
    assert np.any(g != 0), path


def test_dropout_masks_differ_between_towers_and_steps():
  model = models.AlexNet(_small(), 67, rngs=nnx.Rngs(0))
  images = _pixels((2, 67, 67, 3))
  a = _features(model, images, jax.random.key(0))['fc6']
  b = _features(model, images, jax.random.key(1))['fc6']
  dropped_a = [np.asarray(t) == 0 for t in a]
  # About half of each tower's units are dropped, the towers drop different units...
  for mask in dropped_a:
    assert 0.35 < mask.mean() < 0.65
  assert np.mean(dropped_a[0] != dropped_a[1]) > 0.3
  # ...and another key drops others.
  assert np.mean(dropped_a[0] != (np.asarray(b[0]) == 0)) > 0.3


@pytest.mark.parametrize(
    'field,value',
    [
        ('norm', 'layer'),
        ('towers', 3),
        ('activation', 'gelu'),
        ('pool', 'avg'),
        ('dtype', 'float16'),
        ('init', 'xavier'),
        ('dropout_rate', 1.0),
        ('conv1_padding', 'floor'),
        ('conv1_padding', 6),
        ('conv1_padding', True),
        ('adaptive_avg_pool', -1),
        ('dropout_placement', 'middle'),
    ],
)
def test_bad_choices_name_the_field(field, value):
  with pytest.raises(ValueError, match=f'model.{field}'):
    models.validate(dataclasses.replace(PAPER, **{field: value}))


# Figure 2's channel counts, conv1 to fc7: the narrowest, conv1's 96, sets the smallest width.
PAPER_CHANNELS = (96, 256, 384, 384, 256, 4096, 4096)


@pytest.mark.parametrize('towers', [1, 2])
@pytest.mark.parametrize('width', [-1.0, 0.0, 0.004, 0.01, float('nan')])
def test_too_small_widths_name_the_field_and_the_smallest_width(width, towers):
  """Widths that would give a tower of some layer less than one channel are errors naming the
  smallest width, towers/96, rather than models quietly clamped to a couple of channels."""
  if 0 < width:  # by hand: conv1's 96 channels scale to less than one per tower
    assert 96 * width < towers
  smallest = towers / min(PAPER_CHANNELS)
  with pytest.raises(ValueError, match='model.width') as error:
    models.validate(dataclasses.replace(PAPER, width=width, towers=towers))
  message = str(error.value)
  assert f'{towers}/96' in message, message
  # The width it names builds (every layer splits over the towers), and is the smallest that does
  # to the 1e-4 it is written in: just below it, validate refuses.
  named = float(message.split('builds is ')[1].split(';')[0])
  assert smallest <= named < smallest + 0.01, message
  models.validate(dataclasses.replace(PAPER, width=named, towers=towers))
  with pytest.raises(ValueError, match='model.width'):
    models.validate(dataclasses.replace(PAPER, width=round(named - 1e-4, 4), towers=towers))


def test_a_width_whose_layers_do_not_split_names_the_next_one_that_does():
  """0.3 gives conv1 round(28.8) = 29 channels, which two towers cannot split: the message
  names the next width up whose every layer splits, checked here by hand."""
  with pytest.raises(ValueError, match='cannot split evenly') as error:
    models.validate(dataclasses.replace(PAPER, width=0.3, towers=2))
  named = float(str(error.value).split('splits every layer is ')[1].rstrip('.'))
  assert named > 0.3
  assert all(round(c * named) % 2 == 0 for c in PAPER_CHANNELS), named
  models.validate(dataclasses.replace(PAPER, width=named, towers=2))


def test_the_smallest_width_and_the_tests_width_build_models():
  """At towers/96 every layer keeps its channel per tower; 0.25 (the tests' width) still builds,
  with Figure 2's counts scaled by hand."""
  build = lambda config: nnx.eval_shape(lambda: models.AlexNet(config, 67, rngs=nnx.Rngs(0)))
  one = build(dataclasses.replace(PAPER, num_classes=10, towers=1, width=1 / 96))
  assert one.conv1.kernel.shape == (11, 11, 3, 1)
  assert one.fc7.kernel.shape == (43, 43)  # round(4096 / 96)
  with pytest.raises(ValueError, match='model.width'):
    models.validate(dataclasses.replace(PAPER, towers=1, width=0.999 / 96))
  small = build(_small())
  for name, channels in zip(('conv1', 'conv2', 'conv3', 'conv4', 'conv5'), PAPER_CHANNELS):
    assert getattr(small, name).kernel.shape[-1] == channels // 4, name
  assert small.fc7.kernel.shape == (1024, 1024)


@pytest.mark.parametrize(
    'window, stride, shape',
    [
        (3, 2, (2, 13, 11, 5)),
        (3, 2, (1, 14, 12, 3)),
        (2, 2, (2, 8, 9, 3)),
        (2, 2, (1, 11, 10, 2)),
        (3, 1, (1, 7, 7, 2)),
        (3, 3, (1, 10, 11, 2)),
    ],
)
def test_max_pool_equals_reduce_window_values_and_gradients(window, stride, shape):
  # After a ReLU, as in the model: many windows tie at 0, where select-and-scatter's rule (the
  # first maximum takes the gradient) must be reproduced, not split between the tied inputs.
  x = np.maximum(np.random.default_rng(0).normal(size=shape).astype(np.float32), 0)  # a ReLU's
  x[0, 2, 2, 0] = x[0, 2, 4, 0] = 1.0  # two equal positive maxima in a window
  x[0, :3, :3, 1] = 0.0  # a window of zeros
  reference = lambda v: nnx.max_pool(v, (window, window), (stride, stride), 'VALID')
  ours = lambda v: models.max_pool(v, window, stride)
  weights = np.random.default_rng(1).normal(size=jax.eval_shape(reference, x).shape)

  @jax.jit  # one compile for both ops' values and gradients
  def values_and_grads(v, w):
    grad = lambda f: jax.grad(lambda u: jnp.sum(f(u) * w))(v)
    return ours(v), reference(v), grad(ours), grad(reference)

  mine, theirs, mine_grad, their_grad = map(
      np.asarray, values_and_grads(x, weights.astype(np.float32))
  )
  np.testing.assert_array_equal(mine, theirs)
  np.testing.assert_allclose(mine_grad, their_grad, rtol=1e-6, atol=1e-6)
  assert np.any(theirs == 0)  # windows of tied zeros really occurred


@pytest.mark.parametrize('kernel_shape', [(3, 3, 4, 6), (10, 6)])
def test_towers_reading_one_input_equal_per_tower_slices(kernel_shape):
  """The one-op path for conv1/conv3/fc6/fc7 against each tower's own slice of the kernel."""
  layer = models.TowerLayer(kernel_shape, 2, std=1.0, bias=0.5, rngs=nnx.Rngs(params=0))
  layer.bias.value = jnp.arange(kernel_shape[-1], dtype=jnp.float32)
  x = jnp.asarray(
      np.random.default_rng(2).normal(size=(2, 5, 5, 4) if len(kernel_shape) == 4 else (2, 10)),
      jnp.float32,
  )
  half = kernel_shape[-1] // 2

  @nnx.jit  # one compile for the layer and the slices
  def layer_and_slices(layer, x):
    wants = []
    for t in range(2):
      kernel = layer.kernel.value[..., t * half : (t + 1) * half]
      if kernel.ndim == 2:
        want = x @ kernel
      else:
        want = jax.lax.conv_general_dilated(
            x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
        )
      wants.append(want + layer.bias.value[t * half : (t + 1) * half])
    return layer([x, x]), wants

  got, wants = layer_and_slices(layer, x)
  for t in range(2):
    np.testing.assert_allclose(np.asarray(got[t]), np.asarray(wants[t]), rtol=1e-5, atol=1e-5)


def naive_adaptive_avg_pool(x, size):
  """PyTorch's AdaptiveAvgPool2d by its definition, one output at a time: output (i, j) is the
  mean of rows floor(i * H / size) .. ceil((i + 1) * H / size) - 1 and likewise of columns."""
  n, height, width, channels = x.shape
  out = np.zeros((n, size, size, channels), np.float64)
  for i in range(size):
    rows = slice(i * height // size, -(-(i + 1) * height // size))
    for j in range(size):
      cols = slice(j * width // size, -(-(j + 1) * width // size))
      out[:, i, j] = x[:, rows, cols].mean(axis=(1, 2))
  return out


@pytest.mark.parametrize('shape', [(2, 7, 7, 3), (1, 13, 11, 2), (1, 6, 6, 2), (1, 3, 5, 2)])
def test_adaptive_avg_pool_is_pytorchs_bins(shape):
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  got = np.asarray(jax.jit(models.adaptive_avg_pool, static_argnums=1)(x, 6))
  np.testing.assert_allclose(
      got, naive_adaptive_avg_pool(x.astype(np.float64), 6), rtol=1e-6, atol=1e-6
  )
  if shape[1:3] == (6, 6):
    np.testing.assert_array_equal(got, x)  # torchvision's AlexNet at 224 pixels


TORCHVISION = models.TORCHVISION


@pytest.mark.parametrize(
    'image_size, sizes',
    [
        # conv1: floor((224 + 2 * 2 - 11) / 4) + 1 = 55, as torchvision's; pool5 is 6x6 already.
        (224, {'conv1': 55, 'pool1': 27, 'conv2': 27, 'pool2': 13, 'conv5': 13, 'pool5': 6}),
        (256, {'conv1': 63, 'pool1': 31, 'conv2': 31, 'pool2': 15, 'conv5': 15, 'pool5': 7}),
    ],
)
def test_torchvision_variant_layer_sizes_and_parameter_count(image_size, sizes):
  model = nnx.eval_shape(lambda: models.AlexNet(TORCHVISION, image_size, rngs=nnx.Rngs(0)))
  shapes = jax.eval_shape(
      lambda x: models.AlexNet(TORCHVISION, image_size, rngs=nnx.Rngs(0)).features(x),
      jnp.zeros((1, image_size, image_size, 3)),
  )
  channels = {'conv1': 64, 'pool1': 64, 'conv2': 192, 'pool2': 192, 'conv5': 256, 'pool5': 256}
  for name, size in sizes.items():
    assert [s.shape for s in shapes[name]] == [(1, size, size, channels[name])], name
  assert [s.shape for s in shapes['avgpool']] == [(1, 6, 6, 256)]  # fc6 reads 6x6 at any size
  # torchvision's published parameter count of its AlexNet (AlexNet_Weights.meta['num_params']).
  assert models.count_params(model) == 61_100_840
  assert 'norm1' not in nnx.to_pure_dict(nnx.state(model))  # no LRN, no batch norm


def test_the_command_lines_padding_string_is_a_number_of_pixels():
  # The paper config's field is the string 'ceil', so --config.model.conv1_padding=2 gives '2'.
  assert dataclasses.replace(PAPER, conv1_padding='2').conv1_padding == 2
  assert models.conv1_padding(224, 2) == [(2, 2), (2, 2)]
  assert models.conv1_padding(224) == [(0, 3), (0, 3)]  # the paper's: ceil((224 - 11) / 4) + 1


@nnx.jit
def _fc_outputs(model, images):
  """fc6's and fc7's outputs in training mode, and what each layer computes from the input it
  was given, undropped (one compile)."""
  out = model.features(images, train=True, dropout_rng=jax.random.key(2))
  flat = jnp.concatenate(out['avgpool'], -1).reshape(len(images), -1)  # before any dropout
  fc6 = jnp.concatenate(out['fc6'], -1)
  undropped6 = jax.nn.relu(flat @ model.fc6.kernel + model.fc6.bias)
  fc7 = jnp.concatenate(out['fc7'], -1)
  undropped7 = jax.nn.relu(fc6 @ model.fc7.kernel + model.fc7.bias)
  return fc6, undropped6, fc7, undropped7


@pytest.mark.slow
@pytest.mark.parametrize('towers', [1, 2])
def test_dropout_placement_drops_fc6s_inputs_or_fc7s_outputs(towers):
  """Both placements drop fc6's outputs; the paper's also fc7's, torchvision's fc6's inputs."""
  rate = 0.5
  outputs = {}
  for placement in ('after', 'before'):
    config = _small(towers=towers, dropout_placement=placement, adaptive_avg_pool=6)
    model = models.AlexNet(config, 67, rngs=nnx.Rngs(0))
    outputs[placement] = tuple(map(np.asarray, _fc_outputs(model, _pixels((4, 67, 67, 3)))))
  # The paper: fc6 and fc7 are their undropped outputs, each unit kept (x 1 / (1 - rate)) or 0.
  fc6, undropped6, fc7, undropped7 = outputs['after']
  for got, full in ((fc6, undropped6), (fc7, undropped7)):
    kept = got != 0
    np.testing.assert_allclose(got[kept], full[kept] / (1 - rate), rtol=1e-5)
    assert 0.3 < np.mean(~kept[full > 0]) < 0.7  # about half the active units dropped
  # torchvision: fc6 read dropped inputs, so it is not its undropped output thinned; fc7 is
  # exactly its own output, nothing dropped after it.
  fc6, undropped6, fc7, undropped7 = outputs['before']
  kept = fc6 != 0
  assert not np.allclose(fc6[kept], undropped6[kept] / (1 - rate), rtol=1e-3)
  np.testing.assert_allclose(fc7, undropped7, rtol=1e-5, atol=1e-6)


# --- Every variant against the paper's network written independently (tests/torch_alexnet.py) ---

# The configs' model ablations (the others change the data) and the bfloat16 compute dtype.
MODEL_VARIANTS = tuple(
    name
    for name, changes in common.VARIANTS.items()
    if all(field.startswith('model.') for field in changes)
)
# 96 pixels: conv1 pads its bottom and right edges by 3 (a ceiling-sized 23x23 output) and pool5 is
# 2x2 with either pooling, so fc6's row order matters; at width 0.25 each forward pass is cheap.
REFERENCE_IMAGE_SIZE = 96
# Relative to the logits' scale (their largest magnitude: 3.4 with tanh, 8.5 with batch norm, 640
# without LRN, 44-76 otherwise). float32 rounds each product and sum to ~6e-8; through conv fan-ins
# of up to 864 and eight layers we measured at most 6.6e-7 against float64 (XLA:CPU), in eval and
# train mode and in batch norm's running statistics.
FLOAT32_TOLERANCE = 1e-5
# bfloat16 keeps 8 significant bits: every conv and matmul rounds its inputs and output to ~4e-3,
# so the logits are good to ~1e-2 of their scale; we measured 7.9e-3.
BFLOAT16_TOLERANCE = 3e-2


@pytest.fixture(scope='module')
def reference():
  """tests/torch_alexnet.py. torch is in the `bench` extra, not `test`: without it these skip."""
  pytest.importorskip('torch')
  from tests import torch_alexnet

  return torch_alexnet


def _variant(name):
  if name == 'bfloat16':
    return _small(dtype='bfloat16')
  return _small(**{field.removeprefix('model.'): v for field, v in common.VARIANTS[name].items()})


def _choices(reference, model, **changes):
  """The reference's choices for `model`'s config; LRN's constants are the reference's own."""
  config = model.config
  assert config.lrn == models.LRNConfig()  # the paper's, which the reference writes out itself
  epsilon = model.norm1.epsilon if config.norm == 'batchnorm' else 1e-5
  choices = reference.Choices(
      towers=config.towers,
      activation=config.activation,
      norm=config.norm,
      pool=config.pool,
      dropout_rate=config.dropout_rate,
      bn_epsilon=epsilon,
  )
  return dataclasses.replace(choices, **changes)


def _images(seed=1, batch=2):
  """Mean-subtracted pixels (section 2) have a standard deviation of ~50."""
  size = REFERENCE_IMAGE_SIZE
  return np.random.default_rng(seed).normal(0.0, 50.0, (batch, size, size, 3)).astype(np.float32)


def _reference_model(config, reference):
  """`config`'s model with weights that keep activations O(1)-O(100), and its parameters as numpy.

  Kernels are fan-in scaled, N(0, 2 / fan_in), so conv1's outputs are ~70 on 50-sized pixels and
  LRN's alpha term (1e-4 x the sum of 5 squares, ~2.5) is as large as its k = 2: a wrong LRN, pool,
  activation or tower split moves the logits by far more than the tolerance
  (`test_the_reference_tells_the_variants_apart`). Biases and batch norm's scale and offset are
  random, so that each tower's slice of them matters; batch norm's running statistics are the
  reference's batch statistics of other images.
  """
  # Shapes only: every array is replaced below, and drawing them in JAX would cost a compile each.
  model = nnx.eval_shape(lambda: models.AlexNet(config, REFERENCE_IMAGE_SIZE, rngs=nnx.Rngs(0)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  pure = nnx.to_pure_dict(params)
  rng = np.random.default_rng(0)
  for layer in pure.values():
    if 'kernel' in layer:
      shape = layer['kernel'].shape
      layer['kernel'] = rng.normal(0.0, math.sqrt(2.0 / math.prod(shape[:-1])), shape)
      layer['bias'] = rng.normal(0.0, 1.0, layer['bias'].shape)
    else:  # batch norm
      layer['scale'] = 1.0 + 0.2 * rng.normal(size=layer['scale'].shape)
      layer['bias'] = 0.5 * rng.normal(size=layer['bias'].shape)
  pure = jax.tree.map(lambda x: np.asarray(x, np.float32), pure)
  nnx.replace_by_pure_dict(params, pure)
  if config.norm == 'batchnorm':
    choices = _choices(reference, model)
    _, stats = reference.forward(pure, _images(seed=5, batch=4), choices, train=True)
    running = nnx.to_pure_dict(rest)
    for name, (mean, var) in stats.items():
      running[name] = {'mean': np.float32(mean.numpy()), 'var': np.float32(var.numpy())}
      pure[name].update(running[name])
    nnx.replace_by_pure_dict(rest, running)
  return nnx.merge(graphdef, params, rest), pure


@nnx.jit(static_argnames='train')
def _outputs(model, images, train=False, dropout_rng=None):
  out = model.features(images, train=train, dropout_rng=dropout_rng)
  return {name: out[name] for name in ('fc6', 'fc7', 'fc8')}


def _error(got, want):
  """max |got - want| relative to the largest |want|."""
  want = np.asarray(want, np.float64)
  return float(np.max(np.abs(np.asarray(got, np.float64) - want)) / np.max(np.abs(want)))


def _tolerance(config):
  return BFLOAT16_TOLERANCE if config.dtype == 'bfloat16' else FLOAT32_TOLERANCE


@pytest.mark.parametrize('variant', MODEL_VARIANTS + ('bfloat16',))
def test_variant_computes_what_its_name_claims(variant, reference):
  """Eval-mode logits against the paper's network in float64, with the variant's one change."""
  config = _variant(variant)
  model, params = _reference_model(config, reference)
  images = _images()
  want, _ = reference.forward(params, images, _choices(reference, model))
  got = _outputs(model, jnp.asarray(images))['fc8'][0]
  assert _error(got, want) < _tolerance(config), variant


def test_the_reference_tells_the_variants_apart(reference):
  """The comparison is not blind: on these weights and images, each mistake the model could make
  moves the reference's logits by far more than either tolerance."""
  model, params = _reference_model(_small(), reference)
  images = _images()
  paper = reference.forward(params, images, _choices(reference, model))[0]
  lrn_over_n = dict(reference.PAPER_LRN, alpha=reference.PAPER_LRN['alpha'] / 5)
  mistakes = {
      'no LRN': _choices(reference, model, norm='none'),
      "LRN's alpha / n (cuda-convnet's)": _choices(reference, model, lrn=lrn_over_n),
      'LRN across both towers': _choices(reference, model, lrn_per_tower=False),
      'tanh': _choices(reference, model, activation='tanh'),
      '2x2 pooling': _choices(reference, model, pool='plain'),
  }
  errors = {
      what: _error(reference.forward(params, images, c)[0], paper) for what, c in mistakes.items()
  }
  # The towers' halves of conv1 swapped: conv2's towers read each other's maps.
  flipped = dict(params)
  half = params['conv1']['kernel'].shape[-1] // 2
  flipped['conv1'] = {k: np.roll(v, half, axis=-1) for k, v in params['conv1'].items()}
  errors['towers swapped'] = _error(
      reference.forward(flipped, images, _choices(reference, model))[0], paper
  )
  for what, error in errors.items():
    assert error > 100 * FLOAT32_TOLERANCE, (what, error)
    # LRN over the joined towers changes only the channels at the towers' border (~2e-2 here), so
    # the bfloat16 case cannot tell it apart; the float32 ones do, and it sees every other mistake.
    if what != 'LRN across both towers':
      assert error > 3 * BFLOAT16_TOLERANCE, (what, error)


@pytest.mark.parametrize('variant', ['paper', 'batchnorm', 'no_dropout'])
def test_train_mode_computes_what_the_paper_says(variant, reference):
  """Training logits with the model's own dropout masks (read off its zeroed fc6/fc7 units; a unit
  the ReLU zeroed is 0 either way), kept units scaled by 1 / (1 - p); batch norm with the batch's
  statistics, and its running statistics updated by the formula."""
  config = _variant(variant)
  model, params = _reference_model(config, reference)
  images = _images()
  choices = _choices(reference, model)
  out = _outputs(model, jnp.asarray(images), train=True, dropout_rng=jax.random.key(3))
  rate = config.dropout_rate
  masks = None
  if rate:
    masks = {
        name: np.concatenate([np.asarray(t) != 0 for t in out[name]], -1) for name in ('fc6', 'fc7')
    }
  want, stats = reference.forward(params, images, choices, train=True, dropout_masks=masks)
  assert _error(out['fc8'][0], want) < FLOAT32_TOLERANCE
  if rate:
    # Dropout happened, and the kept units' 1 / (1 - p) is what matches.
    undropped = reference.forward(params, images, choices, train=True)[0]
    unscaled = reference.forward(
        params,
        images,
        dataclasses.replace(choices, dropout_rate=0.0),
        train=True,
        dropout_masks=masks,
    )[0]
    assert _error(undropped, want) > 100 * FLOAT32_TOLERANCE
    assert _error(unscaled, want) > 100 * FLOAT32_TOLERANCE
  else:
    eval_logits = _outputs(model, jnp.asarray(images))['fc8'][0]
    np.testing.assert_array_equal(np.asarray(out['fc8'][0]), np.asarray(eval_logits))
  if config.norm == 'batchnorm':
    # flax's BatchNorm: running = m * running + (1 - m) * batch statistic, with the batch's BIASED
    # variance (mean of squares minus squared mean), the one it also normalises with. torch's
    # F.batch_norm would update with the unbiased one, N / (N - 1) larger.
    momentum = model.norm1.momentum
    assert model.norm2.momentum == momentum
    running = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    for name, (mean, var) in stats.items():
      old = params[name]
      want_mean = momentum * old['mean'] + (1 - momentum) * mean.numpy()
      want_var = momentum * old['var'] + (1 - momentum) * var.numpy()
      side = models.feature_sizes(REFERENCE_IMAGE_SIZE, config.pool)['conv' + name[-1]]
      count = images.shape[0] * side * side  # values per channel
      unbiased = momentum * old['var'] + (1 - momentum) * var.numpy() * count / (count - 1)
      assert _error(running[name]['mean'], want_mean) < FLOAT32_TOLERANCE, name
      assert _error(running[name]['var'], want_var) < FLOAT32_TOLERANCE, name
      # ...which this test tells apart: (1 - m) / (N - 1) is 9e-5 (norm1) and 4e-4 (norm2) here.
      assert _error(running[name]['var'], unbiased) > 3 * FLOAT32_TOLERANCE, name
