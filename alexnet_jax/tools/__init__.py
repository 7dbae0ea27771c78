"""Secondary commands, each `python -m alexnet_jax.tools.NAME` with an importable function behind
it: `prepare` (datasets), `colour_statistics`, `benchmark` (the step against PyTorch, whose network
is `torch_reference`), `loop_benchmark`, `pipeline_benchmark` and `communication` (what each
strategy sends). Training does not need any of them.
"""
