"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) in JAX and Flax NNX."""

__version__ = "0.1.0"

# Process settings measured to speed up the CPU train step. Both must run before JAX starts its
# backend: XLA reads XLA_FLAGS once, and a thread keeps the malloc arena it started with.
from alexnet_jax import host_memory as _host_memory  # noqa: E402
from alexnet_jax import xla_flags as _xla_flags  # noqa: E402

_xla_flags.apply()
_host_memory.apply()
