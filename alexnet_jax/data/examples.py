"""The training stream's examples, before batching: which example is the g-th of the endless
stream (an epoch's permutation, by the seed alone), its augmentation drawn from its own generator,
this process' rows of each global batch, the resized images kept between epochs, and the
evaluation passes kept between evaluations."""

import collections
import concurrent.futures
import threading
from typing import Any, Sequence

import grain
import numpy as np

from alexnet_jax.data import decode

IMAGE_KEY = decode.IMAGE_KEY


class ProcessRows(grain.transforms.Map):
  """Maps this process' k-th example to its global position: its rows of each global batch."""

  def __init__(
      self, stream: Sequence[Any], global_batch: int, per_process: int, process_index: int
  ):
    self.stream = stream
    self.global_batch, self.per_process, self.offset = (
        global_batch,
        per_process,
        process_index * per_process,
    )

  def map(self, k: int) -> dict[str, Any]:
    batch, row = divmod(int(k), self.per_process)
    return self.stream[batch * self.global_batch + self.offset + row]


class TrainExamples:
  """The endless global training stream: example g, decoded, with its augmentation drawn.

  g = epoch * len(source) + i reads `source[permutation(epoch)[i]]`, the epoch's permutation
  being `default_rng([seed, epoch])`'s; `TrainTransform.random_map` draws from a Philox generator
  keyed by (g, seed). Both are functions of the seed and g alone.
  """

  def __init__(
      self,
      source: Sequence[dict[str, Any]],
      transform: Any,  # pipeline.TrainTransform: its `resized` and `draw`
      seed: int,
      cache_bytes: int = 0,
  ):
    self.source, self.transform, self.seed = source, transform, int(seed) % 2**64
    self.resized = ResizedImages(cache_bytes)
    self._permutations: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return 2**62  # endless; grain needs a length

  def permutation(self, epoch: int) -> np.ndarray:
    perm = self._permutations.get(epoch)
    if perm is None:
      with self._lock:  # threads reading the same epoch compute it once
        perm = self._permutations.get(epoch)
        if perm is None:
          n = len(self.source)
          perm = (
              np.random.default_rng([self.seed, epoch])
              .permutation(n)
              .astype(np.int32 if n < 2**31 else np.int64)
          )
          # Keep this epoch and the last one: a batch may straddle the boundary.
          self._permutations = {e: p for e, p in self._permutations.items() if e == epoch - 1}
          self._permutations[epoch] = perm
    return perm

  def __getitem__(self, g: int) -> dict[str, Any]:
    epoch, i = divmod(int(g), len(self.source))
    element = self.keep(int(self.permutation(epoch)[i]))
    rng = np.random.Generator(np.random.Philox(key=np.array([g, self.seed], np.uint64)))
    return self.transform.draw(element, rng)

  def keep(self, k: int) -> dict[str, Any]:
    """Example k decoded and resized, kept where it fits (`ResizedImages`)."""
    element = self.resized.get(k)
    if element is None:
      element = self.resized.put(k, self.transform.resized(self.source[k]))
    return element

  def prefill(self, threads: int) -> bool:
    """Decodes and keeps every example of the split now, in `threads` threads, where the whole
    split fits the limit (judged by its first image; False and nothing more where it does not).
    The first epoch then costs its crops alone, like the later ones: decoding beside the step,
    on two cores, cost more than decoding before it (docs/performance.md)."""
    n = len(self.source)
    if n == 0 or self.resized.limit <= 0:
      return False
    if self.keep(0)[IMAGE_KEY].nbytes * n > self.resized.limit:
      return False
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
      # list(): waits for every example and re-raises a decoding error here (the elements are
      # the ones `resized` holds already, so the list costs only its references).
      list(pool.map(self.keep, range(1, n), chunksize=64))
    return True

  def __getstate__(self):  # pickled to grain worker processes (each keeps its own images)
    return {
        'source': self.source,
        'transform': self.transform,
        'seed': self.seed,
        'cache_bytes': self.resized.limit,
    }

  def __setstate__(self, state):
    self.__init__(**state)


class ResizedImages:
  """Training examples as their crops are cut from them (decoded, at resize_size), kept after
  their first read while they fit in `limit` bytes: from the second epoch on, a small split's
  batch costs its crops alone. Decoding and resizing depend on the example alone, so what a
  kept image gives is what decoding it again would (the tests compare the two streams).

  At the ablation scale (10,000 images of 76x76) the split takes 173 MB; ImageNet's would take
  hundreds of GB, and its examples beyond the limit are decoded every time, as without it.
  """

  def __init__(self, limit: int):
    self.limit, self.used = int(limit), 0
    self._kept: dict[int, dict[str, Any]] = {}
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self._kept)

  def get(self, k: int) -> dict[str, Any] | None:
    return self._kept.get(k)

  def put(self, k: int, element: dict[str, Any]) -> dict[str, Any]:
    size = element[IMAGE_KEY].nbytes
    if self.used + size <= self.limit:
      element[IMAGE_KEY].flags.writeable = False  # shared by every later read of k
      with self._lock:
        if k not in self._kept and self.used + size <= self.limit:
          self._kept[k], self.used = element, self.used + size
    return element


class KeptPasses:
  """Whole evaluation passes (lists of batches), kept by a key that determines them, while they
  fit in a byte limit: each evaluation of a run, and each run of a sweep in this process, reads the
  same batches of the same split, and decoding them again for every evaluation cost the 2-core CPU
  minutes in every ablation notebook (docs/performance.md, "Sweeps"). The evaluation transform
  draws nothing, so a kept pass is what reading it again gives (the tests compare the two). When
  passes of other keys need the room, the least recently read goes first.
  """

  def __init__(self):
    self._kept: collections.OrderedDict[tuple, tuple[list, int]] = collections.OrderedDict()
    self._lock = threading.Lock()

  def get(self, key: tuple) -> list[dict[str, Any]] | None:
    with self._lock:
      if key not in self._kept:
        return None
      self._kept.move_to_end(key)
      return self._kept[key][0]

  def put(self, key: tuple, batches: list[dict[str, Any]], limit: int) -> None:
    size = sum(v.nbytes for batch in batches for v in batch.values())
    if size > limit:
      return
    for batch in batches:
      for v in batch.values():
        v.flags.writeable = False  # shared by every later pass
    with self._lock:
      self._kept[key] = (batches, size)
      self._kept.move_to_end(key)
      while sum(s for _, s in self._kept.values()) > limit:
        self._kept.popitem(last=False)

  def clear(self) -> None:
    with self._lock:
      self._kept.clear()
