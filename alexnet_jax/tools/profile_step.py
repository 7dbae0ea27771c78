r"""Where the training step's time goes: a per-op profile of the compiled step.

    python -m alexnet_jax.tools.profile_step --batch_size=32 --image_size=224 --steps=3

Compiles the trainer's step (`steps.make_train_step`, the paper's model, as `tools.benchmark` times
it), runs `--steps` steps under `jax.profiler.trace`, and reads the trace's per-op events: XLA:CPU
records one event per executed op of the compiled program (a convolution, a dot, a fusion) under
the HLO instruction's name. Each instruction is put in a category from the compiled HLO itself:
- convolutions and dots by direction: forward, backward-data (the gradient of the input, op name
  `transpose(...)`, output shaped like the batch) and backward-filter (the gradient of the kernel,
  output shaped like the kernel);
- the rest by the Python function that made it, from the HLO's stack frames: LRN and max pooling
  (`ops.py`), the SGD update (optax and `optim.py`), and the others by their op.
It prints the milliseconds per step of each category and the instructions that take longest. The
SGD update's row counts its passes over fc6's and fc7's kernels (the 218 MB that dominate it).

XLA:CPU runs convolutions and Eigen's dots asynchronously, so the trace times only their launch:
each of them is rebuilt from the HLO as an op of its own and timed alone (`replays`). Ops can run
side by side on XLA:CPU's threads, so the per-op milliseconds may add up to more than
the step's wall time; both are printed. This module imports no TensorFlow.
"""

import collections
import dataclasses
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax

from alexnet_jax.system import runtime
from alexnet_jax.tools import step_runners

LRN_FUNCTIONS = (
    'local_response_norm',
    '_lrn',
    '_lrn_fwd',
    '_lrn_bwd',
    '_window_sum',
    '_negative_power',
)
UPDATE_FILES = ('optax/_src', 'optax/transforms', 'optax/tree_utils', 'alexnet_jax/optim.py')


@dataclasses.dataclass
class Instruction:
  name: str
  opcode: str
  shape: str  # the output's shape text, e.g. f32[32,55,55,96]
  op_name: str
  frames: list  # (file, function) of the Python stack that made it, innermost first
  category: str = ''


def parse_hlo(text: str) -> dict[str, Instruction]:
  """The ENTRY computation's instructions of a compiled module's `as_text()`, with their stacks."""
  sections = collections.defaultdict(dict)
  section = None
  for line in text.splitlines():
    if line in ('FileNames', 'FunctionNames', 'FileLocations', 'StackFrames'):
      section = line
      continue
    if section and (m := re.match(r'^(\d+) (.*)$', line)):
      sections[section][int(m.group(1))] = m.group(2)
    elif section and line.strip():
      section = None
  files = {k: v.strip('"') for k, v in sections['FileNames'].items()}
  functions = {k: v.strip('"') for k, v in sections['FunctionNames'].items()}
  locations = {}
  for k, v in sections['FileLocations'].items():
    fields = dict(re.findall(r'(\w+)=(\d+)', v))
    locations[k] = (
        files.get(int(fields['file_name_id']), ''),
        functions.get(int(fields['function_name_id']), ''),
    )
  frames = {}
  for k, v in sections['StackFrames'].items():
    fields = dict(re.findall(r'(\w+)=(\d+)', v))
    # The text prints a frame's parent as its id + 1 (0: a root frame, whose printed id is 1).
    frames[k] = (int(fields['file_location_id']), int(fields['parent_frame_id']) - 1)

  def stack(frame_id: int) -> list:
    out, seen = [], set()
    while frame_id in frames and frame_id not in seen:
      seen.add(frame_id)
      location, parent = frames[frame_id]
      out.append(locations.get(location, ('', '')))
      frame_id = parent
    return out

  entry = text[text.index('\nENTRY ') :]
  instructions = {}
  pattern = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = (\S+?)(?:\{[^}]*\})? ([\w\-]+)\(')
  for line in entry.splitlines()[1:]:
    m = pattern.match(line)
    if not m:
      continue
    name, shape, opcode = m.groups()
    op_name = re.search(r'op_name="([^"]*)"', line)
    frame = re.search(r'stack_frame_id=(\d+)', line)
    instructions[name] = Instruction(
        name,
        opcode,
        shape,
        op_name.group(1) if op_name else '',
        stack(int(frame.group(1))) if frame else [],
    )
  return instructions


def _stem(name: str) -> str:
  return re.sub(r'\.\d+$', '', name)


def categorise(ins: Instruction, batch: int) -> str:
  """The row of the profile an instruction belongs to (module docstring)."""
  backward = 'transpose(' in ins.op_name
  batch_first = ins.shape.split('[', 1)[-1].startswith(f'{batch},')
  # A kernel's gradient is shaped like the kernel; XLA may write it as a forward-looking op.
  direction = 'backward-filter' if not batch_first else 'backward-data' if backward else 'forward'
  # ops.add_bias's products with ones, which XLA rewrites as (1, n) x (n, C) dots without
  # metadata, or a reduction to one vector.
  one_row = ins.opcode == 'dot' and not ins.op_name and re.fullmatch(r'\w+\[1,\d+\]', ins.shape)
  if one_row or any(function == '_add_bias_bwd' for _, function in ins.frames):
    return 'bias gradients'
  if backward and re.fullmatch(r'\w+\[\d+\]', ins.shape):
    return 'bias gradients'
  if ins.opcode == 'convolution':
    return f'convolution {direction}'
  if ins.opcode == 'dot' or (ins.opcode == 'fusion' and ins.name.startswith('ynn_fusion')):
    return f'fc matmul {direction}'
  pass_ = 'backward' if backward else 'forward'
  for file, function in ins.frames:
    if file.endswith('alexnet_jax/ops.py') and function in LRN_FUNCTIONS:
      return f'LRN {pass_}'
    if 'max_pool' in function or function.endswith('_pool'):
      return f'max pooling {pass_}'
  if any(function == 'global_norm' for _, function in ins.frames):
    return 'gradient norm (train_grad_norm, the finite check)'
  if any(any(part in file for part in UPDATE_FILES) for file, _ in ins.frames):
    return 'SGD update (optax)'
  if any('optax/losses' in file for file, _ in ins.frames):
    return 'loss'
  for file, function in ins.frames:
    if file.endswith('alexnet_jax/models.py') and '_activation' in function:
      return f'ReLU {pass_}'
    if file.endswith('alexnet_jax/models.py') and 'dropout' in function.lower():
      return f'dropout {pass_}'
    if file.endswith('alexnet_jax/layers.py'):
      return f'towers: split, join, bias {pass_}'
  if not ins.frames:
    return f'made by XLA: {_stem(ins.name)}'
  return f'other: {_stem(ins.name)}'


# --- Convolutions and Eigen dots, replayed one by one (`replays`) ---

_DTYPES = {'f32': 'float32', 'bf16': 'bfloat16', 'f16': 'float16'}
_LHS = {'b': 'N', 'f': 'C', '0': 'H', '1': 'W'}
_RHS = {'o': 'O', 'i': 'I', '0': 'H', '1': 'W'}


def _dims(shape: str) -> tuple[int, ...]:
  inner = shape.split('[', 1)[1].split(']', 1)[0]
  return tuple(int(d) for d in inner.split(',')) if inner else ()


def _pairs(text: str, key: str, default: int) -> tuple:
  m = re.search(rf'\b{key}=([\dx_]+)', text)
  if not m:
    return None
  return tuple(
      tuple(int(v) for v in part.split('_')) if '_' in part else int(part)
      for part in m.group(1).split('x')
  )


def _conv(strides, pad, lhs_dilation, rhs_dilation, spec, groups, batch_groups):
  return jax.jit(
      lambda a, b: jax.lax.conv_general_dilated(
          a,
          b,
          strides,
          pad,
          lhs_dilation,
          rhs_dilation,
          spec,
          feature_group_count=groups,
          batch_group_count=batch_groups,
      )
  )


def _dims_list(line: str, key: str) -> tuple[int, ...]:
  m = re.search(rf'{key}=\{{([\d,]*)\}}', line)
  return tuple(int(d) for d in m.group(1).split(',') if d) if m else ()


def replays(text: str, instructions: dict[str, Instruction]) -> dict[str, callable]:
  """A function per convolution and Eigen dot of the step that runs it alone and waits for it.

  XLA:CPU runs these two asynchronously on its Eigen threads, and the trace's event for one
  covers only its launch, so each is rebuilt from its HLO (operand shapes, window, dimension
  labels or contracting dimensions) as a `lax` op of its own and timed alone. (YNNPACK's dots,
  `ynn_fusion`, run synchronously: the trace times them.)
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  out = {}
  entry = text[text.index('\nENTRY ') :]
  for line in entry.splitlines():
    m = re.match(
        r'^\s*(?:ROOT )?%([\w.\-]+) = \S+ (convolution|dot)\(%([\w.\-]+), %([\w.\-]+)\)', line
    )
    if not m:
      continue
    name, opcode, lhs_name, rhs_name = m.groups()
    lhs, rhs = (
        jnp.zeros(_dims(instructions[n].shape), _DTYPES[instructions[n].shape.split('[')[0]])
        for n in (lhs_name, rhs_name)
    )
    if opcode == 'dot':
      dims = (
          (_dims_list(line, 'lhs_contracting_dims'), _dims_list(line, 'rhs_contracting_dims')),
          (_dims_list(line, 'lhs_batch_dims'), _dims_list(line, 'rhs_batch_dims')),
      )
      fn = jax.jit(lambda a, b, dims=dims: jax.lax.dot_general(a, b, dims))
    else:
      window = re.search(r'window=\{([^}]*)\}', line).group(1)
      if 'rhs_reversal=' in window:
        continue  # not made by this model's step; skipped rather than replayed wrongly
      labels = re.search(r'dim_labels=(\w+)_(\w+)->(\w+)', line).groups()
      spec = (
          ''.join(_LHS[c] for c in labels[0]),
          ''.join(_RHS[c] for c in labels[1]),
          ''.join(_LHS[c] for c in labels[2]),
      )
      size = _pairs(window, 'size', 1)
      ones = (1,) * len(size)
      groups = re.search(r'feature_group_count=(\d+)', line)
      batch_groups = re.search(r'batch_group_count=(\d+)', line)
      fn = _conv(
          _pairs(window, 'stride', 1) or ones,
          _pairs(window, 'pad', 0) or ((0, 0),) * len(size),
          _pairs(window, 'lhs_dilate', 1) or ones,
          _pairs(window, 'rhs_dilate', 1) or ones,
          spec,
          int(groups.group(1)) if groups else 1,
          int(batch_groups.group(1)) if batch_groups else 1,
      )
    out[name] = lambda fn=fn, lhs=lhs, rhs=rhs: fn(lhs, rhs).block_until_ready()
  return out


def _seconds(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def trace_times(fn, steps: int) -> dict[str, float]:
  """Microseconds per run of `fn` spent in each named trace event, over `steps` runs."""
  with tempfile.TemporaryDirectory() as logdir:
    with jax.profiler.trace(logdir, create_perfetto_trace=True):
      for _ in range(steps):
        fn()
    (path,) = glob.glob(os.path.join(logdir, '**', '*.trace.json.gz'), recursive=True)
    with gzip.open(path) as f:
      events = json.load(f)['traceEvents']
  total = collections.Counter()
  for e in events:
    if e.get('ph') == 'X':
      total[e['name']] += e.get('dur', 0)
  return {k: v / steps for k, v in total.items()}


def profile(
    batch: int = 32,
    image_size: int = 224,
    dtype: str = 'float32',
    steps: int = 3,
    width: float = 1.0,
    num_classes: int = 1000,
) -> dict:
  """The profile as a dict: categories and instructions in ms per step, and the wall step time."""
  settings = step_runners.Settings(batch_sizes=(batch,), width=width, num_classes=num_classes)
  params = step_runners.initial_params(settings, image_size)
  cfg = step_runners.model_config(settings, dtype)
  state, fn = step_runners.jax_state(cfg, image_size, params, None, settings.seed)
  data = jax.device_put(step_runners.synthetic_batch(batch, image_size, settings.num_classes))
  compiled = fn.lower(state, data).compile()
  instructions = parse_hlo(compiled.as_text())
  for ins in instructions.values():
    ins.category = categorise(ins, batch)
  holder = {'state': state}

  def step():
    holder['state'], _, _ = compiled(holder['state'], data)
    jax.block_until_ready(holder['state'])

  for _ in range(2):
    step()
  walls = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    walls.append(time.perf_counter() - start)
  per_event = trace_times(step, steps)
  ops = {n: us / 1e3 for n, us in per_event.items() if n in instructions}
  replayed = {}
  for name, replay in replays(compiled.as_text(), instructions).items():
    replay()
    replayed[name] = 1e3 * statistics.median(_seconds(replay) for _ in range(steps))
  ops.update(replayed)
  categories = collections.defaultdict(lambda: {'ms': 0.0, 'ops': 0})
  for name, ms in ops.items():
    row = categories[instructions[name].category]
    row['ms'] += ms
    row['ops'] += 1
  # fc6's and fc7's kernels: 218 MB in float32 at the paper's width.
  fc_kernels = ['[' + ','.join(map(str, params[k]['kernel'].shape)) + ']' for k in ('fc6', 'fc7')]
  update = [
      n
      for n in ops
      if instructions[n].category == 'SGD update (optax)'
      and any(k in instructions[n].shape for k in fc_kernels)
  ]
  return {
      'batch': batch,
      'image_size': image_size,
      'dtype': dtype,
      'device': jax.devices()[0].device_kind,
      'wall_ms_per_step': 1e3 * statistics.median(walls),
      'op_ms_per_step': sum(ops.values()),
      'replayed_ms': sum(replayed.values()),
      'categories': dict(sorted(categories.items(), key=lambda kv: -kv[1]['ms'])),
      'update_passes_over_fc6_fc7_kernels': len(update),
      'update_fc6_fc7_ms': sum(ops[n] for n in update),
      'instructions': [
          {
              'name': n,
              'category': instructions[n].category,
              'shape': instructions[n].shape,
              'ms': ms,
          }
          for n, ms in sorted(ops.items(), key=lambda kv: -kv[1])
      ],
  }


def format_profile(result: dict, top: int = 15) -> str:
  op_total = result['op_ms_per_step']
  lines = [
      f"train step, batch {result['batch']}, {result['image_size']}px, {result['dtype']}, "
      f"{result['device']}: {result['wall_ms_per_step']:.0f} ms wall per step; the ops' own "
      f"times add up to {op_total:.0f} ms, of which {result['replayed_ms']:.0f} ms are the "
      'convolutions and Eigen dots, each replayed alone (XLA:CPU runs them asynchronously, so the '
      'trace does not time them)',
      '',
      '| category | ms/step | % of op time | ops |',
      '| --- | ---: | ---: | ---: |',
  ]
  for name, row in result['categories'].items():
    lines.append(f"| {name} | {row['ms']:.1f} | {100 * row['ms'] / op_total:.1f} | {row['ops']} |")
  lines += [
      '',
      f"SGD update: {result['update_passes_over_fc6_fc7_kernels']} ops write or read fc6's or "
      f"fc7's kernel-shaped arrays, {result['update_fc6_fc7_ms']:.1f} ms per step.",
      '',
      f'the {top} longest ops:',
  ]
  for ins in result['instructions'][:top]:
    lines.append(f"  {ins['ms']:7.1f} ms  {ins['category']:<28} {ins['name']} {ins['shape']}")
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    sys.exit(f'unexpected arguments {argv[1:]}: everything is a flag (--batch_size, ...)')
  runtime.tune_process()
  result = profile(FLAGS.batch_size, FLAGS.image_size, FLAGS.dtype, FLAGS.steps, FLAGS.width)
  print(format_profile(result, FLAGS.top))
  if FLAGS.output:
    with open(FLAGS.output, 'w') as f:
      json.dump(result, f, indent=1)


if __name__ == '__main__':
  flags.DEFINE_integer('batch_size', 32, 'Batch size.')
  flags.DEFINE_integer('image_size', 224, 'Image size.')
  flags.DEFINE_string('dtype', 'float32', 'model.dtype: float32 or bfloat16.')
  flags.DEFINE_integer('steps', 3, 'Profiled steps (after two untimed ones).')
  flags.DEFINE_float('width', 1.0, 'Channel multiplier (the paper: 1.0).')
  flags.DEFINE_integer('top', 15, 'How many of the longest ops to list.')
  flags.DEFINE_string('output', None, 'Also write the profile as JSON to this file.')
  app.run(main)
