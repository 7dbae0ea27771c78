"""Every config in configs/ builds, passes the checks a run makes, and means what its docstring
says: the experiments' sweeps, their CPU and paper scales, and every named variant."""

import dataclasses
import importlib
import math

import numpy as np
import pytest

from alexnet_jax import configs
from alexnet_jax.configs import ablation
from alexnet_jax.configs import common
from alexnet_jax import models
from alexnet_jax import optim
from alexnet_jax import settings

RECIPES = ('alexnet', 'quickstart', 'finetune_folder', 'ifood2019', 'torchvision')
# Every installed config but the recipes and the base the experiments share is an experiment.
EXPERIMENTS = tuple(n for n in configs.NAMES if n not in RECIPES + ('ablation',))
# The arguments a config cannot do without.
REQUIRED_ARGS = {'finetune_folder': 'dataset=my_images,num_classes=3'}


def load(name):
  return importlib.import_module(f'alexnet_jax.configs.{name}')


@pytest.mark.parametrize('name', configs.NAMES)
def test_every_installed_config_is_valid(name):
  config = load(name).get_config(REQUIRED_ARGS.get(name))
  settings.validate(config)
  models.validate(settings.model_config(config))
  assert config.allow_config_change is False  # a field, so the command line can set it


# Arguments that name a trained run: a recipe names it and reads nothing (the run takes its network
# when it starts, finetune.take_network).
SOURCE_ARGS = {
    'finetune_folder': 'dataset=my_images,num_classes=3,init_from=runs/somewhere',
    'ifood2019': 'init_from=runs/torchvision',
}


@pytest.mark.parametrize('name', configs.NAMES)
def test_building_a_config_reads_no_file(name, monkeypatch, tmp_path):
  """A config is a recipe: built with every argument that names a file (init_from), it opens,
  lists and tests the existence of nothing, as flax's and big_vision's configs."""
  module = load(name)  # importing reads the module's own file: before the file system is watched
  touched = []

  def watch(function):
    def watched(*args, **kwargs):
      touched.append((function.__name__, args[:1]))
      return function(*args, **kwargs)

    return watched

  import builtins  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top

  for owner, attribute in [
      (builtins, 'open'),
      (io, 'open'),
      (os, 'listdir'),
      (os, 'scandir'),
      (os, 'stat'),
      (os.path, 'exists'),
      (os.path, 'isdir'),
      (os.path, 'isfile'),
  ]:
    monkeypatch.setattr(owner, attribute, watch(getattr(owner, attribute)))
  monkeypatch.chdir(tmp_path)
  config = module.get_config(SOURCE_ARGS.get(name, REQUIRED_ARGS.get(name)))
  monkeypatch.undo()
  assert config.dataset  # it built
  assert not touched, touched


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_experiment_sweeps_name_known_variants_and_scale_up(name):
  assert len(EXPERIMENTS) == 7
  config = load(name).get_config()
  assert config.sweep.variants[0] == 'paper'  # the baseline the others are compared with
  assert set(config.sweep.variants) <= set(common.VARIANTS) | set(config.sweep.custom)
  assert len(config.sweep.seeds) >= 3  # the minimum, for a spread
  tiny = load(name).get_config('tiny')
  assert tiny.num_train_steps == 6 and tiny.dataset == 'synthetic_shapes/tiny'
  assert len(tiny.sweep.seeds) >= 2 and len(tiny.sweep.variants) <= 2
  paper = load(name).get_config('scale=paper')
  assert (paper.dataset, paper.image_size, paper.num_epochs) == ('imagenet2012', 224, 90.0)
  # Figure 1's networks train at a constant rate at any scale (configs/relu_tanh.py).
  assert paper.optim.schedule == ('step' if name == 'relu_tanh' else 'plateau')
  assert paper.final_eval_crops == 10
  assert paper.train_split == 'train'  # the whole split, also for the regularisation sweep
  other = load(name).get_config('scale=paper,dataset=imagenette')
  assert other.dataset == 'imagenette'


@pytest.mark.parametrize('variant', sorted(common.VARIANTS))
def test_every_variant_applies_to_the_ablation_run_and_builds(variant):
  config = ablation.get_config(f'variant={variant}')
  settings.validate(config)
  model = settings.model_config(config)
  models.validate(model)
  for field, value in common.VARIANTS[variant].items():
    node = config
    for part in field.split('.'):
      node = node[part]
    assert node == value


def test_the_cpu_scale_trains_on_the_hard_variant_and_relu_tanh_on_the_easy_one():
  assert ablation.get_config().dataset == 'synthetic_shapes/hard'
  assert ablation.get_config().model.num_classes == 20
  relu_tanh = load('relu_tanh').get_config()
  assert (relu_tanh.dataset, relu_tanh.model.num_classes) == ('synthetic_shapes', 10)
  with pytest.raises(ValueError, match="scale='gpu'"):
    ablation.get_config('scale=gpu')


@pytest.mark.parametrize('name', ['normalisation', 'pooling', 'regularisation', 'towers'])
def test_an_experiment_trains_where_its_runs_level_off_each_variant_at_its_own_rate(name):
  """configs/ablation.py's `levelled` regime at the CPU scale; not for tiny, paper or a dataset."""
  config = load(name).get_config()
  assert (config.dataset, config.model.num_classes) == ('synthetic_shapes/medium', 20)
  assert config.train_split == 'train[:2000]' and config.num_train_steps == 2000
  assert config.model.width == 0.25
  rate = config.optim.learning_rate
  # The base with a factor of two above and four below (half was at the three-rate grid's edge).
  factors = sorted(r / rate for r in config.sweep.learning_rates)
  assert factors == [0.25, 0.5, 1, 2], factors
  assert len(config.sweep.seeds) == 5 and not set(config.sweep.seeds) & set(
      config.sweep.tuning_seeds
  )
  assert load(name).get_config('tiny').dataset == 'synthetic_shapes/tiny'
  paper = load(name).get_config('scale=paper')
  assert (paper.dataset, paper.train_split, paper.model.width) == ('imagenet2012', 'train', 1.0)
  assert paper.image_size == 224
  other = load(name).get_config('dataset=synthetic_shapes/hard')
  assert (other.dataset, other.train_split) == ('synthetic_shapes/hard', 'train')


def _pool5_side(image_size: int, window: int, stride: int) -> int:
  """pool5's side by counting the windows that fit, layer by layer: conv1's 11x11/4 with
  cuda-convnet's padding up to a whole last window, then three max-pools (Figure 2)."""
  side = len(range(0, image_size - 11 + 3 + 1, 4))  # the last window may run 3 pixels over
  for _ in range(3):
    side = len(range(0, side - window + 1, stride))
  return side


def test_the_pooling_experiment_crops_so_that_pool5_is_wider_than_a_pixel_with_both_windows():
  """At 67 pixels overlapping pooling leaves a 1x1 pool5 (the question would be about the edge);
  the experiment's crops give both kinds of window the same pool5 of at least 2x2."""
  assert (_pool5_side(224, 3, 2), _pool5_side(224, 2, 2)) == (6, 6)  # the paper's 6x6
  assert _pool5_side(67, 3, 2) == 1
  config = load('pooling').get_config()
  overlapping, plain = _pool5_side(config.image_size, 3, 2), _pool5_side(config.image_size, 2, 2)
  assert overlapping == plain >= 2
  assert models.feature_sizes(config.image_size)['pool5'] == overlapping
  assert config.resize_size > config.image_size and config.eval_trainset
  assert (
      load('pooling').get_config('tiny').image_size
      == load('normalisation').get_config('tiny').image_size
  )


def test_an_experiment_refuses_a_variant_argument():
  """It would turn the sweep's `paper` runs into the variant's, under the `paper` name."""
  with pytest.raises(ValueError, match='sweeps its own variants'):
    load('normalisation').get_config('variant=batchnorm')


def test_an_experiments_own_variant_is_planned_from_its_sweep_section(tmp_path):
  from alexnet_jax.sweeps import sweep  # pylint: disable=g-import-not-at-top

  config = load('relu_tanh').get_config()
  config.sweep.learning_rates = ()  # untuned: each at optim.learning_rate
  runs = sweep.planned(config, str(tmp_path))
  assert [r.variant for r in runs[::5]] == ['paper', 'tanh']
  assert [r.seed for r in runs[:5]] == [0, 1, 2, 3, 4]
  # The experiment's own `tanh` (LeCun's initialisation) replaces the named one.
  tanh = runs[5].config
  assert (tanh.model.activation, tanh.model.init) == ('tanh', 'lecun')
  assert (runs[0].config.model.activation, runs[0].config.model.init) == ('relu', 'he')


def test_figure_1_runs_without_regularisation_at_each_networks_own_rate():
  """Section 3.1: "no regularization of any kind", each rate "chosen independently"."""
  config = load('relu_tanh').get_config()
  run = settings.from_config(config)
  assert run.model.dropout_rate == 0 and run.optim.weight_decay == 0
  assert not run.data.augment.random_crop and not run.data.augment.flip
  assert run.data.augment.pca_std == 0
  # A constant rate: the step schedule without steps gives the base rate at every step.
  schedule = optim.learning_rate_schedule(run.optim, config.num_train_steps)
  rate = run.optim.learning_rate
  assert [float(schedule(s)) for s in (0, 500, config.num_train_steps)] == pytest.approx([rate] * 3)
  assert len(config.sweep.learning_rates) >= 3 and rate in config.sweep.learning_rates
  assert not set(config.sweep.tuning_seeds) & set(config.sweep.seeds)
  assert len(config.sweep.seeds) >= 5
  other = load('relu_tanh').get_config('first_seed=10')
  assert other.sweep.seeds == (10, 11, 12, 13, 14)


def test_records_made_before_the_torchvision_fields_are_the_same_run():
  """A sweep's run recorded before model.conv1_padding, adaptive_avg_pool and dropout_placement
  existed had their defaults: resuming it is the same run, and changing one is a difference.
  No table of added fields says so: the typed settings' defaults do (settings.recorded_defaults)."""
  config = load('alexnet').get_config()
  now = settings.identity(config)
  added = ('model.conv1_padding', 'model.adaptive_avg_pool', 'model.dropout_placement')
  before = {k: v for k, v in now.items() if k not in added}
  assert settings.differences(before, now) == []
  config.model.dropout_placement = 'before'  # absent from the record: it ran with the default
  assert settings.differences(before, settings.identity(config)) == [
      "model.dropout_placement: 'after' there, 'before' now"
  ]


def test_runlocal_is_the_paper_recipe_on_the_built_in_data_at_112_pixels_for_200_steps():
  """configs/alexnet.py's docstring: `:runlocal` runs this recipe on the built-in dataset at 112
  pixels for 200 steps. Only the data and the loop's length change: the network, the optimiser,
  the schedule and the augmentation stay the paper's (their typed defaults, section 3 to 5)."""
  config = load('alexnet').get_config('runlocal')
  run = settings.from_config(config)
  assert run.data.dataset == 'synthetic_shapes' and run.model.num_classes == 10
  assert (run.data.image_size, run.data.resize_size) == (112, 128)  # 224 / 256 of the paper
  assert run.loop.num_train_steps == 200
  assert run.model == dataclasses.replace(models.ModelConfig(), num_classes=10)
  assert run.optim == optim.OptimConfig() and run.optim.schedule == 'plateau'
  assert (run.data.augment.flip, run.data.augment.random_crop) == (True, True)
  assert run.data.augment.pca_std == 0.1 and run.data.augment.inv_std is None  # 0..255 pixels
  # Everything but the scale is the paper config's: the recipe, not a quickstart.
  paper = load('alexnet').get_config()
  scale = {'dataset', 'model.num_classes', 'resize_size', 'image_size', 'batch_size'}
  scale |= {'eval_batch_size', 'num_train_steps', 'log_every_steps', 'eval_every_steps'}
  scale |= {'checkpoint_every_steps', 'final_eval_crops', 'profile_steps'}
  changed = {
      line.split(':')[0] for line in settings.differences(paper.to_dict(), config, ignoring=())
  }
  assert changed == scale
  # It takes a variant too.
  assert load('alexnet').get_config('runlocal,variant=no_lrn').model.norm == 'none'


@pytest.mark.slow
def test_runlocal_trains_two_steps(tiny_data_dir, tmp_path, one_device):
  """The runlocal recipe, full width at 112 pixels, for two steps and its final evaluation; on the
  built-in dataset's tiny split (the same classes and kind of images, prepared in a second, not
  the default split's 10,000)."""
  from alexnet_jax import train  # pylint: disable=g-import-not-at-top

  config = load('alexnet').get_config('runlocal')
  config.dataset, config.data_dir = 'synthetic_shapes/tiny', tiny_data_dir
  config.num_train_steps = 2
  state, metrics = train.train_and_evaluate(config, str(tmp_path / 'run'), one_device)
  assert int(state.step) == 2
  assert set(metrics) == {'loss', 'top1_error', 'top5_error'}
  assert all(math.isfinite(v) for v in metrics.values())
  assert 0.0 <= metrics['top1_error'] <= 1.0


def test_the_paper_recipe_and_the_typed_settings_defaults_agree_field_by_field():
  """configs/alexnet.py writes the loop's, the data's and the mesh's values by hand, and
  `settings.LoopConfig`, `pipeline.DataConfig`, `AugmentConfig` and `sharding.MeshConfig` hold
  them again as defaults (which also stand for a field a checkpoint predates,
  `settings.recorded_defaults`): the paper config, typed, is every dataclass at its defaults."""
  from alexnet_jax import sharding  # pylint: disable=g-import-not-at-top
  from alexnet_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  run = settings.from_config(load('alexnet').paper())
  assert run.model == models.ModelConfig() and run.optim == optim.OptimConfig()
  assert run.mesh == sharding.MeshConfig()
  for field in dataclasses.fields(settings.LoopConfig):
    assert getattr(run.loop, field.name) == field.default, field.name
  assert run.data.dataset == 'imagenet2012'  # the one field without a default
  for field in dataclasses.fields(pipeline.DataConfig):
    if field.name not in ('dataset', 'augment'):
      assert getattr(run.data, field.name) == field.default, field.name
  default_augment = pipeline.AugmentConfig()
  for field in dataclasses.fields(pipeline.AugmentConfig):
    recipe, default = getattr(run.data.augment, field.name), getattr(default_augment, field.name)
    if isinstance(default, np.ndarray):
      np.testing.assert_array_equal(recipe, default, err_msg=field.name)
    else:
      assert recipe == default, field.name


def test_experiments_hand_the_sweep_every_named_variant():
  """The sweep imports no recipe: an experiment's `sweep.named` carries configs/common.py's
  VARIANTS, so a variant's changes are the same from `variant=NAME` and from a sweep."""
  config = load('normalisation').get_config()
  named = {name: changes.to_dict() for name, changes in config.sweep.named.items()}
  assert named == {name: settings.nested(changes) for name, changes in common.VARIANTS.items()}
