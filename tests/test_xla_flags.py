"""xla_flags: added only when absent, never over the user's own setting, and in effect here."""

import jax
import jax.numpy as jnp

from alexnet_jax import xla_flags

FLAG = 'xla_cpu_experimental_ynn_fusion_type'


def test_appends_to_the_users_other_flags():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  xla_flags.apply(env, jaxlib_version='0.10.2')
  assert env['XLA_FLAGS'] == ('--xla_force_host_platform_device_count=8 '
                              f'--{FLAG}=LIBRARY_FUSION_TYPE_DOT '
                              '--xla_cpu_copy_insertion_use_region_analysis=true')
  xla_flags.apply(env, jaxlib_version='0.10.2')  # idempotent: a second import adds nothing
  assert env['XLA_FLAGS'].count(FLAG) == 1


def test_never_overrides_a_flag_the_user_set():
  env = {'XLA_FLAGS': f'--{FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION'}
  xla_flags.apply(env, jaxlib_version='0.10.2')
  assert env['XLA_FLAGS'].split()[0] == f'--{FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION'
  assert env['XLA_FLAGS'].count(FLAG) == 1


def test_unmeasured_jaxlib_keeps_xla_defaults():
  # An unknown flag in XLA_FLAGS aborts the process, so versions we have not checked get none.
  env = {}
  xla_flags.apply(env, jaxlib_version='0.11.0')
  assert 'XLA_FLAGS' not in env


def test_convolutions_leave_ynnpack_in_this_process():
  """Importing the package (conftest does) applied the flag before the backend started."""
  if not jax.lib.__version__.startswith(xla_flags.MEASURED_JAXLIB) or jax.default_backend() != 'cpu':
    return
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME')
  program = jax.jit(conv).lower(jnp.ones((1, 3, 8, 8)), jnp.ones((4, 3, 3, 3))).compile().as_text()
  assert 'convolution' in program and '__ynn_fusion' not in program


def test_donated_weights_read_twice_are_updated_in_place():
  """The step donates its state; a weight read by the forward and the backward pass (w2 here,
  like every AlexNet layer but conv1) must be overwritten in place, not copied first."""
  if not jax.lib.__version__.startswith(xla_flags.MEASURED_JAXLIB) or jax.default_backend() != 'cpu':
    return
  def step(params, x):
    grads = jax.grad(lambda p: jnp.sum(jnp.tanh(x @ p['w1']) @ p['w2']))(params)
    return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
  params = {'w1': jnp.ones((64, 32)), 'w2': jnp.ones((32, 8))}
  program = jax.jit(step, donate_argnums=0).lower(params, jnp.ones((4, 64))).compile().as_text()
  assert 'ENTRY' in program
  assert not [line for line in program.splitlines() if ' copy(' in line]
