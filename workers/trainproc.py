"""A training rank in its own process (torch.distributed keeps one rank per process).

The parent keeps the child's view of the simulated GPU current through a shared value
(the GPU's throughput now, units/s; negative: no pacing), passes the rank's load weight
the same way, and reads progress from a queue.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from greenllm.jobspec import parse_job_spec


def _child(
    spec_json: str,
    rank: int,
    world_size: int,
    init_method: str,
    checkpoint_dir: str,
    throughput: Any,
    weight: Any,
    stop: Any,
    out: Any,
) -> None:
    import torch

    from workers.shards.train import TrainShard

    torch.set_num_threads(1)
    spec = parse_job_spec(json.loads(spec_json))
    paced = throughput.value >= 0
    runner = TrainShard(
        spec,
        rank=rank,
        world_size=world_size,
        init_method=init_method,
        checkpoint_dir=Path(checkpoint_dir),
        sim_throughput=(lambda: max(throughput.value, 0.0)) if paced else None,
        progress=lambda p: out.put(("progress", asdict(p))),
    )

    parent_pid = os.getppid()

    def watch() -> None:
        last = 1.0
        while not stop.value:
            time.sleep(0.1)
            if os.getppid() != parent_pid:
                # The agent died (its node was lost): a rank of a stale generation must not
                # keep training or writing checkpoints.
                os._exit(1)
            if weight.value != last and weight.value > 0:
                last = weight.value
                runner.set_load_weight(last)
        runner.stop()

    threading.Thread(target=watch, daemon=True).start()
    outcome = runner.run()
    out.put(("outcome", asdict(outcome)))


class TrainProcess:
    """One training rank running in a spawned child process.

    Args:
        spec_json: The job spec as JSON.
        rank: This rank.
        world_size: Ranks in the job.
        init_method: torch.distributed rendezvous.
        checkpoint_dir: Shared checkpoint directory.
        sim_throughput: The simulated GPU's throughput now (None: no pacing).
    """

    def __init__(
        self,
        spec_json: str,
        rank: int,
        world_size: int,
        init_method: str,
        checkpoint_dir: Path,
        sim_throughput: Callable[[], float] | None,
    ) -> None:
        ctx = mp.get_context("spawn")
        self._sim_throughput = sim_throughput
        self._throughput = ctx.Value("d", sim_throughput() if sim_throughput else -1.0)
        self._weight = ctx.Value("d", 1.0)
        # A flag, not an Event: Event.set() blocks forever when a child died inside wait().
        self._stop = ctx.Value("b", 0)
        self._out: Any = ctx.Queue()
        self.outcome: dict[str, Any] | None = None
        self.process = ctx.Process(
            target=_child,
            args=(
                spec_json,
                rank,
                world_size,
                init_method,
                str(checkpoint_dir),
                self._throughput,
                self._weight,
                self._stop,
                self._out,
            ),
            name=f"train-rank-{rank}",
            daemon=True,
        )

    def start(self) -> None:
        """Start the child."""
        self.process.start()

    def set_load_weight(self, weight: float) -> None:
        """This rank's share of the global batch (see TrainShard.set_load_weight)."""
        self._weight.value = weight

    def stop(self) -> None:
        """Ask the rank (and with it the job) to stop after the current step."""
        self._stop.value = 1

    def poll(self, timeout_s: float) -> list[dict[str, Any]]:
        """Refresh the child's GPU view; return progress reports that arrived.

        Waits up to ``timeout_s`` for the first one. The outcome, when it comes, is kept in
        :attr:`outcome`.
        """
        if self._sim_throughput is not None:
            self._throughput.value = self._sim_throughput()
        reports = []
        try:
            item = self._out.get(timeout=timeout_s)
            while True:
                kind, body = item
                if kind == "outcome":
                    self.outcome = body
                else:
                    reports.append(body)
                item = self._out.get_nowait()
        except queue.Empty:
            pass
        return reports

    def alive(self) -> bool:
        """True while the child runs."""
        return self.process.is_alive()

    def join(self, timeout_s: float) -> int | None:
        """Wait for the child; its exit code (None if still running)."""
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        return self.process.exitcode
