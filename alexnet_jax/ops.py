"""The ops of AlexNet that need more than a stock layer: LRN (section 3.3) and max pooling
(section 3.4), each a pure function of an array with a hand-written gradient, a bias add whose
gradient is a matrix product (`add_bias`), and PyTorch's adaptive average pooling, which
torchvision's AlexNet has and no JAX library does.

Local response normalisation:

    b[i] = a[i] / (k + alpha * sum_{j = i - n//2}^{i + (n-1)//2} a[j]^2) ** beta

over the channel (last) axis, with the sum clipped at the first and last channel. The paper uses
k=2, n=5, alpha=1e-4, beta=0.75, applied after the ReLU of conv1 and conv2.

Which alpha? The paper's text multiplies the sum by alpha itself. The released cuda-convnet code,
Caffe and PyTorch's `LocalResponseNorm` multiply by alpha / n instead; TensorFlow's
`tf.nn.local_response_normalization` follows the text. We follow the paper's text by default
(`alpha_over_n=False`) because that is the formula a reader checks us against; set
`alpha_over_n=True` to reproduce the released code or to load Caffe/PyTorch weights. With k=2 the
two differ little: the normaliser is dominated by k unless activations are large.

The op runs in float32 whatever the input dtype (squares of bfloat16 activations lose too many bits)
and returns the input dtype.

Why by hand: no library op has these gradients in a form XLA:CPU runs well. Autodiff of LRN's power
recomputes it through a chain of elementwise passes over conv1's large maps, and the gradient of
`reduce_window` max pooling (select-and-scatter) runs on XLA:CPU as an argmax-tracking reduction
plus a scatter. Both hand-written forms are tested against autodiff of the plain formulas; what
they saved in the step is in docs/benchmark_history.md, with the commands.
"""

import functools

import jax
import jax.numpy as jnp

Array = jax.Array

# Section 3.3: "The constants k, n, alpha, and beta are hyper-parameters whose values are determined
# using a validation set; we used k = 2, n = 5, alpha = 10^-4, and beta = 0.75."
PAPER_SIZE = 5
PAPER_K = 2.0
PAPER_ALPHA = 1e-4
PAPER_BETA = 0.75


def local_response_norm(
    x: jnp.ndarray,
    *,
    size: int = PAPER_SIZE,
    k: float = PAPER_K,
    alpha: float = PAPER_ALPHA,
    beta: float = PAPER_BETA,
    alpha_over_n: bool = False,
) -> jnp.ndarray:
  """Normalises `x` (..., channels) across `size` adjacent channels of the last axis.

  The windowed sum of squares is a `reduce_window` over the channel axis, zero-padded by n//2
  channels below and (n-1)//2 above, which clips the sum at the first and last channel exactly
  as the paper's max/min bounds do.

  In the two-tower model each tower calls this on its own maps, so channels never mix across
  towers, as in the original two-GPU code.

  The gradient is the analytic one (`_lrn_bwd`), not autodiff's: autodiff of the power recomputes
  it and builds a chain of elementwise passes over conv1's large maps, which made the paper's
  train step slower on XLA:CPU (docs/benchmark_history.md).
  """
  if size < 1:
    raise ValueError(f'local_response_norm: size must be >= 1, got {size}.')
  scale = alpha / size if alpha_over_n else alpha
  return _lrn(x, size, float(k), float(scale), float(beta))


def _window_sum(v: jnp.ndarray, size: int, below: int, above: int) -> jnp.ndarray:
  """sum_{j=i-below}^{i+above} v[..., j], zero-padded at the ends of the last axis."""
  window = (1,) * (v.ndim - 1) + (size,)
  padding = ((0, 0),) * (v.ndim - 1) + ((below, above),)
  return jax.lax.reduce_window(v, 0.0, jax.lax.add, window, (1,) * v.ndim, padding)


def _negative_power(d: jnp.ndarray, beta: float) -> jnp.ndarray:
  """d ** -beta for d > 0, in the cheapest form XLA:CPU has.

  On conv1's maps XLA:CPU's pow is slower than exp(-beta log d) (docs/benchmark_history.md). For the
  paper's beta = 3/4 (section 3.3), d^-3/4 = d^-1/2 * (d^-1/2)^1/2 needs only a reciprocal square
  root and a square root, no transcendental functions.
  """
  if beta == 0.75:
    r = jax.lax.rsqrt(d)
    return r * jnp.sqrt(r)
  return jnp.exp(-beta * jnp.log(d))


def _lrn_fwd(x, size, k, scale, beta):
  x32 = x.astype(jnp.float32)
  denominator = k + scale * _window_sum(x32 * x32, size, size // 2, (size - 1) // 2)
  factor = _negative_power(denominator, beta)
  return (x32 * factor).astype(x.dtype), (x, denominator, factor)


def _lrn_bwd(size, k, scale, beta, residuals, g):
  """With d_i = k + scale sum_{j in W(i)} a_j^2 and b_i = a_i d_i^-beta:

      dL/da_j = g_j d_j^-beta - 2 beta scale a_j sum_{i: j in W(i)} g_i a_i d_i^(-beta-1)

  and j is in W(i) = [i - n//2, i + (n-1)//2] exactly when i is in [j - (n-1)//2, j + n//2]: the
  same window sum with its padding swapped.
  """
  del k
  x, denominator, factor = residuals
  x32, g32 = x.astype(jnp.float32), g.astype(jnp.float32)
  through_sum = _window_sum(g32 * x32 * factor / denominator, size, (size - 1) // 2, size // 2)
  return ((g32 * factor - 2.0 * beta * scale * x32 * through_sum).astype(x.dtype),)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn(x, size, k, scale, beta):
  return _lrn_fwd(x, size, k, scale, beta)[0]


_lrn.defvjp(_lrn_fwd, _lrn_bwd)


# --- Max pooling (section 3.4) ---


def _window_slices(x: Array, window: int, stride: int) -> list[Array]:
  """The window*window strided views of NHWC `x`, one per offset in the pooling window."""
  n, height, width, channels = x.shape
  out_h, out_w = (height - window) // stride + 1, (width - window) // stride + 1
  return [
      jax.lax.slice(
          x,
          (0, i, j, 0),
          (n, i + stride * (out_h - 1) + 1, j + stride * (out_w - 1) + 1, channels),
          (1, stride, stride, 1),
      )
      for i in range(window)
      for j in range(window)
  ]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x: Array, window: int, stride: int) -> Array:
  """Max pooling of NHWC maps over `window` x `window` patches every `stride` pixels, no padding.

  The same values and gradients as `nnx.max_pool(x, (window, window), (stride, stride), 'VALID')`
  (section 3.4's overlapping pooling is window 3, stride 2), computed from the window's strided
  slices. XLA:CPU runs the reduce_window's gradient (select-and-scatter) as a reduction that
  tracks every window's argmax coordinates, then a scatter: slower than this. Here the forward
  pass also records which of the window's slices won (one byte per output), and the gradient
  routes each output's gradient back to that slice's position (`_max_pool_bwd`). Like
  select-and-scatter, ties go to the FIRST maximum of a window in row-major order (ties are
  common after a ReLU: windows of zeros).
  """
  return _max_pool_fwd(x, window, stride)[0]


def _max_pool_fwd(x, window, stride):
  views = _window_slices(x, window, stride)
  y, winner = views[0], jnp.zeros(views[0].shape, jnp.uint8)
  for k, view in enumerate(views[1:], start=1):
    better = view > y  # strict: an equal later value does not displace the first maximum
    y, winner = jnp.where(better, view, y), jnp.where(better, jnp.uint8(k), winner)
  return y, (winner, x.shape)


def _max_pool_bwd(window, stride, residuals, g):
  """Each input pixel's gradient, gathered by the pixel's phase (row % stride, col % stride).

  Input row r = stride * a + p is covered by window offsets i = p + stride * m (m = 0, 1, ...,
  while i < window) of output rows a - m; the same holds for columns. So the gradient of every
  pixel of phase (p, q) is a sum of a few shifted copies of `where(winner == k, g, 0)`, the
  phases are interleaved by a stack and a reshape, and the rows and columns that no window covers
  are cut off (they get zero). Each input pixel is written once. The obvious form, a strided pad
  per window offset (9 full-size arrays for 3x3 windows), is the same sum, but inside the paper's
  train step XLA:CPU materialised each pad, recomputing the winners into all 9. Gathering by
  phase made the float32 step faster against PyTorch eager
  (`python -m alexnet_jax.tools.benchmark`; docs/benchmark_history.md).
  """
  winner, (n, height, width, channels) = residuals
  out_h, out_w = winner.shape[1:3]
  rows, cols = -(-height // stride), -(-width // stride)  # pixels of one phase, rounded up
  zero = jnp.zeros((), g.dtype)
  phases = []
  for p in range(stride):
    row_phases = []
    for q in range(stride):
      total = jnp.zeros((n, rows, cols, channels), g.dtype)
      for m in range((window - 1 - p) // stride + 1):
        for l in range((window - 1 - q) // stride + 1):
          k = (p + stride * m) * window + (q + stride * l)  # the window offset's slice index
          shifted = [(0, 0, 0), (m, rows - out_h - m, 0), (l, cols - out_w - l, 0), (0, 0, 0)]
          total = total + jax.lax.pad(jnp.where(winner == k, g, zero), zero, shifted)
      row_phases.append(total)
    phases.append(jnp.stack(row_phases, axis=3))  # (n, rows, cols, q, channels)
  # (n, rows, p, cols, q, channels) -> (n, rows * stride, cols * stride, channels); one axis merge
  # per reshape, as explicit sharding requires.
  dx = jnp.stack(phases, axis=2).reshape(n, rows * stride, cols, stride, channels)
  dx = dx.reshape(n, rows * stride, cols * stride, channels)
  return (dx[:, :height, :width],)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


# --- Bias ---


def add_bias(y: Array, bias: Array) -> Array:
  """`y + bias` over the last (channel) axis, whose bias gradient is a matrix product.

  The gradient of a bias is its channel's sum of the output gradient over the batch and the
  positions. XLA:CPU's reduction of conv1's gradient to its 96 sums was over ten times slower
  than the same sums as a product with a vector of ones (docs/benchmark_history.md, issue 13), hence
  this. The product contracts every axis but the last (no reshape, so the batch axis keeps its
  sharding) and accumulates in float32 at full precision (never TF32), whatever the dtype.

  Inside shard_map, a bias replicated over an axis that `y` varies along is first cast to varying
  there, as `y + bias` itself would be: the cast's transpose then adds up the devices' gradients.
  """
  varying = lambda x: jax.typeof(x).manual_axis_type.varying
  missing = tuple(sorted(varying(y) - varying(bias)))
  if missing:
    bias = jax.lax.pcast(bias, missing, to='varying')
  return _add_bias(y, bias)


@jax.custom_vjp
def _add_bias(y: Array, bias: Array) -> Array:
  return y + bias


def _add_bias_fwd(y, bias):
  return y + bias, jnp.zeros((0,), bias.dtype)  # the residual only carries the bias's dtype


def _add_bias_bwd(empty, g):
  axes = tuple(range(g.ndim - 1))
  ones = jnp.ones(g.shape[:-1], g.dtype)
  db = jax.lax.dot_general(
      ones,
      g,
      ((axes, axes), ((), ())),
      precision=jax.lax.Precision.HIGHEST,
      preferred_element_type=jnp.float32,
  )
  return g, db.astype(empty.dtype)


_add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


# --- Adaptive average pooling (torchvision's AlexNet) ---


def adaptive_avg_pool(x: Array, size: int) -> Array:
  """PyTorch's `AdaptiveAvgPool2d(size)` on NHWC maps: `size` x `size` outputs from any input.

  Along an axis of length n, output i averages inputs floor(i * n / size) to
  ceil((i + 1) * n / size) - 1, PyTorch's definition, so the bins overlap where `size` does not
  divide n (and repeat inputs where n < size). A rectangle's mean is the mean over its rows of the
  means over its columns, so the two axes pool one after the other. With n == size it is the
  identity: torchvision's AlexNet at 224 pixels, whose pool5 is already 6x6.
  """

  def pool_axis(x: Array, axis: int) -> Array:
    n = x.shape[axis]
    if n == size:
      return x
    bins = [
        jax.lax.slice_in_dim(x, i * n // size, -(-(i + 1) * n // size), axis=axis).mean(
            axis=axis, keepdims=True
        )
        for i in range(size)
    ]
    return jnp.concatenate(bins, axis=axis)

  return pool_axis(pool_axis(x, 1), 2)
