"""The towers of section 3.2: a layer whose output channels belong to towers, where the towers meet,
and the one table of how every layer of the network is split.

Every layer keeps its kernel whole, as one array, and tower t owns the t-th contiguous slice of its
output channels (the layout of a grouped-convolution kernel, so weights import and export as-is).
Activations travel as a list of per-tower arrays; `cross_tower` is the only place the towers meet.
Inside `jax.shard_map` with one tower per device, a device holds its slice of each kernel, sees one
tower in its list, and `cross_tower` becomes an all-gather over the tower axis.

`SPLITS` says, for each layer, which of its axes is divided and by what; `sharding` maps those
divisions onto mesh axes for each strategy, and nothing else keeps a list of layers.
"""

import dataclasses
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from alexnet_jax import ops

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Split:
  """How one layer's parameters (and momentum) divide: always along the output-channel axis."""

  towers: bool  # output channels in per-tower slices (section 3.2); the `towers` strategy
  fc_units: bool = False  # a fully connected layer whose units the 2014 scheme spreads (`owt`)


# Section 3.2 and Figure 2: every layer but fc8 has one half per tower (fc8 reads both towers'
# fc7 and is whole); the batch-norm ablation's statistics sit at the LRN positions, per channel,
# so they follow their conv layer. Krizhevsky's 2014 "one weird trick" splits fc6's and fc7's units.
SPLITS = {
    'conv1': Split(towers=True),
    'norm1': Split(towers=True),
    'conv2': Split(towers=True),
    'norm2': Split(towers=True),
    'conv3': Split(towers=True),
    'conv4': Split(towers=True),
    'conv5': Split(towers=True),
    'fc6': Split(towers=True, fc_units=True),
    'fc7': Split(towers=True, fc_units=True),
    'fc8': Split(towers=False),
}


def cross_tower(xs: Sequence[Array], axis_name: str | None) -> Array:
  """Where the towers talk (into conv3, fc6, fc7 and fc8): every tower's maps, joined on channels.

  On one device the towers are list entries; with one tower per device (inside shard_map over
  `axis_name`), the local towers are all-gathered over that axis.
  """
  joined = jnp.concatenate(xs, axis=-1) if len(xs) > 1 else xs[0]
  if axis_name is not None:
    joined = jax.lax.all_gather(joined, axis_name, axis=joined.ndim - 1, tiled=True)
  return joined


def gather_batch(x: Array, axis_name: str) -> Array:
  """The 2014 scheme's exchange: every device gets every example's conv features over the axis."""
  return jax.lax.all_gather(x, axis_name, axis=0, tiled=True)


def local_rows(x: Array, axis_name: str) -> Array:
  """This device's rows of a batch made whole by `gather_batch` (the inverse selection).

  Under the 2014 scheme fc8 runs on the whole gathered batch; keeping only this device's rows of
  its logits makes the loss, the metrics and the labels per device again, as under every other
  strategy. The gradient of the fc units still reaches every example: the all-gather into fc8
  transposes to a sum over the devices.
  """
  rows = x.shape[0] // jax.lax.axis_size(axis_name)
  return jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(axis_name) * rows, rows)


class TowerLayer(nnx.Module):
  """One conv or dense layer whose output channels are split into contiguous per-tower slices."""

  def __init__(
      self,
      kernel_shape: tuple[int, ...],
      towers: int,
      *,
      std: float,
      bias: float,
      stride: int = 1,
      padding='SAME',
      dtype=jnp.float32,
      rngs: nnx.Rngs,
  ):
    self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), kernel_shape, jnp.float32))
    self.bias = nnx.Param(jnp.full((kernel_shape[-1],), bias, jnp.float32))
    self.towers = towers
    self.stride = stride
    self.padding = padding
    self.dtype = dtype

  def __call__(self, xs: Sequence[Array]) -> list[Array]:
    """Tower t of the output reads xs[t]; pass the same joined array to every tower to cross."""
    if len(xs) > 1 and all(x is xs[0] for x in xs[1:]):
      # Every tower reads the same input (conv1, conv3, fc6, fc7 on one device): one op over the
      # whole kernel, split afterwards, computes each tower's outputs exactly as its own op would,
      # without copying the kernel into per-tower slices (fc6's are 75 MB) and back for gradients.
      return jnp.split(self._apply(xs[0], self.kernel, self.bias), len(xs), axis=-1)
    per_tower = self.kernel.shape[-1] // len(xs)
    return [
        self._apply(
            x,
            self.kernel[..., t * per_tower : (t + 1) * per_tower],
            self.bias[t * per_tower : (t + 1) * per_tower],
        )
        for t, x in enumerate(xs)
    ]

  def _apply(self, x: Array, kernel: Array, bias: Array) -> Array:
    # Separate convolutions per tower, never `feature_group_count`: grouped convolutions are
    # slower on XLA:CPU (docs/benchmark_history.md), and XLA's SPMD partitioner all-gathers them
    # (openxla/xla#47945).
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if kernel.ndim == 2:
      y = x @ kernel
    else:
      y = jax.lax.conv_general_dilated(
          x,
          kernel,
          (self.stride, self.stride),
          self.padding,
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      )
    return ops.add_bias(y, bias.astype(self.dtype))
