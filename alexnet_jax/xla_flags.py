"""XLA:CPU settings the package adds to XLA_FLAGS before JAX starts its backend.

`alexnet_jax/__init__.py` calls `apply()`, so importing any module of the package sets them; they
take effect only if no JAX computation has run yet in the process (XLA reads XLA_FLAGS once, when
the backend starts). A flag the user already put in XLA_FLAGS is never changed, which is also how
to opt out: e.g. `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT,...`.
The flags only concern XLA:CPU; GPU programs do not read them.

--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT: jaxlib 0.10 hands convolutions,
dots and some elementwise/reduce fusions to YNNPACK by default. For AlexNet's training step,
YNNPACK's convolution gradients are slow on the CPUs we measured (conv1's kernel gradient, a
55x55 window with dilation 4 over 3 channels, took 2.6x as long as XLA's Eigen convolution) and
its forward convolutions were no faster, while its matrix products are 2.6-3.6x faster than Eigen's
for fc6/fc7's input gradients. So YNNPACK keeps the dots only; convolutions go back to Eigen. On a
2-core AMD EPYC (Zen 4, AVX-512) VM, the full float32 train step (batch 32) went from 1385 to
1172 ms per step (interleaved medians; /tmp scratch race script, see the README's CPU section).

--xla_cpu_copy_insertion_use_region_analysis=true: the train step donates its state, so each new
weight can be written over the old one. Without region analysis XLA:CPU's copy insertion could
not prove that safe when a weight is read by both the forward and the backward pass, and copied
every such parameter first: fc6's and fc7's kernels alone are 218 MB copied per step. The finer
analysis (the one XLA:GPU uses) removes the copies; `tests/test_xla_flags.py` checks it on a small
two-layer step.

Unknown flags in XLA_FLAGS abort the process, so the flag is only added for the jaxlib versions
where it was measured to exist (`MEASURED_JAXLIB`); other versions keep XLA's defaults.
"""

import importlib.metadata
import os
from typing import MutableMapping

MEASURED_JAXLIB = ('0.10.',)  # version prefixes whose XLA:CPU has these flags and was measured
CPU_FLAGS = {'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_DOT',
             'xla_cpu_copy_insertion_use_region_analysis': 'true'}


def _jaxlib_version() -> str:
  try:
    return importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return ''


def apply(environ: MutableMapping[str, str] = os.environ, jaxlib_version: str | None = None
          ) -> None:
  """Appends each of CPU_FLAGS to environ['XLA_FLAGS'] unless the user set it already."""
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if not version.startswith(MEASURED_JAXLIB):
    return
  flags = environ.get('XLA_FLAGS', '')
  user_set = {token.split('=', 1)[0].lstrip('-') for token in flags.split()}
  added = [f'--{name}={value}' for name, value in CPU_FLAGS.items() if name not in user_set]
  if added:
    environ['XLA_FLAGS'] = ' '.join([flags.strip()] + added).strip()
