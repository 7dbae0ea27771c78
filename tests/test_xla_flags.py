"""xla_flags: added only when absent, never over the user's own setting, and in effect here."""

import jax
import jax.numpy as jnp

from alexnet_jax import xla_flags

FLAG = 'xla_cpu_experimental_ynn_fusion_type'


def test_appends_to_the_users_other_flags():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  xla_flags.apply(env, jaxlib_version='0.10.2')
  assert env['XLA_FLAGS'] == ('--xla_force_host_platform_device_count=8 '
                              f'--{FLAG}=LIBRARY_FUSION_TYPE_DOT')
  xla_flags.apply(env, jaxlib_version='0.10.2')  # idempotent: a second import adds nothing
  assert env['XLA_FLAGS'].count(FLAG) == 1


def test_never_overrides_a_flag_the_user_set():
  env = {'XLA_FLAGS': f'--{FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION'}
  xla_flags.apply(env, jaxlib_version='0.10.2')
  assert env['XLA_FLAGS'] == f'--{FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION'


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
