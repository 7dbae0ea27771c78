"""The per-op profile: every op of the compiled step lands in the row the model says it should."""

import collections

import pytest

from alexnet_jax.tools import profile_step
from alexnet_jax.tools import step_runners
from tests import commands


@pytest.mark.slow
def test_the_profile_finds_each_convolution_pass_and_the_papers_ops():
  result = profile_step.profile(batch=4, image_size=67, steps=1, width=0.25, num_classes=10)
  rows = result['categories']
  convs = {
      k: rows[f'convolution {k}']['ops'] for k in ('forward', 'backward-data', 'backward-filter')
  }
  # Figure 2: conv1 and conv3 read one input (one op each), conv2, conv4 and conv5 one per tower.
  assert convs['forward'] == 1 + 2 + 1 + 2 + 2
  assert convs['backward-filter'] == convs['forward']  # every kernel gets its gradient
  assert convs['backward-data'] == convs['forward'] - 1  # but the image does not
  fc = {k: rows[f'fc matmul {k}']['ops'] for k in ('forward', 'backward-data', 'backward-filter')}
  assert fc == {'forward': 3, 'backward-data': 3, 'backward-filter': 3}  # fc6, fc7, fc8
  assert rows['bias gradients']['ops'] >= 8  # one per layer at least, as products with ones
  for row in ('LRN forward', 'LRN backward', 'max pooling forward', 'max pooling backward'):
    assert rows[row]['ops'] >= 1 and rows[row]['ms'] > 0, row
  # SGD with momentum and decay reads and writes fc6's and fc7's kernels at least once each.
  assert (
      rows['SGD update (optax)']['ops'] >= 2 and result['update_passes_over_fc6_fc7_kernels'] >= 2
  )
  assert result['wall_ms_per_step'] > 0 and result['replayed_ms'] > 0
  assert sum(r['ms'] for r in rows.values()) == pytest.approx(result['op_ms_per_step'])
  # What the command prints for this profile (its float32 run: the command's test below runs
  # bfloat16, and prints through the same function).
  assert_printed_as_its_json(profile_step.format_profile(result, top=3), result, 'float32', 3)


def test_replayed_convolutions_compute_the_steps_shapes():
  """Each convolution (and Eigen dot) rebuilt from the HLO text gives the output shape the compiled step has."""
  settings = step_runners.Settings(width=0.25, num_classes=10)
  params = step_runners.initial_params(settings, 67)
  state, fn = step_runners.jax_state(
      step_runners.model_config(settings, 'float32'), 67, params, None, 0
  )
  text = fn.lower(state, step_runners.synthetic_batch(4, 67, 10)).compile().as_text()
  instructions = profile_step.parse_hlo(text)
  replays = profile_step.replays(text, instructions)
  counts = collections.Counter(
      profile_step.categorise(instructions[n], 4).split()[0] for n in replays
  )
  assert counts['convolution'] == 8 + 8 + 7
  for name, replay in replays.items():
    assert replay().shape == profile_step._dims(instructions[name].shape), name


@pytest.mark.slow
def test_the_command_prints_the_per_op_table_and_writes_it_as_json(tmp_path, compilation_cache):
  """docs/performance.md runs both dtypes. The command runs bfloat16 here; float32's profile is
  printed by the same `format_profile`, and checked in process above, so a second command (its
  own start, compilation and replays) would check nothing more."""
  output = tmp_path / 'profile.json'
  out, result = commands.run_for_json(
      'alexnet_jax.tools.profile_step',
      '--dtype=bfloat16',
      '--batch_size=4',
      '--image_size=67',
      '--width=0.25',
      '--steps=1',
      '--top=3',
      output=output,
      env=compilation_cache,
  )
  assert_printed_as_its_json(out.stdout, result, 'bfloat16', 3)


def assert_printed_as_its_json(text: str, result: dict, dtype: str, top: int) -> None:
  """`text`, the printed profile (`--top=top`), says what `result`, its JSON, says."""
  assert (result['batch'], result['image_size'], result['dtype']) == (4, 67, dtype)
  lines = text.splitlines()
  assert lines[0].startswith(f'train step, batch 4, 67px, {dtype}, cpu: '), lines[0]
  # One table row per category, in the JSON's order (longest first), with its op count.
  table = [l.strip('|').split('|') for l in lines if l.startswith('| ') and '---' not in l][1:]
  rows = result['categories']
  assert [c.strip() for c, *_ in table] == list(rows)
  for name, ms, share, ops in table:
    row = rows[name.strip()]
    assert (ms.strip(), ops.strip()) == (f"{row['ms']:.1f}", str(row['ops'])), name
  assert sum(float(share) for _, _, share, _ in table) == pytest.approx(100, abs=0.05 * len(table))
  # Each convolution pass by direction (Figure 2: 8 forward; the image gets no gradient).
  ops = {name: row['ops'] for name, row in rows.items()}
  assert (
      ops['convolution forward'],
      ops['convolution backward-filter'],
      ops['convolution backward-data'],
  ) == (8, 8, 7)
  assert ops['LRN forward'] >= 1
  # In bfloat16 the pooling's reduce-windows, made by XLA around the converts, carry no frame of
  # ours: the profile counts them as XLA's own (measured with this command at 67 px).
  pooling = 'max pooling forward' if dtype == 'float32' else 'made by XLA: wrapped_reduce-window'
  assert ops[pooling] >= 1
  # The SGD update's line, and the --top longest ops, longest first.
  passes = result['update_passes_over_fc6_fc7_kernels']
  assert passes >= 2 and f'SGD update: {passes} ops write or read' in text
  longest = lines[lines.index(f'the {top} longest ops:') + 1 :]
  assert len(longest) == top, text
  for line, ins in zip(longest, result['instructions'][:top], strict=True):
    assert line.split() == [
        f"{ins['ms']:.1f}",
        'ms',
        *ins['category'].split(),
        ins['name'],
        ins['shape'],
    ]
  assert [i['ms'] for i in result['instructions']] == sorted(
      (i['ms'] for i in result['instructions']), reverse=True
  )
