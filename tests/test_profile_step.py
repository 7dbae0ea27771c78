"""The per-op profile: every op of the compiled step lands in the row the model says it should."""

import collections

import pytest

from alexnet_jax.tools import profile_step
from alexnet_jax.tools import step_runners


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
  assert 'convolution backward-filter' in profile_step.format_profile(result)


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
