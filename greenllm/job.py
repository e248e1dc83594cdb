"""The progress API of a training script run by greenllm (a no-op anywhere else).

A script run as a rank of a greenllm training job may tell the controller how much work
it does, and ask for its share of the global batch::

    import greenllm.job

    for batch in loader:
        ...  # forward, backward, optimizer step on this rank's batch
        greenllm.job.report(samples=len(batch))

- :func:`report` counts **increments**: the samples (and tokens) this rank processed
  since its previous call, and optionally the script's own optimizer ``step`` (a job
  resumed from a checkpoint then continues its count). The controller's throughput,
  J/sample and power model come from these numbers; a script that never reports is
  still placed, capped and metered, and its throughput shows as unknown.
- :func:`share` is this rank's fraction of the job's global batch (0 to 1): on mixed GPU
  types the controller gives faster ranks a larger share so that no rank waits at the
  gradient exchange. Equal shares (``1 / WORLD_SIZE``) until it says otherwise.
- On a simulated GPU (no NVIDIA GPU present) :func:`report` also paces the script: the
  work reported takes at least ``samples / throughput`` seconds, where ``throughput`` is
  what the simulated GPU does now at its power limit and clocks (samples/s). ``report``
  waits for whatever the wall time since the previous call (gradient exchange included)
  falls short of that, so power limits set the script's real speed. When the script is
  slower than its simulated GPU it does not wait, and the time the simulated GPU waited
  for it is reported (``gpu_wait_fraction``; see :mod:`greenllm.pacing`).

Outside a greenllm job (no ``GREENLLM_PROGRESS_FILE`` in the environment) every call
returns at once: :func:`report` does nothing and :func:`share` returns 1.0. Importing
this module needs no cluster, and nothing here imports torch.

How it talks to the rank's runner (files in the rank's own folder, named by the
environment the runner sets): :data:`PROGRESS_FILE_ENV` (written here, atomically, after
every report), :data:`SHARE_FILE_ENV` and :data:`PACE_FILE_ENV` (written by the runner,
read here).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from greenllm.pacing import Pacer

#: Cumulative progress of this rank, JSON, written by :func:`report`.
PROGRESS_FILE_ENV = "GREENLLM_PROGRESS_FILE"
#: This rank's batch share, JSON ``{"share": f}``, written by the runner.
SHARE_FILE_ENV = "GREENLLM_SHARE_FILE"
#: Simulated GPUs only: ``{"throughput": r}``, the samples per second this rank's simulated
#: GPU does now at its power limit and clocks.
PACE_FILE_ENV = "GREENLLM_PACE_FILE"
#: The job's checkpoint folder (survives restarts; shared by the job's ranks).
CHECKPOINT_DIR_ENV = "GREENLLM_CHECKPOINT_DIR"


def in_job() -> bool:
    """True when this process runs as a rank of a greenllm job."""
    return bool(os.environ.get(PROGRESS_FILE_ENV))


def checkpoint_dir() -> Path | None:
    """The job's checkpoint folder (``$GREENLLM_CHECKPOINT_DIR``), None outside a job."""
    value = os.environ.get(CHECKPOINT_DIR_ENV)
    return Path(value) if value else None


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` so that a reader sees the old or the new file, whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    os.replace(tmp, path)


class _Reporter:
    """This process's cumulative progress and pacing (one per progress file)."""

    def __init__(self, progress_file: str) -> None:
        self.progress_file = Path(progress_file)
        self.samples = 0.0
        self.tokens = 0.0
        self.reports = 0
        self.step: int | None = None
        self.mark_s: float | None = None
        self.pace_file: str | None = None
        self.last_throughput = 0.0
        self.pacer = Pacer(self.throughput, sleep=time.sleep)

    def add(self, samples: float, tokens: float, step: int | None) -> None:
        self.samples += samples
        self.tokens += tokens
        self.reports += 1
        if step is not None:
            self.step = step
        doc: dict[str, Any] = {
            "samples": self.samples,
            "tokens": self.tokens,
            "steps": self.step if self.step is not None else self.reports,
            "reports": self.reports,
            "time_s": time.time(),
            "pid": os.getpid(),
        }
        if self.pace_file:
            doc.update(
                gpu_wait_fraction=self.pacer.wait_fraction(),
                gpu_busy_s=self.pacer.busy_s,
                paced_s=self.pacer.span_s,
            )
        write_json_atomic(self.progress_file, doc)

    def throughput(self) -> float:
        """The simulated GPU's samples/s now (the last readable value of the pace file)."""
        doc = _read_json(self.pace_file) if self.pace_file else None
        value = doc.get("throughput") if doc else None
        if isinstance(value, int | float) and math.isfinite(value):
            self.last_throughput = max(0.0, float(value))
        return self.last_throughput

    def pace(self, samples: float, pace_file: str | None) -> None:
        """Wait until the wall time since the previous report is at least
        ``samples / throughput`` (re-read slice by slice). Time blocked since then, at the
        gradient exchange or anywhere else, counts: it is time the simulated GPU had. The
        first report waits its whole target (its work was not timed)."""
        now_s = time.monotonic()
        elapsed_s = 0.0 if self.mark_s is None else now_s - self.mark_s
        self.pace_file = pace_file
        if pace_file:
            self.pacer.pace(samples, elapsed_s)
        self.mark_s = time.monotonic()


_lock = threading.Lock()
_reporter: _Reporter | None = None


def _current() -> _Reporter | None:
    """The reporter of the progress file the environment names now (None: not in a job)."""
    global _reporter
    path = os.environ.get(PROGRESS_FILE_ENV)
    if not path:
        return None
    if _reporter is None or str(_reporter.progress_file) != path:
        _reporter = _Reporter(path)
    return _reporter


def _amount(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"greenllm.job.report: {name} must be a number, not {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"greenllm.job.report: {name} must be finite and >= 0, not {value!r}")
    return float(value)


def report(samples: float = 0, tokens: float = 0, *, step: int | None = None) -> None:
    """Tell the controller the work this rank did since its previous call.

    Call it once per optimizer step (or every few). On a simulated GPU it returns when the
    simulated GPU would have finished the work (see the module docstring).

    Args:
        samples: Training samples this rank processed since the previous call (the unit
            of a training job's throughput and J/sample).
        tokens: Tokens this rank processed since the previous call (kept beside samples).
        step: The script's own optimizer step count now (absolute, e.g. continued from a
            checkpoint); by default the number of calls so far.

    Raises:
        TypeError / ValueError: A count that is not a finite number >= 0, or a negative
            or non-integer ``step`` (checked inside and outside a job alike).
    """
    samples_n, tokens_n = _amount("samples", samples), _amount("tokens", tokens)
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise ValueError(f"greenllm.job.report: step must be an int >= 0, not {step!r}")
    with _lock:
        reporter = _current()
        if reporter is None:
            return
        reporter.pace(samples_n, os.environ.get(PACE_FILE_ENV))
        reporter.add(samples_n, tokens_n, step)


def share() -> float:
    """This rank's fraction of the job's global batch, 0 to 1.

    The controller's load weights for the job's ranks, normalised; ``1 / WORLD_SIZE``
    before it sends any, and 1.0 outside a job. Ranks may see a new split a step apart:
    a script that needs every rank to agree on it exchanges the shares itself (the
    built-in trainer all-reduces them each step).
    """
    with _lock:
        if _current() is None:
            return 1.0
    path = os.environ.get(SHARE_FILE_ENV)
    doc = _read_json(path) if path else None
    value = doc.get("share") if doc else None
    if isinstance(value, int | float) and math.isfinite(value) and 0 < value <= 1:
        return float(value)
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 1
    return 1.0 / max(1, world)
