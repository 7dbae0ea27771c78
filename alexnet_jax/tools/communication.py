r"""What a strategy communicates, read from the compiled training step, and the scaling table.

    python -m alexnet_jax.tools.communication            # the README's table, on simulated CPU devices

compiles the paper's training step (batch 128, 224x224, 1000 classes) for 2, 4 and 8 devices under
each strategy and reports, from the compiled per-device program itself: the size of every
collective's result per step, by kind (what each device puts through collectives; the bytes on the
wire depend on the algorithm, e.g. a ring all-reduce sends about twice its size), the parameter and
optimiser bytes each device holds, and the ratio of both to pure data parallelism. Nothing is run, so simulated CPU devices give the same program
structure as GPUs would (XLA may pick other algorithms for the same collectives on other backends).
"""

import dataclasses
import json
import math
import re
import sys
from typing import Any

from flax import nnx
import jax
import numpy as np

from alexnet_jax.data import pipeline
from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import settings
from alexnet_jax import sharding
from alexnet_jax import steps
from alexnet_jax.system import runtime

KINDS = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')
_DTYPE_BYTES = {
    'f64': 8,
    'f32': 4,
    'bf16': 2,
    'f16': 2,
    's64': 8,
    'u64': 8,
    's32': 4,
    'u32': 4,
    's16': 2,
    'u16': 2,
    's8': 1,
    'u8': 1,
    'pred': 1,
}
_OP = re.compile(
    r'=\s*(?P<type>.+?)\s+(?P<kind>' + '|'.join(KINDS) + r')(?P<suffix>-start|-done)?\('
)
_ARRAY = re.compile(r'\b(?P<dtype>[a-z]+\d*)\[(?P<dims>[\d,]*)\]')


@dataclasses.dataclass(frozen=True)
class Collective:
  kind: str
  shapes: tuple[tuple[str, tuple[int, ...]], ...]  # (dtype, dims) of each result array

  @property
  def bytes(self) -> int:
    return sum(_DTYPE_BYTES.get(dtype, 4) * math.prod(dims) for dtype, dims in self.shapes)


def collectives(hlo_text: str) -> list[Collective]:
  """Every collective in a compiled HLO module, with the shapes of its results.

  Asynchronous pairs (`all-gather-start` / `-done`) count once, at their `-done`, whose result
  is the collective's output.
  """
  found = []
  for line in hlo_text.splitlines():
    match = _OP.search(line)
    if not match or match['suffix'] == '-start':
      continue
    shapes = tuple(
        (a['dtype'], tuple(int(d) for d in a['dims'].split(',') if d))
        for a in _ARRAY.finditer(match['type'])
    )
    found.append(Collective(match['kind'], shapes))
  return found


def bytes_by_kind(found: list[Collective]) -> dict[str, int]:
  return {kind: sum(c.bytes for c in found if c.kind == kind) for kind in KINDS}


def per_device_bytes(tree: Any) -> int:
  """Bytes of one device's shard of every array in `tree` (ShapeDtypeStructs with shardings)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return total


def compiled_train_step(run: settings.RunConfig, devices):
  """(compiled train step, abstract sharded train state) for `run` on `devices`, unrun."""
  layout = sharding.Layout.create(run.mesh, run.model.towers, devices)
  layout.check_batch_sizes(batch_size=run.data.batch_size)
  tx = optim.create_optimizer(run.optim, 1000)
  plateau = optim.create_plateau(run.optim)

  def make_model():
    return steps.create_model(run.model, run.data.image_size, run.loop.seed, **layout.model_axes())

  abstract = jax.eval_shape(lambda: steps.create_train_state(make_model(), tx, plateau, 0)[1])
  # The graph structure does not depend on parameter values: build it from an abstract model.
  graphdef = nnx.split(nnx.eval_shape(make_model), nnx.Param, ...)[0]
  shardings = layout.state_shardings(abstract)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )
  size, batch_size = run.data.image_size, run.data.batch_size
  batch = {
      'image': jax.ShapeDtypeStruct(
          (batch_size, size, size, 3), np.float32, sharding=layout.batch_sharding()
      ),
      'label': jax.ShapeDtypeStruct((batch_size,), np.int32, sharding=layout.batch_sharding()),
  }
  train_fn = steps.make_train_step(
      graphdef, tx, optim.learning_rate_schedule(run.optim, 1000), layout
  )
  return train_fn.lower(abstract, batch).compile(), abstract


def audit(run: settings.RunConfig, devices) -> dict[str, Any]:
  """The collectives and per-device state bytes of the compiled step of `run`."""
  compiled, abstract = compiled_train_step(run, devices)
  found = collectives(compiled.as_text())
  return {
      'collectives': found,
      'bytes_by_kind': bytes_by_kind(found),
      'param_bytes_per_device': per_device_bytes(abstract.params),
      'optimizer_bytes_per_device': per_device_bytes(abstract.opt_state),
  }


def paper_run(
    strategy: str,
    model: models.ModelConfig = models.ModelConfig(),
    data: pipeline.DataConfig | None = None,
) -> settings.RunConfig:
  """The paper's training run of `model` (the default: the paper's network) under `strategy`,
  from the library's typed defaults (those of configs/alexnet.py: tests/test_configs.py holds them
  equal); `data`: None, ImageNet at 224 pixels in batches of 128."""
  return settings.RunConfig(
      model=model,
      optim=optim.OptimConfig(),
      data=pipeline.DataConfig(dataset='imagenet2012') if data is None else data,
      mesh=sharding.MeshConfig(strategy=strategy),
      loop=settings.LoopConfig(),
      hparams={},
  )


def scaling_table(
    device_counts=(2, 4, 8),
    strategies=('data', 'towers', 'owt'),
    model: models.ModelConfig = models.ModelConfig(),
    data: pipeline.DataConfig | None = None,
) -> list[dict]:
  """A row per device count and strategy: what `model` (the default: the paper's network)
  communicates and holds per device, trained on `data`'s images and batches (None: the paper's,
  224 pixels in batches of 128; `paper_run`)."""
  rows = []
  for n in device_counts:
    baseline = None
    for strategy in strategies:
      result = audit(paper_run(strategy, model, data), jax.devices()[:n])
      sent = sum(result['bytes_by_kind'].values())
      held = result['param_bytes_per_device'] + result['optimizer_bytes_per_device']
      baseline = baseline or (sent, held)
      rows.append(
          {
              'devices': n,
              'strategy': strategy,
              **{k: v for k, v in result['bytes_by_kind'].items() if v},
              'communicated_bytes': sent,
              'state_bytes_per_device': held,
              'communicated_vs_data': sent / baseline[0],
              'state_vs_data': held / baseline[1],
          }
      )
  return rows


def _mb(n: float) -> str:
  return f'{n / 2**20:,.1f}'


def main() -> None:
  runtime.tune_process()
  jax.config.update('jax_num_cpu_devices', 8)
  rows = scaling_table()
  print(
      '| devices | strategy | all-reduce MiB | all-gather MiB | reduce-scatter MiB | '
      'collectives MiB / step | vs data | params+momentum MiB / device | vs data |'
  )
  print('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for r in rows:
    print(
        f"| {r['devices']} | {r['strategy']} | {_mb(r.get('all-reduce', 0))} | "
        f"{_mb(r.get('all-gather', 0))} | {_mb(r.get('reduce-scatter', 0))} | "
        f"{_mb(r['communicated_bytes'])} | {r['communicated_vs_data']:.2f} | "
        f"{_mb(r['state_bytes_per_device'])} | {r['state_vs_data']:.2f} |"
    )
  json.dump(rows, sys.stderr, indent=1)


if __name__ == '__main__':
  main()
