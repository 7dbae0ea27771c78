"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) in JAX and Flax NNX.

The core: `models` (Figure 2), `layers` (towers), `kernels` (LRN, pooling), `optim` (section 5),
`steps` (pure train and eval steps), `train` (the loop), `sharding` (placement), `checkpointing`,
`stopping` (SIGTERM and SIGINT: save the step, then stop), `settings` (a run's config, checked and
typed). `data/`: augmentation, the input pipeline, colour
statistics, datasets. `tools/`: the secondary commands (prepare, colour statistics, benchmarks,
the PyTorch twin). `configs` (the repository's top-level configs/, installed with the package):
the recipes.

Importing the package changes nothing in the process; `runtime.configure()` tunes it, and every
command calls it first.
"""

__version__ = '0.1.0'
