"""Pretrained weights against torchvision itself: its own AlexNet class with random weights, saved
as .pth and .safetensors, imported into `models.TORCHVISION`, gives torchvision's logits; the
import command writes a workdir that `inference.load` reads; bad files are one paragraph each."""

import dataclasses
import importlib.util
import os
import sys
import types

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.data import imagenet
from alexnet_jax.data import pipeline
from alexnet_jax.errors import ConfigError
from alexnet_jax import models
from alexnet_jax import settings
from alexnet_jax.trained import inference
from alexnet_jax.trained import weights
from tests import commands

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = os.path.join(REPO, 'configs', 'torchvision.py')


STUB = 'torchvision._meta_registrations'


@pytest.fixture(scope='module')
def torchvision():
  """torchvision, importable next to a CPU-only torch, for this module's tests only.

  The pinned torchvision wheel is a CUDA build: its import registers fake kernels of its C ops
  (torchvision._meta_registrations) that a CPU torch lacks, and fails with "operator
  torchvision::nms does not exist". Those are the detection ops' only; models.alexnet is pure
  Python, so that one module is stood in for by an empty one. Afterwards the stub and the
  torchvision modules it let in leave sys.modules, so the tests after these find it as it was.
  """
  pytest.importorskip('torch')
  stubbed = 'torchvision' not in sys.modules and STUB not in sys.modules
  before = set(sys.modules)
  if stubbed:
    sys.modules[STUB] = types.ModuleType(STUB)
  try:
    yield pytest.importorskip('torchvision')
  finally:
    if stubbed:
      for name in set(sys.modules) - before:
        if name == 'torchvision' or name.startswith('torchvision.'):
          del sys.modules[name]


def torchvision_config(arg=None):
  """configs/torchvision.py of this checkout, by file, as the commands' tests pass
  --config=configs/...: `alexnet_jax.configs` may be installed from another checkout."""
  spec = importlib.util.spec_from_file_location('torchvision_config', CONFIG_FILE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.fixture(scope='module')
def torchvision_net(torchvision, tmp_path_factory):
  """torchvision's AlexNet with random weights (seeded), and its state_dict in both formats."""
  import torch  # pylint: disable=g-import-not-at-top
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  net = torchvision.models.alexnet().eval()
  directory = tmp_path_factory.mktemp('torchvision')
  paths = {
      'pth': str(directory / 'alexnet.pth'),
      'safetensors': str(directory / 'alexnet.safetensors'),
  }
  torch.save(net.state_dict(), paths['pth'])
  save_file(net.state_dict(), paths['safetensors'])
  return net, paths


@pytest.fixture(scope='module')
def imported(torchvision_net):
  return weights.read(torchvision_net[1]['pth'])


def our_logits(params, images):
  """models.AlexNet of configs/torchvision.py with `params` (never randomly initialised), in
  eval mode, jitted: one compilation, where op-by-op dispatch would compile every op."""
  config = settings.model_config(torchvision_config())
  abstract = nnx.eval_shape(lambda: models.AlexNet(config, images.shape[1], rngs=nnx.Rngs(0)))
  graphdef, _, rest = nnx.split(abstract, nnx.Param, ...)
  rest = nnx.to_pure_dict(rest)
  forward = jax.jit(lambda p, x: nnx.merge(graphdef, p, rest)(x, train=False))
  return np.asarray(forward(params, jnp.asarray(images)))


def test_both_formats_read_the_same_parameters_in_our_tree(torchvision_net, imported):
  """.safetensors (no torch needed) and .pth give the same arrays, shaped as our model's."""
  from_safetensors = weights.read(torchvision_net[1]['safetensors'])
  config = settings.model_config(torchvision_config())
  abstract = nnx.eval_shape(lambda: models.AlexNet(config, 224, rngs=nnx.Rngs(0)))
  want = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
  assert sorted(imported) == sorted(from_safetensors) == sorted(want)
  for layer, arrays in want.items():
    for name, abstract_array in arrays.items():
      assert imported[layer][name].shape == abstract_array.shape, (layer, name)
      assert imported[layer][name].dtype == np.float32
      np.testing.assert_array_equal(imported[layer][name], from_safetensors[layer][name])


@pytest.mark.parametrize('image_size', [224, 256])
def test_imported_weights_give_torchvisions_logits(torchvision_net, imported, image_size):
  """At 224 pool5 is 6x6 and the average pool is the identity; at 256 it is 7x7 and the pool's
  overlapping bins matter. Same random batch, eval mode (no dropout), float32."""
  import torch  # pylint: disable=g-import-not-at-top

  net = torchvision_net[0]
  images = np.random.default_rng(image_size).normal(size=(2, image_size, image_size, 3))
  images = images.astype(np.float32)
  with torch.no_grad():
    theirs = net(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  ours = our_logits(imported, images)
  scale = np.abs(theirs).max()
  assert scale > 0 and np.std(theirs) > 0.1 * scale  # logits that differ between classes
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * scale)


def test_adaptive_avg_pool_is_torchs(torchvision):  # torch, and torchvision only to skip alike
  import torch  # pylint: disable=g-import-not-at-top

  pool = jax.jit(models.adaptive_avg_pool, static_argnums=1)
  for height, width in ((7, 7), (13, 3)):  # overlapping bins; and fewer columns than bins
    x = np.random.default_rng(height).normal(size=(2, height, width, 4)).astype(np.float32)
    want = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x.transpose(0, 3, 1, 2)), 6)
    got = np.asarray(pool(jnp.asarray(x), 6))
    np.testing.assert_allclose(got, want.numpy().transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)


def test_the_configs_preprocessing_is_torchvisions_eval_transform(torchvision):
  """configs/torchvision.py through our evaluation pipeline equals torchvision's Resize(256),
  CenterCrop(224), ToTensor, Normalize. 300x400 needs a resize, and its sizes round the same way
  in both (the config's docstring says where they can differ by a pixel)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from torchvision import transforms  # pylint: disable=g-import-not-at-top

  run = settings.from_config(torchvision_config())
  image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
  ours = pipeline.EvalTransform(run.data).map({pipeline.IMAGE_KEY: image, pipeline.LABEL_KEY: 0})
  theirs = transforms.Compose(
      [
          transforms.Resize(256),
          transforms.CenterCrop(224),
          transforms.ToTensor(),
          transforms.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
      ]
  )(Image.fromarray(image))
  np.testing.assert_allclose(ours['image'], theirs.numpy().transpose(1, 2, 0), rtol=1e-5, atol=1e-5)


def test_the_tiny_preset_builds_the_same_network_small():
  config = torchvision_config('tiny')
  run = settings.from_config(config)
  assert run.model.conv1_padding == 2 and run.model.dropout_placement == 'before'
  model = nnx.eval_shape(lambda: models.AlexNet(run.model, run.data.image_size, rngs=nnx.Rngs(0)))
  assert model.fc6.kernel.shape == (6 * 6 * 64, 1024)  # a quarter of the channels, 6x6 pooled


def run_import(*args):
  return commands.run_module('alexnet_jax.tools.import_weights', *args)


@pytest.mark.slow
def test_the_command_writes_a_workdir_that_inference_loads(imported_workdir, imported):
  """The README's import (`imported_workdir`, which the README's path below goes on from), of a
  .safetensors file: its workdir holds the .pth's arrays, read here in process."""
  out, workdir = imported_workdir
  assert 'Imported' in out.stdout
  assert os.listdir(workdir.parent) == ['torchvision']  # no staging directory left beside it
  trained = inference.load(str(workdir))
  assert trained.step == 0
  assert trained.run.model == settings.model_config(torchvision_config())
  for layer, arrays in imported.items():
    for name, array in arrays.items():
      if (layer, name) == ('fc8', 'bias'):  # the file's fc8 favours balloon
        array = favour_balloon(array.copy())
      np.testing.assert_array_equal(np.asarray(trained.params[layer][name]), array)
  # Without the dataset prepared, and without torchvision (a subprocess cannot import it): ImageNet's
  # names from the package's list, which equal torchvision's own (see the test below).
  assert 'class names of ImageNet' in out.stdout
  assert trained.class_names[:2] == ('tench', 'goldfish') and trained.class_names[417] == 'balloon'
  assert trained.class_names == imagenet.names()


def test_the_command_takes_torchvisions_config_unless_another_is_named(monkeypatch):
  """The README's import names no config (the run above); a named one is passed on as given."""
  from alexnet_jax.system import cli  # pylint: disable=g-import-not-at-top
  from alexnet_jax.tools import import_weights  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(cli, 'parse_flags', lambda argv: argv)  # the argv absl would parse
  assert import_weights.parse_flags(['import_weights', '--weights=w.pth', '--workdir=d']) == [
      'import_weights',
      '--config=torchvision',
      '--weights=w.pth',
      '--workdir=d',
  ]
  for named in (['--config=configs/torchvision.py'], ['--config', 'configs/torchvision.py:tiny']):
    argv = ['import_weights', '--weights=w.pth', *named]
    assert import_weights.parse_flags(argv) == argv


def test_a_workdir_that_is_not_empty_is_left_alone(torchvision_net, tmp_path):
  (tmp_path / 'run').mkdir()
  (tmp_path / 'run' / 'notes.txt').write_text('mine')
  with pytest.raises(ConfigError, match='overwrites nothing'):
    weights.import_to_workdir(
        settings.from_config(torchvision_config()),
        torchvision_net[1]['safetensors'],
        str(tmp_path / 'run'),
    )
  assert os.listdir(tmp_path) == ['run'] and os.listdir(tmp_path / 'run') == ['notes.txt']


def test_weights_that_do_not_fit_the_config_write_nothing(imported, tmp_path):
  """The paper's network (or any other width) cannot take torchvision's weights."""
  config = torchvision_config('tiny')
  config.model.num_classes = 1000
  with pytest.raises(ConfigError, match='--config=torchvision') as error:
    weights.params_to_workdir(settings.from_config(config), imported, str(tmp_path / 'run'))
  assert "['conv1']['kernel']: (11, 11, 3, 64) in the weights" in str(error.value)
  assert os.listdir(tmp_path) == []


def test_the_shipped_imagenet_classes_are_torchvisions_names_and_tfds_ids(torchvision):
  """The package's list against both sources it was made from: torchvision's categories of its
  ImageNet weights (label order) and TFDS's imagenet2012 labels.txt (the WordNet ids, sorted)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  categories = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta['categories']
  assert list(imagenet.names()) == list(categories)
  labels = os.path.join(os.path.dirname(tfds.__file__), 'datasets', 'imagenet2012', 'labels.txt')
  with open(labels) as f:
    assert list(imagenet.wnids()) == f.read().split()
  assert imagenet.readable(imagenet.wnids()) == imagenet.names()
  assert imagenet.readable(('a', 'b')) == ('a', 'b')


# --- Bad input: one paragraph naming the problem and the fix ---


def state_dict(net) -> dict[str, np.ndarray]:
  return {name: t.numpy() for name, t in net.state_dict().items()}


def assert_paragraph(error, *phrases):
  message = str(error.value)
  assert '\n' not in message, message
  for phrase in phrases:
    assert phrase in message, (phrase, message)


def test_a_resnet_is_named_as_one(torchvision, tmp_path):
  import torch  # pylint: disable=g-import-not-at-top

  path = str(tmp_path / 'resnet18.pth')
  torch.save(torchvision.models.resnet18().state_dict(), path)
  with pytest.raises(ConfigError) as error:
    weights.read(path)
  assert_paragraph(error, 'not a torchvision AlexNet state_dict', 'a ResNet', 'layer1', "'bn1.")


def test_missing_extra_and_misshapen_tensors_are_named(torchvision_net):
  tensors = state_dict(torchvision_net[0])
  fewer = {k: v for k, v in tensors.items() if not k.startswith('classifier.4.')}
  with pytest.raises(ConfigError) as error:
    weights.from_torchvision(fewer)
  assert_paragraph(error, "lacks ['classifier.4.weight', 'classifier.4.bias']")

  more = dict(tensors, **{'features.1.weight': np.zeros(3, np.float32)})
  with pytest.raises(ConfigError) as error:
    weights.from_torchvision(more)
  assert_paragraph(error, "does not: ['features.1.weight']")

  wider = dict(tensors, **{'features.0.weight': np.zeros((96, 3, 11, 11), np.float32)})
  with pytest.raises(ConfigError) as error:
    weights.from_torchvision(wider)
  assert_paragraph(error, 'features.0.weight is (96, 3, 11, 11), not (64, 3, 11, 11)')


def test_half_precision_files_are_read_as_float32(torchvision_net, tmp_path):
  """bfloat16 and float16 state_dicts (safetensors keeps the dtype) become float32 parameters."""
  import torch  # pylint: disable=g-import-not-at-top
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top

  path = str(tmp_path / 'half.safetensors')
  save_file(
      {'a': torch.ones(2, dtype=torch.bfloat16), 'b': torch.ones(2, dtype=torch.float16)}, path
  )
  assert [str(v.dtype) for v in weights.read_state_dict(path).values()] == ['bfloat16', 'float16']
  tensors = state_dict(torchvision_net[0])
  tensors['features.0.weight'] = tensors['features.0.weight'].astype(jnp.bfloat16)
  kernel = weights.from_torchvision(tensors)['conv1']['kernel']
  assert kernel.dtype == np.float32
  want = state_dict(torchvision_net[0])['features.0.weight'].transpose(2, 3, 1, 0)
  np.testing.assert_allclose(kernel, want, rtol=1e-2, atol=1e-3)  # bfloat16's 8 bits


def test_fewer_classes_are_read_and_checked_against_the_config(torchvision_net):
  tensors = state_dict(torchvision_net[0])
  tensors['classifier.6.weight'] = tensors['classifier.6.weight'][:10]
  tensors['classifier.6.bias'] = tensors['classifier.6.bias'][:10]
  assert weights.from_torchvision(tensors)['fc8']['kernel'].shape == (4096, 10)
  with pytest.raises(ConfigError) as error:
    weights.from_torchvision(tensors, num_classes=1000)
  assert_paragraph(error, 'for 10 classes', '--config.model.num_classes=10')


def test_unreadable_files_say_what_they_are(torchvision, tmp_path):
  import torch  # pylint: disable=g-import-not-at-top

  cases = {
      'missing.pth': (None, 'No weights file'),
      'garbage.pth': (b'<html>Not Found</html>', "starts with b'<htm'"),
      'truncated.pth': (b'PK\x03\x04 and no more', 'Cannot read'),
      'corrupt.pth': (b'\x80\x02garbage', 'not a pickle of tensors'),
      'garbage.safetensors': (b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":', 'safetensors file'),
      'weights.h5': (b'whatever', "suffix '.h5'"),
  }
  for name, (content, phrase) in cases.items():
    if content is not None:
      (tmp_path / name).write_bytes(content)
    with pytest.raises(ConfigError) as error:
      weights.read(str(tmp_path / name))
    assert_paragraph(error, phrase)

  checkpoint = str(tmp_path / 'checkpoint.pth')
  torch.save({'epoch': 3, 'state_dict': {'features.0.bias': torch.zeros(64)}}, checkpoint)
  with pytest.raises(ConfigError) as error:
    weights.read(checkpoint)
  assert_paragraph(error, 'training checkpoint', "['state_dict']")

  pickled_model = str(tmp_path / 'model.pth')
  torch.save(torch.nn.Linear(2, 2), pickled_model)  # a whole module: code, not just tensors
  with pytest.raises(ConfigError) as error:
    weights.read(pickled_model)
  assert_paragraph(error, 'torch.save(model.state_dict(), PATH)', 'torch.nn.modules.linear.Linear')
  assert 'weights_only=False' not in str(error.value)  # never advise running the file's code


def test_a_pth_file_without_torch_says_how_to_get_it(torchvision_net, monkeypatch):
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` raises ImportError
  with pytest.raises(ConfigError) as error:
    weights.read(torchvision_net[1]['pth'])
  assert_paragraph(error, 'needs PyTorch', 'pip install torch', '.safetensors needs no torch')
  assert weights.read(torchvision_net[1]['safetensors'])['conv1']['kernel'].shape[-1] == 64


@pytest.mark.slow
def test_fine_tuning_starts_from_the_torchvision_weights(
    torchvision_net, imported, tiny_config, tmp_path
):
  """init_from=<the .safetensors file> through the training loop, on the built-in 10-class data:
  every layer but fc8 is the file's (frozen here, so the trained run still holds them bit for
  bit), fc8 is new with 10 outputs and trained, and the network's fc7 on an image is
  torchvision's own fc7 (its classifier[:6]) from the same weights."""
  from alexnet_jax import train  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  config = tiny_config()
  for field, value in dataclasses.asdict(models.TORCHVISION).items():
    if field in config.model and field not in ('num_classes', 'lrn'):  # conv1_padding: a str
      config.model[field] = str(value) if isinstance(config.model[field], str) else value
  config.init_from = torchvision_net[1]['safetensors']
  config.optim.freeze = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7')
  config.num_train_steps = 2
  config.final_eval_crops = 1
  workdir = str(tmp_path / 'finetuned')
  train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  trained = inference.load(workdir)
  for layer in config.optim.freeze:
    for name, array in imported[layer].items():
      np.testing.assert_array_equal(np.asarray(trained.params[layer][name]), array)
  assert trained.params['fc8']['kernel'].shape == (4096, 10)
  images = np.random.default_rng(0).uniform(-2, 2, (2, 67, 67, 3)).astype(np.float32)
  graphdef, state = nnx.split(trained.model())
  # Jitted: one compilation, where op-by-op dispatch would compile every op (as `our_logits`).
  fc7 = jax.jit(lambda s, x: jnp.concatenate(nnx.merge(graphdef, s).features(x)['fc7'], axis=-1))
  ours = fc7(state, jnp.asarray(images))
  net = torchvision_net[0]
  with torch.no_grad():
    x = net.avgpool(net.features(torch.from_numpy(images).permute(0, 3, 1, 2)))
    theirs = net.classifier[:6](torch.flatten(x, 1)).numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


# --- The README's path: torchvision's weights -> import_weights -> predict -> fine-tuning ---

BALLOON = 417  # ImageNet's label of 'balloon' (n02782093)
FROZEN = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7')


@pytest.fixture(scope='module')
def balloon_weights(torchvision_net, tmp_path_factory):
  """torchvision's AlexNet (random weights) whose fc8 favours `balloon`, as a network and a file:
  a prediction with a clear winner, as pretrained weights give."""
  import copy  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from safetensors.torch import save_file  # pylint: disable=g-import-not-at-top

  net = copy.deepcopy(torchvision_net[0])
  with torch.no_grad():
    favour_balloon(net.classifier[6].bias)
  path = str(tmp_path_factory.mktemp('balloon') / 'alexnet.safetensors')
  save_file(net.state_dict(), path)
  return net, path


def favour_balloon(bias):
  """fc8's bias (a torch tensor or a numpy array), raised in place for balloon and five
  runners-up (so the top five are not noise); returned."""
  bias[BALLOON] += 8.0
  bias[:5] += 5.0
  return bias


@pytest.fixture(scope='module')
def imported_workdir(balloon_weights, tmp_path_factory):
  """The README's `import_weights --weights=FILE --workdir=runs/torchvision` of `balloon_weights`,
  with no dataset where the config looks: (the finished command, the workdir). One run, which both
  tests of the command read."""
  root = tmp_path_factory.mktemp('imported')
  (root / 'runs').mkdir()
  workdir = root / 'runs' / 'torchvision'
  out = run_import(
      f'--weights={balloon_weights[1]}', f'--workdir={workdir}', f'--config.data_dir={root}/no_data'
  )
  assert out.returncode == 0, out.stderr[-3000:]
  return out, workdir


def _ifood_layout(root, rng) -> None:
  """iFood 2019 as it ships (configs/ifood2019.py): class_list.txt of its 251 classes, the image
  folders and the CSVs; a few small images of three of the classes."""
  os.makedirs(root / 'train_set')
  os.makedirs(root / 'val_set')
  (root / 'class_list.txt').write_text(''.join(f'{i} food_{i}\n' for i in range(251)))
  for split, count in (('train', 12), ('val', 6)):
    rows = ['img_name,label']
    for i in range(count):
      name = f'{split}_{i:03d}.png'
      _save_png(rng, root / f'{split}_set' / name)
      rows.append(f'{name},{i % 3}')
    (root / f'{split}_labels.csv').write_text('\n'.join(rows) + '\n')


def _save_png(rng, path, size=(80, 96)) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top

  Image.fromarray(rng.integers(0, 256, size + (3,), np.uint8)).save(path)


def _fine_tune(config: str, workdir, data_dir) -> None:
  """`python -m alexnet_jax.main --config=CONFIG` as the README gives it, shrunk to two steps of 67
  pixels (torchvision's net takes any size: pool5 is averaged to 6x6), with every layer but the
  new fc8 frozen."""
  out = commands.run_module(
      'alexnet_jax.main',
      f'--config={config}',
      f'--workdir={workdir}',
      f'--config.data_dir={data_dir}',
      '--config.image_size=67',
      '--config.resize_size=76',
      '--config.batch_size=4',
      '--config.eval_batch_size=6',
      '--config.num_train_steps=2',
      '--config.final_eval_crops=1',
      '--config.profile_steps=0',
      f'--config.optim.freeze={",".join(FROZEN)}',
  )
  assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.slow
def test_torchvision_weights_predict_imagenet_names_and_fine_tune_through_the_commands(
    balloon_weights, imported_workdir, tmp_path
):
  """What the README tells a user to type, in order: the imported workdir predicts a photo with
  ImageNet's names and torchvision's own probabilities (its eval transform and network on the
  same file), and both fine-tuning configs start from it: every frozen layer stays the file's bit
  for bit, fc8 is new for the dataset's classes. The configs once stopped at once, unable to hold
  torchvision's conv1 padding."""
  import torch  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from torchvision import transforms  # pylint: disable=g-import-not-at-top

  from alexnet_jax.tools import prepare  # pylint: disable=g-import-not-at-top

  net, weights_file = balloon_weights
  imported_dir = imported_workdir[1]

  rng = np.random.default_rng(0)
  photo = tmp_path / 'photo.png'
  _save_png(rng, photo, (300, 400))
  out = commands.run_module(
      'alexnet_jax.tools.predict',
      f'--workdir={imported_dir}',
      f'--images={photo}',
      f'--json={tmp_path / "predictions.json"}',
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'balloon' in out.stdout and ' 417 ' not in out.stdout
  eval_transform = transforms.Compose(
      [
          transforms.Resize(256),
          transforms.CenterCrop(224),
          transforms.ToTensor(),
          transforms.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
      ]
  )
  with torch.no_grad():
    logits = net(eval_transform(Image.open(photo).convert('RGB'))[None])
    theirs = torch.softmax(logits, -1)[0].numpy()
  import json  # pylint: disable=g-import-not-at-top

  predicted = json.loads((tmp_path / 'predictions.json').read_text())['predictions'][0]['top5']
  top5 = np.argsort(-theirs)[:5]
  assert top5[0] == BALLOON
  assert [p['class'] for p in predicted] == [imagenet.names()[i] for i in top5]
  np.testing.assert_allclose([p['probability'] for p in predicted], theirs[top5], rtol=1e-4)

  imported = weights.read(weights_file)
  data_dir = str(tmp_path / 'data')
  _ifood_layout(tmp_path / 'ifood', rng)
  ifood = tmp_path / 'ifood'
  prepare.prepare_images(
      csv=str(ifood / 'train_labels.csv'),
      images=str(ifood / 'train_set'),
      classes=str(ifood / 'class_list.txt'),
      val_csv=str(ifood / 'val_labels.csv'),
      val_images=str(ifood / 'val_set'),
      name='ifood2019',
      resize=76,
      data_dir=data_dir,
  )
  for name in ('cat', 'dog', 'bird'):
    os.makedirs(tmp_path / 'pets' / name)
    for i in range(6):
      _save_png(rng, tmp_path / 'pets' / name / f'{i}.png')
  prepare.prepare_images(folder=str(tmp_path / 'pets'), resize=76, data_dir=data_dir)

  runs = {
      'ifood': (f'configs/ifood2019.py:init_from={imported_dir}', 251),
      'pets': (
          f'configs/finetune_folder.py:dataset=pets,num_classes=3,init_from={imported_dir}',
          3,
      ),
  }
  for name, (config, classes) in runs.items():
    workdir = str(tmp_path / 'runs' / name)
    _fine_tune(config, workdir, data_dir)
    tuned = inference.load(workdir)
    assert tuned.step == 2 and tuned.run.model.conv1_padding == 2, name
    for layer in FROZEN:
      for leaf, array in imported[layer].items():
        np.testing.assert_array_equal(np.asarray(tuned.params[layer][leaf]), array, err_msg=layer)
    assert tuned.params['fc8']['kernel'].shape == (4096, classes), name
