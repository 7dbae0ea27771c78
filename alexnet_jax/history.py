"""A run's metrics as a JSON-lines file beside its checkpoints: `<workdir>/metrics.jsonl`.

clu's writers give TensorBoard event files and log lines; neither is a table a notebook can read
without TensorFlow. So the loop also writes every scalar it logs here, one JSON object per write:
`{"step": 200, "elapsed_s": 31.2, "eval_top1_error": 0.12, ...}`. `elapsed_s` counts the seconds
this run has trained (compiling and evaluating included) over all the processes that ran it: a run
resumed after a crash continues from the time of its checkpoint, and the time between the crash
and the restart is not counted. The sweep runner (`alexnet_jax.sweeps.sweep`) reads these files.
"""

import json
import math
import os
import time
from typing import Any, Callable, Mapping

from absl import logging

from alexnet_jax.system import files

FILENAME = 'metrics.jsonl'
# The other files a sweep (sweeps.sweep) leaves, named here so that sweeps.results reads them
# without importing JAX: the parent's list of variants and seeds, in order; each run's
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
  `runtime.tune_process()` must come first).

  `resume_step` is the step the run restarts from: the records of later steps (written before a
  crash, and about to be computed again) are dropped, and `elapsed_s` continues from the last
  record kept.
  """

  def __init__(self, workdir: str, resume_step: int = 0):
    self.path = os.path.join(workdir, FILENAME)
    kept = [r for r in read(workdir) if r['step'] <= resume_step]
    self._offset = max((r['elapsed_s'] for r in kept), default=0.0)
    with files.written(self.path) as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)
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


# What a console line shows of each group of scalars the loop writes, by prefix, in this order.
_GROUPS = {
    'train_': 'step',
    'eval_': 'eval at step',
    'final_eval_': 'final eval at step',
    'trainset_': 'train set at step',
}
_SHOWN = (
    ('loss', 'loss', '{:.4g}'),
    ('top1_error', 'top-1', '{:.4g}%'),
    ('top5_error', 'top-5', '{:.4g}%'),
    ('learning_rate', 'lr', '{:.4g}'),
)


class ConsoleWriter:
  """One short line per write of the loop's scalars, for a person at a terminal:
  `step 200/800 | loss 2.345 | top-1 67.5% | top-5 30.12% | lr 0.01 | 3.1 steps/s | ETA 3m12s`
  (an evaluation: `eval at step 200 | loss ... | top-1 ... | top-5 ...`), four significant digits,
  errors in %. The full records are metrics.jsonl's and TensorBoard's; these go to `log` (absl's
  INFO: the terminal, and the workdir's log file). clu's MetricWriter methods, as HistoryWriter."""

  def __init__(
      self, total_steps: int, start_step: int = 0, log: Callable[[str], None] | None = None
  ):
    self.total_steps = total_steps
    self._log = log or (lambda line: logging.info('%s', line))
    self._last = (start_step, time.monotonic())

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    line = self.line(step, scalars)
    if line is not None:
      self._log(line)

  def line(self, step: int, scalars: Mapping[str, Any]) -> str | None:
    """The line of these scalars; None for those it does not show (clu's steps_per_sec)."""
    prefix = next((p for p in _GROUPS if any(k.startswith(p) for k in scalars)), '')
    head = f'{_GROUPS.get(prefix, "step")} {step}'
    if prefix == 'train_':
      head += f'/{self.total_steps}'
    parts = [head]
    for key, label, form in _SHOWN:
      value = scalars.get(prefix + key)
      if value is not None:
        value = float(value) * (100 if form.endswith('%') else 1)
        parts.append(f'{label} {form.format(value)}')
    if len(parts) == 1:
      return None
    if prefix == 'train_':
      parts += self._pace(step)
    return ' | '.join(parts)

  def _pace(self, step: int) -> list[str]:
    last_step, last_time = self._last
    now = time.monotonic()
    self._last = (step, now)
    if step <= last_step or now <= last_time:
      return []
    rate = (step - last_step) / (now - last_time)
    left = max(0.0, (self.total_steps - step) / rate)
    minutes, seconds = divmod(int(round(left)), 60)
    hours, minutes = divmod(minutes, 60)
    eta = (
        f'{hours}h{minutes:02d}m'
        if hours
        else f'{minutes}m{seconds:02d}s'
        if minutes
        else f'{seconds}s'
    )
    return [f'{rate:.3g} steps/s', f'ETA {eta}']

  def _not_shown(self, *args, **kwargs) -> None:
    del args, kwargs

  write_summaries = write_images = write_videos = write_audios = _not_shown
  write_texts = write_histograms = write_hparams = _not_shown

  def flush(self):
    """Nothing is buffered here: each line went to the log when it was written."""

  def close(self):
    """Nothing to release: the log belongs to absl."""
