"""Secondary commands, each `python -m alexnet_jax.tools.NAME` with an importable function behind
it: `prepare` (datasets), `colour_statistics`, `benchmark` (the step against PyTorch, whose network
is `torch_reference`), `loop_benchmark`, `pipeline_benchmark`, `communication` (what each
strategy sends) and `export` (a trained run as jax.export and SavedModel files). Training does not
need any of them.
"""
