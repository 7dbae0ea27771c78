"""A run asked to stop, by SIGTERM (what schedulers and preemptible VMs send before they kill a
job) or SIGINT (Ctrl-C, a notebook's interrupt), finishes its step, saves it and exits.

`train.train_and_evaluate` listens while its loop runs (`listening()`). The first signal is only
noted; the loop finishes the step it is in, saves a checkpoint of it, waits for the save to be
written and raises `Stopped`. `main` then exits with status 128 + the signal's number (143 for
SIGTERM, 130 for SIGINT), the status of a process that signal killed, so a scheduler sees that the
job did not finish; running the same command again resumes it. A second signal acts as it would
have without us: SIGINT raises KeyboardInterrupt at once, SIGTERM ends the process.

The handlers are installed only while the loop runs, so importing the package changes nothing;
only from the main thread (Python allows no other, so a sweep's runs side by side keep the
signals' previous meaning); never for a signal the process ignores (a background job started with
`&` ignores SIGINT); and the previous handlers are put back afterwards.

The processes of a multi-process run may be told at different moments, or only one of them (a
preempted VM). They must stop after the same step, or the others wait forever in the next step's
collectives, so they agree at log steps, where the loop already waits for the devices: one
all-gather of each process's signal number (a few bytes), and all stop if any was asked. A single
process stops after the step it is in. (JAX's preemption service, `multihost_utils.
reached_preemption_sync_point`, would agree within a step or two, but it hears SIGTERM only, in
multi-process runs only, and from a C++ handler that a Python one replaces.)
"""

import contextlib
import signal
from typing import Iterator

import jax
import numpy as np

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
  """The run stopped on a signal after saving the checkpoint of `step`."""

  def __init__(self, signum: int, step: int, directory: str):
    self.signum, self.step = signum, step
    super().__init__(
        f'Stopped at step {step} on {signal.Signals(signum).name}: its checkpoint is in '
        f'{directory}. Run the same command again to resume.'
    )

  @property
  def exit_code(self) -> int:
    """128 + the signal's number: what a shell reports for a process that signal killed."""
    return 128 + self.signum


class StopRequest:
  """The first stop signal this process received (0 until one is), and the handlers it replaced."""

  def __init__(self):
    self.signum = 0
    self._previous = {}
    self._processes = jax.process_count()

  def install(self) -> None:
    for signum in SIGNALS:
      previous = signal.getsignal(signum)
      # SIG_IGN: the process was told to ignore it. None: a handler not set from Python, which
      # could not be put back.
      if previous in (signal.SIG_IGN, None):
        continue
      try:
        signal.signal(signum, self._handle)
      except ValueError:  # not the main thread: Python lets no other thread set handlers
        return
      self._previous[signum] = previous

  def restore(self) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous.clear()

  def _handle(self, signum: int, frame) -> None:
    if not self.signum:
      self.signum = signum  # the loop acts on it after its step; nothing else runs here
      return
    # Asked again: no more waiting for the step.
    previous = self._previous.get(signum, signal.SIG_DFL)
    signal.signal(signum, previous)
    if callable(previous):
      previous(signum, frame)
    else:
      signal.raise_signal(signum)

  def agreed(self, sync_point: bool) -> int:
    """The signal the run stops on after this step, 0 to go on. With several processes they
    compare at `sync_point`s only (a step every process calls this at) and all stop on the
    largest number any received."""
    if self._processes == 1:
      return self.signum
    if not sync_point:
      return 0
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    return int(np.max(multihost_utils.process_allgather(np.int32(self.signum))))


@contextlib.contextmanager
def listening() -> Iterator[StopRequest]:
  """A StopRequest whose handlers are installed inside the block, and the previous ones after."""
  request = StopRequest()
  request.install()
  try:
    yield request
  finally:
    request.restore()
