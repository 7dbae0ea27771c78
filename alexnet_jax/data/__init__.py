"""The data side: what happens to images before the network sees them.

`augment` (sections 2 and 4.1, numpy on the host), `pipeline` (TFDS ArrayRecord read with grain:
decoding, training batches, evaluation passes), `colour` (the colour statistics file and its
moments), `datasets` (the built-in dataset and your own images as TFDS datasets). Nothing here
imports TensorFlow; only preparing a dataset (`alexnet_jax.tools.prepare`) does.
"""
