"""Ships the new output of each rank to the controller, a bounded amount per telemetry batch.

Each rank's stdout and stderr go to a file in the agent's state directory (kept there
whole); a :class:`LogTail` remembers how much of it was sent, and :func:`collect` takes
the next bytes of several tails, in turns, up to a budget per batch. What is not sent
follows in the next batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from greenllm.proto.v1 import agent_pb2

#: Bytes of output per telemetry batch, all shards together.
MAX_BATCH_BYTES = 64 * 1024


class LogTail:
    """The unsent end of one rank's log file.

    Args:
        shard_id: ``<job>-<rank>``.
        generation: The job's placement generation it runs in.
        path: The file.
    """

    def __init__(self, shard_id: str, generation: int, path: Path) -> None:
        self.shard_id = shard_id
        self.generation = generation
        self.path = path
        self.sent = 0

    def pending(self) -> int:
        """Bytes written and not yet sent."""
        try:
            return max(0, self.path.stat().st_size - self.sent)
        except OSError:
            return 0

    def take(self, max_bytes: int) -> agent_pb2.LogChunk | None:
        """The next at most ``max_bytes`` bytes as a chunk (None: nothing new)."""
        if max_bytes <= 0 or self.pending() == 0:
            return None
        try:
            with self.path.open("rb") as f:
                f.seek(self.sent)
                data = f.read(max_bytes)
        except OSError:
            return None
        if not data:
            return None
        chunk = agent_pb2.LogChunk(
            shard_id=self.shard_id, generation=self.generation, offset=self.sent, data=data
        )
        self.sent += len(data)
        return chunk


def collect(tails: Sequence[LogTail], budget: int = MAX_BATCH_BYTES) -> list[agent_pb2.LogChunk]:
    """Chunks of ``tails`` in order, at most ``budget`` bytes in all; each tail gets an
    equal part of what is left before the next one (so one chatty rank cannot starve the
    others), and what the others leave goes to whoever has more."""
    waiting = [t for t in tails if t.pending() > 0]
    chunks: list[agent_pb2.LogChunk] = []
    while waiting and budget > 0:
        part = max(1, budget // len(waiting))
        still = []
        for tail in waiting:
            chunk = tail.take(min(part, budget))
            if chunk is not None:
                chunks.append(chunk)
                budget -= len(chunk.data)
            if tail.pending() > 0:
                still.append(tail)
            if budget <= 0:
                break
        waiting = still
    return chunks
