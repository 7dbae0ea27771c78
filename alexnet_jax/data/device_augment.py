"""The device half of section 4.1's training augmentation: reflection, colour shift, mean, float.

With `device_augment=True` (the default) the host decodes each training image and cuts its random
crop as uint8 (`pipeline.TrainBatch`), and draws the example's reflection and PCA colour shift
exactly as before (`augment.train_draws`). The batch it sends is

    image  uint8 (B, S, S, 3)  the crop, not reflected
    flip   bool (B,)           reflect it horizontally
    shift  float32 (B, 3)      the PCA shift minus a per-channel mean (or the PCA shift alone,
                               where a mean image is subtracted)
    window int32 (B, 2)        the crop's (top, left), which cuts a resize-sized mean image
                               with the crop

and the jitted train step finishes the image (`DeviceAugment`): one pass that reflects, converts
to float32, adds the shift (or subtracts the mean image's window, then adds the shift) and divides
by `augment.std_rgb`. Each float32 operation is the one `augment.crop_offset_to_float` does on the
host, in the same order, so the float32 images equal the host path's bit for bit
(`tests/test_device_augment.py`) and a run's numbers do not depend on the setting. A quarter of the
bytes cross to the device, and the host's pass that writes float32 pixels goes.

Pure JAX, no TensorFlow or grain: `steps` imports it on machines that have neither.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

KEYS = ('image', 'flip', 'shift', 'window')  # what a device-augmented batch carries


@dataclasses.dataclass(frozen=True, eq=False)
class DeviceAugment:
  """Finishes a device-augmented training batch (module docstring) into float32 images.

  `mean_image`: None where the mean is per channel (it is then folded into each row's `shift`), or
  an image subtracted before the shift. `cut_with_crop`: the mean image is resize-sized (section
  2's, subtracted before cropping), so each row's crop `window` of it is cut and reflected with the
  image; otherwise it is crop-sized and subtracted as is, as `augment.crop_offset_to_float` does.
  `inv_std`: (3,) 1 / augment.std_rgb, or None for the paper's 0..255 scale.
  """

  mean_image: np.ndarray | None = None
  cut_with_crop: bool = False
  inv_std: np.ndarray | None = None

  def __call__(self, batch: dict) -> jax.Array:
    image = batch['image']
    if image.dtype != jnp.uint8:  # a host-augmented batch: already finished
      return image
    flip = batch['flip'][:, None, None, None]
    image = jnp.where(flip, image[:, :, ::-1], image).astype(jnp.float32)
    if self.mean_image is not None:
      mean = jnp.asarray(self.mean_image, jnp.float32)
      if self.cut_with_crop:
        mean = _windows(mean, batch['window'], image.shape[1])
        mean = jnp.where(flip, mean[:, :, ::-1], mean)
      image = image - mean
    image = image + batch['shift'][:, None, None, :]
    if self.inv_std is not None:
      image = image * jnp.asarray(self.inv_std, jnp.float32)
    return image


def _windows(mean_image: jax.Array, window: jax.Array, size: int) -> jax.Array:
  """(B, size, size, 3): each row's crop window of the mean image.

  One gather whose output is split over the batch as `window` is: under a mesh of explicit axes
  JAX cannot tell on its own where a gather of the (replicated) mean image by batch-split indices
  belongs, and refuses to trace it (a vmapped dynamic_slice included)."""
  rows = window[:, 0, None] + jnp.arange(size)  # (B, size)
  cols = window[:, 1, None] + jnp.arange(size)
  split = jax.typeof(window).sharding
  batch = None
  if not split.mesh.empty:  # under a mesh: the output's rows where the windows' rows are
    batch = split.update(spec=jax.sharding.PartitionSpec(split.spec[0] if split.spec else None))
  return mean_image.at[rows[:, :, None], cols[:, None, :]].get(
      out_sharding=batch, mode='promise_in_bounds'
  )


def for_data(data_config) -> DeviceAugment:
  """The `DeviceAugment` of a `pipeline.DataConfig` (with the run's resolved colour statistics)."""
  aug = data_config.augment
  mean = np.asarray(aug.mean, np.float32)
  return DeviceAugment(
      mean_image=mean if mean.ndim == 3 else None,
      cut_with_crop=mean.ndim == 3 and mean.shape[0] == data_config.resize_size,
      inv_std=None if aug.inv_std is None else np.asarray(aug.inv_std, np.float32),
  )


def images(batch: dict) -> jax.Array:
  """A batch's images as the host sent them (the step's default: host-augmented float32)."""
  return batch['image']
