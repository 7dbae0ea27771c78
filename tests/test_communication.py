"""The compiled training step communicates only what each strategy should (8 simulated devices)."""

import json

from flax import nnx
import jax
import pytest

from alexnet_jax.configs import alexnet
from alexnet_jax import models
from alexnet_jax import settings
from alexnet_jax.tools import communication
from tests import commands

HLO = """
ENTRY %main {
  %p = f32[8,16]{1,0} parameter(0)
  %all-reduce.1 = f32[8,16]{1,0} all-reduce(f32[8,16]{1,0} %p), replica_groups={{0,1}}
  %all-gather-start = (f32[4,16]{1,0}, f32[8,16]{1,0}) all-gather-start(f32[4,16]{1,0} %x)
  %all-gather-done = f32[8,16]{1,0} all-gather-done((f32[4,16]{1,0}, f32[8,16]{1,0}) %all-gather-start)
  %all-reduce.2 = (bf16[3]{0}, s32[]) all-reduce(bf16[3]{0} %a, s32[] %b), to_apply=%sum
  %reduce-scatter = f32[2,16]{1,0} reduce-scatter(f32[8,16]{1,0} %p), dimensions={0}
  %add = f32[8,16]{1,0} add(f32[8,16]{1,0} %p, f32[8,16]{1,0} %p)
}
"""


def test_parser_counts_each_collective_once_with_its_result_bytes():
  found = communication.collectives(HLO)
  assert [c.kind for c in found] == ['all-reduce', 'all-gather', 'all-reduce', 'reduce-scatter']
  assert communication.bytes_by_kind(found) == {
      'all-reduce': 8 * 16 * 4 + 3 * 2 + 4,
      'all-gather': 8 * 16 * 4,
      'reduce-scatter': 2 * 16 * 4,
      'all-to-all': 0,
      'collective-permute': 0,
  }


WIDTH, SIZE, BATCH, DATA = 0.25, 67, 16, 4


def config(strategy):
  c = alexnet.get_config()
  c.model.num_classes = 10
  c.model.width = WIDTH
  c.image_size = SIZE
  c.batch_size = BATCH
  c.strategy = strategy
  return c


def small_model():
  return models.AlexNet(models.ModelConfig(num_classes=10, width=WIDTH), SIZE, rngs=nnx.Rngs(0))


def parameter_bytes():
  return 4 * models.count_params(small_model())  # float32 parameters


@pytest.fixture(scope='module')
def audits():
  return {
      s: communication.audit(settings.from_config(config(s)), jax.devices())
      for s in ('data', 'towers', 'owt')
  }


@pytest.mark.slow
def test_data_parallelism_only_all_reduces_the_gradients(audits):
  found = audits['data']['bytes_by_kind']
  assert found['all-gather'] == found['all-to-all'] == found['collective-permute'] == 0
  assert found['reduce-scatter'] == 0
  # The gradients (one float per parameter), plus a few metric sums (loss, errors, count).
  assert 0 <= found['all-reduce'] - parameter_bytes() < 64
  assert audits['data']['param_bytes_per_device'] == parameter_bytes()


@pytest.mark.slow
def test_towers_exchange_maps_only_where_the_papers_gpus_did(audits):
  sizes = models.feature_sizes(SIZE)
  local = BATCH // DATA
  pool2, pool5 = sizes['pool2'], sizes['pool5']
  conv2, conv5 = models.scaled(256, WIDTH), models.scaled(256, WIDTH)
  fc = models.scaled(4096, WIDTH)
  gathered = sorted(
      c.shapes[0][1] for c in audits['towers']['collectives'] if c.kind == 'all-gather'
  )
  # Into conv3 (both towers' conv2 maps), into fc6 (conv5 maps), into fc7 and into fc8: nothing on
  # conv1, conv2, conv4 or conv5, and no other exchange of activations.
  assert gathered == sorted(
      [(local, pool2, pool2, conv2), (local, pool5, pool5, conv5), (local, fc), (local, fc)]
  )
  # Their transposes in the backward pass: each tower gets back the gradient of its half.
  scattered = sorted(
      c.shapes[0][1] for c in audits['towers']['collectives'] if c.kind == 'reduce-scatter'
  )
  assert scattered == sorted(s[:-1] + (s[-1] // 2,) for s in gathered)
  found = audits['towers']['bytes_by_kind']
  assert found['all-to-all'] == found['collective-permute'] == 0
  # All-reduces: each device's gradients over the data axis (its tower's half + fc8), plus metrics.
  assert 0 <= found['all-reduce'] - audits['towers']['param_bytes_per_device'] < 128


@pytest.mark.slow
def test_towers_hold_half_the_tower_layers(audits):
  model = small_model()
  fc8 = 4 * (model.fc8.kernel.size + model.fc8.bias.size)
  total = parameter_bytes()
  assert audits['towers']['param_bytes_per_device'] == (total - fc8) // 2 + fc8


@pytest.mark.slow
def test_owt_does_not_all_reduce_the_fully_connected_gradients(audits):
  model = small_model()
  fc67 = 4 * sum(x.size for layer in (model.fc6, model.fc7) for x in (layer.kernel, layer.bias))
  found = audits['owt']['bytes_by_kind']
  # Conv and fc8 gradients are all-reduced over all 8 devices; fc6 and fc7 gradients stay with
  # their units (a slice per device).
  assert 0 <= found['all-reduce'] - (parameter_bytes() - fc67) < 128
  assert audits['owt']['param_bytes_per_device'] == parameter_bytes() - fc67 + fc67 // 8
  # The exchange: every device gathers all examples' conv features before fc6.
  sizes = models.feature_sizes(SIZE)
  features = sizes['pool5'] ** 2 * models.scaled(256, WIDTH)
  gathered = [c.shapes[0][1] for c in audits['owt']['collectives'] if c.kind == 'all-gather']
  assert (BATCH, features) in gathered
  assert found['all-to-all'] == found['collective-permute'] == 0


def test_the_tables_run_is_the_papers_recipe_under_each_strategy():
  """`paper_run` builds the table's runs from the library's defaults (no recipe): the same
  network, optimiser, data sizes, mesh and seed as configs/alexnet.py's."""
  for strategy in ('data', 'towers', 'owt'):
    recipe = alexnet.get_config()
    recipe.strategy = strategy
    expected, run = settings.from_config(recipe), communication.paper_run(strategy)
    assert (run.model, run.optim, run.mesh, run.loop) == (
        expected.model,
        expected.optim,
        expected.mesh,
        expected.loop,
    )
    for field in ('dataset', 'image_size', 'batch_size'):
      assert getattr(run.data, field) == getattr(expected.data, field), field
  small = models.ModelConfig(num_classes=10, width=WIDTH)
  assert communication.paper_run('owt', small).model == small


# `python -m alexnet_jax.tools.communication` takes no flags: its table is the paper's model on 2,
# 4 and 8 devices, nine compiles (a minute on a CPU). This runs its `main` as the command does,
# with the small model and sizes above (`scaling_table`'s `model` and `data`) on 8 devices only:
# the programs `audits` compiled, found in the shared compilation cache when both run.
COMMAND = f"""
import functools
from alexnet_jax.data import pipeline
from alexnet_jax import models
from alexnet_jax.tools import communication
communication.scaling_table = functools.partial(
    communication.scaling_table,
    device_counts=(8,),
    model=models.ModelConfig(num_classes=10, width={WIDTH}),
    data=pipeline.DataConfig(dataset='imagenet2012', image_size={SIZE}, batch_size={BATCH}),
)
communication.main()
"""


@pytest.mark.slow
def test_the_command_prints_the_table_of_its_json(compilation_cache):
  out = commands.run_script(COMMAND, env=compilation_cache)
  assert out.returncode == 0, out.stderr[-3000:]
  # The rows as JSON on stderr, after any log lines.
  rows, _ = json.JSONDecoder().raw_decode(out.stderr[out.stderr.index('[\n {') :])
  assert [(r['devices'], r['strategy']) for r in rows] == [(8, 'data'), (8, 'towers'), (8, 'owt')]
  by = {r['strategy']: r for r in rows}
  # Independent of the compiled program: parameters and momentum, 4 bytes each, per device.
  model = small_model()
  fc8 = model.fc8.kernel.size + model.fc8.bias.size
  fc67 = sum(x.size for layer in (model.fc6, model.fc7) for x in (layer.kernel, layer.bias))
  total = models.count_params(model)
  held = {
      'data': total,
      'towers': (total - fc8) // 2 + fc8,  # each device: one tower's half, and fc8
      'owt': total - fc67 + fc67 // 8,  # each device: the convs, fc8 and an eighth of fc6, fc7
  }
  for strategy, params in held.items():
    # (plus a few scalars: the step, the plateau state)
    assert 0 <= by[strategy]['state_bytes_per_device'] - 8 * params < 64, strategy
  assert by['data']['communicated_vs_data'] == by['data']['state_vs_data'] == 1
  kinds = {r['strategy']: {k for k in communication.KINDS if k in r} for r in rows}
  assert kinds['data'] == {'all-reduce'}  # the gradients only
  assert {'all-reduce', 'all-gather'} <= kinds['towers'] and {'all-gather'} <= kinds['owt']
  for r in rows:
    sent = sum(r.get(kind, 0) for kind in communication.KINDS)
    assert r['communicated_bytes'] == sent
    assert r['communicated_vs_data'] == pytest.approx(sent / by['data']['communicated_bytes'])
  # The printed table: one line per row, in MiB and ratios to data, from the same numbers.
  table = [l for l in out.stdout.splitlines() if l.startswith('| 8 |')]
  assert len(table) == 3, out.stdout
  for line, r in zip(table, rows):
    cells = [c.strip() for c in line.strip('|').split('|')]
    mib = lambda n: f'{n / 2**20:,.1f}'
    assert cells == [
        '8',
        r['strategy'],
        mib(r.get('all-reduce', 0)),
        mib(r.get('all-gather', 0)),
        mib(r.get('reduce-scatter', 0)),
        mib(r['communicated_bytes']),
        f"{r['communicated_vs_data']:.2f}",
        mib(r['state_bytes_per_device']),
        f"{r['state_vs_data']:.2f}",
    ], line
