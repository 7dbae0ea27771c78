"""ops.py: local_response_norm against the paper's formula written as a naive loop over
channels; add_bias's gradient against a numpy sum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import ops
from alexnet_jax.ops import local_response_norm


def naive_lrn(a, size=5, k=2.0, alpha=1e-4, beta=0.75, alpha_over_n=False):
  """Section 3.3, term by term: b_i = a_i / (k + alpha sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a_j^2)^beta."""
  a = np.asarray(a, np.float64)
  n_channels = a.shape[-1]
  scale = alpha / size if alpha_over_n else alpha
  b = np.empty_like(a)
  for i in range(n_channels):
    lo = max(0, i - size // 2)
    hi = min(n_channels - 1, i + (size - 1) // 2)
    total = np.zeros(a.shape[:-1])
    for j in range(lo, hi + 1):
      total += a[..., j] ** 2
    b[..., i] = a[..., i] / (k + scale * total) ** beta
  return b


@pytest.mark.parametrize('alpha_over_n', [False, True])
@pytest.mark.parametrize('size', [5, 3, 1])
@pytest.mark.parametrize('beta', [0.75, 0.6])  # the paper's (computed with square roots), another
def test_matches_naive_loop(alpha_over_n, size, beta):
  # Large activations (like conv1's) so the normaliser differs visibly from k**beta.
  x = np.random.default_rng(0).normal(0, 60, (2, 3, 4, 12)).astype(np.float32)
  got = local_response_norm(jnp.asarray(x), size=size, alpha_over_n=alpha_over_n, beta=beta)
  want = naive_lrn(x, size=size, alpha_over_n=alpha_over_n, beta=beta)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=1e-5)
  # The test would pass vacuously if the normaliser were ~constant: make sure it is not.
  assert np.std(want / np.where(x == 0, 1, x)) > 0.01


def test_alpha_conventions_differ_by_n():
  x = np.random.default_rng(1).normal(0, 80, (1, 2, 2, 8)).astype(np.float32)
  paper = local_response_norm(jnp.asarray(x), alpha=1e-4)
  released = local_response_norm(jnp.asarray(x), alpha=5e-4, alpha_over_n=True)  # 5e-4 / 5
  np.testing.assert_allclose(np.asarray(paper), np.asarray(released), rtol=1e-6)


def test_gradient_matches_naive_finite_differences():
  x = np.random.default_rng(2).normal(0, 50, (1, 2, 2, 7))
  weights = np.random.default_rng(3).normal(size=x.shape)
  grad = jax.grad(lambda v: jnp.sum(local_response_norm(v) * weights))(jnp.asarray(x, jnp.float32))
  eps = 1e-3
  numeric = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    plus, minus = x.copy(), x.copy()
    plus[idx] += eps
    minus[idx] -= eps
    numeric[idx] = (np.sum(naive_lrn(plus) * weights) - np.sum(naive_lrn(minus) * weights)) / (
        2 * eps
    )
  np.testing.assert_allclose(np.asarray(grad), numeric, rtol=1e-3, atol=1e-5)


def test_bfloat16_input_is_normalised_in_float32():
  x = np.random.default_rng(4).normal(0, 60, (2, 5, 5, 16)).astype(np.float32)
  got = local_response_norm(jnp.asarray(x, jnp.bfloat16))
  assert got.dtype == jnp.bfloat16
  want = naive_lrn(np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32))
  np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=1e-2)


def test_channels_are_independent_outside_the_window():
  x = np.random.default_rng(5).normal(0, 60, (1, 1, 1, 10)).astype(np.float32)
  moved = x.copy()
  moved[..., 9] *= 5  # only channels 7..9 have channel 9 in their window (n=5)
  delta = np.asarray(local_response_norm(jnp.asarray(moved))) - np.asarray(
      local_response_norm(jnp.asarray(x))
  )
  assert np.all(delta[..., :7] == 0)
  assert np.all(delta[..., 7:9] != 0)


def autodiff_lrn(a, size=5, k=2.0, alpha=1e-4, beta=0.75):
  """The formula written straight in jnp, differentiated by JAX: the reference for our custom VJP."""
  n_channels = a.shape[-1]
  total = jnp.stack(
      [
          sum(
              a[..., j] ** 2
              for j in range(max(0, i - size // 2), min(n_channels, i + (size - 1) // 2 + 1))
          )
          for i in range(n_channels)
      ],
      axis=-1,
  )
  return a / (k + alpha * total) ** beta


@pytest.mark.parametrize('size', [5, 4, 1])
def test_analytic_gradient_matches_autodiff_of_the_formula(size):
  # Large, partly zero activations (after a ReLU) so both terms of the gradient matter.
  x = jnp.asarray(np.maximum(np.random.default_rng(6).normal(0, 80, (2, 3, 3, 11)), 0), jnp.float32)
  weights = jnp.asarray(np.random.default_rng(7).normal(size=x.shape), jnp.float32)
  got = jax.grad(lambda v: jnp.sum(local_response_norm(v, size=size) * weights))(x)
  want = jax.grad(lambda v: jnp.sum(autodiff_lrn(v, size=size) * weights))(x)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)
  # The cross-channel term (through the sum) must be visible, or the test proves little.
  diagonal_only = np.asarray(weights) * (2.0 + 1e-4 * np.asarray(x) ** 2) ** -0.75
  assert np.max(np.abs(np.asarray(want) - diagonal_only)) > 1e-3 * np.max(np.abs(np.asarray(want)))


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('shape', [(4, 7, 5, 6), (9, 6)])
def test_add_bias_gradient_is_the_sum_over_all_but_channels(shape, dtype):
  rng = np.random.default_rng(0)
  y = jnp.asarray(rng.normal(size=shape), dtype)
  bias = jnp.asarray(rng.normal(size=shape[-1]), dtype)
  weights = rng.normal(size=shape)  # a loss whose output gradient is these weights
  loss = lambda y, b: jnp.sum(ops.add_bias(y, b).astype(jnp.float32) * weights)
  gy, gb = jax.grad(loss, argnums=(0, 1))(y, bias)
  np.testing.assert_array_equal(ops.add_bias(y, bias), y + bias)
  assert gb.dtype == bias.dtype and gy.dtype == y.dtype
  want = weights.reshape(-1, shape[-1]).sum(0)  # float64
  tol = 1e-5 if dtype == 'float32' else 1e-2  # bfloat16 rounds the gradient it is given
  np.testing.assert_allclose(np.asarray(gb, np.float64), want, rtol=tol, atol=tol * 10)
  np.testing.assert_allclose(np.asarray(gy, np.float64), weights, rtol=tol, atol=tol)


def test_add_bias_in_shard_map_adds_up_the_devices_gradients():
  """A replicated bias over batch-sharded rows: its gradient is the whole batch's sum."""
  devices = jax.devices()[:2]
  assert len(devices) == 2  # conftest gives the test process 8 CPU devices
  mesh = jax.make_mesh((2,), ('data',), devices=devices)
  rows = np.random.default_rng(1).normal(size=(8, 3, 5)).astype(np.float32)
  y = jax.device_put(rows, jax.NamedSharding(mesh, jax.P('data')))
  bias = jax.device_put(np.zeros(5, np.float32), jax.NamedSharding(mesh, jax.P()))

  def local(y, b):
    return jax.lax.psum(jnp.sum(ops.add_bias(y, b) ** 2), 'data')

  sharded = jax.shard_map(local, mesh=mesh, in_specs=(jax.P('data'), jax.P()), out_specs=jax.P())
  with jax.set_mesh(mesh):
    gb = jax.jit(jax.grad(sharded, argnums=1))(y, bias)
  np.testing.assert_allclose(gb, 2 * rows.reshape(-1, 5).sum(0), rtol=1e-5)
