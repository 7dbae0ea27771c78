"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) in JAX and Flax NNX."""

__version__ = "0.1.0"
