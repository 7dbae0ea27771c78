"""Secondary commands, each `python -m alexnet_jax.tools.NAME` with an importable function behind
it: `prepare` (datasets), `colour_statistics`, `benchmark` (the step against PyTorch, whose network
is `torch_reference`), `loop_benchmark`, `pipeline_benchmark` and `communication` (what each
strategy sends); and for a trained workdir, around `alexnet_jax.inference`: `evaluate` (a network
or an ensemble on a split), `predict` (image files), `features` (any layer's activations, and
nearest neighbours) and `export` (jax.export and SavedModel files). Training does not need any of
them.
"""
