"""A run asked to stop, by SIGTERM (what schedulers and preemptible VMs send before they kill a
job) or SIGINT (Ctrl-C, a notebook's interrupt), finishes its step, saves it and exits.

`train.train_and_evaluate` listens while its loop runs (`listening()`). The first signal is only
noted; the loop finishes the step it is in, saves a checkpoint of it, waits for the save to be
written and raises `Stopped`. `main` then exits with status 128 + the signal's number (143 for
SIGTERM, 130 for SIGINT), the status of a process that signal killed, so a scheduler sees that the
job did not finish; running the same command again resumes it. A second signal acts as it would
have without us: SIGINT raises KeyboardInterrupt at once, SIGTERM ends the process.

The handlers are installed only while the loop runs, so importing the package changes nothing;
only from the main thread (Python allows no other); never for a signal the process ignores (a
background job started with `&` ignores SIGINT); and what was there before is put back afterwards,
as the operating system held it: a handler installed from C, which Python cannot see (the one
`jax.distributed.initialize` installs for SIGTERM, its preemption notifier), is restored too, and
receives a second signal. A `listening()` block inside another one, in any thread, shares the
outer block's request: a sweep's runs side by side (threads) listen through the one its main
thread installed, so one signal stops each of them after its step.

The processes of a multi-process run may be told at different moments, or only one of them (a
preempted VM). They must stop after the same step, or the others wait forever in the next step's
collectives, so they agree at log steps, where the loop already waits for the devices: one
all-gather of each process's signal number (a few bytes), and all stop if any was asked. A single
process stops after the step it is in. (JAX's preemption service, `multihost_utils.
reached_preemption_sync_point`, would agree within a step or two, but it hears SIGTERM only, in
multi-process runs only, and from a C++ handler that a Python one replaces.)
"""

import contextlib
import ctypes
import signal
import sys
import threading
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
    self._previous = {}  # signum -> (Python's handler, the raw disposition or None)
    self._processes = jax.process_count()

  def install(self) -> None:
    for signum in SIGNALS:
      previous = signal.getsignal(signum)
      raw = _disposition(signum)
      # SIG_IGN: the process was told to ignore it (Python may not know, if C code did it). None:
      # a handler set before Python started, which Python could not put back.
      if previous in (signal.SIG_IGN, None) or (raw is not None and _is_ignored(raw)):
        continue
      try:
        signal.signal(signum, self._handle)
      except ValueError:  # not the main thread: Python lets no other thread set handlers
        return
      self._previous[signum] = previous, raw

  def restore(self) -> None:
    for signum in self._previous:
      self._put_back(signum)
    self._previous.clear()

  def _put_back(self, signum: int) -> None:
    previous, raw = self._previous[signum]
    signal.signal(signum, previous)  # Python's record of it...
    if raw is not None:
      _set_disposition(signum, raw)  # ...and what the OS held, a C handler Python never saw too

  def _handle(self, signum: int, frame) -> None:
    del frame
    if not self.signum:
      self.signum = signum  # the loop acts on it after its step; nothing else runs here
      return
    # Asked again: no more waiting for the step. The previous handler, Python's or C's, takes it
    # (raise_signal runs a Python one before it returns); SIG_DFL ends the process.
    self._put_back(signum)
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


_active: StopRequest | None = None  # the request of the outermost block open, if any
_active_lock = threading.Lock()


@contextlib.contextmanager
def listening() -> Iterator[StopRequest]:
  """A StopRequest whose handlers are installed inside the block, and the previous ones after.

  Inside another block (of this thread or another: a sweep's main thread around its runs), the
  outer block's request, installed once. In a thread other than the main one with no block open,
  a request no signal reaches (Python sets handlers from the main thread only)."""
  global _active
  with _active_lock:
    outer = _active
  if outer is not None:
    yield outer
    return
  request = StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield request
    return
  with _active_lock:
    _active = request
  try:
    request.install()
    yield request
  finally:
    request.restore()
    with _active_lock:
      _active = None


# --- The OS's disposition of a signal, opaque: saved and put back as it was ---

# Larger than struct sigaction anywhere (152 bytes on Linux x86-64 and arm64); the handler (or
# SIG_DFL = 0, SIG_IGN = 1) comes first in every libc's layout.
_SIGACTION_BYTES = 512
_libc = None


def _sigaction():
  """libc's sigaction, or None where there is none (Windows): then Python's record is all."""
  global _libc
  if _libc is None:
    _libc = False
    if sys.platform != 'win32':
      try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.sigaction.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
      except (OSError, AttributeError):
        _libc = False
  return _libc.sigaction if _libc else None


def _disposition(signum: int) -> bytes | None:
  sigaction = _sigaction()
  if sigaction is None:
    return None
  buffer = ctypes.create_string_buffer(_SIGACTION_BYTES)
  if sigaction(signum, None, buffer) != 0:
    return None
  return buffer.raw


def _set_disposition(signum: int, raw: bytes) -> None:
  buffer = ctypes.create_string_buffer(raw, _SIGACTION_BYTES)
  _sigaction()(signum, buffer, None)


def _is_ignored(raw: bytes) -> bool:
  return int.from_bytes(raw[: ctypes.sizeof(ctypes.c_void_p)], sys.byteorder) == 1  # SIG_IGN
