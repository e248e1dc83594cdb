"""The output of every rank of every job, as the agents ship it in telemetry (LogChunk).

One file per job and rank, ``<root>/<job>/<rank>.log``, holding the rank's stdout and
stderr across the job's generations (a line marks where a new generation starts), and a
sidecar ``<rank>.json`` with where the agent's stream is and how much was dropped. Offsets
handed to clients are absolute (bytes since the log began), so ``--follow`` works across
trimming: each log keeps at most its newest ``max_bytes_per_rank`` bytes.

Chunks are checked against the agent-side offset: a repeated one (resent) is skipped, a gap
(a telemetry batch lost with a broken stream) is marked in the log, and chunks of an older
generation than the one being written are dropped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from greenllm.proto.v1 import agent_pb2

log = logging.getLogger(__name__)

#: Bytes kept per rank (the newest).
MAX_BYTES_PER_RANK = 10 * 1024 * 1024
#: Most bytes one read returns.
MAX_READ_BYTES = 1024 * 1024
#: Bytes one read returns when the client names no amount.
DEFAULT_READ_BYTES = 64 * 1024
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_MAX_RANK = 1_000_000


@dataclass
class _Meta:
    """Where one rank's log stands (the sidecar).

    Attributes:
        base: Absolute offset of the file's first byte (bytes trimmed so far).
        end: Absolute offset after its last byte.
        generation: The generation being written (-1: none yet).
        source_offset: Next expected byte of that generation's agent-side file.
    """

    base: int = 0
    end: int = 0
    generation: int = -1
    source_offset: int = 0


@dataclass(frozen=True)
class LogSlice:
    """What a read returns.

    Attributes:
        data: The bytes.
        next_offset: Absolute offset after ``data`` (read on from there).
        size: Bytes kept of this log now.
        generation: The job generation the log's newest output is of.
    """

    data: bytes
    next_offset: int
    size: int
    generation: int


class LogStore:
    """Rank logs under ``root`` (the controller's state directory's ``logs/``).

    Args:
        root: The folder.
        max_bytes_per_rank: Bytes kept per rank.
    """

    def __init__(self, root: Path, max_bytes_per_rank: int = MAX_BYTES_PER_RANK) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes_per_rank
        self._meta: dict[tuple[str, int], _Meta] = {}
        self._lock = threading.Lock()

    def _paths(self, job_id: str, rank: int) -> tuple[Path, Path]:
        folder = self.root / job_id
        return folder / f"{rank}.log", folder / f"{rank}.json"

    def _load(self, job_id: str, rank: int) -> _Meta:
        key = (job_id, rank)
        meta = self._meta.get(key)
        if meta is None:
            log_path, meta_path = self._paths(job_id, rank)
            meta = _Meta()
            try:
                meta = _Meta(**json.loads(meta_path.read_text()))
            except (OSError, ValueError, TypeError):
                if log_path.exists():  # sidecar lost: the file is what there is
                    meta = _Meta(end=log_path.stat().st_size)
            self._meta[key] = meta
        return meta

    def append(self, node: str, chunks: Sequence[agent_pb2.LogChunk]) -> None:
        """Take the chunks of one telemetry batch from ``node`` (bad ones are skipped)."""
        with self._lock:
            touched: set[tuple[str, int]] = set()
            for chunk in chunks:
                job_id, _, rank_text = chunk.shard_id.rpartition("-")
                if not _JOB_ID.match(job_id) or not rank_text.isdigit():
                    log.warning("node %s sent output of a bad shard id %r", node, chunk.shard_id)
                    continue
                rank = int(rank_text)
                if rank >= _MAX_RANK:
                    continue
                try:
                    if self._append_one(job_id, rank, chunk, node):
                        touched.add((job_id, rank))
                except OSError as exc:
                    log.error("cannot keep the output of %s: %s", chunk.shard_id, exc)
            for job_id, rank in touched:
                self._save_meta(job_id, rank)

    def _append_one(self, job_id: str, rank: int, chunk: agent_pb2.LogChunk, node: str) -> bool:
        meta = self._load(job_id, rank)
        data, offset = bytes(chunk.data), int(chunk.offset)
        if chunk.generation < meta.generation:
            return False
        parts: list[bytes] = []
        if chunk.generation > meta.generation:
            if meta.generation >= 0:
                parts.append(
                    f"\n[greenllm] generation {chunk.generation} (node {node[:100]}):\n".encode()
                )
            meta.generation, meta.source_offset = chunk.generation, 0
        if offset > meta.source_offset:
            lost = offset - meta.source_offset
            parts.append(f"\n[greenllm] {lost} bytes of output lost\n".encode())
            meta.source_offset = offset
        data = data[meta.source_offset - offset :]  # what was already written is skipped
        meta.source_offset += len(data)
        return self._write(job_id, rank, meta, b"".join(parts) + data)

    def _write(self, job_id: str, rank: int, meta: _Meta, data: bytes) -> bool:
        if not data:
            return False
        log_path, _ = self._paths(job_id, rank)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as f:
            f.write(data)
        meta.end += len(data)
        if meta.end - meta.base > self.max_bytes + self.max_bytes // 4:
            self._trim(log_path, meta)
        return True

    def _trim(self, log_path: Path, meta: _Meta) -> None:
        """Keep the newest ``max_bytes`` (trimming in steps of a quarter, not per chunk)."""
        keep_from = meta.end - self.max_bytes
        with log_path.open("rb") as f:
            f.seek(keep_from - meta.base)
            tail = f.read()
        tmp = log_path.with_suffix(".log.tmp")
        tmp.write_bytes(tail)
        os.replace(tmp, log_path)
        meta.base = keep_from

    def _save_meta(self, job_id: str, rank: int) -> None:
        _, meta_path = self._paths(job_id, rank)
        tmp = meta_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self._meta[(job_id, rank)])))
        os.replace(tmp, meta_path)

    def read(self, job_id: str, rank: int, offset: int, max_bytes: int = 0) -> LogSlice:
        """Bytes of a rank's log from absolute ``offset`` (negative: from the end; one
        trimmed away: from the oldest kept), at most ``max_bytes`` (0: 64 KiB; at most
        1 MiB). An unknown log reads as empty."""
        limit = min(max_bytes or DEFAULT_READ_BYTES, MAX_READ_BYTES)
        with self._lock:
            if not _JOB_ID.match(job_id) or not 0 <= rank < _MAX_RANK:
                return LogSlice(b"", 0, 0, 0)
            meta = self._load(job_id, rank)
            start = meta.end + offset if offset < 0 else offset
            start = min(max(start, meta.base), meta.end)
            count = min(limit, meta.end - start)
            data = b""
            if count > 0:
                log_path, _ = self._paths(job_id, rank)
                try:
                    with log_path.open("rb") as f:
                        f.seek(start - meta.base)
                        data = f.read(count)
                except OSError:
                    data = b""
            return LogSlice(data, start + len(data), meta.end - meta.base, max(0, meta.generation))
