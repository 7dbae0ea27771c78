"""The same AlexNet in PyTorch: a second framework to check our numbers against and to race.

    from alexnet_jax import models
    from alexnet_jax.tools import torch_reference as tr
    net = tr.build(models.ModelConfig(), image_size=224)      # torch.nn.Module, NCHW input
    tr.load_params(net, state.params)                         # our TrainState.params, as-is
    opt = tr.make_optimizer(net, learning_rate=0.01, momentum=0.9, weight_decay=5e-4)
    loss = tr.train_step(net, opt, images_nchw, labels)       # forward, backward, SGD update
    tr.torch_layout(params)                                   # our params as torch tensors' arrays

It is exactly `models.AlexNet` (Figure 2), written the way a PyTorch user would: the towers are
grouped convolutions (`groups=towers` for conv2, conv4 and conv5, whose towers see only their own
half; conv1 sees the image in both towers, so it is an ordinary conv; conv3, fc6, fc7 and fc8 read
both towers). A grouped-conv weight keeps group g's output channels as the g-th contiguous slice,
which is how our kernels keep their towers, so weights only need HWIO -> OIHW. conv1 pads the
bottom and right edges to cuda-convnet's ceiling-sized output (`models.conv1_padding`), LRN
(section 3.3) runs on each tower's channels on its own, pooling overlaps (3.4), dropout 0.5 in
fc6 and fc7 (4.2). fc6's weight is permuted at load time so that torch's NCHW flatten of pool5
meets the rows our NHWC flatten met.

The optimiser is section 5's. Ours (`optim.py`) is v <- 0.9 v + lr (g + wd w), w <- w - v, with
decay on weights only; `torch.optim.SGD(momentum=0.9, weight_decay=wd)` computes
v <- 0.9 v + (g + wd w), w <- w - lr v, which is the same update for a constant learning rate.
Biases go in a parameter group with no decay, as in cuda-convnet.

torch is an optional dependency (`pip install -e '.[bench]'`): only this module imports it.
Supported choices: norm 'lrn' or 'none', relu or tanh, both pools, one or two towers, any width
and dtype (bfloat16 through `torch.autocast`, see `train_step`); batch norm is not mirrored.
"""

import math
from typing import Any

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from alexnet_jax import models


class TorchAlexNet(nn.Module):
  """models.AlexNet in torch: NCHW images in, float32 logits out."""

  def __init__(self, config: models.ModelConfig, image_size: int):
    super().__init__()
    models.validate(config)
    if config.norm not in ('lrn', 'none'):
      raise ValueError(f'torch_reference mirrors norm lrn and none, not {config.norm!r}.')
    torchvision_fields = ('conv1_padding', 'adaptive_avg_pool', 'dropout_placement')
    if any(getattr(config, f) != getattr(models.ModelConfig(), f) for f in torchvision_fields):
      raise ValueError(
          f'torch_reference mirrors the paper\'s {", ".join(torchvision_fields)}; torchvision\'s '
          'own AlexNet (torchvision.models.alexnet) is the reference of models.TORCHVISION.'
      )
    self.config = config
    self.towers = config.towers
    self.conv1_extra = models.conv1_padding(image_size)[0][1]
    towers, width = config.towers, config.width
    channels_in = 3
    for name, size, stride, channels, crosses in models.CONV_LAYERS:
      channels = models.scaled(channels, width)
      groups = 1 if (crosses or name == 'conv1') else towers
      padding = 0 if name == 'conv1' else size // 2  # 'SAME' for odd kernels at stride 1
      setattr(self, name, nn.Conv2d(channels_in, channels, size, stride, padding, groups=groups))
      channels_in = channels
    pool5 = models.feature_sizes(image_size, config.pool)['pool5']
    fc_units = models.scaled(models.FC_UNITS, width)
    self.fc6 = nn.Linear(pool5 * pool5 * channels_in, fc_units)
    self.fc7 = nn.Linear(fc_units, fc_units)
    self.fc8 = nn.Linear(fc_units, config.num_classes)
    self.dropout = nn.Dropout(config.dropout_rate)
    self.act = torch.relu if config.activation == 'relu' else torch.tanh
    self.window, self.stride = models.POOLS[config.pool]

  def _lrn(self, x: torch.Tensor) -> torch.Tensor:
    """Section 3.3 on each tower's channels, in float32 as in ops.py."""
    if self.config.norm != 'lrn':
      return x
    lrn = self.config.lrn
    # torch divides alpha by the window size; ours uses the paper's alpha unless alpha_over_n.
    alpha = lrn.alpha if lrn.alpha_over_n else lrn.alpha * lrn.size
    parts = x.float().chunk(self.towers, dim=1)
    y = torch.cat([F.local_response_norm(p, lrn.size, alpha, lrn.beta, lrn.k) for p in parts], 1)
    return y.to(x.dtype)

  def _pool(self, x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, self.window, self.stride)

  def forward(self, images: torch.Tensor) -> torch.Tensor:
    x = F.pad(images, (0, self.conv1_extra, 0, self.conv1_extra))  # (left, right, top, bottom)
    x = self._pool(self._lrn(self.act(self.conv1(x))))
    x = self._pool(self._lrn(self.act(self.conv2(x))))
    x = self.act(self.conv3(x))
    x = self.act(self.conv4(x))
    x = self._pool(self.act(self.conv5(x)))
    x = torch.flatten(x, 1)  # NCHW order; fc6's weight was permuted to match (torch_layout)
    x = self.dropout(self.act(self.fc6(x)))
    x = self.dropout(self.act(self.fc7(x)))
    return self.fc8(x).float()


def build(model_config: models.ModelConfig, image_size: int) -> TorchAlexNet:
  """The torch network of `model_config` (torch's default initialisation; see load_params)."""
  return TorchAlexNet(model_config, image_size)


def torch_layout(params: dict) -> dict[str, np.ndarray]:
  """Our nested params dict as float32 numpy arrays keyed and shaped like the torch state_dict.

  Conv kernels HWIO -> OIHW (tower slices are already grouped-conv groups); fc kernels
  (in, out) -> (out, in); fc6's rows go from our NHWC flatten of pool5 to torch's NCHW flatten.
  """
  out = {}
  for name, layer in params.items():
    kernel = np.asarray(layer['kernel'], np.float32)
    if kernel.ndim == 4:
      weight = kernel.transpose(3, 2, 0, 1)
    elif name == 'fc6':
      channels = np.asarray(params['conv5']['kernel']).shape[-1]
      side = math.isqrt(kernel.shape[0] // channels)
      weight = (
          kernel.reshape(side, side, channels, -1)
          .transpose(3, 2, 0, 1)
          .reshape(kernel.shape[1], -1)
      )
    else:
      weight = kernel.T
    out[f'{name}.weight'] = np.ascontiguousarray(weight)
    out[f'{name}.bias'] = np.asarray(layer['bias'], np.float32)
  return out


def load_params(model: nn.Module, params: dict) -> None:
  """Copies our `TrainState.params` (nested dict of arrays) into `model`, in place."""
  arrays = torch_layout(params)
  state = model.state_dict()
  missing = sorted(set(state) ^ set(arrays))
  if missing:
    raise ValueError(f'parameters do not match the torch model: {missing}')
  with torch.no_grad():
    for key, value in arrays.items():
      if tuple(state[key].shape) != value.shape:
        raise ValueError(f'{key}: ours {value.shape}, torch {tuple(state[key].shape)}')
      state[key].copy_(torch.from_numpy(np.array(value)))


def make_optimizer(
    model: nn.Module,
    learning_rate: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    decay_biases: bool = False,
) -> torch.optim.SGD:
  """Section 5's SGD (see the module docstring for why torch's form is the same update)."""
  weights = [p for n, p in model.named_parameters() if n.endswith('weight')]
  biases = [p for n, p in model.named_parameters() if not n.endswith('weight')]
  groups = [
      {'params': weights, 'weight_decay': weight_decay},
      {'params': biases, 'weight_decay': weight_decay if decay_biases else 0.0},
  ]
  return torch.optim.SGD(groups, lr=learning_rate, momentum=momentum)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
  """One SGD step on the mean cross-entropy; returns the loss as a tensor (no host sync).

  `autocast_dtype=torch.bfloat16` runs convolutions and matmuls in bfloat16 with float32
  parameters, as our `model.dtype='bfloat16'` does.
  """
  optimizer.zero_grad(set_to_none=True)
  with torch.autocast(
      images.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
  ):
    logits = model(images)
  loss = F.cross_entropy(logits.float(), labels)
  loss.backward()
  optimizer.step()
  return loss.detach()


def to_nchw(images: Any, device: str = 'cpu', channels_last: bool = False) -> torch.Tensor:
  """NHWC numpy/JAX images -> a torch NCHW tensor (channels_last memory if asked)."""
  x = torch.from_numpy(np.ascontiguousarray(np.asarray(images, np.float32))).permute(0, 3, 1, 2)
  x = x.to(device)
  layout = torch.channels_last if channels_last else torch.contiguous_format
  return x.contiguous(memory_format=layout)
