"""The commands besides training (`main`), each `python -m alexnet_jax.tools.NAME` with an
importable function behind it: `sweep` (an experiment's runs, table and plots), `prepare`
(datasets), `colour_statistics`, `benchmark` (the step against PyTorch, whose network is
`torch_reference`), `profile_step`, `loop_benchmark`, `member_benchmark`, `pipeline_benchmark` and
`communication` (what each strategy sends); and for a trained workdir, around `trained.inference`:
`evaluate` (a network or an ensemble on a split), `predict` (image files), `features` (any layer's
activations, and nearest neighbours), `import_weights` (torchvision's) and `export` (jax.export and
SavedModel files). Training does not need any of them.
"""
