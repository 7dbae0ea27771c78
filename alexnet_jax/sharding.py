"""Where arrays live: the device mesh, the strategy, and the sharding of every array.

This module is the one place that decides placement. The model knows axis names only
(`ModelConfig.tower_axis`, `batch_axis`); the trainer asks a `Layout` for the mesh, for the
shardings of the train state and of batches, and for the distributed form of a step.

Mesh: two named axes, `data` and `model` (`config.mesh.data`, `config.mesh.model`; -1 takes the
devices left over; both -1: what the strategy needs). Strategies (`config.strategy`):

- `data`: data parallelism over every device (`model` axis of size 1). Parameters and optimiser
  state are replicated, batches are split along `data`, and `jax.jit` partitions the step; the
  towers' convolutions are separate ops, so no activation crosses a device and the gradient
  all-reduce is the only collective.
- `towers`: the paper's two-GPU split (section 3.2). The `model` axis has size 2 and holds one
  tower per device: each keeps its tower's slice of every conv and fc layer's kernels, biases and
  optimiser state (conv1, conv2, conv4, conv5 filters; half of conv3's, fc6's and fc7's units),
  and runs its tower's convolutions locally inside `jax.shard_map`. The towers exchange maps only
  where the paper's GPUs did: into conv3, fc6, fc7 and fc8 (an all-gather over `model`). fc8 is
  small and replicated. Combines with data parallelism on the `data` axis (8 devices = 4 x 2).
- `owt`: Krizhevsky's 2014 "one weird trick": the conv layers data-parallel over `data`, then
  every device gathers the whole batch's conv features and computes its slice of fc6's and fc7's
  units for all of it (fc8 is replicated), so the fc layers' gradients never cross devices.

Which axis of which layer the towers or the fc units divide is `layers.SPLITS`, the one table of
it; `Layout.param_spec` maps it onto the mesh.
"""

import dataclasses
import os
import queue
import socket
import threading
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from alexnet_jax.errors import ConfigError
from alexnet_jax import layers

DATA_AXIS = 'data'
MODEL_AXIS = 'model'
STRATEGIES = ('data', 'towers', 'owt')


# Environment variables by which JAX's cluster detection recognises a multi-process job
# (SLURM, Open MPI, a TPU pod on GKE).
_CLUSTER_MARKERS = ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE', 'TPU_WORKER_HOSTNAMES')
# JAX's own deadline for joining comes this much after ours, so that ours is the one that speaks.
_JAX_GRACE_S = 60


def initialize_processes(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    initialization_timeout: int = 300,
    heartbeat_timeout: int = 100,
) -> None:
  """Joins this process to a multi-process run with `jax.distributed.initialize`.

  Given a coordinator, uses it with `num_processes` and `process_id`; given nothing, lets JAX
  detect the cluster when the environment is one it knows (SLURM with several tasks, Open MPI,
  a TPU pod), and otherwise stays a single process. Call before anything touches a device. On
  CPUs the processes exchange data through gloo.

  No wait is unbounded. If not every process has joined within `initialization_timeout` seconds,
  a ConfigError says which one is missing and what to do; the process should then end, as the
  commands do (JAX itself aborts it a minute later). A process that sends no heartbeat for
  `heartbeat_timeout` seconds (killed, its host gone) counts as dead, and JAX's coordination
  service then aborts every other process with a message naming it: they may be waiting for it
  in a collective, which nothing else would end. (When process 0, the coordinator, dies, the
  others notice at once.)
  """
  explicit = coordinator_address is not None
  if not explicit:
    sizes = [os.environ[k] for k in _CLUSTER_MARKERS if k in os.environ]
    if not any(len(v.split(',')) > 1 or (v.isdigit() and int(v) > 1) for v in sizes):
      if num_processes not in (None, 1) or process_id not in (None, 0):
        # Alone, each such process would train by itself into the same workdir.
        raise ConfigError(
            f'--num_processes={num_processes} --process_id={process_id} without '
            '--coordinator_address, outside a cluster JAX detects (SLURM, Open MPI, a TPU pod): '
            'give every process the same --coordinator_address=HOST:PORT of process 0.'
        )
      return
  if explicit and (num_processes is None or process_id is None):
    raise ConfigError(
        '--coordinator_address needs --num_processes and --process_id too (this '
        "process' index, 0 to num_processes - 1), the same address everywhere."
    )
  if explicit and not 0 <= process_id < num_processes:  # JAX would raise a bare ValueError
    raise ConfigError(
        f'--process_id={process_id} with --num_processes={num_processes}: give each of the '
        'processes its own --process_id from 0 to num_processes - 1 (0 on the host of '
        '--coordinator_address), and --num_processes at least 1.'
    )
  for flag, seconds in (
      ('initialization_timeout', initialization_timeout),
      ('heartbeat_timeout', heartbeat_timeout),
  ):
    if not isinstance(seconds, int) or seconds <= 0:
      raise ConfigError(f'--{flag}={seconds!r}: give a positive whole number of seconds.')
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  # jax.distributed.initialize waits in C++ for every process and, past its deadline, aborts the
  # whole process with a message that names neither the missing process nor the fix. So it runs
  # in a thread, and this one keeps the earlier deadline.
  failed = []

  def join():
    try:
      jax.distributed.initialize(
          coordinator_address,
          num_processes,
          process_id,
          initialization_timeout=initialization_timeout + _JAX_GRACE_S,
          heartbeat_timeout_seconds=heartbeat_timeout,
      )
    except BaseException as e:  # noqa: BLE001  (raised again below, in the caller's thread)
      failed.append(e)

  thread = threading.Thread(target=join, name='jax.distributed.initialize', daemon=True)
  thread.start()
  thread.join(initialization_timeout)
  if thread.is_alive():
    jax.distributed.shutdown()  # the coordinator's own complaints come before the paragraph
    raise ConfigError(
        _not_joined(coordinator_address, num_processes, process_id, initialization_timeout)
    )
  if failed:
    raise failed[0]


def _not_joined(address: str | None, count: int | None, index: int | None, timeout: int) -> str:
  """What a process that waited `timeout` s for the others to join says, and what to do."""
  same = (
      f'the same --coordinator_address={address} and --num_processes={count}, each with its own '
      f'--process_id, within --initialization_timeout ({timeout} s) of each other'
  )
  if address is None:
    return (
        'The processes of the cluster JAX detected (SLURM, Open MPI or a TPU pod) did not all '
        f'join within {timeout} seconds. Check that every task started and can reach the first '
        'one; or name them yourself with --coordinator_address, --num_processes and --process_id.'
    )
  if index == 0:
    missing = (
        'process 1 did not join' if count == 2 else f'not all of processes 1 to {count - 1} joined'
    )
    return (
        f'Process 0 waited {timeout} seconds at the coordinator address {address}, and {missing} '
        f'(--num_processes={count}). Start every process with {same}. A process that started but '
        f'stopped says why in its own output; one that runs but never joined cannot reach '
        f'{address} from its host (a firewall, or a host name that means another machine there).'
    )
  if not _answers(address):
    return (
        f'Process {index} could not reach the coordinator at {address} within {timeout} seconds: '
        f'nothing answers there. Start process 0 (--process_id=0) on the host that address names, '
        f'with {same}; if it runs, check that {address} is reachable from this host (a firewall, '
        'or a host name that means another machine here).'
    )
  return (
      f'Process {index} reached the coordinator at {address}, but not all {count} processes '
      f'joined within {timeout} seconds. Start every process 0 to {count - 1} with {same}; one '
      'that started but stopped says why in its own output.'
  )


def _answers(address: str) -> bool:
  """Whether something accepts TCP connections at `address` (host:port)."""
  host, _, port = address.rpartition(':')
  try:
    with socket.create_connection((host.strip('[]'), int(port)), timeout=5):
      return True
  except (OSError, ValueError):
    return False


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """The strategy and the mesh's axis sizes (-1: inferred, see `mesh_shape`)."""

  # data: data parallel | towers: one tower per device, as the paper's two GPUs | owt: conv layers
  # data-parallel, fc layers model-parallel over all devices (Krizhevsky 2014).
  strategy: str = 'data'
  data: int = -1  # devices along the batch axis; -1: all that the model axis leaves
  model: int = -1  # devices along the model axis; -1: what the strategy needs (1, or 2 for towers)


def mesh_shape(mesh: MeshConfig, towers: int, device_count: int) -> tuple[int, int]:
  """(data, model) sizes, with -1 inferred; ConfigError if they do not fit the devices or the
  model's `towers`."""
  data, model = mesh.data, mesh.model
  strategy = mesh.strategy
  if strategy not in STRATEGIES:
    raise ConfigError(f'strategy={strategy!r} is not supported; choose one of {STRATEGIES}.')
  if strategy == 'towers' and device_count % 2:
    raise ConfigError(
        f"strategy=towers puts each of the paper's two towers on its own device, but there "
        f'{"is" if device_count == 1 else "are"} {device_count} device(s). Use an even number of '
        'devices (on a CPU, simulate them with XLA_FLAGS=--xla_force_host_platform_device_count=8)'
        ', or --config.strategy=data.'
    )
  if data == -1 and model == -1:
    model = 2 if strategy == 'towers' else 1
  if -1 in (data, model):
    known = model if data == -1 else data
    if known <= 0 or device_count % known:
      raise ConfigError(
          f'mesh: {known} does not divide the {device_count} devices. Choose mesh '
          f'sizes whose product is {device_count}.'
      )
    data, model = (device_count // known, known) if data == -1 else (known, device_count // known)
  if data <= 0 or model <= 0 or data * model != device_count:
    raise ConfigError(
        f'mesh.data={data} x mesh.model={model} does not fit the {device_count} devices here. '
        f'Choose sizes whose product is {device_count}, or -1 for one axis to take the rest '
        '(e.g. --config.mesh.data=-1).'
    )
  if strategy in ('data', 'owt') and model != 1:
    raise ConfigError(
        f'strategy={strategy} spreads its layers over the data axis, but mesh.model='
        f'{model}. Set --config.mesh.model=1, or --config.strategy=towers.'
    )
  if strategy == 'towers':
    if model != 2:
      raise ConfigError(
          f"strategy=towers puts one of the paper's two towers on each device of "
          f'the model axis, so mesh.model must be 2, not {model}.'
      )
    if towers != 2:
      raise ConfigError(
          'strategy=towers needs the two-tower model; this config has '
          f'model.towers={towers}. Use --config.strategy=data.'
      )
  return data, model


@dataclasses.dataclass(frozen=True)
class Layout:
  """A strategy on a mesh: everything the trainer needs to place arrays and distribute steps."""

  strategy: str
  mesh: jax.sharding.Mesh

  @classmethod
  def create(cls, mesh: MeshConfig, towers: int = 2, devices=None) -> 'Layout':
    """`mesh` on `devices` (default: all) for a model of `towers` towers."""
    devices = jax.devices() if devices is None else devices
    data, model = mesh_shape(mesh, towers, len(devices))
    jax_mesh = jax.make_mesh(
        (data, model),
        (DATA_AXIS, MODEL_AXIS),
        axis_types=(jax.sharding.AxisType.Explicit,) * 2,
        devices=devices,
    )
    return cls(mesh.strategy, jax_mesh)

  @property
  def data_size(self) -> int:
    return self.mesh.shape[DATA_AXIS]

  def model_axes(self) -> dict[str, str | None]:
    """The axis names the model must know about (ModelConfig fields) under this strategy."""
    if self.strategy == 'towers':
      return {'tower_axis': MODEL_AXIS, 'batch_axis': DATA_AXIS, 'fc_axis': None}
    if self.strategy == 'owt':
      return {'tower_axis': None, 'batch_axis': DATA_AXIS, 'fc_axis': DATA_AXIS}
    return {'tower_axis': None, 'batch_axis': None, 'fc_axis': None}

  def check_batch_sizes(self, **sizes: int) -> None:
    """ConfigError unless every size (e.g. batch_size=128) splits over the data axis."""
    for field, size in sizes.items():
      if size <= 0 or size % self.data_size or size % jax.process_count():
        raise ConfigError(
            f'{field}={size} does not split evenly over the {self.data_size} devices of the data '
            f'axis ({jax.process_count()} process(es)). Use a multiple of {self.data_size}, e.g. '
            f'--config.{field}={max(self.data_size, size // self.data_size * self.data_size)}, '
            'or run on fewer devices (JAX_PLATFORMS=cpu, or CUDA_VISIBLE_DEVICES).'
        )

  # --- Shardings ---

  def param_spec(self, path, leaf) -> P:
    """The mesh axis that divides a parameter's output-channel (last) axis, from `layers.SPLITS`:
    `towers` puts each tower's slice on its own device of `model`; `owt` spreads fc6's and fc7's
    units over `data`; everything else is replicated."""
    split = layers.SPLITS.get(getattr(path[0], 'key', None))
    axis = None
    if split is not None and self.strategy == 'towers' and split.towers:
      axis = MODEL_AXIS
    if split is not None and self.strategy == 'owt' and split.fc_units:
      axis = DATA_AXIS
    return P() if axis is None else P(*([None] * (np.ndim(leaf) - 1)), axis)

  def param_specs(self, params: Any) -> Any:
    return jax.tree_util.tree_map_with_path(self.param_spec, params)

  def state_shardings(self, state: Any) -> Any:
    """Shardings for a TrainState: parameters, batch statistics and every optimiser-state
    subtree shaped like the parameters follow `param_spec`; everything else is replicated."""
    params_tree = jax.tree.structure(state.params)
    named = lambda spec: NamedSharding(self.mesh, spec)
    param_shardings = jax.tree.map(named, self.param_specs(state.params))

    def opt_leaf(subtree):
      if jax.tree.structure(subtree) == params_tree:
        return param_shardings
      return jax.tree.map(lambda _: named(P()), subtree)

    return state.replace(
        step=named(P()),
        rng=named(P()),
        plateau=jax.tree.map(lambda _: named(P()), state.plateau),
        params=param_shardings,
        batch_stats=jax.tree.map(named, self.param_specs(state.batch_stats)),
        opt_state=jax.tree.map(
            opt_leaf, state.opt_state, is_leaf=lambda x: jax.tree.structure(x) == params_tree
        ),
    )

  def place_state(self, state: Any) -> Any:
    return jax.device_put(state, self.state_shardings(state))

  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P(DATA_AXIS))

  def global_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Assembles one global batch from this process' rows (works for one process too)."""
    sharding = self.batch_sharding()
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}

  # --- Distributed steps ---

  def distribute(
      self, per_shard: Callable, params: Any, batch_stats: Any, *, grads: bool
  ) -> Callable:
    """The step function `per_shard(params, batch_stats, batch, rng, loss_scale)` under this
    strategy. It returns (metric sums, new batch_stats[, grads]); `loss_scale` is the factor that
    turns its local mean loss into its share of the global mean.

    `data`: called once on global arrays under jit (loss_scale 1). `towers` and `owt`: called per
    device inside shard_map, with loss_scale 1 / devices; each device's metric sums are those of
    its rows of the batch (under `owt` the model gathers the batch for fc6 and fc7 and hands back
    this device's rows of the logits), so they are added up over `data`, and the two towers'
    equal copies averaged over `model`. Gradients of parameters replicated over an axis are summed
    over it by shard_map's autodiff.
    """
    if self.strategy == 'data':
      return undistributed(per_shard)
    shards = self.mesh.shape[DATA_AXIS] * self.mesh.shape[MODEL_AXIS]
    param_specs, stats_specs = self.param_specs(params), self.param_specs(batch_stats)

    def total(value):
      # Add up the data shards' sums; average copies of the same sum.
      varying = jax.typeof(value).manual_axis_type.varying
      for axis in (DATA_AXIS, MODEL_AXIS):
        if axis in varying:
          value = (jax.lax.psum if axis == DATA_AXIS else jax.lax.pmean)(value, axis)
      return value

    def body(p, s, b, r):
      out = per_shard(p, s, b, r, 1.0 / shards)
      return ({k: total(v) for k, v in out[0].items()},) + tuple(out[1:])

    out_specs = (P(), stats_specs) + ((param_specs,) if grads else ())
    return jax.shard_map(
        body,
        mesh=self.mesh,
        in_specs=(param_specs, stats_specs, P(DATA_AXIS), P()),
        out_specs=out_specs,
    )


def undistributed(per_shard: Callable) -> Callable:
  """`per_shard` as one computation on global arrays (one device, or `data` under jit)."""
  return lambda p, s, b, r: per_shard(p, s, b, r, 1.0)


def prefetch_to_devices(
    batches: Iterable[tuple[Any, dict[str, np.ndarray]]],
    layout: Layout,
    size: int,
    put: Callable[[dict[str, np.ndarray]], dict] | None = None,
) -> Iterator[tuple[Any, dict]]:
  """Keeps `size` batches on their way to the devices while the current step runs.

  Items are (tag, batch) pairs; the tag (the data iterator's state after this batch) travels
  with its batch so a checkpoint records exactly what has been consumed, not what was prefetched.
  A background thread pulls the host batches and starts their transfers (`layout.global_batch`),
  so waiting for the input pipeline and copying to the devices overlap the step and the loop's
  own Python work instead of happening when the loop asks for the next batch. Its errors are
  raised here, in the loop; it stops after at most one more batch once the loop stops. `put`
  replaces `layout.global_batch` (members trained together: their stacked batches on one device).
  """
  put_batch = put or layout.global_batch
  ready = queue.Queue(maxsize=max(size, 1))
  stop = threading.Event()
  end = object()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        ready.put(item, timeout=0.05)
        return True
      except queue.Full:
        pass
    return False

  def produce():
    try:
      for tag, batch in batches:
        if not put((tag, put_batch(batch))):
          return
      put(end)
    except BaseException as e:  # noqa: BLE001  (re-raised in the consumer)
      put(_Failure(e))

  thread = threading.Thread(target=produce, name='prefetch_to_devices', daemon=True)
  thread.start()
  try:
    while True:
      item = ready.get()
      if item is end:
        return
      if isinstance(item, _Failure):
        raise item.error
      yield item
  finally:
    stop.set()
    thread.join(timeout=60)


@dataclasses.dataclass(frozen=True)
class _Failure:
  error: BaseException
