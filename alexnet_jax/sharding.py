"""Where arrays live: the device mesh and the sharding of parameters, optimiser state and batches.

This module is the one place that decides placement. The trainer asks it for a mesh, for the
sharding of the train state and of a batch, and for global arrays built from process-local data.
Today every strategy is data parallelism over a one-axis mesh named `data`: parameters and
optimiser state are replicated, batches are split along their first axis, and XLA inserts the
gradient all-reduce. The model never sees a device count, only axis names.
"""

import collections
from typing import Any, Iterable, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from alexnet_jax.errors import ConfigError

DATA_AXIS = 'data'


def make_mesh() -> jax.sharding.Mesh:
  """A mesh over every device of every process, data parallel."""
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Explicit,))


def check_batch_sizes(config, mesh: jax.sharding.Mesh) -> None:
  data = mesh.shape[DATA_AXIS]
  for field in ('batch_size', 'eval_batch_size'):
    size = config[field]
    if size <= 0 or size % data or size % jax.process_count():
      raise ConfigError(
          f'{field}={size} does not split evenly over the {data} devices of the data axis '
          f'({jax.process_count()} process(es)). Use a multiple of {data}, e.g. '
          f'--config.{field}={max(data, size // data * data)}, or run on fewer devices '
          '(JAX_PLATFORMS=cpu, or CUDA_VISIBLE_DEVICES).')


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def state_sharding(mesh: jax.sharding.Mesh, state: Any) -> Any:
  """Sharding of every leaf of the train state: replicated under data parallelism."""
  return jax.tree.map(lambda _: replicated(mesh), state)


def global_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Assembles one global batch from this process' rows (works for one process too)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def prefetch_to_devices(batches: Iterable[tuple[Any, dict[str, np.ndarray]]],
                        mesh: jax.sharding.Mesh, size: int) -> Iterator[tuple[Any, dict]]:
  """Keeps `size` batches in flight to the devices while the current step runs.

  Items are (tag, batch) pairs; the tag (the data iterator's state after this batch) travels
  with its batch so a checkpoint records exactly what has been consumed, not what was prefetched.
  """
  queue = collections.deque()
  iterator = iter(batches)
  def enqueue(n):
    for tag, batch in iterator:
      queue.append((tag, global_batch(batch, mesh)))
      if len(queue) >= n:
        return
  enqueue(max(size, 1))
  while queue:
    yield queue.popleft()
    enqueue(max(size, 1))
