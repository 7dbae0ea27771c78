"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) in JAX and Flax NNX.

At the top, the network and its training: `models` (Figure 2), `layers` (the towers and where they
talk), `ops` (LRN and overlapping pooling with their gradients), `optim` (section 5), `steps` (pure
train and eval steps), `train` (the loop), `finetune` (a run that starts from a trained network,
`init_from`), `sharding` (placement), `checkpointing`, `stopping` (SIGTERM and SIGINT: save the
step, then stop), `settings` (a run's config, checked and typed), `history` (metrics.jsonl and the
console's lines), `errors` (ConfigError) and `main` (the training command).

By role below it: `data/` (augmentation, the input pipeline, colour statistics, ImageNet's names,
datasets), `trained/` (the one loader of a trained workdir and what is done with it), `sweeps/`
(the runner, SLURM jobs, its tables and plots), `system/` (a command's start, process tuning,
all-or-nothing files) and `tools/` (every command but `main`). `configs` (the repository's
top-level configs/, installed with the package) holds the recipes, which import no library logic.

Importing the package changes nothing in the process; `system.runtime.tune_process()` tunes it, and
every command calls it first.
"""

__version__ = '0.1.0'
