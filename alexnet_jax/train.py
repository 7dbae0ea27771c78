"""The training loop that `main` runs: data, steps, evaluation, logs, checkpoints, resumption.

`train_and_evaluate(config, workdir)` is the whole run; notebooks call it, or its pieces
(`steps.create_model`, `steps.create_train_state`, `steps.make_train_step`, `evaluate`), directly.
The loop reads metrics back from the devices only every `log_every_steps`, so steps run back to
back between logs. Resuming checks that the workdir's checkpoints were trained with the same
network and data (`check_resumable`); SIGTERM or SIGINT saves the current step and stops
(`stopping`).
"""

import contextlib
import dataclasses
import functools
import math
import os
from typing import Callable, Iterator

from absl import logging
from clu import parameter_overview
import jax
import jax.numpy as jnp
import ml_collections

from alexnet_jax import checkpointing
from alexnet_jax.data import device_augment
from alexnet_jax.data import pipeline
from alexnet_jax.errors import ConfigError
from alexnet_jax import finetune
from alexnet_jax import history
from alexnet_jax import optim
from alexnet_jax import settings
from alexnet_jax import sharding
from alexnet_jax import steps
from alexnet_jax import stopping
from alexnet_jax.system import files


def num_train_steps(loop: settings.LoopConfig, batch_size: int, info: pipeline.DatasetInfo) -> int:
  """`num_train_steps`, or `num_epochs` of the training split rounded up to a whole step (the
  last epoch is not cut short); evaluations come every `num_train_examples // batch_size` steps."""
  if loop.num_train_steps > 0:
    return loop.num_train_steps
  return math.ceil(loop.num_epochs * info.num_train_examples / batch_size)


def preflight(
    run: settings.RunConfig, devices=None
) -> tuple[sharding.Layout, pipeline.DatasetInfo, int]:
  """(the layout on `devices`, the dataset's info, the run's length in steps), or ConfigError for
  a run that cannot start: a batch its devices cannot split, a dataset that is not prepared or
  has another number of classes than the model. Nothing is built or written: the trainer and a
  sweep (for every run, before the first starts) check with it."""
  layout = sharding.Layout.create(run.mesh, run.model.towers, devices)
  layout.check_batch_sizes(batch_size=run.data.batch_size, eval_batch_size=run.data.eval_batch_size)
  info = pipeline.get_info(run.data)
  if info.num_classes != run.model.num_classes:
    raise ConfigError(
        f'Dataset {run.data.dataset!r} has {info.num_classes} classes but model.num_classes='
        f'{run.model.num_classes}. Set --config.model.num_classes={info.num_classes}.'
    )
  return layout, info, num_train_steps(run.loop, run.data.batch_size, info)


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


def check_resumable(checkpointer: checkpointing.Checkpointer, run: settings.RunConfig) -> None:
  """ConfigError if the latest checkpoint's run had another network or data than `run` (see
  settings.CHANGEABLE_ON_RESUME), unless run.loop.allow_config_change; logs what else changed."""
  step = checkpointer.latest_step()
  recorded = checkpointer.meta(step).get('config')
  if recorded is None:
    logging.warning(
        'The checkpoint of step %d in %s does not record its config (an older alexnet_jax wrote '
        'it): resuming without checking that this config is the one it was trained with.',
        step,
        checkpointer.directory,
    )
    return
  fixed = settings.differences(recorded, run.source, ignoring=settings.CHANGEABLE_ON_RESUME)
  free = [line for line in settings.differences(recorded, run.source, ()) if line not in fixed]
  if free:
    logging.info('Resuming step %d with changed settings: %s.', step, '; '.join(free))
  if fixed and run.loop.allow_config_change:
    logging.warning(
        'allow_config_change=True: resuming step %d with another network or data: %s.',
        step,
        '; '.join(fixed),
    )
  elif fixed:
    shown = '; '.join(fixed[:8]) + (f'; and {len(fixed) - 8} more' if len(fixed) > 8 else '')
    raise ConfigError(
        f'{os.path.dirname(checkpointer.directory)} holds a run trained with another config ('
        f'{shown}; "there" is its checkpoint of step {step}). These fields change the network or '
        'the data it learns from, so the resumed run would be neither that run nor one of this '
        'config. Use a new --workdir for this config, or pass --config.allow_config_change=True '
        '(in Python: config.allow_config_change = True) to continue that run with it anyway.'
    )


def run_settings(config: ml_collections.ConfigDict | settings.RunConfig, workdir: str):
  """`settings.from_config(config)` for a run in `workdir`: with the network of the run init_from
  names, or that the workdir's checkpoint recorded (`finetune.take_network`), and a statistics
  file's colour statistics from the checkpoint the run resumes, or else from the one init_from
  names, where one carries them, so the file may have moved since
  (`settings.carried_colour_statistics`). A typed RunConfig is returned as it is."""
  if isinstance(config, settings.RunConfig):
    return config
  config, taken = finetune.take_network(config, workdir)
  metas = []
  if config.augment.get('stats_file'):
    metas.append(checkpointing.latest_meta(workdir))
    source = config.get('init_from')
    if source and os.path.isdir(source):
      metas.append(checkpointing.latest_meta(source))
  run = settings.from_config(config, settings.carried_colour_statistics(config, metas))
  return dataclasses.replace(run, init_network=taken)


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

  `config` is a run's ConfigDict (given init_from's network, checked and typed here by
  `run_settings`) or an already typed `settings.RunConfig`. `devices` (default: all) are the
  devices the mesh spans.
  `step_callback(step, state)`, if given, runs on the host after each step is dispatched (the loop
  benchmark times the loop with it). Returns the final train state and the final evaluation
  metrics (at `final_eval_crops`). Raises `stopping.Stopped` after saving the step it was in when
  the process is sent SIGTERM or SIGINT.
  """
  run = run_settings(config, workdir)
  data, loop = run.data, run.loop
  files.check_writable(workdir, '--workdir', 'logs and checkpoints')
  layout, info, total_steps = preflight(run, devices)
  os.makedirs(workdir, exist_ok=True)
  steps_per_epoch = max(1, info.num_train_examples // data.batch_size)
  eval_every = loop.eval_every_steps if loop.eval_every_steps > 0 else steps_per_epoch
  final_data = dataclasses.replace(data, eval_crops=loop.final_eval_crops)
  trainset_data = dataclasses.replace(data, eval_split=data.train_split, eval_crops=1)
  checkpointer = checkpointing.Checkpointer(workdir, loop.keep_checkpoints)
  resumed = checkpointer.latest_step() is not None
  if resumed:
    try:  # before anything is built or written: a refused resumption costs seconds, changes nothing
      check_resumable(checkpointer, run)
    except ConfigError:
      checkpointer.close()
      raise

  model = steps.create_model(run.model, data.image_size, loop.seed, **layout.model_axes())
  # Fine-tuning (finetune.py): a fresh run takes init_from's weights where they fit; fresh or
  # resumed, the layers it did not load learn at optim.new_layer_lr_mult.
  started_from = finetune.take_weights(run, workdir, model)
  schedule = optim.learning_rate_schedule(run.optim, total_steps)
  tx = optim.create_optimizer(run.optim, total_steps, started_from.new_layers)
  plateau = optim.create_plateau(run.optim)
  graphdef, state = steps.create_train_state(model, tx, plateau, loop.seed)
  del model
  state = layout.place_state(state)

  # Imported here, not at the top: clu's writers and periodic actions import TensorFlow (seconds,
  # and its start-up banner), which nothing else in this module needs, so importing `train` stays
  # cheap and a command's `runtime.tune_process()` comes before TensorFlow starts.
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  from clu import periodic_actions  # pylint: disable=g-import-not-at-top

  meta = {
      'config': run.source,
      'class_names': list(info.class_names),
      'init_from': started_from.to_json(),
      'colour_statistics': settings.colour_statistics(run),
  }
  train_ds = pipeline.create_train_dataset(data, jax.process_index(), jax.process_count())
  train_iter = iter(train_ds)
  # The lowest validation error among the checkpoints: an evaluation below it is saved.
  best_error = min(checkpointer.evaluated_steps().values(), default=math.inf)
  if resumed:
    try:  # before the writers start: a checkpoint that does not fit leaves the workdir as it was
      state, data_state = checkpointer.restore(checkpointing.abstract_like(state))
    except ConfigError:
      checkpointer.close()
      raise
    if data_state:
      train_iter.set_state(data_state)
  if jax.process_index() == 0:
    # TensorBoard, written on a thread; the console's short lines and metrics.jsonl are added
    # below. (clu's LoggingWriter, whose 17-digit lines a person does not read, is not used.)
    writer = metric_writers.AsyncMultiWriter([metric_writers.SummaryWriter(workdir)])
  else:  # the other processes only log, to their own logs
    writer = metric_writers.create_default_writer(just_logging=True, asynchronous=True)
  if resumed:
    logging.info(
        'Resumed from the checkpoint at step %d in %s.', int(state.step), checkpointer.directory
    )
  else:
    parameter_overview.log_parameter_overview(state.params)
    writer.write_hparams(run.hparams)
  start_step = int(state.step)
  if jax.process_index() == 0:
    writer = metric_writers.MultiWriter(
        [
            writer,
            history.HistoryWriter(workdir, start_step),
            history.ConsoleWriter(total_steps, start_step),
        ]
    )

  preprocess = device_augment.for_data(data) if data.device_augment else None
  train_fn = steps.make_train_step(graphdef, tx, schedule, layout, preprocess)
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
    with metric_writers.ensure_flushes(writer), stopping.listening() as stop:
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

        log_step = step % loop.log_every_steps == 0 or step == total_steps
        # Processes compare their stop requests at log steps only (stopping.py); a request in the
        # last step changes nothing, the run is finishing.
        stop_signal = stop.agreed(sync_point=log_step) if step < total_steps else 0
        if log_step or stop_signal:
          check_finite(step)
          merged = functools.reduce(lambda a, b: a.merge(b), pending_metrics)
          writer.write_scalars(step, {f'train_{k}': v for k, v in merged.compute().items()})
          pending_metrics.clear()

        evaluated = None  # this step's evaluation, as the checkpoint records it
        if step % eval_every == 0 or step == total_steps:
          check_finite(step)
          with report.timed('eval') if report else contextlib.nullcontext():
            eval_metrics = evaluate(data, state, eval_fn, layout)
          evaluated = {checkpointing.BEST_METRIC: eval_metrics['top1_error']}
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

        # A new best evaluation is saved whatever the checkpoint schedule, so that the best state
        # exists to be kept (the paper recipe evaluates once per epoch, every 10,009 steps).
        new_best = evaluated is not None and evaluated[checkpointing.BEST_METRIC] < best_error
        if new_best:
          best_error = evaluated[checkpointing.BEST_METRIC]
        if (
            step % loop.checkpoint_every_steps == 0
            or step == total_steps
            or new_best
            or stop_signal
        ):
          check_finite(step)
          checkpointer.save(step, state, data_state, meta, metrics=evaluated)
        if stop_signal:
          checkpointer.wait()
          stopped = stopping.Stopped(stop_signal, step, checkpointer.directory)
          logging.warning('%s', stopped)
          raise stopped
    if not eval_metrics:  # resumed a finished run: report its final evaluation again
      eval_metrics = evaluate(final_data, state, eval_fn, layout)
      logging.info('The run in %s had already finished at step %d.', workdir, step)
      prefix = 'final_eval' if final_data.eval_crops != data.eval_crops else 'eval'
      writer.write_scalars(step, {f'{prefix}_{k}': v for k, v in eval_metrics.items()})
  finally:
    # The prefetching thread first (it stops after at most one more batch), then the pipeline's
    # threads and worker processes: not left to the garbage collector, with their shared memory,
    # while a sweep's next run starts.
    stream.close()
    train_iter.close()
    checkpointer.wait()
    checkpointer.close()
    writer.close()
  return state, eval_metrics
