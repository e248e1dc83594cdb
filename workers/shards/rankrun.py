"""Drives one training rank's process for the shard host: its pace and batch-share files
in, its progress out, and a graceful stop.

The rank itself is any script (see :mod:`workers.shards.rankenv`); what it reports through
:func:`greenllm.job.report` becomes the shard's work and steps. On a simulated GPU the
runner keeps the rank's pace file current (the GPU's throughput now over what a CPU shard
stands for, :mod:`workers.shards.pacing`), and ``report`` waits by it.
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
from workers.shards.pacing import reference_throughput
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
        pace: The simulated GPU's pace now, 0 to 1 (None: a real GPU, no pacing).
        on_progress: Called with the rank's progress document when it changes
            (``samples``, ``tokens``, ``steps``: cumulative for this start).
        stop_event: Set to stop the rank: SIGTERM, then SIGKILL after ``grace_s``.
        grace_s: Seconds between the two.
        poll_s: Seconds between looks at the process and its files.
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
    ) -> None:
        self.process = process
        self.files = files
        self._pace = pace
        self._on_progress = on_progress
        self._stop = stop_event
        self._grace_s = grace_s
        self._poll_s = poll_s
        self._pace_written: tuple[float, float] | None = None  # (ratio, when)
        self._progress_seen: int | None = None
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
        ratio = min(1.0, max(0.0, self._pace()))
        now_s = time.monotonic()
        last = self._pace_written
        if last is None or abs(ratio - last[0]) > PACE_EPS or now_s - last[1] > 1.0:
            write_json_atomic(self.files.pace, {"ratio": ratio})
            self._pace_written = (ratio, now_s)

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
    if isinstance(gpu, SimulatedGPU):
        reference = reference_throughput(spec.workload())
        sim_gpu = gpu
        pace = lambda: sim_gpu.throughput() / reference  # noqa: E731
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
    return TrainRank(process, files, pace, on_progress, stop_event)


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
