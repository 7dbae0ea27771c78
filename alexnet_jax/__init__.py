"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) in JAX and Flax NNX."""

__version__ = "0.1.0"

# XLA:CPU flags measured to speed up the train step; must run before JAX starts its backend.
from alexnet_jax import xla_flags as _xla_flags  # noqa: E402

_xla_flags.apply()
