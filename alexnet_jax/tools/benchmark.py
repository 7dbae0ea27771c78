r"""How fast does the paper's training step run, here, against PyTorch on the same machine?

    python -m alexnet_jax.tools.benchmark --batch_sizes=32,128 --dtypes=float32,bfloat16 \
        --output=bench.json

Times the FULL training step the trainer uses (`steps.make_train_step`: forward, backward, section
5's SGD update, metrics) of the paper's model (`configs/alexnet.py`: 1000 classes, two towers, LRN,
dropout 0.5, 224x224) on a synthetic batch that already sits on the devices, and the same network
in PyTorch (`torch_reference`) on the same batch, from the same weights, with the same optimiser,
in a process of its own. This module is the command: the run, its table and its flags. The pieces
it puts together are modules of their own, each importable from a notebook:
- `step_runners`: each framework's step, ready to time, and the check that both compute the same
  step (and how float32 and bfloat16 are run on each side);
- `flops`: the model FLOPs counted from the layer shapes;
- `machine`: the measured matmul peaks, the machine's limit and what the machine is.

What each row reports:
- ms/step: the MEDIAN over `--windows` timed windows of `--steps` steps each, after `--warmup`
  steps; the host waits for the devices only at the end of each window (`block_until_ready`,
  `torch.cuda.synchronize()`). The frameworks' windows are interleaved (jax, torch, jax, ...), so
  load from other processes hits both alike. img/s = batch / (ms/step).
- compile s: JAX: `lower` + `compile` wall time (the command turns the persistent compilation
  cache off, so this is a real compile); torch.compile: the first step's wall time.
- peak MB: GPU: the allocator's peak (`Device.memory_stats()['peak_bytes_in_use']`, the process's
  high-water mark, read after the row's warm-up; torch: `max_memory_allocated` after a reset). CPU:
  the compiled program's `memory_analysis()` (arguments + outputs - donated + temporaries); none for
  torch on CPU. The JSON says which (`peak_source`).
- MFU: model FLOPs / s over a peak this run MEASURES with a large `jnp.dot` in the row's dtype
  (`machine.measure_peak_flops`; float32's rate where that is faster, as on CPUs without fast
  bfloat16 matmuls). Model FLOPs are COUNTED from the layer shapes (`flops.count_macs`): 2 FLOPs
  per multiply-add, x3 for forward + backward.
- % of limit: the same model FLOP/s over the MACHINE's limit (`machine.machine_limits`): the
  fastest matmul of XLA, numpy and torch measured in this run, in the row's dtype or float32. It is
  printed with the images/s it allows, the most this step could reach here.
- ratio: torch eager's ms/step over the row's, same batch, dtype and image size (>1: faster than
  torch eager). Reported only when the check passed: before any timing, one float32 step of each
  at full precision, dropout off, from the same weights and batch, must give the same loss and
  parameter updates (`step_runners.check_same_step`).

This module and those it imports import no TensorFlow, tfds, grain, ml_collections or clu writer
(the GPU machines have none of them); `steps` needs clu's pure-Python `clu.metrics` only.
"""

import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Callable

from absl import app
from absl import flags
import jax

from alexnet_jax.errors import ConfigError
from alexnet_jax import models
from alexnet_jax import sharding
from alexnet_jax.system import runtime
from alexnet_jax.tools import flops
from alexnet_jax.tools import machine
from alexnet_jax.tools import step_runners
from alexnet_jax.tools.step_runners import Settings

TORCH_MODES = ('eager', 'compile')


# --- The run ---


def validate(settings: Settings) -> None:
  problems = []
  try:
    models.validate(step_runners.model_config(settings, 'float32'))
  except ValueError as e:
    problems.append(f'--width and --num_classes: {str(e).rstrip(".")}')
  if not settings.batch_sizes or min(settings.batch_sizes) < 1:
    problems.append('--batch_sizes must list positive batch sizes, e.g. 32,128')
  bad = [d for d in settings.dtypes if d not in models.DTYPES]
  if bad or not settings.dtypes:
    problems.append(f'--dtypes must be among {tuple(models.DTYPES)}, not {bad}')
  bad = [s for s in settings.strategies if s not in sharding.STRATEGIES]
  if bad or not settings.strategies:
    problems.append(f'--strategies must be among {sharding.STRATEGIES}, not {bad}')
  if settings.torch is not None:
    bad = [m for m in settings.torch if m not in TORCH_MODES]
    if bad:
      problems.append(f'--torch must be among {TORCH_MODES + ("none",)}, not {bad}')
  small = [s for s in settings.image_sizes if s < models.min_image_size()]
  if small or not settings.image_sizes:
    problems.append(
        f'--image_sizes must be at least {models.min_image_size()} (five layers of '
        f'pooling), not {small}'
    )
  if min(settings.steps, settings.windows) < 1 or settings.warmup < 0:
    problems.append('--steps and --windows must be >= 1 and --warmup >= 0')
  if problems:
    raise ConfigError('Benchmark flags: ' + '; '.join(problems) + '.')


def torch_modes(settings: Settings) -> tuple[str, ...]:
  """The torch variants to time; ConfigError if torch was asked for and is missing."""
  torch = machine.import_torch()
  if settings.torch is None:
    if torch is None:
      return ()
    return ('eager', 'compile') if step_runners.torch_device(torch) == 'cuda' else ('eager',)
  if settings.torch and torch is None:
    raise ConfigError(
        "--torch needs PyTorch, which is not installed: pip install -e '.[bench]' "
        '(on a CPU-only machine: pip install torch --index-url '
        'https://download.pytorch.org/whl/cpu), or pass --torch=none.'
    )
  return settings.torch


def run(settings: Settings, devices=None, log: Callable[[str], None] = print) -> dict:
  """Runs every variant and returns the result (what --output writes as JSON)."""
  validate(settings)
  devices = list(devices or jax.devices())
  modes = torch_modes(settings)
  if modes and settings.torch_threads:
    import torch

    torch.set_num_threads(settings.torch_threads)
  platform_name = devices[0].platform
  peak_size = settings.peak_matmul_size or (8192 if platform_name == 'gpu' else 2048)
  peaks = {
      d: machine.measure_peak_flops(d, peak_size, devices[0])
      for d in dict.fromkeys(settings.dtypes + ('float32',))
  }
  xla_rates = {d: dict(p) for d, p in peaks.items()}  # each dtype's own rate, before the max below
  for dtype, peak in peaks.items():
    # A peak is the fastest the device multiplied matrices in this run: where float32 beats the
    # row's dtype (a CPU without fast bfloat16 matmuls), float32's rate is the peak.
    if peaks['float32']['flops_per_s'] > peak['flops_per_s']:
      peaks[dtype] = dict(
          peak,
          flops_per_s=peaks['float32']['flops_per_s'],
          source=f"{peaks['float32']['source']}, faster than the {dtype} matmul "
          f"({peak['flops_per_s'] / 1e12:.3g} TFLOP/s)",
      )
  limits = machine.machine_limits(settings.dtypes, peak_size, xla_rates, devices[0])
  peaks = {d: peaks[d] for d in settings.dtypes}
  result = {
      'machine': machine.machine_info(),
      'settings': dataclasses.asdict(settings),
      'torch_modes': list(modes),
      'flop_convention': flops.FLOP_CONVENTION,
      'peak': peaks,
      'machine_limit': limits,
      'macs_per_image': {},
      'checks': [],
      'rows': [],
      'skipped': [],
  }
  result['machine']['benchmark_devices'] = len(devices)
  for image_size in settings.image_sizes:
    macs = flops.count_macs(step_runners.model_config(settings, 'float32'), image_size)
    result['macs_per_image'][str(image_size)] = macs
    flops_per_image = 3 * 2 * sum(macs.values())
    params = step_runners.initial_params(settings, image_size)
    check = None
    if modes and settings.check:
      check_batch = step_runners.synthetic_batch(
          min(step_runners.CHECK_BATCH, *settings.batch_sizes),
          image_size,
          settings.num_classes,
          settings.seed,
      )
      check = step_runners.check_same_step(settings, image_size, params, check_batch)
      result['checks'].append(check)
      log(_check_line(check))
    for batch in sorted(settings.batch_sizes):
      data = step_runners.synthetic_batch(batch, image_size, settings.num_classes, settings.seed)
      for dtype in settings.dtypes:
        variant = {'batch': batch, 'dtype': dtype, 'image_size': image_size}
        runners = []
        for strategy in settings.strategies:
          try:
            runners.append(
                step_runners.jax_runner(
                    settings, image_size, batch, dtype, strategy, params, data, devices
                )
            )
          except ConfigError as e:
            result['skipped'].append(
                dict(variant, framework='jax', strategy=strategy, reason=str(e))
            )
        closers = []
        for mode in modes:
          try:
            runner, close = step_runners.torch_process_runner(
                settings, image_size, dtype, mode, params, data
            )
            runners.append(runner)
            closers.append(close)
          except Exception as e:  # e.g. torch.compile without a C++ compiler: skip, say why
            result['skipped'].append(
                dict(
                    variant,
                    framework='torch',
                    mode=mode,
                    reason=f'{type(e).__name__}: {e}'.splitlines()[0],
                )
            )
        try:
          for _ in range(settings.windows):
            for runner in runners:
              start = time.perf_counter()
              runner.step(settings.steps)
              runner.window_ms.append((time.perf_counter() - start) / settings.steps * 1e3)
        finally:  # end the torch processes whatever happens
          for close in closers:
            close()
        rows = []
        for runner in runners:
          ms = statistics.median(runner.window_ms)
          row = dict(
              variant,
              **runner.row,
              ms_per_step=ms,
              window_ms=runner.window_ms,
              images_per_s=batch / ms * 1e3,
          )
          peak = peaks[dtype]['flops_per_s'] * row['devices']
          row['mfu'] = flops_per_image * batch / (ms / 1e3) / peak
          limit = limits[dtype]['flops_per_s'] * row['devices']
          row['of_machine_limit'] = flops_per_image * batch / (ms / 1e3) / limit
          row['machine_limit_images_per_s'] = limit / flops_per_image
          rows.append(row)
        eager = [r for r in rows if r['framework'] == 'torch' and r['mode'].startswith('eager')]
        for row in rows:
          row['ratio_vs_torch_eager'] = None
          if eager and check is not None and check['passed']:
            row['ratio_vs_torch_eager'] = eager[0]['ms_per_step'] / row['ms_per_step']
          log(format_row(row))
        result['rows'].extend(rows)
  return result


# --- Output ---

COLUMNS = (
    'framework',
    'mode',
    'batch',
    'dtype',
    'strategy',
    'img/s',
    'ms/step',
    'compile s',
    'peak MB',
    'MFU %',
    '% of limit',
    'vs torch eager',
)


def _cells(row: dict) -> list[str]:
  fmt = lambda v, f: '-' if v is None else format(v, f)
  ratio = row['ratio_vs_torch_eager']
  return [
      row['framework'],
      row['mode'],
      str(row['batch']),
      row['dtype'],
      row['strategy'],
      fmt(row['images_per_s'], '.1f'),
      fmt(row['ms_per_step'], '.1f'),
      fmt(row['compile_s'], '.1f'),
      fmt(row['peak_mb'], '.0f'),
      fmt(100 * row['mfu'], '.1f'),
      fmt(100 * row['of_machine_limit'], '.1f'),
      '-' if ratio is None else f'{ratio:.2f}x',
  ]


def _check_line(check: dict) -> str:
  return (
      f"check {check['image_size']}px, batch {check['batch']}, float32, dropout off: loss "
      f"jax {check['loss_jax']:.7g} torch {check['loss_torch']:.7g} (rel diff "
      f"{check['loss_rel_diff']:.1e}); parameter updates: worst {check['worst_parameter']}, "
      f"rel diff {check['worst_update_rel_diff']:.1e}, "
      f"{check['worst_update_diff_over_allowance']:.2f} of the allowance: "
      + ('PASSED' if check['passed'] else 'FAILED, so no ratios are reported')
  )


def format_row(row: dict) -> str:
  return ' '.join(f'{k}={v}' for k, v in zip(COLUMNS, _cells(row)))


def format_table(result: dict) -> str:
  """A markdown table of the rows, then the peak, the checks and the skipped variants."""
  lines = []
  for size in dict.fromkeys(r['image_size'] for r in result['rows']):
    lines += [
        f'\n{size}x{size} images',
        '| ' + ' | '.join(COLUMNS) + ' |',
        '| ' + ' | '.join('---' for _ in COLUMNS) + ' |',
    ]
    lines += [
        '| ' + ' | '.join(_cells(r)) + ' |' for r in result['rows'] if r['image_size'] == size
    ]
  for dtype, peak in result['peak'].items():
    vendor = peak.get('vendor_flops_per_s')
    lines.append(
        f"MFU peak {dtype}: {peak['flops_per_s'] / 1e12:.3g} TFLOP/s ({peak['source']})"
        + (f'; vendor data sheet: {vendor / 1e12:.4g} TFLOP/s' if vendor else '')
    )
  for dtype, limit in result['machine_limit'].items():
    rates = ', '.join(f'{k} {v / 1e12:.3g}' for k, v in sorted(limit['rates'].items()))
    sizes = sorted({r['image_size'] for r in result['rows']})
    per_image = {size: 3 * 2 * sum(result['macs_per_image'][str(size)].values()) for size in sizes}
    lines.append(
        f"machine limit {dtype}: {limit['flops_per_s'] / 1e12:.3g} TFLOP/s ({limit['by']}; "
        f'{limit["source"]}; TFLOP/s: {rates}), so at most '
        + ', '.join(
            f"{limit['flops_per_s'] / f:.1f} images/s at {s}px" for s, f in per_image.items()
        )
        + ' per device for this step; "% of limit" is each row\'s share of it.'
    )
  lines.append(f"FLOPs: {result['flop_convention']}.")
  sources = sorted({r['peak_source'] for r in result['rows'] if r['peak_mb'] is not None})
  if sources:
    lines.append('peak MB: ' + '; '.join(sources) + '.')
  lines += [_check_line(check) for check in result['checks']]
  if not result['checks']:
    lines.append('no torch check was run: no ratios.')
  for skip in result['skipped']:
    name = skip.get('strategy') or skip.get('mode')
    lines.append(
        f"skipped {skip['framework']} {name} batch {skip['batch']} {skip['dtype']}: "
        f"{skip['reason']}"
    )
  return '\n'.join(lines)


# --- Command line ---

FLAGS = flags.FLAGS


def _define_flags():
  # Defined only when run as a command, so that tests and notebooks can import this module next
  # to the other commands (whose flags share names such as --output).
  flags.DEFINE_list('batch_sizes', ['128'], 'Global batch sizes.')
  flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Compute dtypes (model.dtype).')
  flags.DEFINE_list(
      'strategies', ['data'], 'Strategies (sharding.py); skipped when the devices ' 'do not fit.'
  )
  flags.DEFINE_list('image_sizes', ['224'], 'Image sizes.')
  flags.DEFINE_integer('steps', 5, 'Steps per timed window.')
  flags.DEFINE_integer('windows', 5, 'Timed windows; ms/step is their median.')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
  flags.DEFINE_list(
      'torch', ['auto'], 'eager, compile, none, or auto (eager; also compile on a ' 'GPU).'
  )
  flags.DEFINE_bool('channels_last', False, 'torch float32 in channels_last too (bfloat16 always).')
  flags.DEFINE_integer(
      'torch_threads',
      0,
      "torch CPU threads (0: torch's default, one per "
      "physical core). On a CPU shared with other processes torch's spinning "
      "OpenMP threads lose far more than XLA's: time on an idle machine.",
  )
  flags.DEFINE_float('width', 1.0, 'Channel multiplier (the paper: 1.0).')
  flags.DEFINE_integer('num_classes', 1000, 'Classes (the paper: 1000).')
  flags.DEFINE_integer(
      'peak_matmul_size',
      0,
      'Side of the matmul that measures peak FLOP/s (0: ' '8192 on a GPU, 2048 on a CPU).',
  )
  flags.DEFINE_bool('check', True, 'Check that both frameworks compute the same step first.')
  flags.DEFINE_string('output', None, 'Also write the result as JSON to this file.')


def settings_from_flags() -> Settings:
  try:
    ints = lambda xs: tuple(int(x) for x in xs)
    batch_sizes, image_sizes = ints(FLAGS.batch_sizes), ints(FLAGS.image_sizes)
  except ValueError as e:
    raise ConfigError(f'--batch_sizes and --image_sizes take integers, e.g. 32,128 ({e}).')
  torch = tuple(FLAGS.torch)
  torch = None if torch == ('auto',) else tuple(m for m in torch if m != 'none')
  return Settings(
      batch_sizes=batch_sizes,
      dtypes=tuple(FLAGS.dtypes),
      strategies=tuple(FLAGS.strategies),
      image_sizes=image_sizes,
      steps=FLAGS.steps,
      windows=FLAGS.windows,
      warmup=FLAGS.warmup,
      torch=torch,
      channels_last=FLAGS.channels_last,
      torch_threads=FLAGS.torch_threads,
      width=FLAGS.width,
      num_classes=FLAGS.num_classes,
      peak_matmul_size=FLAGS.peak_matmul_size,
      check=FLAGS.check,
  )


def main(argv):
  del argv
  # No persistent compilation cache: "compile s" is the time XLA takes to compile the step.
  runtime.tune_process(compilation_cache=False)
  # Share the GPU with torch: JAX would otherwise take 75% of its memory at start.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  try:
    result = run(settings_from_flags())
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(format_table(result))
  if FLAGS.output:
    with open(FLAGS.output, 'w') as f:
      json.dump(result, f, indent=1)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
