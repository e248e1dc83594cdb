"""What a shard reports (:class:`ShardStatus`) and how shard ids are made."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from greenllm.errors import GreenllmError
from greenllm.shard_state import ShardState


@dataclass
class ShardStatus:
    """Cumulative progress of one shard (what the agent streams as a ShardSample).

    Attributes:
        shard_id: ``<job>-<rank>``.
        job_id: The job.
        work_units: Samples (training) or tokens (inference) done by this shard.
        steps: Training steps done by the job.
        requests: Inference requests answered by this replica.
        failed_requests: Of those, answered with an error.
        state: ``running``, ``done``, ``stopped`` or ``failed``.
        error: Why it failed.
        generation: Placement generation of the job it was started with.
        offered_units: Inference: output tokens of the requests that reached it.
        queued_units: Inference: output tokens of the requests waiting for a batch slot.
        offered_prompt_tokens: Inference: prompt tokens of the requests that reached it.
        queued_prompt_tokens: Inference: prompt tokens not prefilled yet.
        extra: Latest figures (loss, latency percentiles, ...).
    """

    shard_id: str
    job_id: str
    work_units: float = 0.0
    steps: int = 0
    requests: int = 0
    failed_requests: int = 0
    state: ShardState = ShardState.RUNNING
    error: str | None = None
    generation: int = 0
    offered_units: float = 0.0
    queued_units: float = 0.0
    offered_prompt_tokens: float = 0.0
    queued_prompt_tokens: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def split_shard_id(shard_id: str) -> tuple[str, int]:
    """``"<job>-<rank>"`` -> ``(job, rank)``.

    Raises:
        GreenllmError: The id does not end in ``-<rank>``.
    """
    job, _, rank = shard_id.rpartition("-")
    if not job or not rank.isdigit():
        raise GreenllmError(f"shard id {shard_id!r} is not <job>-<rank>")
    return job, int(rank)
