"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) in JAX and Flax NNX.

The network and its training: `models` (Figure 2), `layers` (towers), `kernels` (LRN, pooling and
their custom gradients), `optim` (section 5), `steps` (pure train and eval steps), `train` (the
loop), `sharding` (placement), `checkpointing`, `stopping` (SIGTERM and SIGINT: save the step,
then stop), `settings` (a run's config, checked and typed), `runtime` (explicit process tuning).
After training: `inference` (the one loader, `load(workdir)`; evaluate, predict, features),
`analysis` (functions of its arrays: ensembles, conv1 colour, neighbours), `retrieval` (Figure 4),
`exporting`, `weights` (torchvision's), `finetune` (`init_from`).
Experiments: `sweep` (the runner), `history` (metrics.jsonl and the console lines), `results`
(tables), `plots`. Plumbing: `cli` (the commands' start and errors), `files` (all-or-nothing
writers), `errors`. `main` is the training command. `data/`: augmentation, the input pipeline,
colour statistics, ImageNet's class names, datasets. `tools/`: the other commands (prepare,
evaluate, predict, features, import_weights, export, colour statistics, benchmarks, the PyTorch
twin). `configs` (the repository's top-level configs/, installed with the package): the recipes.

Importing the package changes nothing in the process; `runtime.configure()` tunes it, and every
command calls it first.
"""

__version__ = '0.1.0'
