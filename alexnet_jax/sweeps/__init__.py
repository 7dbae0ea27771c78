"""Experiments: many runs of one config and what they add up to.

`sweep` (variants x seeds, one ordinary workdir each, resumable; `python -m alexnet_jax.tools.sweep`
is its command), `launch` (each run a job of SLURM through submitit), `results` (every run's
metrics in one table, aggregated over seeds), `statistics` (paired differences with their
intervals, Holm's correction, detectable effects, censored targets) and `plots` (the figures the
experiment notebooks show).
"""
