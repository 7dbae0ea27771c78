"""Fine-tuning: a tiny run on the built-in data, fine-tuned to a three-class folder dataset with
conv1 and conv2 frozen; the optimiser's lr_mult and freezing against plain SGD in numpy; what the
loading takes and leaves, and the errors for sources that cannot work.

The references are the source run's own checkpoint (frozen layers must equal it bit for bit), the
fine-tuned config's fresh initialisation (fc8 must have moved from it) and the momentum rule
written out by hand.
"""

import dataclasses
import importlib.util
import os
import sys
import types

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from PIL import Image, ImageDraw
import pytest

import alexnet_jax.configs
import alexnet_jax.trained
from alexnet_jax.configs import alexnet
from alexnet_jax.errors import ConfigError
from alexnet_jax import finetune
from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import settings
from alexnet_jax import steps
from alexnet_jax.tools import prepare
from alexnet_jax import train
from alexnet_jax.trained import inference
from tests import commands

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')
LAYERS = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8')
FROZEN = ('conv1', 'conv2')


def checkout_config(name: str):
  """This checkout's configs/<name>.py, loaded from its file as a module of its own (the recipes it
  imports come from the installed alexnet_jax.configs). Nothing global changes: neither
  alexnet_jax.configs' path nor sys.modules, so no other test sees this one's import."""
  spec = importlib.util.spec_from_file_location(
      f'checkout_{name}', os.path.join(CONFIGS, name + '.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _bytes(tree) -> list[bytes]:
  return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def _tiny_loop(config: ml_collections.ConfigDict) -> None:
  config.num_train_steps = 2
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 2
  config.batch_size, config.eval_batch_size = 16, 64
  config.final_eval_crops = 1
  config.profile_steps = 0


@pytest.fixture(scope='module')
def source(tiny_config, tmp_path_factory):
  """A tiny run on the built-in dataset's 10 classes: the run to fine-tune."""
  workdir = str(tmp_path_factory.mktemp('source'))
  config = tiny_config()
  _tiny_loop(config)
  train.train_and_evaluate(config, workdir, jax.devices()[:1])
  return workdir


@pytest.fixture(scope='module')
def three_shapes(tmp_path_factory):
  """A folder dataset of three classes (a red disk, a green square, a blue bar on grey, ten
  images each at jittered places), prepared as `prepare --folder` does."""
  root = tmp_path_factory.mktemp('three_shapes')
  rng = np.random.default_rng(0)
  for name, colour in (('disk', (220, 40, 40)), ('square', (40, 200, 60)), ('bar', (40, 60, 220))):
    os.makedirs(root / 'images' / name)
    for i in range(10):
      image = Image.new('RGB', (96, 96), (128, 128, 128))
      draw = ImageDraw.Draw(image)
      x, y = rng.integers(10, 50, size=2)
      box = {'disk': (x, y, x + 36, y + 36), 'square': (x, y, x + 30, y + 30)}
      if name == 'disk':
        draw.ellipse(box['disk'], fill=colour)
      elif name == 'square':
        draw.rectangle(box['square'], fill=colour)
      else:
        draw.rectangle((4, y, 92, y + 12), fill=colour)
      image.save(root / 'images' / name / f'{i:02d}.png')
  data_dir = str(root / 'tfds')
  report = prepare.prepare_images(
      folder=str(root / 'images'), name='three_shapes', resize=0, data_dir=data_dir
  )
  assert report['num_classes'] == 3
  return data_dir


@pytest.mark.slow
def test_finetuning_a_tiny_run_to_three_classes_with_conv1_and_conv2_frozen(
    source, three_shapes, tmp_path, one_device
):
  folder = checkout_config('finetune_folder')
  built = folder.get_config(f'dataset=three_shapes,num_classes=3,init_from={source}')
  assert built.model.width == 1.0  # the recipe names init_from and reads nothing
  workdir = str(tmp_path / 'finetuned')
  # What the run does when it starts (train.run_settings).
  config, taken = finetune.take_network(built, workdir)
  source_config, _ = inference.stored_config(source)
  # The config took the source's network and input, so every layer but fc8 fits.
  assert config.model.width == source_config.model.width == 0.25
  assert (config.image_size, config.model.num_classes) == (source_config.image_size, 3)
  assert config.augment.std_rgb == source_config.augment.std_rgb  # its pixel scaling
  assert 'model.towers' in taken and 'model.num_classes' not in taken
  for c in (built, config):
    c.data_dir = three_shapes
    c.optim.freeze = FROZEN
    _tiny_loop(c)
  train.train_and_evaluate(built, workdir, one_device)
  assert inference.load(workdir).run.model == settings.model_config(config)  # the one it took

  before = inference.load(source).params
  after = inference.load(workdir).params
  for layer in FROZEN:
    assert _bytes(after[layer]) == _bytes(before[layer]), layer
  for layer in LAYERS[2:-1]:  # loaded, not frozen: trained further
    assert _bytes(after[layer]) != _bytes(before[layer]), layer
  run = settings.from_config(config)
  fresh = nnx.to_pure_dict(
      nnx.state(steps.create_model(run.model, run.data.image_size, run.loop.seed), nnx.Param)
  )
  assert after['fc8']['kernel'].shape[-1] == 3
  assert fresh['fc8']['kernel'].shape == after['fc8']['kernel'].shape
  assert _bytes(after['fc8']) != _bytes(fresh['fc8'])  # trained from its fresh start

  report = finetune.recorded_report(workdir)
  assert report.source == source and report.loaded == LAYERS[:-1]
  assert list(report.reinitialised) == ['fc8'] and report.new_layers == ('fc8',)
  assert report.reinitialised['fc8'] == (
      'bias (10,) in the source vs (3,) here; kernel (1024, 10) in the source vs (1024, 3) here'
  )
  assert report.network == taken

  # Resumed: init_from is not read again (here it no longer exists), the split is the recorded one,
  # and the network is the one the run's checkpoint recorded.
  built.init_from = str(tmp_path / 'moved_away')
  built.num_train_steps = 3
  state, _ = train.train_and_evaluate(built, workdir, one_device)
  assert int(state.step) == 3
  assert _bytes(state.params['conv1']) == _bytes(before['conv1'])
  assert finetune.recorded_report(workdir) == report


def test_lr_mult_and_freeze_match_plain_sgd_in_numpy():
  """Section 5's rule per layer, with Caffe's lr_mult on the new layer:
  v <- 0.9 v - m eps (g + 0.01 w);  w <- w + v,  m = 10 for fc8, 1 otherwise; conv1 frozen."""
  rng = np.random.default_rng(1)
  shapes = {'conv1': (3, 2), 'fc7': (2, 4), 'fc8': (4, 3)}

  def tree():
    return {
        layer: {'kernel': rng.normal(size=s), 'bias': rng.normal(size=s[-1:])}
        for layer, s in shapes.items()
    }

  params, grads = tree(), [tree() for _ in range(3)]
  config = optim.OptimConfig(
      learning_rate=0.1, weight_decay=0.01, freeze='conv1', new_layer_lr_mult=10.0
  )
  tx = optim.create_optimizer(config, num_train_steps=3, new_layers=('fc8',))
  as_jax = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), t)
  p = as_jax(params)
  state = tx.init(p)
  w = jax.tree.map(lambda x: np.asarray(x, np.float32).astype(np.float64), p)
  v = jax.tree.map(np.zeros_like, w)
  for g in grads:
    updates, state = tx.update(as_jax(g), state, p, plateau_scale=jnp.asarray(1.0))
    p = optax.apply_updates(p, updates)
    for layer in ('fc7', 'fc8'):
      m = 10.0 if layer == 'fc8' else 1.0
      for name in ('kernel', 'bias'):
        decay = 0.01 * w[layer][name] if name == 'kernel' else 0.0
        v[layer][name] = 0.9 * v[layer][name] - m * 0.1 * (g[layer][name] + decay)
        w[layer][name] = w[layer][name] + v[layer][name]
  for layer in ('fc7', 'fc8'):
    for name in ('kernel', 'bias'):
      np.testing.assert_allclose(np.asarray(p[layer][name]), w[layer][name], rtol=2e-5, atol=1e-6)
  assert _bytes(p['conv1']) == _bytes(as_jax(params)['conv1'])  # decay and momentum included

  # The state's structure is the config's: a checkpoint restores without knowing the new layers.
  alone = optim.create_optimizer(config, num_train_steps=3)
  assert jax.tree.structure(alone.init(p)) == jax.tree.structure(tx.init(p))
  with pytest.raises(ValueError, match=r"names \['conv9'\].*its layers are \['conv1', 'fc7'"):
    optim.create_optimizer(optim.OptimConfig(freeze=('conv9',)), 3).init(p)


def test_layer_lists_and_the_checks_on_freeze_and_lr_mult(tiny_config):
  # A Python string, a tuple, and the command line's tuple of one comma string.
  for value in ('conv1, conv2', ('conv1', 'conv2'), ('conv1,conv2',)):
    assert optim.layer_list(value) == FROZEN
  config = tiny_config()
  config.optim.freeze = ('conv1,conv2',)
  run = settings.from_config(config)
  assert run.optim.freeze == tuple(run.source['optim']['freeze']) == FROZEN  # one spelling stored
  assert models.layer_names(settings.model_config(config)) == LAYERS
  config.model.norm = 'batchnorm'
  assert models.layer_names(settings.model_config(config)) == LAYERS + ('norm1', 'norm2')

  for field, value, phrase in (
      ('freeze', ('conv9',), r"names \['conv9'\], which this model does not have.*'fc8'"),
      ('freeze', (','.join(LAYERS),), 'freezes every layer'),
      ('new_layer_lr_mult', -1.0, 'must be a number >= 0'),
      ('new_layer_lr_mult', float('nan'), 'must be a number >= 0'),
  ):
    config = tiny_config()
    config.optim[field] = value
    with pytest.raises(ConfigError, match=phrase):
      settings.validate(config)


@pytest.mark.parametrize(
    'fields,image_size',
    [
        ({}, 67),
        ({'norm': 'batchnorm', 'towers': 1}, 67),
        ({'conv1_padding': 0}, 67),  # once refused: the names were read off a build at 63 pixels
        (dataclasses.asdict(models.TORCHVISION), 224),
    ],
)
def test_layer_names_are_those_of_the_built_network(fields, image_size):
  """models.layer_names reads the names off the config; the reference is a network built (shapes
  only) at the run's own image size."""
  config = dataclasses.replace(models.ModelConfig(width=0.25), **fields)
  config = dataclasses.replace(config, lrn=models.LRNConfig(), width=0.25)
  built = nnx.eval_shape(lambda: models.AlexNet(config, image_size, rngs=nnx.Rngs(0)))
  assert models.layer_names(config) == tuple(nnx.to_pure_dict(nnx.state(built, nnx.Param)))


@pytest.mark.slow
def test_a_frozen_conv1_without_padding_trains_from_the_command_line(tiny_data_dir, tmp_path):
  """conv1_padding=0 at 67 pixels builds (pool5 is 1x1); freezing conv1 checked the names on a
  network built at the paper padding's smallest size, which this padding cannot take, and ended
  in a traceback."""
  out = commands.run_module(
      'alexnet_jax.main',
      '--config=configs/quickstart.py:tiny',
      f'--workdir={tmp_path / "run"}',
      f'--config.data_dir={tiny_data_dir}',
      '--config.model.conv1_padding=0',
      '--config.optim.freeze=conv1',
      '--config.num_train_steps=2',
      '--config.eval_every_steps=2',
      '--config.profile_steps=0',
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'Traceback' not in out.stderr
  trained = inference.load(str(tmp_path / 'run'))
  assert trained.run.model.conv1_padding == 0 and trained.run.optim.freeze == ('conv1',)


def test_loading_a_checkout_config_changes_nothing_global():
  path = list(alexnet_jax.configs.__path__)
  checkout_config('ifood2019')
  assert list(alexnet_jax.configs.__path__) == path


def _layer(shape, value=0.0):
  return {
      'kernel': np.full(shape, value, np.float32),
      'bias': np.full(shape[-1:], value, np.float32),
  }


def test_merge_takes_whole_layers_that_fit_with_their_batch_norm_statistics():
  fresh_params = {'conv1': _layer((3, 4)), 'norm1': _layer((4,)), 'fc8': _layer((4, 3))}
  fresh_stats = {'norm1': {'mean': np.zeros(4, np.float32), 'var': np.ones(4, np.float32)}}
  source_params = {
      'conv1': _layer((3, 4), 1.0),
      'norm1': _layer((4,), 2.0),
      'fc8': _layer((4, 10), 3.0),
      'fc9': _layer((10, 10), 4.0),
  }
  source_stats = {'norm1': {'mean': np.full(4, 5.0), 'var': np.full(4, 6.0)}}
  params, stats, report = finetune.take_fitting_layers(
      fresh_params, fresh_stats, source_params, source_stats, 'src'
  )
  assert report.loaded == ('conv1', 'norm1') and report.unused == ('fc9',)
  assert report.reinitialised == {
      'fc8': 'bias (10,) in the source vs (3,) here; kernel (4, 10) in the source vs (4, 3) here'
  }
  assert float(params['conv1']['kernel'][0, 0]) == 1.0 and float(params['fc8']['bias'][0]) == 0.0
  assert float(stats['norm1']['var'][0]) == 6.0 and stats['norm1']['var'].dtype == jnp.float32
  assert str(report).splitlines() == [
      'init_from=src:',
      '  loaded: conv1, norm1',
      f'  re-initialised: fc8 ({report.reinitialised["fc8"]})',
      '  in the source, not in this model: fc9',
  ]
  assert finetune.Report.from_json(report.to_json()) == report

  # A batch-norm layer whose statistics the source lacks (a source trained with LRN) is new.
  _, stats, report = finetune.take_fitting_layers(
      fresh_params, fresh_stats, source_params, {}, 'src'
  )
  assert report.reinitialised['norm1'] == 'its batch-norm statistics are missing in the source'
  assert float(stats['norm1']['var'][0]) == 1.0
  no_fc8 = {k: v for k, v in source_params.items() if k != 'fc8'}
  _, _, report = finetune.take_fitting_layers(
      fresh_params, fresh_stats, no_fc8, source_stats, 'src'
  )
  assert report.reinitialised == {'fc8': 'its parameters are missing in the source'}


def test_sources_that_cannot_work_are_errors_that_say_why(tmp_path, monkeypatch):
  fresh = {'conv1': _layer((3, 4)), 'fc8': _layer((4, 3))}
  with pytest.raises(ConfigError, match='does not exist. Pass the --workdir of a trained run'):
    finetune.init_from(fresh, {}, str(tmp_path / 'nowhere'))
  os.makedirs(tmp_path / 'empty_run')
  with pytest.raises(ConfigError, match='empty_run.*holds no checkpoint'):
    finetune.init_from(fresh, {}, str(tmp_path / 'empty_run'))

  # A weights file goes to weights.read (faked here); nothing of it fits: another architecture.
  fake = types.ModuleType('alexnet_jax.trained.weights')
  fake.read = lambda path: {'conv1': _layer((11, 4)), 'fc8': _layer((4, 1000))}
  monkeypatch.setitem(sys.modules, 'alexnet_jax.trained.weights', fake)
  monkeypatch.setattr(alexnet_jax.trained, 'weights', fake, raising=False)
  (tmp_path / 'other.pth').write_bytes(b'weights')
  with pytest.raises(
      ConfigError,
      match=r'none of its layers fits.*conv1: kernel \(11, 4\) in the source vs \(3, 4\)',
  ):
    finetune.init_from(fresh, {}, str(tmp_path / 'other.pth'))


def test_fine_tuning_configs(tmp_path):
  ifood = checkout_config('ifood2019').get_config()
  paper = settings.from_config(alexnet.get_config())
  run = settings.from_config(ifood)
  assert (run.data.dataset, run.model.num_classes, run.init_from) == ('ifood2019', 251, None)
  assert run.optim.learning_rate == paper.optim.learning_rate / 10
  assert run.optim.new_layer_lr_mult == 10 and run.loop.num_epochs < paper.loop.num_epochs
  # From a weights file the network stays the config's (from a workdir: the end-to-end test).
  assert checkout_config('ifood2019').get_config('init_from=x.pth').model.width == 1.0
  with pytest.raises(ValueError, match='needs dataset=NAME,num_classes=N'):
    checkout_config('finetune_folder').get_config()
  # A recipe names init_from and reads nothing: a directory that holds no run still builds (the
  # run says so when it starts), and only the trainer takes a network (`finetune.take_network`).
  folder = checkout_config('finetune_folder')
  config = folder.get_config(f'dataset=x,num_classes=3,init_from={tmp_path}')
  assert config.init_from == str(tmp_path) and config.model.width == 1.0
  (tmp_path / 'weights.pth').write_bytes(b'weights')
  for init_from in (None, str(tmp_path / 'weights.pth')):  # no source, or one without a config
    config.init_from = init_from
    assert finetune.take_network(config, str(tmp_path / 'run')) == (config, ())
  config.init_from = str(tmp_path)
  with pytest.raises(ConfigError, match='holds no checkpoint'):
    finetune.take_network(config, str(tmp_path / 'run'))


def test_records_made_before_the_fine_tuning_fields_are_the_same_run(tiny_config):
  """A record lacks the fields added after it was made: it ran with their defaults, so a config at
  those defaults is the same run, and one away from them differs (named at the default)."""
  config = tiny_config()
  now = settings.identity(config)
  added = ('init_from', 'optim.freeze', 'optim.new_layer_lr_mult')
  before = {k: v for k, v in now.items() if k not in added}
  assert settings.differences(before, now) == []
  config.optim.new_layer_lr_mult = 10.0
  assert settings.differences(before, settings.identity(config)) == [
      'optim.new_layer_lr_mult: 1.0 there, 10.0 now'
  ]
  # A field the record has and the config no longer has (removed by an upgrade) is not compared.
  assert settings.differences({**now, 'model.retired': 3}, now) == []


def test_resuming_compares_a_field_the_checkpoint_lacks_at_its_default(tiny_config):
  """The resume check and the sweep's records follow one rule (settings.differences)."""
  config = tiny_config()
  recorded = config.to_dict()
  del recorded['model']['dropout_placement']  # a checkpoint written before the field existed
  assert settings.differences(recorded, config, ignoring=()) == []
  config.model.dropout_placement = 'before'
  config.num_train_steps = 99
  fixed = settings.differences(recorded, config, ignoring=settings.CHANGEABLE_ON_RESUME)
  assert fixed == ["model.dropout_placement: 'after' there, 'before' now"]
  assert settings.differences(recorded, config, ignoring=()) == [
      "model.dropout_placement: 'after' there, 'before' now",
      f"num_train_steps: {recorded['num_train_steps']} there, 99 now",
  ]
