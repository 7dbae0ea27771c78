"""AlexNet as in Krizhevsky, Sutskever & Hinton (NIPS 2012), section 3 and Figure 2.

    input 224x224x3 (see "224 or 227" below)
    conv1  96 x 11x11 / 4   -> ReLU -> LRN -> max-pool 3x3 / 2      55 -> 27
    conv2 256 x  5x5        -> ReLU -> LRN -> max-pool 3x3 / 2      27 -> 13   own tower only
    conv3 384 x  3x3        -> ReLU                                  13         both towers
    conv4 384 x  3x3        -> ReLU                                  13         own tower only
    conv5 256 x  3x3        -> ReLU -> max-pool 3x3 / 2             13 -> 6    own tower only
    fc6  4096 -> ReLU -> dropout 0.5                                            both towers
    fc7  4096 -> ReLU -> dropout 0.5                                            both towers
    fc8  num_classes (softmax in the loss)                                      both towers

Towers (section 3.2). The paper trained on two GPUs, each holding half of every layer's kernels.
Every layer here keeps its kernel whole, as one array, and tower t owns the t-th contiguous slice of
its output channels (the same layout as a grouped-convolution kernel, so weights import and export
as-is). Activations travel as a list of per-tower arrays; `cross_tower` is the only place the towers
meet, and it is called exactly where the paper's GPUs communicated: into conv3, fc6, fc7 and fc8.
Each tower's convolutions are separate XLA convolutions, never `feature_group_count`: grouped
convolutions are slower on XLA:CPU (docs/benchmark_history.md), and XLA's SPMD partitioner
all-gathers them. Where every tower reads the same input (conv1, conv3, fc6, fc7 on one device),
`TowerLayer` runs one op over the whole kernel and splits its output: the same numbers, without
slicing the kernel per tower.
The same code runs with `towers=1` (one tower of the same total width, the paper's single-GPU
comparison in section 3.2), and, inside `jax.shard_map` over a mesh axis named `tower_axis`, with
one tower per device: a device then holds a slice of each kernel, sees one tower in its list, and
`cross_tower` becomes an all-gather over that axis.

224 or 227. The paper's 224x224 input does not give its 55x55 conv1 maps with a valid 11x11 stride
4 convolution ((224 - 11) / 4 + 1 = 54.25); 227 does. cuda-convnet, the paper's code, computed the
output size with a ceiling and let the last windows run past the image into zeros. We do the same:
conv1 pads the bottom and right edges just enough for a ceiling-sized output, so 224 and 227 both
give 55, and smaller images (the quickstart's 112) still use every pixel.

Initialisation (section 5): weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7 ("this
accelerates the early stages of learning by providing the ReLUs with positive inputs") and 0 in the
other layers. `init='caffe'` gives Caffe's reference variant: those biases 0.1, fc6/fc7 std 0.005.
`init='he'` is the modern fan-in-scaled N(0, 2/fan_in) with zero biases, for ablations: with the
paper's init the input signal fades layer by layer (fc8's outputs barely differ between images at
the start), which is why the paper's runs spend their first epochs near chance. `init='lecun'` is
N(0, 1/fan_in) with zero biases: LeCun et al.'s (1998) scale for tanh units, whose gain near 0 is 1
where a ReLU's averages 1/2, for Figure 1's tanh networks.

torchvision's AlexNet. `TORCHVISION` is the one-tower net of Krizhevsky's 2014 "one weird trick"
paper as torchvision builds it, the one whose ImageNet weights `trained.weights` imports. Three
fields say where it departs from Figure 2 (`conv1_padding`, `adaptive_avg_pool`,
`dropout_placement`); at their defaults the network is the paper's.
"""

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from alexnet_jax import layers
from alexnet_jax.layers import cross_tower
from alexnet_jax.layers import TowerLayer
from alexnet_jax.ops import adaptive_avg_pool
from alexnet_jax.ops import local_response_norm
from alexnet_jax.ops import max_pool

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class LRNConfig:
  size: int = 5
  k: float = 2.0
  alpha: float = 1e-4
  beta: float = 0.75
  alpha_over_n: bool = False


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Every architectural knob a paper ablation needs. Defaults are the paper's model."""

  num_classes: int = 1000
  towers: int = 2  # 2: the paper's two-GPU split (section 3.2); 1: one tower of the same width.
  norm: str = 'lrn'  # lrn (section 3.3) | batchnorm (at the LRN positions) | none
  activation: str = 'relu'  # relu (section 3.1) | tanh (the saturating baseline of Figure 1)
  pool: str = 'overlapping'  # overlapping: 3x3 stride 2 (section 3.4) | plain: 2x2 stride 2
  dropout_rate: float = 0.5  # section 4.2, in fc6 and fc7
  dtype: str = 'float32'  # compute dtype of convs and matmuls; parameters and LRN stay float32
  init: str = 'paper'  # paper | caffe | he (fan-in scaled, biases 0) | lecun (he's, for tanh)
  width: float = 1.0  # multiplies every layer's channel count (tests shrink it; the paper is 1.0)
  # conv1..conv5's output channels before `width`; None: the paper's (96, 256, 384, 384, 256).
  # The paper's one-GPU comparison net (section 3.2, footnote 3) is one tower with half the kernels
  # in conv1-conv4: (48, 128, 192, 192, 256).
  conv_channels: tuple[int, ...] | None = None
  # Where torchvision's AlexNet (`TORCHVISION`) departs from the paper, besides its channels:
  # conv1's padding: 'ceil' (cuda-convnet's, see "224 or 227" above) | pixels padded on every side
  # (torchvision: 2).
  conv1_padding: int | str = 'ceil'
  # > 0: pool5's maps averaged into this many bins a side (PyTorch's AdaptiveAvgPool2d), so every
  # image size gives fc6 the same inputs (torchvision: 6); 0: off, the paper.
  adaptive_avg_pool: int = 0
  # after: dropout zeroes fc6's and fc7's outputs (section 4.2) | before: fc6's and fc7's inputs,
  # i.e. the pooled features and fc6's outputs (torchvision).
  dropout_placement: str = 'after'
  lrn: LRNConfig = LRNConfig()
  tower_axis: str | None = None  # mesh axis holding one tower per device, inside jax.shard_map
  batch_axis: str | None = None  # mesh axis splitting the batch, inside jax.shard_map
  # "One weird trick" (Krizhevsky 2014): mesh axis over which fc6/fc7 units are split, after every
  # device has gathered the conv features of the whole batch over it.
  fc_axis: str | None = None

  def __post_init__(self):
    # The command line types a field by its default, so the paper's 'ceil' makes
    # --config.model.conv1_padding=2 arrive as the string '2'.
    if isinstance(self.conv1_padding, str) and self.conv1_padding.strip().isdigit():
      object.__setattr__(self, 'conv1_padding', int(self.conv1_padding))


# Krizhevsky's 2014 "one weird trick" net as torchvision builds it, the AlexNet whose pretrained
# weights most people have (`trained.weights` reads them): one tower of 64, 192, 384, 256 and
# 256 kernels, no LRN, conv1 padded by 2 pixels on every side, pool5 averaged to 6x6, and dropout on
# fc6's and fc7's inputs. Its 3x3/2 pooling and 'SAME' conv2-conv5 are the paper's.
TORCHVISION = ModelConfig(
    towers=1,
    norm='none',
    conv_channels=(64, 192, 384, 256, 256),
    conv1_padding=2,
    adaptive_avg_pool=6,
    dropout_placement='before',
)


# (name, kernel size, stride, output channels, sees both towers). Section 3.5 and Figure 2.
CONV_LAYERS = (
    ('conv1', 11, 4, 96, False),
    ('conv2', 5, 1, 256, False),
    ('conv3', 3, 1, 384, True),
    ('conv4', 3, 1, 384, False),
    ('conv5', 3, 1, 256, False),
)
FC_UNITS = 4096  # fc6 and fc7
# Layers whose biases are 1 in the paper (section 5) and 0.1 in Caffe's variant.
POSITIVE_BIAS_LAYERS = ('conv2', 'conv4', 'conv5', 'fc6', 'fc7')

NORMS = ('lrn', 'batchnorm', 'none')
ACTIVATIONS = {'relu': jax.nn.relu, 'tanh': jnp.tanh}
POOLS = {'overlapping': (3, 2), 'plain': (2, 2)}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
INITS = ('paper', 'caffe', 'he', 'lecun')
DROPOUT_PLACEMENTS = ('after', 'before')


def validate(config: ModelConfig) -> None:
  """Raises ValueError with a sentence a person can act on for any unsupported choice."""
  choices = {
      'norm': (config.norm, NORMS),
      'activation': (config.activation, tuple(ACTIVATIONS)),
      'pool': (config.pool, tuple(POOLS)),
      'dtype': (config.dtype, tuple(DTYPES)),
      'init': (config.init, INITS),
      'dropout_placement': (config.dropout_placement, DROPOUT_PLACEMENTS),
  }
  for field, (value, allowed) in choices.items():
    if value not in allowed:
      raise ValueError(f'model.{field}={value!r} is not supported; choose one of {allowed}.')
  if config.towers not in (1, 2):
    raise ValueError(f'model.towers={config.towers}: the model has 1 or 2 towers (section 3.2).')
  if not 0.0 <= config.dropout_rate < 1.0:
    raise ValueError(f'model.dropout_rate={config.dropout_rate} must be in [0, 1).')
  if config.num_classes < 1:
    raise ValueError(f'model.num_classes={config.num_classes} must be positive.')
  pad = config.conv1_padding
  if pad != 'ceil' and not (_is_int(pad) and 0 <= pad <= 5):
    raise ValueError(
        f"model.conv1_padding={pad!r} must be 'ceil' (cuda-convnet's bottom and right padding to "
        'a ceiling-sized output, the paper) or the pixels padded on every side, 0 to 5 (at most '
        'half the 11-pixel kernel, as PyTorch allows; torchvision: 2).'
    )
  if not (_is_int(config.adaptive_avg_pool) and config.adaptive_avg_pool >= 0):
    raise ValueError(
        f'model.adaptive_avg_pool={config.adaptive_avg_pool!r} must be a whole number of bins a '
        "side: 0 (off, the paper) or e.g. 6 (torchvision's AlexNet)."
    )
  smallest, layer, channels = min_width(config.towers)
  if not smallest <= config.width < math.inf:  # also NaN
    raise ValueError(
        f'model.width={config.width} must be finite and at least {config.towers}/{channels}: '
        f"below that, {layer}'s {channels} channels give a tower less than one channel. The "
        f'smallest width that builds is {working_width(smallest, config.towers)}; the paper is 1.0.'
    )
  if config.conv_channels is not None and (
      len(config.conv_channels) != len(CONV_LAYERS) or min(config.conv_channels) < 1
  ):
    raise ValueError(
        f'model.conv_channels={config.conv_channels} must be {len(CONV_LAYERS)} positive channel '
        'counts, conv1 to conv5 (the paper: 96, 256, 384, 384, 256).'
    )
  for channels in conv_channels(config)[1]:
    if scaled(channels, config.width) < config.towers:  # custom conv_channels, narrow widths
      raise ValueError(
          f'model.width={config.width} leaves a layer of {channels} channels with '
          f'{scaled(channels, config.width)}, less than one per tower; raise model.width or '
          'model.conv_channels.'
      )
    if scaled(channels, config.width) % config.towers:
      raise ValueError(
          f'model.width={config.width} gives a layer of {scaled(channels, config.width)}'
          f' channels, which {config.towers} towers cannot split evenly; the next width that'
          f' splits every layer is {working_width(config.width, config.towers)}.'
      )


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def working_width(width: float, towers: int) -> float:
  """The smallest width >= `width` (in steps of 1e-4) whose every layer splits over `towers`."""
  w = math.ceil(width * 1e4 - 1e-6) / 1e4
  while any(scaled(c, w) % towers or scaled(c, w) < towers for c in LAYER_CHANNELS):
    w = round(w + 1e-4, 4)
  return w


LAYER_CHANNELS = tuple(c for _, _, _, c, _ in CONV_LAYERS) + (FC_UNITS,)


def min_width(towers: int) -> tuple[float, str, int]:
  """The smallest `width` giving every layer at least one channel per tower, and the layer
  (name, channels) that sets it: the narrowest, conv1's 96 (e.g. 2 towers: 2/96)."""
  table = [(c, name) for name, _, _, c, _ in CONV_LAYERS] + [(FC_UNITS, 'fc6')]
  channels, layer = min(table)
  return towers / channels, layer, channels


def conv_channels(config: ModelConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(conv1..conv5's output channels at `width`, the same before it plus fc6's units)."""
  base = tuple(config.conv_channels or (c for _, _, _, c, _ in CONV_LAYERS))
  return tuple(scaled(c, config.width) for c in base), base + (FC_UNITS,)


def scaled(channels: int, width: float) -> int:
  """A layer's channel count at `width`, rounded; `validate` rejects widths that leave a tower
  without channels, so there is no clamp here: every accepted width means what it says."""
  return int(round(channels * width))


def _conv1_size(image_size: int, padding: int | str = 'ceil') -> int:
  if padding == 'ceil':
    return math.ceil((image_size - 11) / 4) + 1  # cuda-convnet's ceiling, see module docstring
  return (image_size + 2 * padding - 11) // 4 + 1


def feature_sizes(
    image_size: int, pool: str = 'overlapping', conv1_padding: int | str = 'ceil'
) -> dict[str, int]:
  """Spatial size of each layer's output maps, by the arithmetic of the layers (paper's Figure 2)."""
  window, stride = POOLS[pool]
  conv1 = _conv1_size(image_size, conv1_padding)
  pool1 = (conv1 - window) // stride + 1
  pool2 = (pool1 - window) // stride + 1
  pool5 = (pool2 - window) // stride + 1
  return {
      'conv1': conv1,
      'pool1': pool1,
      'conv2': pool1,
      'pool2': pool2,
      'conv3': pool2,
      'conv4': pool2,
      'conv5': pool2,
      'pool5': pool5,
  }


def conv1_padding(image_size: int, padding: int | str = 'ceil') -> list[tuple[int, int]]:
  """conv1's (before, after) padding of the rows and the columns, for `ModelConfig.conv1_padding`."""
  if padding != 'ceil':
    return [(padding, padding), (padding, padding)]
  extra = (_conv1_size(image_size) - 1) * 4 + 11 - image_size
  return [(0, extra), (0, extra)]


class AlexNet(nnx.Module):
  """The paper's network. Call with a batch of NHWC images; returns float32 logits."""

  def __init__(self, config: ModelConfig, image_size: int, *, rngs: nnx.Rngs):
    validate(config)
    self.config = config
    self.image_size = image_size
    if feature_sizes(image_size, config.pool, config.conv1_padding)['pool5'] < 1:
      raise ValueError(
          f"image_size={image_size} is too small for AlexNet's five layers of "
          f'pooling; use at least {min_image_size(config.pool, config.conv1_padding)}.'
      )
    dtype = DTYPES[config.dtype]
    towers = config.towers
    positive_bias = {'paper': 1.0, 'caffe': 0.1, 'he': 0.0, 'lecun': 0.0}[config.init]

    def std(fan_in: int, layer: str) -> float:
      if config.init in ('he', 'lecun'):
        return math.sqrt((2.0 if config.init == 'he' else 1.0) / fan_in)
      if config.init == 'caffe' and layer in ('fc6', 'fc7'):
        return 0.005
      return 0.01

    channels_in = 3
    layer_channels = {}
    for (name, size, stride, _, crosses), channels in zip(CONV_LAYERS, conv_channels(config)[0]):
      # A tower-local layer sees its own tower's share of the previous layer; conv1 sees the image.
      fan_in = channels_in if (crosses or name == 'conv1') else channels_in // towers
      padding = conv1_padding(image_size, config.conv1_padding) if name == 'conv1' else 'SAME'
      setattr(
          self,
          name,
          TowerLayer(
              (size, size, fan_in, channels),
              towers,
              std=std(size * size * fan_in, name),
              stride=stride,
              padding=padding,
              bias=positive_bias if name in POSITIVE_BIAS_LAYERS else 0.0,
              dtype=dtype,
              rngs=rngs,
          ),
      )
      layer_channels[name] = channels
      channels_in = channels

    pooled = (
        config.adaptive_avg_pool
        or feature_sizes(image_size, config.pool, config.conv1_padding)['pool5']
    )
    fc_units = scaled(FC_UNITS, config.width)
    fc6_in = pooled * pooled * channels_in
    self.fc6 = TowerLayer(
        (fc6_in, fc_units),
        towers,
        std=std(fc6_in, 'fc6'),
        bias=positive_bias,
        dtype=dtype,
        rngs=rngs,
    )
    self.fc7 = TowerLayer(
        (fc_units, fc_units),
        towers,
        std=std(fc_units, 'fc7'),
        bias=positive_bias,
        dtype=dtype,
        rngs=rngs,
    )
    # fc8 is not split (layers.SPLITS): the paper's 1000-way softmax reads both towers' fc7.
    self.fc8 = TowerLayer(
        (fc_units, config.num_classes),
        towers if layers.SPLITS['fc8'].towers else 1,
        std=std(fc_units, 'fc8'),
        bias=0.0,
        dtype=dtype,
        rngs=rngs,
    )

    if config.norm == 'batchnorm':
      # With the batch split over devices, statistics are averaged over `batch_axis`, so they are
      # those of the global batch.
      self.norm1 = nnx.BatchNorm(
          layer_channels['conv1'], momentum=0.9, axis_name=config.batch_axis, rngs=rngs
      )
      self.norm2 = nnx.BatchNorm(
          layer_channels['conv2'], momentum=0.9, axis_name=config.batch_axis, rngs=rngs
      )

  def _activation(self, xs: Sequence[Array]) -> list[Array]:
    act = ACTIVATIONS[self.config.activation]
    return [act(x) for x in xs]

  def _pool(self, xs: Sequence[Array]) -> list[Array]:
    window, stride = POOLS[self.config.pool]
    return [max_pool(x, window, stride) for x in xs]

  def _normalize(self, xs: Sequence[Array], layer: int, train: bool) -> list[Array]:
    if self.config.norm == 'lrn':
      lrn = self.config.lrn
      return [
          local_response_norm(
              x,
              size=lrn.size,
              k=lrn.k,
              alpha=lrn.alpha,
              beta=lrn.beta,
              alpha_over_n=lrn.alpha_over_n,
          )
          for x in xs
      ]
    if self.config.norm == 'batchnorm':
      # Batch statistics are per channel, so normalising the joined towers equals normalising each
      # tower on its own; joining is free with one tower per device.
      norm = self.norm1 if layer == 1 else self.norm2
      joined = jnp.concatenate(xs, axis=-1).astype(jnp.float32)
      y = norm(joined, use_running_average=not train).astype(xs[0].dtype)
      return jnp.split(y, len(xs), axis=-1)
    return list(xs)

  def __call__(
      self, images: Array, *, train: bool = False, dropout_rng: Array | None = None
  ) -> Array:
    """float32 logits for a batch of NHWC images."""
    (logits,) = self.features(images, train=train, dropout_rng=dropout_rng)['fc8']
    return logits.astype(jnp.float32)

  def features(
      self, images: Array, *, train: bool = False, dropout_rng: Array | None = None
  ) -> dict[str, list[Array]]:
    """Every layer's output as a list of per-tower arrays (fc8: one array, the logits).

    Keys: conv1..conv5 (after the activation), norm1, norm2, pool1, pool2, pool5, avgpool (with
    `adaptive_avg_pool`), fc6, fc7 (after activation and dropout) and fc8. Under `jax.jit` the
    unused ones cost nothing. Under the 2014 scheme (`fc_axis`) fc6 and fc7 hold this device's units
    for the whole gathered batch.
    """
    axis = self.config.tower_axis
    local_towers = self.config.towers
    if axis is not None:
      local_towers = self.config.towers // jax.lax.axis_size(axis)
    out = {}
    out['conv1'] = xs = self._activation(self.conv1([images] * local_towers))
    out['norm1'] = xs = self._normalize(xs, 1, train)
    out['pool1'] = xs = self._pool(xs)
    out['conv2'] = xs = self._activation(self.conv2(xs))
    out['norm2'] = xs = self._normalize(xs, 2, train)
    out['pool2'] = xs = self._pool(xs)
    out['conv3'] = xs = self._activation(self.conv3([cross_tower(xs, axis)] * local_towers))
    out['conv4'] = xs = self._activation(self.conv4(xs))
    out['conv5'] = xs = self._activation(self.conv5(xs))
    out['pool5'] = xs = self._pool(xs)
    if self.config.adaptive_avg_pool:
      size = self.config.adaptive_avg_pool
      out['avgpool'] = xs = [adaptive_avg_pool(x, size) for x in xs]

    flat = cross_tower(xs, axis)
    flat = flat.reshape(flat.shape[0], -1)
    fc_axis, fc_towers = axis, local_towers
    if self.config.fc_axis is not None:
      # The 2014 scheme: every device gets every example's conv features, computes its own slice
      # of the fc units for all of them, and keeps its own rows of the logits.
      fc_axis, fc_towers = self.config.fc_axis, 1
      flat = layers.gather_batch(flat, fc_axis)
    # Both placements drop fc6's outputs; the paper also drops fc7's, torchvision fc6's inputs.
    before = self.config.dropout_placement == 'before'
    if before:
      flat = self._dropout_features(flat, train, dropout_rng)
    xs = self.fc6([flat] * fc_towers)
    out['fc6'] = xs = self._dropout(self._activation(xs), train, dropout_rng, layer=6)
    xs = self._activation(self.fc7([cross_tower(xs, fc_axis)] * fc_towers))
    out['fc7'] = xs = xs if before else self._dropout(xs, train, dropout_rng, layer=7)
    out['fc8'] = self.fc8([cross_tower(xs, fc_axis)])
    if self.config.fc_axis is not None:
      out['fc8'] = [layers.local_rows(out['fc8'][0], self.config.fc_axis)]
    return out

  def _dropout_features(self, x: Array, train: bool, rng: Array | None) -> Array:
    """torchvision's dropout of fc6's inputs, the pooled features of both towers joined.

    Every tower, and every device of a tower or fc axis, reads these same features, so the mask
    depends only on the example and the feature: drawn for the global batch (under the 2014 scheme
    `x` already is the gathered batch), each device keeping its own rows.
    """
    rate = self._dropout_rate(train, rng)
    if not rate:
      return x
    shards, shard = 1, 0
    if self.config.batch_axis is not None and self.config.fc_axis is None:
      shards = jax.lax.axis_size(self.config.batch_axis)
      shard = jax.lax.axis_index(self.config.batch_axis)
    key = jax.random.fold_in(rng, 5)  # fc6 and fc7 fold in 6 and 7
    keep = _kept([key], rate, x.shape[0] * shards, x.shape[-1], rows=(shard * x.shape[0], len(x)))
    return _dropped(x, keep, rate)

  def _dropout(
      self, xs: Sequence[Array], train: bool, rng: Array | None, layer: int
  ) -> list[Array]:
    """Section 4.2: each unit is zeroed with probability `dropout_rate`, the rest are rescaled.

    One key per (layer, global tower index), so the towers drop different units; the mask is
    drawn for the global batch and each device keeps its rows, so a run split over devices
    drops exactly the units one device would.
    """
    rate = self._dropout_rate(train, rng)
    if not rate:
      return list(xs)
    if self.config.fc_axis is not None:
      # A slice of the units (within one tower, or whole towers on a one-device axis) for the
      # whole batch: draw every tower's mask as one device would, keep this device's columns.
      (x,) = xs
      per_tower = scaled(FC_UNITS, self.config.width) // self.config.towers
      keys = [
          jax.random.fold_in(jax.random.fold_in(rng, layer), t) for t in range(self.config.towers)
      ]
      first_unit = jax.lax.axis_index(self.config.fc_axis) * x.shape[-1]
      keep = _kept(
          keys, rate, len(x), per_tower, rows=(0, len(x)), columns=(first_unit, x.shape[-1])
      )
      return [_dropped(x, keep, rate)]
    first_tower, shards, shard = 0, 1, 0
    if self.config.tower_axis is not None:
      first_tower = jax.lax.axis_index(self.config.tower_axis) * len(xs)
    if self.config.batch_axis is not None:
      shards = jax.lax.axis_size(self.config.batch_axis)
      shard = jax.lax.axis_index(self.config.batch_axis)
    outputs = []
    for t, x in enumerate(xs):
      key = jax.random.fold_in(jax.random.fold_in(rng, layer), first_tower + t)
      keep = _kept([key], rate, len(x) * shards, x.shape[-1], rows=(shard * len(x), len(x)))
      outputs.append(_dropped(x, keep, rate))
    return outputs

  def _dropout_rate(self, train: bool, rng: Array | None) -> float:
    """The rate dropout applies now: 0 outside training or without dropout."""
    rate = self.config.dropout_rate
    if not train or rate == 0.0:
      return 0.0
    if rng is None:
      raise ValueError('AlexNet(train=True) needs a dropout_rng when dropout_rate > 0.')
    return rate


def _kept(
    keys: Sequence[Array],
    rate: float,
    global_rows: int,
    units: int,
    rows: tuple[Array | int, int],
    columns: tuple[Array | int, int] | None = None,
) -> Array:
  """This device's block of a keep-mask: each key draws the mask of its `units` (one tower's) for
  all `global_rows` examples of the global batch, side by side, and the device keeps `rows` and
  `columns` ((first, count) each), so that a run split over devices drops exactly the units one
  device would. The one draw of every dropout mask."""
  keep = jnp.concatenate(
      [jax.random.bernoulli(key, 1.0 - rate, (global_rows, units)) for key in keys], axis=1
  )
  keep = jax.lax.dynamic_slice_in_dim(keep, rows[0], rows[1], axis=0)
  if columns is not None:
    keep = jax.lax.dynamic_slice_in_dim(keep, columns[0], columns[1], axis=1)
  return keep


def _dropped(x: Array, keep: Array, rate: float) -> Array:
  """Units where `keep` is False zeroed, the others scaled by 1 / (1 - rate) (inverted dropout)."""
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def min_image_size(pool: str = 'overlapping', conv1_padding: int | str = 'ceil') -> int:
  size = 11
  while feature_sizes(size, pool, conv1_padding)['pool5'] < 1:
    size += 1
  return size


def count_params(model: nnx.Module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def layer_names(config: ModelConfig) -> tuple[str, ...]:
  """The layers of the network of `config` that hold parameters, in the order of its parameter
  tree: conv1-conv5, fc6-fc8, and norm1, norm2 with batch norm. Read off the config, not built:
  a name does not depend on the image size (tests check it against a built network)."""
  names = tuple(name for name, *_ in CONV_LAYERS) + ('fc6', 'fc7', 'fc8')
  return names + (('norm1', 'norm2') if config.norm == 'batchnorm' else ())
