"""Encoded images to RGB pixels: the one decoder of the training pipeline, evaluation and
prediction, and the random access to a split that skips an undecodable example.

Its own module, without TFDS or grain: `trained.inference` decodes image files with it, and the
pipeline benchmark times it alone.
"""

import io
import threading
from typing import Any, Sequence

from absl import logging
import numpy as np
from PIL import Image
import simplejpeg

from alexnet_jax.errors import ConfigError

IMAGE_KEY = 'image'


def decode_image(data: bytes, min_size: int = 0) -> np.ndarray:
  """uint8 HxWx3 RGB pixels of an encoded image; raises if they cannot be decoded.

  JPEGs go to libjpeg-turbo through simplejpeg, straight into a numpy array (faster than PIL's
  decode: `python -m alexnet_jax.tools.pipeline_benchmark` prints both per image). With `min_size` > 0
  a JPEG is decoded at the smallest DCT scale M/8 whose height and width are both >= min_size,
  so its shorter side still covers min_size and the exact resize comes after (augment's resize);
  a full-size ImageNet photo then costs a fraction of a full decode. Other formats (PNG) and
  JPEGs libjpeg-turbo cannot convert to RGB (CMYK) go through PIL, with `Image.draft` for the
  same downscaling.

  16-bit greyscale (PNG, PGM, TIFF: PIL's modes I;16*, I) and float (F) pixels are scaled to
  8 bits by `wide_grey_to_rgb`, not clipped to white by PIL's conversion.
  """
  if data[:2] == b'\xff\xd8':
    try:
      return simplejpeg.decode_jpeg(data, colorspace='RGB', min_height=min_size, min_width=min_size)
    except ValueError:
      pass  # e.g. CMYK: PIL converts it below
  with Image.open(io.BytesIO(data)) as image:
    if min_size > 0:
      image.draft('RGB', (min_size, min_size))  # JPEG only; never below the requested size
    if image.mode.startswith('I;16'):
      return wide_grey_to_rgb(np.asarray(image))
    if image.mode in ('I', 'F'):
      # 32-bit integer or float pixels say nothing of their range: values past 255 are taken
      # as 16-bit (a 16-bit PGM opens as I); others as 8-bit, as PIL's conversion takes them.
      pixels = np.nan_to_num(np.asarray(image, np.float64), nan=0.0)
      if pixels.size and pixels.max() > 255:
        return wide_grey_to_rgb(pixels)
      grey = np.clip(pixels, 0, 255).astype(np.uint8)
      return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(image.convert('RGB'))


def wide_grey_to_rgb(pixels: np.ndarray) -> np.ndarray:
  """uint8 HxWx3 RGB of 16-bit (0..65535) greyscale pixels: the top 8 bits (value >> 8), in R,
  G and B; int32 and float values beyond 0..65535 (NaN: 0) are clipped, as if 16-bit.

  PIL's own conversion clips such values to 0..255, so all but the darkest pixels turn white.
  The top byte is what PIL keeps of a 16-bit RGB PNG (which it opens as 8-bit RGB) and what
  `datasets.image_folder` stores of 16-bit greyscale (value / 256, floored), so every 16-bit
  file, and a prepared copy of it, decodes to the same pixels. (value * 255 / 65535, rounded,
  would differ from those by one level in a quarter of the values.)
  """
  scaled = np.floor(np.nan_to_num(np.asarray(pixels, np.float64), nan=0.0) / 256)
  grey = np.clip(scaled, 0, 255).astype(np.uint8)
  return np.repeat(grey[..., None], 3, axis=-1)


class DecodingSource:
  """Random access to examples whose images are decoded here, skipping undecodable ones.

  `records[i]` is a dict with the encoded image bytes under 'image' (what `tfds.data_source`
  returns with `SkipDecoding`). If example i cannot be decoded, a warning names it, it is counted
  (`num_undecodable`, per process), and example i + 1 (then i + 2, ...) takes its place: the
  substitute depends only on the data, so the stream stays a function of the seed and a restored
  iterator still continues exactly. More than `max_consecutive_bad` undecodable examples in a row
  stop the run with a ConfigError: the dataset itself is then broken.
  """

  def __init__(
      self, records: Sequence[dict[str, Any]], min_size: int = 0, max_consecutive_bad: int = 100
  ):
    self.records, self.min_size, self.max_consecutive_bad = records, min_size, max_consecutive_bad
    self.num_undecodable = 0
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> dict[str, Any]:
    n = len(self.records)
    for k in range(min(n, self.max_consecutive_bad + 1)):
      i = (int(index) + k) % n
      record = self.records[i]
      try:
        image = decode_image(record[IMAGE_KEY], self.min_size)
      except Exception as e:  # any decoder failure: PIL raises OSError, SyntaxError, ValueError...
        with self._lock:
          self.num_undecodable += 1
        logging.warning(
            'Example %d could not be decoded (%s: %s); using example %d instead '
            '(%d undecodable so far in this process).',
            i,
            type(e).__name__,
            e,
            (i + 1) % n,
            self.num_undecodable,
        )
        continue
      return {**record, IMAGE_KEY: image}
    raise ConfigError(
        f'Examples {int(index)} to {int(index) + k} of the dataset could not be decoded as images '
        '(see the warnings above). The prepared dataset looks broken: prepare it again, or point '
        '--config.data_dir at an intact copy.'
    )

  def __getstate__(self):  # grain worker processes receive the source pickled; locks do not pickle
    return {k: v for k, v in self.__dict__.items() if k != '_lock'}

  def __setstate__(self, state):
    self.__dict__.update(state, _lock=threading.Lock())
