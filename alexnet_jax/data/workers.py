"""Whether grain's worker processes can hand their batches through this host's /dev/shm.

A worker that writes a batch into a full /dev/shm dies of SIGBUS (Colab and docker give 64 MB by
default), so the training stream reads with threads in this process where the workers' batches
would not fit (`workers_and_threads`, and `side_by_side` for a sweep's runs that train
at once). The sizes below are what grain keeps in shared memory, measured.
"""

import dataclasses
import math
import os
import sys
from typing import Any

from absl import logging

# A `pipeline.DataConfig` (its image_size, device_augment, batch_size, data_workers, data_threads
# and prefetch_batches); not imported, since the pipeline imports this module.
DataConfig = Any

# Batches each grain worker process keeps in shared memory at once (grain 0.2's `mp_prefetch`,
# grain/_src/python/dataset/transformations/process_prefetch.py): the one it has copied there and
# waits to queue, the one in its queue (per_worker_buffer_size=1), and in this process the one the
# interleave's reader thread holds and the one in that thread's buffer (iter_buffer_size=1). A
# probe that reads 1, 2 and 3 workers' batches while holding 3 peaked at 3 + 4 per worker.
SHM_BATCHES_PER_WORKER = 4
# Room for blocks that are freed late (grain unlinks them on a thread) and for other processes
# that take /dev/shm after the check; too little room crashes a worker, too much only costs
# the workers' speed on hosts that are short of it anyway.
SHM_MARGIN = 1.5
_PAGE = 4096  # tmpfs allocates whole pages: each array of a batch takes at least one


def shm_free_bytes(path: str = '/dev/shm', platform: str = sys.platform) -> int | None:
  """Free bytes of the shared memory that grain's worker processes hand their batches through
  (`multiprocessing.shared_memory`); None where it is not a filesystem to measure (macOS,
  Windows)."""
  if not hasattr(os, 'statvfs'):
    return None
  try:
    stat = os.statvfs(path)
  except OSError:
    # Linux's shared memory lives in /dev/shm: without it the workers could not start.
    return 0 if platform.startswith('linux') else None
  return stat.f_bavail * stat.f_frsize


def worker_shm_bytes(config: DataConfig, per_process: int) -> int:
  """Shared memory the `data_workers` processes need at most for `per_process`-row batches,
  with `SHM_MARGIN`: theirs (`SHM_BATCHES_PER_WORKER` each) and those the training loop holds
  (`prefetch_batches` on their way to the devices, the one in use and the next)."""
  image = per_process * config.image_size**2 * 3 * (1 if config.device_augment else 4)
  batch = math.ceil(image / _PAGE) * _PAGE + 4 * _PAGE  # the images; label, flip, shift, window
  held = SHM_BATCHES_PER_WORKER * config.data_workers + config.prefetch_batches + 2
  return math.ceil(SHM_MARGIN * held * batch)


def workers_fit(free_bytes: int | None, needed_bytes: int) -> bool:
  """Whether worker processes may hand batches through shared memory: enough is free, or the
  platform has no /dev/shm to run out of (`free_bytes` None)."""
  return free_bytes is None or free_bytes >= needed_bytes


def side_by_side(config: DataConfig, runs: int) -> DataConfig:
  """`config` for one of `runs` runs that train at once in this process (a sweep's runs side by
  side, single-process): reading with threads instead of worker processes where /dev/shm cannot
  hold the batches of all their workers, which each run's own check (alone, before the others
  start) would not see."""
  if runs <= 1 or config.data_workers <= 0:
    return config
  needed = runs * worker_shm_bytes(config, config.batch_size)
  free = shm_free_bytes()
  if workers_fit(free, needed):
    return config
  threads = config.data_workers * max(1, config.data_threads)
  logging.warning(
      '/dev/shm has %.0f MiB free; %d runs side by side with data_workers=%d worker processes '
      'each need about %.0f MiB of it, so each run reads with %d threads instead (the same '
      'batches). Give the host a larger /dev/shm (docker run --shm-size=2g) for the workers.',
      free / 2**20,
      runs,
      config.data_workers,
      needed / 2**20,
      threads,
  )
  return dataclasses.replace(config, data_workers=0, data_threads=threads)


def workers_and_threads(config: DataConfig, per_process: int) -> tuple[int, int]:
  """(worker processes, read threads) for the training stream: `data_workers` and `data_threads`,
  or, where /dev/shm cannot hold the workers' batches, none and threads in this process.

  A worker that writes a batch into a full /dev/shm dies of SIGBUS, and the loop then stops or
  waits for it (Colab and docker give 64 MB by default). The threads make the same batches (the
  stream depends on the seed alone), as many decoding at once as the workers' threads would.
  """
  workers, threads = config.data_workers, config.data_threads
  if workers <= 0:
    return 0, threads
  needed, free = worker_shm_bytes(config, per_process), shm_free_bytes()
  if workers_fit(free, needed):
    return workers, threads
  threads = workers * max(1, threads)
  logging.warning(
      '/dev/shm has %.0f MiB free; data_workers=%d worker processes need about %.0f MiB of it '
      'for their batches, so this process reads them with %d threads instead (the same '
      'batches). To use worker processes, give the host a larger /dev/shm (docker run '
      '--shm-size=2g); --config.data_workers=0 --config.data_threads=%d reads so without this '
      'message.',
      free / 2**20,
      workers,
      needed / 2**20,
      threads,
      threads,
  )
  return 0, threads
