"""The training loop that `main` runs: data, steps, evaluation, logs, checkpoints, resumption.

`train_and_evaluate(config, workdir)` is the whole run; notebooks call it, or its pieces
(`steps.create_model`, `steps.create_train_state`, `steps.make_train_step`, `evaluate`), directly.
The loop reads metrics back from the devices only every `log_every_steps`, so steps run back to
back between logs.
"""

import contextlib
import dataclasses
import functools
import math
import os
from typing import Any, Callable, Iterator

from absl import logging
from clu import parameter_overview
import jax
import jax.numpy as jnp
import ml_collections

from alexnet_jax import checkpointing
from alexnet_jax import finetune
from alexnet_jax import history
from alexnet_jax import settings
from alexnet_jax.data import pipeline
from alexnet_jax import optim
from alexnet_jax import sharding
from alexnet_jax import steps
from alexnet_jax.errors import ConfigError


def num_train_steps(loop: settings.LoopConfig, batch_size: int, info: pipeline.DatasetInfo) -> int:
  if loop.num_train_steps > 0:
    return loop.num_train_steps
  return math.ceil(loop.num_epochs * info.num_train_examples / batch_size)


def evaluate(
    data: pipeline.DataConfig, state: steps.TrainState, eval_fn: Callable, layout: sharding.Layout
) -> dict[str, float]:
  """Loss and top-1/top-5 error over every example of the evaluation split.

  With `eval_crops=10` they are those of section 4.1's ten-patch test, and `center_*` those of
  its centre patch alone, from the same forward pass.
  """
  total = None
  for batch in pipeline.eval_batches(data, jax.process_index(), jax.process_count()):
    batch_metrics = eval_fn(state, layout.global_batch(batch))
    total = batch_metrics if total is None else total.merge(batch_metrics)
  logging.info(
      'Evaluated %d examples of %s: %s.',
      int(total.loss.count),
      data.eval_split,
      'the softmax averaged over 10 patches (section 4.1); center_*: the centre patch'
      if data.eval_crops == 10
      else 'the centre crop',
  )
  return {k: float(v) for k, v in total.compute().items()}


def _check_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test_{jax.process_index()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise ConfigError(
        f'Cannot write to the workdir {workdir!r} ({e.strerror}). Pass a '
        '--workdir you can write to; logs and checkpoints go there.'
    ) from None


def _data_stream(train_iter) -> Iterator[tuple[dict, dict]]:
  """(iterator state after this batch, batch) pairs."""
  while True:
    batch = next(train_iter)
    yield train_iter.get_state(), batch


def train_and_evaluate(
    config: ml_collections.ConfigDict | settings.RunConfig,
    workdir: str,
    devices=None,
    step_callback: Callable[[int, steps.TrainState], None] | None = None,
) -> tuple[steps.TrainState, dict[str, float]]:
  """Trains, evaluates, logs and checkpoints in `workdir`; resumes from its latest checkpoint.

  `config` is a run's ConfigDict (checked and typed here, by `settings.from_config`) or an
  already typed `settings.RunConfig`. `devices` (default: all) are the devices the mesh spans.
  `step_callback(step, state)`, if given, runs on the host after each step is dispatched (the loop
  benchmark times the loop with it). Returns the final train state and the final evaluation
  metrics (at `final_eval_crops`).
  """
  run = config if isinstance(config, settings.RunConfig) else settings.from_config(config)
  data, loop = run.data, run.loop
  _check_workdir(workdir)
  layout = sharding.Layout.create(run.mesh, run.model.towers, devices)
  layout.check_batch_sizes(batch_size=data.batch_size, eval_batch_size=data.eval_batch_size)
  info = pipeline.get_info(data)
  if info.num_classes != run.model.num_classes:
    raise ConfigError(
        f'Dataset {data.dataset!r} has {info.num_classes} classes but model.num_classes='
        f'{run.model.num_classes}. Set --config.model.num_classes={info.num_classes}.'
    )
  total_steps = num_train_steps(loop, data.batch_size, info)
  steps_per_epoch = max(1, info.num_train_examples // data.batch_size)
  eval_every = loop.eval_every_steps if loop.eval_every_steps > 0 else steps_per_epoch
  final_data = dataclasses.replace(data, eval_crops=loop.final_eval_crops)
  trainset_data = dataclasses.replace(data, eval_split=data.train_split, eval_crops=1)

  model = steps.create_model(run.model, data.image_size, loop.seed, **layout.model_axes())
  # Fine-tuning (finetune.py): a fresh run takes init_from's weights where they fit; fresh or
  # resumed, the layers it did not load learn at optim.new_layer_lr_mult.
  start = finetune.start(run, workdir, model)
  schedule = optim.learning_rate_schedule(run.optim, total_steps)
  tx = optim.create_optimizer(run.optim, total_steps, start.new_layers)
  plateau = optim.create_plateau(run.optim)
  graphdef, state = steps.create_train_state(model, tx, plateau, loop.seed)
  del model
  state = layout.place_state(state)

  # Imported here, not at the top: clu's writers and periodic actions import TensorFlow (seconds,
  # and its start-up banner), which nothing else in this module needs, so importing `train` stays
  # cheap and a command's `runtime.configure()` comes before TensorFlow starts.
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  from clu import periodic_actions  # pylint: disable=g-import-not-at-top

  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0, asynchronous=True
  )
  checkpointer = checkpointing.Checkpointer(workdir, loop.keep_checkpoints)
  meta = {'config': run.source, 'class_names': list(info.class_names), 'init_from': start.to_json()}
  train_ds = pipeline.create_train_dataset(data, jax.process_index(), jax.process_count())
  train_iter = iter(train_ds)

  if checkpointer.latest_step() is not None:
    state, data_state = checkpointer.restore(checkpointing.abstract_like(state))
    if data_state:
      train_iter.set_state(data_state)
    logging.info(
        'Resumed from the checkpoint at step %d in %s.', int(state.step), checkpointer.directory
    )
  else:
    parameter_overview.log_parameter_overview(state.params)
    writer.write_hparams(run.hparams)
  start_step = int(state.step)
  if jax.process_index() == 0:
    writer = metric_writers.MultiWriter([writer, history.HistoryWriter(workdir, start_step)])

  train_fn = steps.make_train_step(graphdef, tx, schedule, layout)
  eval_fn = steps.make_eval_step(graphdef, layout)
  hooks = []
  report = None
  if jax.process_index() == 0:
    report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)
    hooks.append(report)
    if loop.profile_steps > 0:
      # Profile `profile_steps` steps once, right after the first (compiling) ones.
      hooks.append(
          periodic_actions.Profile(
              num_profile_steps=loop.profile_steps,
              profile_duration_ms=None,
              logdir=workdir,
              first_profile=start_step + 2,
              every_secs=None,
          )
      )

  eval_metrics: dict[str, float] = {}
  # Per-step outputs stay on the devices until the next log or check: no host work per step
  # beyond dispatching it.
  pending_metrics: list[steps.TrainMetrics] = []
  pending_finite: list[jax.Array] = []
  last_good_step = start_step
  stream = sharding.prefetch_to_devices(_data_stream(train_iter), layout, data.prefetch_batches)

  def check_finite(step: int) -> None:
    nonlocal last_good_step
    if pending_finite and not bool(jnp.all(jnp.stack(pending_finite))):
      raise steps.TrainingDiverged(
          f'The loss or gradients became NaN or infinite between steps {last_good_step} and '
          f'{step}. Training stopped; the last good checkpoint stays in {checkpointer.directory}. '
          'Lower --config.optim.learning_rate, or check the input data.'
      )
    pending_finite.clear()
    last_good_step = step

  step = start_step
  try:
    with metric_writers.ensure_flushes(writer):
      while step < total_steps:
        data_state, batch = next(stream)
        with jax.profiler.StepTraceAnnotation('train', step_num=step):
          state, step_metrics, finite = train_fn(state, batch)
        step += 1
        pending_finite.append(finite)
        pending_metrics.append(step_metrics)
        for hook in hooks:
          hook(step)
        if step_callback is not None:
          step_callback(step, state)

        if step % loop.log_every_steps == 0 or step == total_steps:
          check_finite(step)
          merged = functools.reduce(lambda a, b: a.merge(b), pending_metrics)
          writer.write_scalars(step, {f'train_{k}': v for k, v in merged.compute().items()})
          pending_metrics.clear()

        if step % eval_every == 0 or step == total_steps:
          check_finite(step)
          with report.timed('eval') if report else contextlib.nullcontext():
            eval_metrics = evaluate(data, state, eval_fn, layout)
          if run.optim.schedule == 'plateau':
            state = steps.plateau_update(plateau, state, eval_metrics['top1_error'])
          writer.write_scalars(step, {f'eval_{k}': v for k, v in eval_metrics.items()})
          if loop.eval_trainset:
            with report.timed('eval') if report else contextlib.nullcontext():
              fit = evaluate(trainset_data, state, eval_fn, layout)
            writer.write_scalars(step, {f'trainset_{k}': v for k, v in fit.items()})
          if step == total_steps and final_data.eval_crops != data.eval_crops:
            # The final test (section 4.1's ten patches in the paper recipe) is a metric of its
            # own: it never feeds the plateau schedule, which the centre-crop curve drives.
            with report.timed('eval') if report else contextlib.nullcontext():
              eval_metrics = evaluate(final_data, state, eval_fn, layout)
            writer.write_scalars(step, {f'final_eval_{k}': v for k, v in eval_metrics.items()})

        if step % loop.checkpoint_every_steps == 0 or step == total_steps:
          check_finite(step)
          checkpointer.save(step, state, data_state, meta)
    if not eval_metrics:  # resumed a finished run: report its final evaluation again
      eval_metrics = evaluate(final_data, state, eval_fn, layout)
      logging.info('The run in %s had already finished at step %d.', workdir, step)
      prefix = 'final_eval' if final_data.eval_crops != data.eval_crops else 'eval'
      writer.write_scalars(step, {f'{prefix}_{k}': v for k, v in eval_metrics.items()})
  finally:
    checkpointer.wait()
    checkpointer.close()
    writer.close()
  return state, eval_metrics
