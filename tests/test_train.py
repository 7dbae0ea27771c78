"""The training loop end to end on the built-in dataset: resumption, divergence, evaluation."""

import dataclasses
import math
import os

from flax import nnx
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from alexnet_jax import checkpointing
from alexnet_jax.data import augment
from alexnet_jax import optim
from alexnet_jax import settings
from alexnet_jax import sharding
from alexnet_jax import steps
from alexnet_jax import train


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _logits(model, images):
  """The model called directly (the second code path), under one jit: one compile of the forward
  pass instead of one per operation."""
  return np.asarray(nnx.jit(lambda m, x: m(x))(model, images))


@pytest.mark.slow
def test_resumed_run_matches_an_uninterrupted_one(
    tiny_data_dir, tmp_path, one_device, plateau_config
):
  straight, _ = train.train_and_evaluate(plateau_config(), str(tmp_path / 'straight'), one_device)
  assert float(straight.plateau.scale) < 1.0  # the schedule did reduce the rate

  workdir = str(tmp_path / 'interrupted')
  half, _ = train.train_and_evaluate(plateau_config(None, steps=3), workdir, one_device)
  assert int(half.step) == 3
  # The same command again: resumes at step 3.
  resumed, _ = train.train_and_evaluate(plateau_config(), workdir, one_device)

  assert int(resumed.step) == int(straight.step) == 6
  # Every checkpoint_every_steps (3), and each evaluation (every step here) that was the best yet.
  assert {'3', '6'} <= set(os.listdir(os.path.join(workdir, 'checkpoints')))
  # Dropout keys, data order, augmentation, momentum and the plateau state all continue exactly.
  for a, b in zip(_leaves(straight), _leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)
  # ...and the run really moved: parameters differ from the half-way point.
  assert any(
      np.any(a != b) for a, b in zip(_leaves(half.params), _leaves(resumed.params), strict=True)
  )


@pytest.mark.slow
def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(
    tiny_data_dir, tmp_path, one_device, tiny_config
):
  workdir = str(tmp_path / 'run')
  config = tiny_config()
  config.num_train_steps = 3
  train.train_and_evaluate(config, workdir, one_device)

  exploding = tiny_config()
  exploding.optim.learning_rate = 1e30
  exploding.allow_config_change = True  # resuming under another learning rate is refused without
  with pytest.raises(steps.TrainingDiverged, match='NaN or infinite'):
    train.train_and_evaluate(exploding, workdir, one_device)

  checkpointer = checkpointing.Checkpointer(workdir, max_to_keep=3)
  assert checkpointer.latest_step() == 3
  _, _, _, state, _ = _setup(config, one_device)
  restored, _ = checkpointer.restore(checkpointing.abstract_like(state))
  assert all(np.all(np.isfinite(x)) for x in _leaves(restored.params))


def _setup(config, devices):
  """(typed run, model, graphdef, placed train state, layout) of `config`, as train builds them."""
  run = settings.from_config(config)
  model = steps.create_model(run.model, run.data.image_size, run.loop.seed)
  tx, plateau = optim.create_optimizer(run.optim, 6), optim.create_plateau(run.optim)
  graphdef, state = steps.create_train_state(model, tx, plateau, run.loop.seed)
  layout = sharding.Layout.create(run.mesh, run.model.towers, devices)
  return run, model, graphdef, layout.place_state(state), layout


@pytest.mark.slow
def test_evaluation_counts_every_example_once(tiny_data_dir, one_device, tiny_config):
  config = tiny_config()  # 160 validation examples in batches of 64: 64, 64, 32+pad
  run, model, graphdef, state, layout = _setup(config, one_device)
  metrics = train.evaluate(run.data, state, steps.make_eval_step(graphdef), layout)

  # Second code path: read the split directly and run the model on all of it at once.
  source = tfds.data_source(config.dataset, split='validation', data_dir=tiny_data_dir)
  mean = np.asarray(config.augment.mean_rgb, np.float32)
  images = np.stack(
      [
          augment.eval_transform(source[i]['image'], image_size=67, resize_size=76, mean=mean)
          for i in range(len(source))
      ]
  )
  images /= np.asarray(config.augment.std_rgb, np.float32)  # the quickstart standardises pixels
  labels = np.array([source[i]['label'] for i in range(len(source))])
  assert len(labels) == 160
  logits = _logits(model, images)
  np.testing.assert_allclose(metrics['top1_error'], np.mean(logits.argmax(-1) != labels), atol=1e-6)
  log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  np.testing.assert_allclose(
      metrics['loss'], np.mean(log_z - logits[np.arange(160), labels]), rtol=1e-4
  )


@pytest.mark.slow
def test_ten_crop_evaluation_equals_patches_cut_by_hand(tiny_data_dir, one_device, tiny_config):
  config = tiny_config()  # resize 76, crops 67: the corners differ from the centre
  config.eval_crops = 10
  run, model, graphdef, state, layout = _setup(config, one_device)
  metrics = train.evaluate(run.data, state, steps.make_eval_step(graphdef), layout)
  centre_only = train.evaluate(
      dataclasses.replace(run.data, eval_crops=1), state, steps.make_eval_step(graphdef), layout
  )

  # Second code path: every validation image resized by PIL, its ten patches cut by slicing.
  from PIL import Image

  source = tfds.data_source(config.dataset, split='validation', data_dir=tiny_data_dir)
  mean = np.asarray(config.augment.mean_rgb, np.float32)
  std = np.asarray(config.augment.std_rgb, np.float32)
  far = 76 - 67
  patches, labels = [], []
  for i in range(len(source)):
    image = np.asarray(
        Image.fromarray(source[i]['image']).resize(
            (76, 76), Image.Resampling.BILINEAR, reducing_gap=None
        )
    ).astype(np.float32)
    image = (image - mean) / std
    five = [
        image[t : t + 67, l : l + 67] for t, l in ((4, 4), (0, 0), (0, far), (far, 0), (far, far))
    ]
    patches.append(five + [p[:, ::-1] for p in five])
    labels.append(source[i]['label'])
  labels = np.array(labels)
  logits = _logits(model, np.reshape(patches, (-1, 67, 67, 3))).astype(np.float64)
  logits = logits.reshape(len(labels), 10, -1)

  def by_hand(probs):
    p_label = probs[np.arange(len(labels)), labels]
    # Classes the label does not strictly beat (a tie counts against it, as in error_rates).
    rank = (probs >= p_label[:, None]).sum(-1) - 1
    return {
        'loss': -np.log(p_label).mean(),
        'top1_error': np.mean(rank >= 1),
        'top5_error': np.mean(rank >= 5),
    }

  softmax = np.exp(logits - logits.max(-1, keepdims=True))
  softmax /= softmax.sum(-1, keepdims=True)
  want, centre = by_hand(softmax.mean(1)), by_hand(softmax[:, 0])
  assert len(labels) == 160
  for name in ('loss', 'top1_error', 'top5_error'):
    np.testing.assert_allclose(metrics[name], want[name], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(metrics[f'center_{name}'], centre[name], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(centre_only[name], centre[name], rtol=1e-4, atol=1e-6)
  assert abs(want['loss'] - centre['loss']) > 1e-3  # the ten patches do change the prediction


@pytest.mark.slow
def test_the_final_evaluation_uses_final_eval_crops(tmp_path, one_device, tiny_config):
  """The paper's recipe ends with section 4.1's ten-patch test; earlier evaluations (which drive
  the plateau schedule) stay centre crops. A resumed finished run reports the same final test."""
  config = tiny_config()
  config.final_eval_crops = 10
  workdir = str(tmp_path / 'run')
  _, final = train.train_and_evaluate(config, workdir, one_device)
  assert {'center_top1_error', 'center_loss'} <= set(final)  # only the ten-patch test has them
  _, again = train.train_and_evaluate(config, workdir, one_device)
  assert again == final
  config.final_eval_crops = 1
  _, centre = train.train_and_evaluate(config, workdir, one_device)
  assert 'center_top1_error' not in centre
  np.testing.assert_allclose(centre['top1_error'], final['center_top1_error'], atol=1e-6)


def test_the_paper_recipe_derives_its_steps_from_epochs_and_evaluates_every_epoch(
    tmp_path, one_device, tiny_config
):
  """configs/alexnet.py leaves num_train_steps and eval_every_steps at -1: the run lasts
  num_epochs passes over the training set, rounded up to a whole step, and evaluates at the end
  of every epoch (and at the last step, however the epochs fall)."""
  from alexnet_jax import history
  from alexnet_jax.configs import alexnet

  paper = alexnet.paper()
  assert (paper.num_train_steps, paper.eval_every_steps) == (-1, -1)
  config = tiny_config()
  config.num_train_steps = paper.num_train_steps  # what the tiny preset overrode, back
  config.eval_every_steps = paper.eval_every_steps
  config.checkpoint_every_steps = 1000
  config.num_epochs = 2.1
  config.train_split, config.eval_split = 'train[:64]', 'validation[:64]'  # a few steps
  workdir = str(tmp_path / 'run')
  state, _ = train.train_and_evaluate(config, workdir, one_device)

  # Arithmetic: 64 training examples in the tiny preset's batches of 16, 4 steps an epoch.
  examples, batch = 64, 16
  assert config.batch_size == batch
  total = math.ceil(2.1 * examples / batch)  # 8.4 steps: the last tenth of an epoch takes a step
  assert int(state.step) == total == 9
  epoch_ends = [e * examples // batch for e in (1, 2)]
  evaluated = [r['step'] for r in history.read(workdir) if 'eval_top1_error' in r]
  assert evaluated == epoch_ends + [total] == [4, 8, 9]


def test_the_paper_scale_run_is_its_epochs_rounded_up_to_a_step():
  """90 epochs of ILSVRC-2012's 1,281,167 training images in batches of 128 (section 5)."""
  loop = settings.LoopConfig()  # num_train_steps=-1, num_epochs=90: the paper's
  info = train.pipeline.DatasetInfo(
      num_classes=1000, num_train_examples=1281167, num_eval_examples=50000
  )
  assert train.num_train_steps(loop, 128, info) == 900821  # 900,820.55 steps, rounded up
  assert train.num_train_steps(dataclasses.replace(loop, num_train_steps=7), 128, info) == 7
