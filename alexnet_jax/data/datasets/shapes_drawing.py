"""The numpy drawing of ``synthetic_shapes``' images: the ten shapes, and the 20-class scenes.

``draw_example`` draws one image from a generator; ``draw_hard_scene`` draws one 20-class scene
(palette, distractors, occluding bar) and says what is in it, for the tests and figures. What the
images hold, and why, is in ``synthetic_shapes``' docstring; that module turns these drawings into
the registered TFDS dataset. This one needs numpy only.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    'disk',
    'ring',
    'square',
    'diamond',
    'triangle_up',
    'triangle_down',
    'plus',
    'x_cross',
    'horizontal_stripes',
    'vertical_stripes',
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 256

# Geometry, as fractions of the image side.
_MIN_EXTENT, _MAX_EXTENT = 0.34, 0.66  # shape diameter (before aspect jitter)
_BORDER_MARGIN = 0.12  # minimum distance between shape and image border
_MAX_ROTATION_DEG = 15.0
_ASPECT_JITTER = 0.10
# Colours.
_MIN_LUMA_CONTRAST = 60.0
_MIN_RGB_DISTANCE = 100.0
_LUMA = np.array([0.299, 0.587, 0.114])
_BYTE_STD = float(np.sqrt((256**2 - 1) / 12))  # std of uniform bytes

# The ``hard`` variant: 20 classes, shape x palette (label = palette * 10 + shape).
PALETTES: tuple[str, ...] = ('warm', 'cool')
HARD_CLASS_NAMES: tuple[str, ...] = tuple(f'{s}_{p}' for p in PALETTES for s in CLASS_NAMES)
HARD_NUM_CLASSES = len(HARD_CLASS_NAMES)
# Colours are built in BT.601 YCbCr: the luma Y (the _LUMA weights) and a chroma vector (Cb, Cr)
# whose angle atan2(Cr, Cb) is the hue: red is at 109 degrees, orange ~139, yellow 171, green
# 232, cyan 289, blue 351, magenta 52. Warm is red to yellow, cool green to blue; the gaps
# between the arcs (40 degrees of yellow-greens, 110 of violets and magentas) keep every warm
# hue well apart from every cool one.
_PALETTE_ARCS = ((100.0, 180.0), (220.0, 350.0))  # degrees, indexed like PALETTES
_HARD_LUMA = (70.0, 190.0)  # the same for both palettes: the palette is not in the luma
_HARD_CHROMA = (35.0, 70.0)  # chroma magnitude, in Cb/Cr units (each spans -128..127)
# Clutter and occlusion, as fractions of the image side.
_NUM_DISTRACTORS = (2, 4)
_DISTRACTOR_EXTENT = (0.12, 0.22)
# A distractor's diameter is also at most this fraction of the main shape's: no shape covers
# more than 2.5 times the area of another at equal diameter, so the main shape stays the
# largest object in area as well as in extent.
_DISTRACTOR_TO_MAIN = 0.6
_MIN_DISTRACTOR_CONTRAST = 60.0  # RGB distance from the background, so clutter is visible
_BAR_WIDTH = (0.04, 0.08)
_BAR_COVERAGE = (0.02, 0.25)  # fraction of the main shape's area under the bar
_MIN_BAR_CONTRAST = 60.0  # RGB distance from the main shape, so the occlusion is visible


@dataclasses.dataclass(frozen=True)
class Clutter:
  """What a 20-class scene draws besides its main shape: how many distractors, and the bar."""

  distractors: tuple[int, int]  # inclusive range of the count
  bar: bool


# `hard` is the full clutter. `medium` keeps the 20 classes and their palettes but draws 0-2
# distractors and no bar: at configs/ablation.py's CPU scale a network's validation error on
# `hard` still falls at 5,000 steps, too long for a sweep of many runs on a CPU, while the
# default variant is solved (0% error); `medium` is meant to converge within a sweep's runs with
# error left for an ablation to move (docs/experiments.md has the measured curves).
CLUTTER: dict[str, Clutter] = {
    'hard': Clutter(distractors=_NUM_DISTRACTORS, bar=True),
    'medium': Clutter(distractors=(0, 2), bar=False),
}


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates (x along columns, y along rows, y down)."""
  c = np.arange(size, dtype=np.float32) + 0.5
  return c[None, :], c[:, None]


def _shape_sdf(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Signed distance (negative inside) of class ``label`` in local units.

  ``u`` points right and ``v`` points down; every shape fits in the unit
  disk, so a shape of radius r pixels covers at most a 2r x 2r box.
  """
  name = CLASS_NAMES[label]
  if name == 'disk':
    return np.sqrt(u * u + v * v) - 0.9
  if name == 'ring':
    return np.abs(np.sqrt(u * u + v * v) - 0.72) - 0.2
  if name == 'square':
    return np.maximum(np.abs(u), np.abs(v)) - 0.68
  if name == 'diamond':
    return (np.abs(u) + np.abs(v) - 0.95) * np.float32(1 / np.sqrt(2))
  if name in ('triangle_up', 'triangle_down'):
    # Equilateral triangle inscribed in a circle of radius 0.95: the max
    # over its three edge half-planes (outward normals 120 degrees apart).
    if name == 'triangle_down':
      v = -v
    au = np.abs(u) * np.float32(np.sqrt(3) / 2)
    return np.maximum(v, au - 0.5 * v) - 0.475
  if name in ('plus', 'x_cross'):
    if name == 'x_cross':
      s = np.float32(1 / np.sqrt(2))
      u, v = (u - v) * s, (u + v) * s
    au, av = np.abs(u), np.abs(v)
    arm_h = np.maximum(au - 0.9, av - 0.24)
    arm_v = np.maximum(av - 0.9, au - 0.24)
    return np.minimum(arm_h, arm_v)
  if name in ('horizontal_stripes', 'vertical_stripes'):
    # Three bars of width 0.25 (period 0.5) clipped to a square patch.
    w = v if name == 'horizontal_stripes' else u
    bars = np.abs(np.mod(w + 0.25, 0.5) - 0.25) - 0.125
    patch = np.maximum(np.abs(u), np.abs(v)) - 0.68
    return np.maximum(bars, patch)
  raise ValueError(f'label must be in [0, {NUM_CLASSES}), got {label}')


def _draw_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Foreground and background RGB colours, independent of the class."""
  bg = rng.uniform(0.0, 255.0, size=3)
  for _ in range(1000):
    fg = rng.uniform(0.0, 255.0, size=3)
    if (
        abs(float(_LUMA @ (fg - bg))) >= _MIN_LUMA_CONTRAST
        and float(np.linalg.norm(fg - bg)) >= _MIN_RGB_DISTANCE
    ):
      return fg, bg
  # Practically unreachable; fall back to the luma-inverted background.
  return 255.0 - bg, bg


def _shape_alpha(
    shape: int, cx: float, cy: float, rx: float, ry: float, theta: float, x, y
) -> np.ndarray:
  """Anti-aliased coverage of shape ``shape`` (an index into CLASS_NAMES) on the grid ``x, y``.

  ``(cx, cy)`` is the centre, ``rx, ry`` the semi-axes in pixels and ``theta`` the rotation in
  radians; ``x`` and ``y`` may be a window of the grid (a row and a column of pixel centres).
  """
  dx, dy = x - np.float32(cx), y - np.float32(cy)
  c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
  # Local frame (rotated by theta, scaled by the semi-axes).
  u = (c * dx + s * dy) * np.float32(1.0 / rx)
  v = (c * dy - s * dx) * np.float32(1.0 / ry)
  sdf = _shape_sdf(shape, u, v)
  # Anti-aliased coverage: the distance in pixels (approximately) through a
  # one-pixel ramp.
  return np.clip(0.5 - sdf * np.float32(min(rx, ry)), 0.0, 1.0)


def _draw_shade(rng: np.random.Generator, size: int) -> np.ndarray:
  """Background shading: a linear gradient plus a faint low-frequency texture."""
  grad_amp = rng.uniform(-30.0, 30.0)
  grad_dir = rng.uniform(0.0, 2 * np.pi)
  tex_amp = rng.uniform(0.0, 8.0)
  tex_freq = rng.uniform(1.0, 4.0, size=2) * (2 * np.pi / size)
  tex_freq *= rng.choice([-1.0, 1.0], size=2)
  tex_phase = rng.uniform(0.0, 2 * np.pi)
  x, y = _grid(size)
  gx = np.float32(grad_amp / size * np.cos(grad_dir))
  gy = np.float32(grad_amp / size * np.sin(grad_dir))
  shade = gx * (x - size / 2) + gy * (y - size / 2)
  fx, fy = np.float32(tex_freq[0]), np.float32(tex_freq[1])
  return shade + np.float32(tex_amp) * np.sin(fx * x + fy * y + np.float32(tex_phase))


def _draw_noise(
    rng: np.random.Generator, size: int, noise_std: float
) -> tuple[np.ndarray, np.float32, np.float32]:
  """Uniform zero-mean pixel noise of standard deviation ``noise_std``.

  Returns raw bytes ``(3, size, size)``, a scale and an offset: the noise is
  ``bytes * scale - offset``. Drawn as random bytes because that is several
  times faster than Gaussian samples.
  """
  num_bytes = 3 * size * size
  noise = rng.integers(0, 2**32, size=-(-num_bytes // 4), dtype=np.uint32)
  noise = noise.view(np.uint8)[:num_bytes].reshape(3, size, size)
  return noise, np.float32(noise_std / _BYTE_STD), np.float32(127.5 * noise_std / _BYTE_STD)


def draw_example(
    rng: np.random.Generator,
    label: int,
    size: int = IMAGE_SIZE,
    *,
    hard: bool = False,
    clutter: str = 'hard',
) -> np.ndarray:
  """Draws one image of class ``label``; returns uint8 ``(size, size, 3)``.

  All randomness comes from ``rng``, consumed in a fixed order, so the same
  generator state always gives the same image. ``hard=True`` draws the
  20-class variant (``draw_hard_scene``) with ``clutter``, a key of CLUTTER.
  """
  if hard:
    return draw_hard_scene(rng, label, size, clutter).image
  label = int(label)
  if not 0 <= label < NUM_CLASSES:
    raise ValueError(f'label must be in [0, {NUM_CLASSES}), got {label}')
  # Geometry.
  radius = 0.5 * size * rng.uniform(_MIN_EXTENT, _MAX_EXTENT)
  aspect = np.exp(rng.uniform(-_ASPECT_JITTER, _ASPECT_JITTER))
  rx, ry = radius * aspect, radius / aspect  # semi-axes in pixels
  lo = _BORDER_MARGIN * size + max(rx, ry)
  cx, cy = rng.uniform(lo, size - lo, size=2)
  theta = np.deg2rad(rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG))
  fg, bg = _draw_colours(rng)
  shade = _draw_shade(rng, size)
  noise_std = rng.uniform(2.0, 5.0)

  x, y = _grid(size)
  alpha = _shape_alpha(label, cx, cy, rx, ry, theta, x, y)
  noise, noise_scale, noise_offset = _draw_noise(rng, size, noise_std)

  # Composite, channel by channel (broadcasting over a trailing axis of 3 is
  # slow in numpy): background colour + shading where alpha = 0, the flat
  # foreground colour where alpha = 1, then noise.
  #   pixel = bg + shade * (1 - alpha) + alpha * (fg - bg) + noise
  shade *= 1.0 - alpha
  out = np.empty((size, size, 3), dtype=np.uint8)
  chan = np.empty((size, size), dtype=np.float32)
  for ch in range(3):
    np.multiply(alpha, np.float32(fg[ch] - bg[ch]), out=chan)
    chan += shade
    chan += np.float32(bg[ch]) - noise_offset
    chan += noise[ch] * noise_scale
    np.clip(chan, 0.0, 255.0, out=chan)
    np.rint(chan, out=chan)
    out[..., ch] = chan
  return out


def _opponent_to_rgb(luma: float, hue_deg: float, chroma: float) -> np.ndarray:
  """RGB of a BT.601 luma and a chroma vector of angle ``hue_deg`` (may be out of gamut)."""
  hue = np.deg2rad(hue_deg)
  cb, cr = chroma * np.cos(hue), chroma * np.sin(hue)
  r = luma + 1.402 * cr
  b = luma + 1.772 * cb
  # Solved from luma = _LUMA @ (r, g, b), so the luma is exact.
  g = (luma - _LUMA[0] * r - _LUMA[2] * b) / _LUMA[1]
  return np.array([r, g, b])


def _draw_palette_colour(rng: np.random.Generator, palette: int | None) -> np.ndarray:
  """An RGB colour with a hue in arc ``palette`` (None: a neutral grey).

  The luma is drawn first and kept while hue and chroma are redrawn until
  the colour is in gamut, so the luma is uniform whatever the palette (a
  redraw of all three would make cool colours darker: bright blues are out
  of gamut).
  """
  luma = rng.uniform(*_HARD_LUMA)
  if palette is None:
    return np.full(3, luma)
  lo, hi = _PALETTE_ARCS[palette]
  for _ in range(1000):
    rgb = _opponent_to_rgb(luma, rng.uniform(lo, hi), rng.uniform(*_HARD_CHROMA))
    if rgb.min() >= 0.0 and rgb.max() <= 255.0:
      return rgb
  # Practically unreachable (over half of the draws are in gamut at every
  # luma); the arc's middle at the smallest chroma is in gamut at all of them.
  return _opponent_to_rgb(luma, 0.5 * (lo + hi), _HARD_CHROMA[0])


def _contrasting_background(rng: np.random.Generator, fg: np.ndarray) -> np.ndarray:
  """A uniform RGB colour with the default variant's contrast against ``fg``."""
  for _ in range(1000):
    bg = rng.uniform(0.0, 255.0, size=3)
    if (
        abs(float(_LUMA @ (fg - bg))) >= _MIN_LUMA_CONTRAST
        and float(np.linalg.norm(fg - bg)) >= _MIN_RGB_DISTANCE
    ):
      return bg
  # Practically unreachable; black or white, whichever is further in luma.
  return np.full(3, 0.0 if float(_LUMA @ fg) >= 127.5 else 255.0)


def _window(cx: float, cy: float, r: float, size: int) -> tuple[slice, slice]:
  """Rows and columns of the pixels within ``r`` (+1) of ``(cx, cy)``, clipped to the image."""
  x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, size)
  y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, size)
  return slice(y0, y1), slice(x0, x1)


@dataclasses.dataclass(frozen=True)
class HardScene:
  """One ``hard`` drawing and what is known about it, for tests and figures.

  ``shape_alpha`` and ``bar_alpha`` are float32 ``(size, size)`` coverages of
  the main shape (before the bar hides part of it) and of the bar;
  ``shape_rgb`` is the main shape's colour before noise, ``bar_coverage`` the
  fraction of the main shape's area under the bar, and
  ``distractor_areas`` the area in pixels of each distractor before
  anything is drawn over it (the main shape's is ``shape_alpha.sum()``).
  """

  image: np.ndarray
  shape_alpha: np.ndarray
  bar_alpha: np.ndarray
  shape_rgb: np.ndarray
  bar_coverage: float
  distractor_areas: tuple[float, ...]


def draw_hard_scene(
    rng: np.random.Generator, label: int, size: int = IMAGE_SIZE, clutter: str = 'hard'
) -> HardScene:
  """Draws one 20-class image of class ``label`` (in ``[0, 20)``) and returns its HardScene.

  The main shape's geometry is drawn exactly as in ``draw_example``; its
  colour has palette ``label // 10``. In drawing order: the shaded
  background, the distractors (2-4 with ``clutter='hard'``, 0-2 with
  ``'medium'``), the main shape, one bar (``'hard'`` only), then pixel noise.
  """
  if clutter not in CLUTTER:
    raise ValueError(f'clutter must be one of {sorted(CLUTTER)}, got {clutter!r}')
  extras = CLUTTER[clutter]
  label = int(label)
  if not 0 <= label < HARD_NUM_CLASSES:
    raise ValueError(f'label must be in [0, {HARD_NUM_CLASSES}), got {label}')
  shape, palette = label % NUM_CLASSES, label // NUM_CLASSES
  # The main shape: the same geometry as the default variant.
  radius = 0.5 * size * rng.uniform(_MIN_EXTENT, _MAX_EXTENT)
  aspect = np.exp(rng.uniform(-_ASPECT_JITTER, _ASPECT_JITTER))
  rx, ry = radius * aspect, radius / aspect
  reach = max(rx, ry)  # the shape lies within this distance of its centre
  lo = _BORDER_MARGIN * size + reach
  cx, cy = rng.uniform(lo, size - lo, size=2)
  theta = np.deg2rad(rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG))
  fg = _draw_palette_colour(rng, palette)
  bg = _contrasting_background(rng, fg)
  shade = _draw_shade(rng, size)
  noise_std = rng.uniform(2.0, 5.0)

  x, y = _grid(size)
  canvas = np.empty((3, size, size), dtype=np.float32)
  for ch in range(3):
    np.add(shade, np.float32(bg[ch]), out=canvas[ch])

  # Distractors, drawn first so that the main shape hides them where they
  # overlap. Their centres keep out of the main shape's enclosing circle but
  # may come close enough for the shapes to touch or overlap; their colours
  # come from either palette or none, independently of the label.
  areas = []
  for _ in range(int(rng.integers(extras.distractors[0], extras.distractors[1] + 1))):
    d_shape = int(rng.integers(NUM_CLASSES))
    d_extent = rng.uniform(_DISTRACTOR_EXTENT[0], _DISTRACTOR_EXTENT[1])
    d_radius = 0.5 * min(d_extent * size, _DISTRACTOR_TO_MAIN * 2 * radius)
    d_aspect = np.exp(rng.uniform(-_ASPECT_JITTER, _ASPECT_JITTER))
    d_rx, d_ry = d_radius * d_aspect, d_radius / d_aspect
    d_reach = max(d_rx, d_ry)
    for _ in range(100):  # a free spot is ~30% of the image at worst
      px, py = rng.uniform(d_reach, size - d_reach, size=2)
      if np.hypot(px - cx, py - cy) >= reach:
        break
    d_theta = rng.uniform(0.0, 2 * np.pi)  # any rotation: distractors carry no label
    d_palette = int(rng.integers(len(PALETTES) + 1))
    for _ in range(100):
      d_rgb = _draw_palette_colour(rng, d_palette if d_palette < len(PALETTES) else None)
      if float(np.linalg.norm(d_rgb - bg)) >= _MIN_DISTRACTOR_CONTRAST:
        break
    win = _window(px, py, d_reach, size)
    a = _shape_alpha(d_shape, px, py, d_rx, d_ry, d_theta, x[:, win[1]], y[win[0], :])
    areas.append(float(a.sum()))
    for ch in range(3):
      part = canvas[ch][win]
      part += a * (np.float32(d_rgb[ch]) - part)

  # The main shape, computed in its enclosing box.
  win = _window(cx, cy, reach, size)
  xw, yw = x[:, win[1]], y[win[0], :]
  alpha = _shape_alpha(shape, cx, cy, rx, ry, theta, xw, yw)
  for ch in range(3):
    part = canvas[ch][win]
    part += alpha * (np.float32(fg[ch]) - part)

  # The bar: a strip across the whole image whose centre line passes within
  # the main shape's enclosing circle, redrawn until it hides between 2% and
  # 25% of the shape (thin shapes such as the crosses are easy to hide).
  if extras.bar:
    bar_alpha, coverage = _draw_bar(rng, canvas, alpha, fg, (cx, cy, reach), (xw, yw), size)
  else:
    bar_alpha, coverage = np.zeros((size, size), dtype=np.float32), 0.0

  noise, noise_scale, noise_offset = _draw_noise(rng, size, noise_std)
  out = np.empty((size, size, 3), dtype=np.uint8)
  for ch in range(3):
    chan = canvas[ch]
    chan -= noise_offset
    chan += noise[ch] * noise_scale
    np.clip(chan, 0.0, 255.0, out=chan)
    np.rint(chan, out=chan)
    out[..., ch] = chan
  shape_alpha = np.zeros((size, size), dtype=np.float32)
  shape_alpha[win] = alpha
  return HardScene(
      image=out,
      shape_alpha=shape_alpha,
      bar_alpha=bar_alpha,
      shape_rgb=fg,
      bar_coverage=coverage,
      distractor_areas=tuple(areas),
  )


def _draw_bar(rng, canvas, alpha, fg, circle, window, size) -> tuple[np.ndarray, float]:
  """Draws the bar over ``canvas``; returns its coverage map and the share of the shape it hides.

  ``alpha`` is the main shape's coverage in its window (``window``: the columns and rows of
  pixel centres), ``circle`` its centre and enclosing radius.
  """
  cx, cy, reach = circle
  xw, yw = window
  x, y = _grid(size)
  half_width = 0.5 * size * rng.uniform(_BAR_WIDTH[0], _BAR_WIDTH[1])
  area = float(alpha.sum())
  for _ in range(100):
    phi = rng.uniform(0.0, np.pi)
    offset = rng.uniform(-reach, reach)
    nx, ny = np.float32(np.cos(phi)), np.float32(np.sin(phi))
    dist = np.abs(nx * (xw - np.float32(cx)) + ny * (yw - np.float32(cy)) - np.float32(offset))
    bar = np.clip(np.float32(0.5 + half_width) - dist, 0.0, 1.0)
    coverage = float((alpha * bar).sum()) / area
    if _BAR_COVERAGE[0] <= coverage <= _BAR_COVERAGE[1]:
      break
  else:
    # Practically unreachable; a bar just clear of the shape keeps the bound.
    offset, coverage = reach + half_width + 1.0, 0.0
  dist = np.abs(nx * (x - np.float32(cx)) + ny * (y - np.float32(cy)) - np.float32(offset))
  bar_alpha = np.clip(np.float32(0.5 + half_width) - dist, 0.0, 1.0)
  for _ in range(100):
    bar_rgb = rng.uniform(0.0, 255.0, size=3)
    if float(np.linalg.norm(bar_rgb - fg)) >= _MIN_BAR_CONTRAST:
      break
  for ch in range(3):
    canvas[ch] += bar_alpha * (np.float32(bar_rgb[ch]) - canvas[ch])
  return bar_alpha, coverage
