"""Drives one training rank's process for the shard host: its pace and batch-share files
in, its progress out, and a graceful stop.

The rank itself is any script (see :mod:`workers.shards.rankenv`); what it reports through
:func:`greenllm.job.report` becomes the shard's work and steps. On a simulated GPU the
runner keeps the rank's pace file current (the samples per second the GPU does now at its
limit and clocks), ``report`` waits by it (:mod:`greenllm.pacing`), and the time the rank
kept its simulated GPU busy, which ``report`` counts, sets the GPU's busy fraction (so its
power and energy): a rank slower than its GPU leaves the GPU waiting at idle power.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from greenllm.devices.base import GPU
from greenllm.devices.simulated import SimulatedGPU
from greenllm.job import write_json_atomic
from greenllm.jobspec import JobSpec, is_package_uri
from workers.shards.rankenv import (
    RankFiles,
    Rendezvous,
    entrypoint_command,
    full_env,
    rank_env,
)
from workers.shards.rankproc import LocalRank, RankProcess

#: How long a rank has between SIGTERM and SIGKILL, seconds.
STOP_GRACE_S = 15.0
#: How often the runner refreshes the pace and reads progress, seconds.
POLL_S = 0.1
#: A pace change smaller than this is not written (it is rewritten every second anyway).
PACE_EPS = 1e-4


class TrainRank:
    """One rank's process, watched until it ends.

    Args:
        process: The rank (started by :meth:`run`).
        files: Its files.
        pace: The simulated GPU's throughput now, samples/s (None: a real GPU, no
            pacing).
        on_progress: Called with the rank's progress document when it changes
            (``samples``, ``tokens``, ``steps``: cumulative for this start; on a simulated
            GPU also ``gpu_wait_fraction``, ``gpu_busy_s`` and ``paced_s``).
        stop_event: Set to stop the rank: SIGTERM, then SIGKILL after ``grace_s``.
        grace_s: Seconds between the two.
        poll_s: Seconds between looks at the process and its files.
        on_busy: Called with the share of the time (0 to 1) the rank kept its simulated GPU
            busy since its previous progress document (None: a real GPU).
    """

    def __init__(
        self,
        process: RankProcess,
        files: RankFiles,
        pace: Callable[[], float] | None,
        on_progress: Callable[[dict[str, Any]], None],
        stop_event: threading.Event,
        grace_s: float = STOP_GRACE_S,
        poll_s: float = POLL_S,
        on_busy: Callable[[float], None] | None = None,
    ) -> None:
        self.process = process
        self.files = files
        self._pace = pace
        self._on_progress = on_progress
        self._stop = stop_event
        self._grace_s = grace_s
        self._poll_s = poll_s
        self._on_busy = on_busy
        self._pace_written: tuple[float, float] | None = None  # (throughput, when)
        self._progress_seen: int | None = None
        self._busy_mark: tuple[float, float] = (0.0, 0.0)  # (gpu_busy_s, paced_s)
        self.stop_requested = False

    def set_share(self, share: float) -> None:
        """This rank's fraction of the global batch (read by :func:`greenllm.job.share`)."""
        if 0 < share <= 1:
            write_json_atomic(self.files.share, {"share": share})

    def run(self) -> int:
        """Start the rank and watch it to its end; its exit status (negative: a signal;
        -1 with :meth:`failure` set: it never ran)."""
        self._write_pace()
        self.process.start()
        try:
            return self._watch()
        finally:
            if self._on_busy is not None:
                self._on_busy(1.0)

    def _watch(self) -> int:
        stop_at_s: float | None = None
        while True:
            code = self.process.poll()
            self._read_progress()
            if code is not None:
                return code
            self._write_pace()
            if self._stop.is_set():
                self.stop_requested = True
                if stop_at_s is None:
                    self.process.terminate()
                    stop_at_s = time.monotonic()
                elif time.monotonic() - stop_at_s > self._grace_s:
                    self.process.kill()
                time.sleep(self._poll_s)
            else:
                self._stop.wait(self._poll_s)

    def failure(self) -> str | None:
        """Why the rank never ran, if it did not."""
        return self.process.failure()

    def _write_pace(self) -> None:
        if self._pace is None:
            return
        rate = max(0.0, self._pace())
        now_s = time.monotonic()
        last = self._pace_written
        changed = last is None or abs(rate - last[0]) > PACE_EPS * max(rate, last[0])
        if changed or last is None or now_s - last[1] > 1.0:
            write_json_atomic(self.files.pace, {"throughput": rate})
            self._pace_written = (rate, now_s)

    def _read_progress(self) -> None:
        try:
            stamp = self.files.progress.stat().st_mtime_ns
            if stamp == self._progress_seen:
                return
            doc = json.loads(self.files.progress.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        self._progress_seen = stamp
        if isinstance(doc, dict):
            self._on_progress(doc)
            self._take_busy(doc)

    def _take_busy(self, doc: dict[str, Any]) -> None:
        """The GPU's busy fraction from the rank's busy and paced seconds since the last
        document (cumulative counts; a smaller count is a restarted rank)."""
        busy, span = doc.get("gpu_busy_s"), doc.get("paced_s")
        if self._on_busy is None or not isinstance(busy, int | float):
            return
        if not isinstance(span, int | float):
            return
        busy0, span0 = self._busy_mark
        if span < span0 or busy < busy0:
            busy0, span0 = 0.0, 0.0
        if span - span0 > 0:
            self._on_busy(min(1.0, max(0.0, (busy - busy0) / (span - span0))))
        self._busy_mark = (float(busy), float(span))


def launch(
    spec: JobSpec,
    shard_id: str,
    generation: int,
    rdzv: Rendezvous,
    gpu: GPU,
    state_dir: Path,
    checkpoint_dir: Path,
    on_progress: Callable[[dict[str, Any]], None],
    stop_event: threading.Event,
) -> TrainRank:
    """A rank of ``spec``, ready to :meth:`~TrainRank.run`: run here in the job's local
    working directory (or the rank's own folder when it names none), or through Ray on this
    node when the working directory is a Ray package.

    Raises:
        GreenllmError: The built-in trainer is missing, or a Ray package without Ray.
    """
    files = RankFiles.create(state_dir, shard_id.rpartition("-")[0], rdzv.rank, generation)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    pace: Callable[[], float] | None = None
    on_busy: Callable[[float], None] | None = None
    if isinstance(gpu, SimulatedGPU):
        gpu.set_busy_fraction(1.0)
        pace, on_busy = gpu.throughput, gpu.set_busy_fraction
    command = entrypoint_command(spec)
    env = rank_env(rdzv, gpu, shard_id, generation, checkpoint_dir, files, pace is not None)
    working_dir = spec.train_settings.working_dir
    process: RankProcess
    if working_dir and is_package_uri(working_dir):
        from workers.shards.rayrank import RayRank

        process = RayRank(working_dir, command, env, files.log)
    else:
        cwd = Path(working_dir) if working_dir else files.folder
        process = LocalRank(command, full_env(env), cwd, files.log)
    return TrainRank(process, files, pace, on_progress, stop_event, on_busy=on_busy)


def exit_reason(code: int, files: RankFiles) -> str:
    """``training rank exited with status N: <its last line of output>``."""
    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    last = ""
    try:
        with files.log.open("rb") as f:
            f.seek(max(0, f.seek(0, 2) - 2048))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
        last = lines[-1].strip()[:300] if lines else ""
    except OSError:
        pass
    return f"training rank {how}" + (f": {last}" if last else "")
