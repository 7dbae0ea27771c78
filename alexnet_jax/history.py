"""A run's metrics as a JSON-lines file beside its checkpoints: `<workdir>/metrics.jsonl`.

clu's writers give TensorBoard event files and log lines; neither is a table a notebook can read
without TensorFlow. So the loop also writes every scalar it logs here, one JSON object per write:
`{"step": 200, "elapsed_s": 31.2, "eval_top1_error": 0.12, ...}`. `elapsed_s` counts the seconds
this run has trained (compiling and evaluating included) over all the processes that ran it: a run
resumed after a crash continues from the time of its checkpoint, and the time between the crash
and the restart is not counted. The sweep runner (`alexnet_jax.sweep`) reads these files.
"""

import json
import math
import os
import time
from typing import Any, Mapping

FILENAME = 'metrics.jsonl'
# The other files a sweep (alexnet_jax.sweep) leaves, named here so that alexnet_jax.results reads
# them without importing JAX: the parent's list of variants and seeds, in order; each run's
# variant, seed and config; its final metrics once finished; the trainer's message if it diverged.
PLAN_FILE = 'sweep.json'
RUN_FILE = 'run.json'
DONE_FILE = 'done.json'
FAILED_FILE = 'diverged.json'


def read(workdir: str) -> list[dict[str, Any]]:
  """The records of `<workdir>/metrics.jsonl`, in the order written ([] if there is none).

  A line cut short by a crash mid-write is skipped.
  """
  path = os.path.join(workdir, FILENAME)
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


class HistoryWriter:
  """Appends every `write_scalars` to `<workdir>/metrics.jsonl`; other summaries are ignored.

  It has clu's MetricWriter methods, for clu's MultiWriter, without subclassing it: importing
  `clu.metric_writers` imports TensorFlow, which `train` keeps out of its import (a command's
  `runtime.configure()` must come first).

  `resume_step` is the step the run restarts from: the records of later steps (written before a
  crash, and about to be computed again) are dropped, and `elapsed_s` continues from the last
  record kept.
  """

  def __init__(self, workdir: str, resume_step: int = 0):
    self.path = os.path.join(workdir, FILENAME)
    kept = [r for r in read(workdir) if r['step'] <= resume_step]
    self._offset = max((r['elapsed_s'] for r in kept), default=0.0)
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)
    os.replace(tmp, self.path)
    self._start = time.monotonic()
    # Line-buffered: a process killed outright (OOM, preemption) keeps every line written.
    self._file = open(self.path, 'a', buffering=1)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {'step': int(step), 'elapsed_s': self._offset + time.monotonic() - self._start}
    for key, value in scalars.items():
      value = float(value)
      record[key] = value if math.isfinite(value) else None  # JSON has no NaN
    self._file.write(json.dumps(record) + '\n')

  def _not_kept(self, *args, **kwargs) -> None:
    """The other summaries (images, texts, histograms, hparams) are TensorBoard's: clu's own
    writer, beside this one in the MultiWriter, records them; the history keeps scalars only."""
    del args, kwargs

  write_summaries = write_images = write_videos = write_audios = _not_kept
  write_texts = write_histograms = write_hparams = _not_kept

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()
