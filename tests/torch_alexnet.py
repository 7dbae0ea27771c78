"""AlexNet's forward pass from the paper, in float64 PyTorch: the reference of tests/test_models.py.

Written from Krizhevsky, Sutskever & Hinton (NIPS 2012), not from `alexnet_jax`: plain
torch.nn.functional ops, one op per line of the paper, in float64 so that its own rounding is far
below the float32 model's. Nothing here imports the package; the only things it shares with the
model are the parameters' layout (below) and the choices a variant names.

    conv1 (stride 4) -> act -> norm -> pool     each tower reads the image
    conv2            -> act -> norm -> pool     each tower reads its own tower
    conv3            -> act                     each tower reads both towers
    conv4, conv5     -> act (pool after conv5)  each tower reads its own tower
    fc6, fc7         -> act -> dropout          each tower reads both towers
    fc8                                         reads both towers, one softmax's logits

Parameters are the model's own nested dict (`{'conv1': {'kernel', 'bias'}, ...}`, numpy arrays):
conv kernels HWIO, dense kernels (inputs, outputs), and tower t owns the t-th contiguous slice of
every layer's output channels. fc6's rows are pool5's maps flattened as (row, column, channel),
both towers' channels joined; the batch-norm ablation's `norm1`/`norm2` hold `scale`, `bias`,
`mean`, `var`.
"""

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

# Section 3.3: "we used k = 2, n = 5, alpha = 10^-4, and beta = 0.75".
PAPER_LRN = {'k': 2.0, 'n': 5, 'alpha': 1e-4, 'beta': 0.75}
# Section 3.4: overlapping pooling s = 2, z = 3; the traditional pooling it is compared to, s = z = 2.
POOLS = {'overlapping': (3, 2), 'plain': (2, 2)}
ACTIVATIONS = {'relu': torch.relu, 'tanh': torch.tanh}


@dataclasses.dataclass(frozen=True)
class Choices:
  """What a variant changes. Defaults are the paper's network."""

  towers: int = 2  # section 3.2
  activation: str = 'relu'  # section 3.1
  norm: str = 'lrn'  # lrn (section 3.3) | batchnorm (at the LRN positions) | none
  pool: str = 'overlapping'  # section 3.4
  lrn: dict = dataclasses.field(default_factory=lambda: dict(PAPER_LRN))
  # Which channels one LRN sums over: each tower's own (the paper's two GPUs) or all of them.
  lrn_per_tower: bool = True
  dropout_rate: float = 0.5  # section 4.2
  bn_epsilon: float = 1e-5


def local_response_norm(a: torch.Tensor, k: float, n: int, alpha: float, beta: float):
  """Section 3.3 on NCHW maps, by the formula, channel by channel:

  b[i] = a[i] / (k + alpha * sum_{j = max(0, i - n/2)}^{min(N - 1, i + n/2)} a[j]^2) ^ beta
  """
  channels = a.shape[1]
  b = torch.empty_like(a)
  for i in range(channels):
    window = a[:, max(0, i - n // 2) : min(channels - 1, i + n // 2) + 1]
    b[:, i] = a[:, i] / (k + alpha * (window**2).sum(dim=1)) ** beta
  return b


def conv1_bottom_right_padding(image_size: int) -> int:
  """cuda-convnet's ceiling-sized conv1 output, ceil((s - 11) / 4) + 1, whose last windows run past
  the bottom and right edges into zeros (the paper's 224 gives 55 maps)."""
  out = math.ceil((image_size - 11) / 4) + 1
  return (out - 1) * 4 + 11 - image_size


def _tensor(x) -> torch.Tensor:
  return torch.as_tensor(np.asarray(x, np.float64))


def _conv(x, kernel, bias, stride=1, padding=0):
  """HWIO kernel -> torch's OIHW."""
  return F.conv2d(x, _tensor(kernel).permute(3, 2, 0, 1), _tensor(bias), stride, padding)


def _towers_of(params: dict, layer: str, towers: int):
  """(kernel, bias) of each tower of `layer`: contiguous slices of the output channels."""
  kernel, bias = params[layer]['kernel'], params[layer]['bias']
  per = kernel.shape[-1] // towers
  return [
      (kernel[..., t * per : (t + 1) * per], bias[t * per : (t + 1) * per]) for t in range(towers)
  ]


def forward(
    params: dict,
    images,
    choices: Choices = Choices(),
    *,
    train: bool = False,
    dropout_masks: dict | None = None,
) -> tuple[torch.Tensor, dict]:
  """Logits (float64, batch x classes) of NHWC `images`, and the batch statistics of the norm
  layers' inputs, {'norm1': (mean, biased variance), 'norm2': ...}, per channel of both towers.

  `train`: batch norm normalises with the batch's mean and biased variance (and dropout applies
  `dropout_masks`); otherwise with the running `mean` and `var` in `params`. `dropout_masks`:
  {'fc6': keep, 'fc7': keep}, 0/1 arrays (batch x units, both towers' units joined); a kept unit
  is scaled by 1 / (1 - dropout_rate), a dropped one is 0. None: no dropout.
  """
  act = ACTIVATIONS[choices.activation]
  window, stride = POOLS[choices.pool]
  towers = choices.towers
  stats = {}

  def norm(xs, name):
    if choices.norm == 'lrn':
      if choices.lrn_per_tower:
        return [local_response_norm(x, **choices.lrn) for x in xs]
      joined = local_response_norm(torch.cat(xs, 1), **choices.lrn)
      return list(joined.chunk(towers, 1))
    if choices.norm == 'batchnorm':
      x = torch.cat(xs, 1)  # statistics are per channel: joining the towers changes nothing
      mean = x.mean(dim=(0, 2, 3))
      var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))  # biased: divides by N
      stats[name] = (mean, var)
      p = params[name]
      if not train:
        mean, var = _tensor(p['mean']), _tensor(p['var'])
      y = (x - mean[None, :, None, None]) / torch.sqrt(
          var[None, :, None, None] + choices.bn_epsilon
      )
      y = y * _tensor(p['scale'])[None, :, None, None] + _tensor(p['bias'])[None, :, None, None]
      return list(y.chunk(towers, 1))
    assert choices.norm == 'none', choices.norm
    return xs

  def pool(xs):
    return [F.max_pool2d(x, window, stride) for x in xs]

  def dropout(xs, name):
    if dropout_masks is None:
      return xs
    keeps = _tensor(dropout_masks[name]).chunk(towers, 1)
    return [x * keep / (1.0 - choices.dropout_rate) for x, keep in zip(xs, keeps)]

  image = _tensor(images).permute(0, 3, 1, 2)
  extra = conv1_bottom_right_padding(image.shape[-1])
  image = F.pad(image, (0, extra, 0, extra))  # (left, right, top, bottom)
  xs = [act(_conv(image, w, b, stride=4)) for w, b in _towers_of(params, 'conv1', towers)]
  xs = pool(norm(xs, 'norm1'))
  xs = [
      act(_conv(x, w, b, padding=2)) for x, (w, b) in zip(xs, _towers_of(params, 'conv2', towers))
  ]
  xs = pool(norm(xs, 'norm2'))
  both = torch.cat(xs, 1)  # the towers talk
  xs = [act(_conv(both, w, b, padding=1)) for w, b in _towers_of(params, 'conv3', towers)]
  xs = [
      act(_conv(x, w, b, padding=1)) for x, (w, b) in zip(xs, _towers_of(params, 'conv4', towers))
  ]
  xs = [
      act(_conv(x, w, b, padding=1)) for x, (w, b) in zip(xs, _towers_of(params, 'conv5', towers))
  ]
  xs = pool(xs)
  # The towers talk; fc6's rows are in (row, column, channel) order.
  flat = torch.cat(xs, 1).permute(0, 2, 3, 1).reshape(image.shape[0], -1)
  xs = [act(flat @ _tensor(w) + _tensor(b)) for w, b in _towers_of(params, 'fc6', towers)]
  both = torch.cat(dropout(xs, 'fc6'), 1)
  xs = [act(both @ _tensor(w) + _tensor(b)) for w, b in _towers_of(params, 'fc7', towers)]
  both = torch.cat(dropout(xs, 'fc7'), 1)
  logits = both @ _tensor(params['fc8']['kernel']) + _tensor(params['fc8']['bias'])
  return logits, stats
