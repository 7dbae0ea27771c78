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
from typing import Any, Callable, Iterator, Sequence

from absl import logging
from clu import parameter_overview
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

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
  return evaluations(data, state, eval_fn, layout.global_batch)[0]


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


def _data_stream(train_iters, together: bool) -> Iterator[tuple[list[dict], dict]]:
  """(each iterator's state after this batch, the batch): one member's batch, or the members'
  batches stacked on a leading axis."""
  while True:
    batches = [next(it) for it in train_iters]
    tag = [it.get_state() for it in train_iters]
    if together:
      yield tag, {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    else:
      yield tag, batches[0]


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
  the process is sent SIGTERM or SIGINT, and `steps.TrainingDiverged` when the loss or the
  gradients stop being finite (the last good checkpoint stays).
  """
  (outcome,) = train_members([run_settings(config, workdir)], [workdir], devices, step_callback)
  if isinstance(outcome, steps.TrainingDiverged):
    raise outcome
  return outcome


@dataclasses.dataclass
class _Member:
  """What the loop keeps of each run it trains."""

  run: settings.RunConfig
  workdir: str
  checkpointer: checkpointing.Checkpointer
  meta: dict | None = None
  train_iter: Any = None
  writer: Any = None
  report: Any = None
  best_error: float = math.inf  # the lowest validation error among its checkpoints
  eval_metrics: dict = dataclasses.field(default_factory=dict)
  last_good_step: int = 0
  diverged: steps.TrainingDiverged | None = None


def check_members(runs: Sequence[settings.RunConfig], layout: sharding.Layout) -> None:
  """ConfigError unless `runs` can train together: one process, one device, and configs that
  differ in their seed alone (one compiled program serves them all)."""
  if jax.process_count() > 1 or layout.mesh.size > 1:
    raise ConfigError(
        f'Members trained together share one device of one process; this run has '
        f'{layout.mesh.size} devices in {jax.process_count()} processes. Give each group one '
        'device (a sweep: --config.sweep.parallel=<number of devices>), or train the members '
        'one after another (--config.sweep.together=1).'
    )
  for run in runs[1:]:
    differ = settings.differences(
        runs[0].source, run.source, ignoring=settings.EXECUTION_FIELDS + ('seed',)
    )
    if differ:
      raise ConfigError(
          f'Members trained together must differ in their seed alone; these differ in '
          f'{"; ".join(differ[:4])}. Train them in separate groups.'
      )


def train_members(
    runs: Sequence[settings.RunConfig],
    workdirs: Sequence[str],
    devices=None,
    step_callback: Callable[[int, steps.TrainState], None] | None = None,
) -> list[tuple[steps.TrainState, dict[str, float]] | steps.TrainingDiverged]:
  """`train_and_evaluate` for several runs at once: each member its own initialisation, dropout
  draws, data order, workdir, checkpoints and logs, as its run alone would have them, and all of
  them stepped by one compiled program (`steps.make_train_step(members=True)`) on one device.

  `runs` (typed, `run_settings`) must differ in their seed alone (`check_members`), and their
  workdirs hold checkpoints of the same step or none. One run is `train_and_evaluate`'s loop
  itself. Returns, per member, (its final state, its final metrics) or the TrainingDiverged that
  stopped it: a member that diverges stops being logged and saved, the others go on.
  `step_callback(step, state)` gets the members' states stacked.
  """
  if not runs or len(runs) != len(workdirs):
    raise ValueError(f'{len(runs)} runs for {len(workdirs)} workdirs.')
  together = len(runs) > 1
  data, loop = runs[0].data, runs[0].loop
  for workdir in workdirs:
    files.check_writable(workdir, '--workdir', 'logs and checkpoints')
  layout, info, total_steps = preflight(runs[0], devices)
  if together:
    check_members(runs, layout)
  steps_per_epoch = max(1, info.num_train_examples // data.batch_size)
  eval_every = loop.eval_every_steps if loop.eval_every_steps > 0 else steps_per_epoch
  final_data = dataclasses.replace(data, eval_crops=loop.final_eval_crops)
  trainset_data = dataclasses.replace(data, eval_split=data.train_split, eval_crops=1)
  members: list[_Member] = []
  try:  # before anything is built or written: a refused resumption costs seconds, changes nothing
    for run, workdir in zip(runs, workdirs):
      os.makedirs(workdir, exist_ok=True)
      members.append(
          _Member(run, workdir, checkpointing.Checkpointer(workdir, loop.keep_checkpoints))
      )
      if members[-1].checkpointer.latest_step() is not None:
        check_resumable(members[-1].checkpointer, run)
    starts = {m.checkpointer.latest_step() for m in members}
    if len(starts) > 1:
      raise ConfigError(
          f'Members trained together resume from the same step; their checkpoints are at steps '
          f'{sorted(s or 0 for s in starts)}. Train them one after another (--config.sweep.'
          'together=1) until they have caught up.'
      )
  except BaseException:
    for m in members:
      m.checkpointer.close()
    raise
  resumed = starts != {None}

  def member(tree, i: int):
    return jax.tree.map(lambda leaf: leaf[i], tree) if together else tree

  # Members are built one by one as their runs alone would be, then stacked; one device holds them.
  device = layout.mesh.devices.flat[0]
  axes = {} if together else layout.model_axes()
  states = []
  for m in members:
    model = steps.create_model(m.run.model, data.image_size, m.run.loop.seed, **axes)
    # Fine-tuning (finetune.py): a fresh run takes init_from's weights where they fit; fresh or
    # resumed, the layers it did not load learn at optim.new_layer_lr_mult.
    started_from = finetune.take_weights(m.run, m.workdir, model)
    schedule = optim.learning_rate_schedule(m.run.optim, total_steps)
    tx = optim.create_optimizer(m.run.optim, total_steps, started_from.new_layers)
    plateau = optim.create_plateau(m.run.optim)
    graphdef, state = steps.create_train_state(model, tx, plateau, m.run.loop.seed)
    states.append(state)
    m.meta = {
        'config': m.run.source,
        'class_names': list(info.class_names),
        'init_from': started_from.to_json(),
        'colour_statistics': settings.colour_statistics(m.run),
    }
    del model
  if together:
    state = jax.device_put(jax.tree.map(lambda *leaves: jnp.stack(leaves), *states), device)
    put = functools.partial(jax.device_put, device=device)
  else:
    state = layout.place_state(states[0])
    put = layout.global_batch
  del states

  # Imported here, not at the top: clu's writers and periodic actions import TensorFlow (seconds,
  # and its start-up banner), which nothing else in this module needs, so importing `train` stays
  # cheap and a command's `runtime.tune_process()` comes before TensorFlow starts.
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  from clu import periodic_actions  # pylint: disable=g-import-not-at-top

  hooks = []
  try:
    restored = []
    for i, m in enumerate(members):
      stream = pipeline.create_train_dataset(m.run.data, jax.process_index(), jax.process_count())
      if total_steps * data.batch_size >= info.num_train_examples:
        stream.prefill()  # a run of an epoch or more reads every image: decode them all first
      m.train_iter = iter(stream)
      m.best_error = min(m.checkpointer.evaluated_steps().values(), default=math.inf)
      if resumed:  # before the writers start: a checkpoint that does not fit changes nothing
        restored_state, data_state = m.checkpointer.restore(
            checkpointing.abstract_like(member(state, i))
        )
        restored.append(restored_state)
        if data_state:
          m.train_iter.set_state(data_state)
    if restored:
      state = (
          jax.device_put(jax.tree.map(lambda *leaves: jnp.stack(leaves), *restored), device)
          if together
          else restored[0]
      )
    del restored
    start_step = int(member(state, 0).step)
    for i, m in enumerate(members):
      if jax.process_index() == 0:
        # TensorBoard, written on a thread; the console's short lines and metrics.jsonl are
        # added below. (clu's LoggingWriter, whose 17-digit lines a person does not read, is not
        # used.)
        writer = metric_writers.AsyncMultiWriter([metric_writers.SummaryWriter(m.workdir)])
      else:  # the other processes only log, to their own logs
        writer = metric_writers.create_default_writer(just_logging=True, asynchronous=True)
      if resumed:
        logging.info(
            'Resumed from the checkpoint at step %d in %s.', start_step, m.checkpointer.directory
        )
      else:
        parameter_overview.log_parameter_overview(member(state, i).params)
        writer.write_hparams(m.run.hparams)
      if jax.process_index() == 0:
        name = f'{os.path.basename(m.workdir)}: ' if together else ''
        console = history.ConsoleWriter(
            total_steps, start_step, log=lambda line, name=name: logging.info('%s%s', name, line)
        )
        writer = metric_writers.MultiWriter(
            [writer, history.HistoryWriter(m.workdir, start_step), console]
        )
        m.report = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)
        hooks.append(m.report)
      m.writer = writer
      m.last_good_step = start_step
  except BaseException:
    for m in members:
      for closing in (m.train_iter, m.writer):
        if closing is not None:
          closing.close()
      m.checkpointer.close()
    raise
  if jax.process_index() == 0 and loop.profile_steps > 0:
    # Profile `profile_steps` steps once, right after the first (compiling) ones.
    hooks.append(
        periodic_actions.Profile(
            num_profile_steps=loop.profile_steps,
            profile_duration_ms=None,
            logdir=workdirs[0],
            first_profile=start_step + 2,
            every_secs=None,
        )
    )

  preprocess = device_augment.for_data(data) if data.device_augment else None
  step_layout = None if together else layout
  train_fn = steps.make_train_step(graphdef, tx, schedule, step_layout, preprocess, together)
  eval_fn = steps.make_eval_step(graphdef, step_layout, together)

  def timed_eval():
    """Each member's progress report counts the evaluation's time as evaluation."""
    stack = contextlib.ExitStack()
    for m in members:
      if m.report is not None:
        stack.enter_context(m.report.timed('eval'))
    return stack

  def evaluated_members(eval_data: pipeline.DataConfig) -> list[dict[str, float]]:
    with timed_eval():
      return evaluations(eval_data, state, eval_fn, put, len(members) if together else None)

  def live() -> list[tuple[int, _Member]]:
    return [(i, m) for i, m in enumerate(members) if m.diverged is None]

  # Per-step outputs stay on the devices until the next log or check: no host work per step
  # beyond dispatching it.
  pending_metrics: list[steps.TrainMetrics] = []
  pending_finite: list[jax.Array] = []
  stream = sharding.prefetch_to_devices(
      _data_stream([m.train_iter for m in members], together), layout, data.prefetch_batches, put
  )

  def check_finite(step: int) -> bool:
    """Marks the members whose loss or gradients stopped being finite; False once none is left."""
    if pending_finite:
      finite = np.asarray(jnp.all(jnp.stack(pending_finite), axis=0)).reshape(-1)
      for i, m in live():
        if not finite[i]:
          m.diverged = steps.TrainingDiverged(
              f'The loss or gradients became NaN or infinite between steps {m.last_good_step} and '
              f'{step}. Training stopped; the last good checkpoint stays in '
              f'{m.checkpointer.directory}. Lower --config.optim.learning_rate, or check the '
              'input data.'
          )
          logging.warning('%s', m.diverged)
    pending_finite.clear()
    for _, m in live():
      m.last_good_step = step
    return bool(live())

  step = start_step
  try:
    with contextlib.ExitStack() as flushing, stopping.listening() as stop:
      for m in members:
        flushing.enter_context(metric_writers.ensure_flushes(m.writer))
      while step < total_steps:
        data_states, batch = next(stream)
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
          if not check_finite(step):
            break
          merged = functools.reduce(lambda a, b: a.merge(b), pending_metrics)
          for i, m in live():
            computed = member(merged, i).compute()
            m.writer.write_scalars(step, {f'train_{k}': v for k, v in computed.items()})
          pending_metrics.clear()

        evaluated = {}  # each member's evaluation at this step, as its checkpoint records it
        if step % eval_every == 0 or step == total_steps:
          if not check_finite(step):
            break
          scores = evaluated_members(data)
          for i, m in live():
            m.eval_metrics = scores[i]
            evaluated[i] = {checkpointing.BEST_METRIC: scores[i]['top1_error']}
            m.writer.write_scalars(step, {f'eval_{k}': v for k, v in scores[i].items()})
          if runs[0].optim.schedule == 'plateau':
            errors = jnp.asarray([s['top1_error'] for s in scores], jnp.float32)
            update = functools.partial(steps.plateau_update, plateau)
            state = jax.vmap(update)(state, errors) if together else update(state, errors[0])
          if loop.eval_trainset:
            fit = evaluated_members(trainset_data)
            for i, m in live():
              m.writer.write_scalars(step, {f'trainset_{k}': v for k, v in fit[i].items()})
          if step == total_steps and final_data.eval_crops != data.eval_crops:
            # The final test (section 4.1's ten patches in the paper recipe) is a metric of its
            # own: it never feeds the plateau schedule, which the centre-crop curve drives.
            final = evaluated_members(final_data)
            for i, m in live():
              m.eval_metrics = final[i]
              m.writer.write_scalars(step, {f'final_eval_{k}': v for k, v in final[i].items()})

        # A new best evaluation is saved whatever the checkpoint schedule, so that the best state
        # exists to be kept (the paper recipe evaluates once per epoch, every 10,009 steps).
        saving = []
        for i, m in live():
          best = evaluated.get(i, {}).get(checkpointing.BEST_METRIC, math.inf)
          if best < m.best_error:
            m.best_error = best
            saving.append(i)
        if step % loop.checkpoint_every_steps == 0 or step == total_steps or stop_signal:
          saving = [i for i, _ in live()]
        if saving:
          if not check_finite(step):
            break
          for i, m in live():
            if i in saving:
              m.checkpointer.save(
                  step, member(state, i), data_states[i], m.meta, metrics=evaluated.get(i)
              )
        if stop_signal:
          for m in members:
            m.checkpointer.wait()
          stopped = stopping.Stopped(stop_signal, step, members[0].checkpointer.directory)
          logging.warning('%s', stopped)
          raise stopped
      if start_step >= total_steps and live():
        # Resumed a finished run: report its final evaluation again.
        final = evaluated_members(final_data)
        prefix = 'final_eval' if final_data.eval_crops != data.eval_crops else 'eval'
        for i, m in live():
          m.eval_metrics = final[i]
          logging.info('The run in %s had already finished at step %d.', m.workdir, step)
          m.writer.write_scalars(step, {f'{prefix}_{k}': v for k, v in final[i].items()})
  finally:
    # The prefetching thread first (it stops after at most one more batch), then the pipeline's
    # threads and worker processes: not left to the garbage collector, with their shared memory,
    # while a sweep's next run starts.
    stream.close()
    for m in members:
      m.train_iter.close()
      m.checkpointer.wait()
      m.checkpointer.close()
      m.writer.close()
  return [
      m.diverged if m.diverged is not None else (member(state, i), m.eval_metrics)
      for i, m in enumerate(members)
  ]


def evaluations(
    data: pipeline.DataConfig,
    state: steps.TrainState,
    eval_fn: Callable,
    put: Callable[[dict], dict],
    members: int | None = None,
) -> list[dict[str, float]]:
  """Each member's `evaluate` (`members`: how many are stacked in `state`; None: one, unstacked),
  every batch read once for all of them; `put` places a host batch on the devices."""
  total = None
  for batch in pipeline.eval_batches(data, jax.process_index(), jax.process_count()):
    batch_metrics = eval_fn(state, put(batch))
    total = batch_metrics if total is None else total.merge(batch_metrics)
  logging.info(
      'Evaluated %d examples of %s: %s.',
      int(np.asarray(total.loss.count).reshape(-1)[0]),
      data.eval_split,
      'the softmax averaged over 10 patches (section 4.1); center_*: the centre patch'
      if data.eval_crops == 10
      else 'the centre crop',
  )
  each = (
      [total] if members is None else [jax.tree.map(lambda x: x[i], total) for i in range(members)]
  )
  return [{k: float(v) for k, v in one.compute().items()} for one in each]
