"""The training step's FLOPs, counted from the layer shapes of the network a config builds.

Model FLOPs are COUNTED from the layer shapes (`count_macs`): 2 FLOPs per multiply-add, x3 for
forward + backward (the usual convention; it counts conv1's input gradient, which no one computes,
and ignores LRN, pooling and the optimiser). `tools.benchmark` divides them by the measured time
for its MFU and "% of limit" columns.
"""

from alexnet_jax import models

FLOP_CONVENTION = (
    'model FLOPs = 3 (forward + backward) x 2 (FLOPs per multiply-add) x counted '
    'multiply-adds of the conv and fc layers (count_macs) x batch'
)


def count_macs(config: models.ModelConfig, image_size: int) -> dict[str, int]:
  """Multiply-adds per image of each conv and fc layer of the network `config` builds (Figure 2).

  conv: out_h * out_w * k * k * (input channels per group) * output channels, where a tower-local
  layer (conv2, conv4, conv5) sees 1/towers of its input; fc: in * out. The channels, conv1's
  padding and fc6's input (pool5's maps, or `adaptive_avg_pool`'s bins) are the model's own
  (`models.conv_channels`, `models.feature_sizes`), so torchvision's net and ablations count right.
  """
  sizes = models.feature_sizes(image_size, config.pool, config.conv1_padding)
  macs, channels_in = {}, 3
  for (name, kernel, _, _, crosses), channels in zip(
      models.CONV_LAYERS, models.conv_channels(config)[0]
  ):
    per_group = channels_in if (crosses or name == 'conv1') else channels_in // config.towers
    macs[name] = sizes[name] ** 2 * kernel * kernel * per_group * channels
    channels_in = channels
  pooled = config.adaptive_avg_pool or sizes['pool5']
  fc_units = models.scaled(models.FC_UNITS, config.width)
  macs['fc6'] = pooled**2 * channels_in * fc_units
  macs['fc7'] = fc_units * fc_units
  macs['fc8'] = fc_units * config.num_classes
  return macs


def train_flops_per_image(config: models.ModelConfig, image_size: int) -> int:
  return 3 * 2 * sum(count_macs(config, image_size).values())
