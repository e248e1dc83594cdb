"""Per-node records: GPUs with their latest sample and commands, shards, the live session."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from greenllm.proto.v1 import agent_pb2

#: A reading above this multiple of the GPU's highest power limit is absurd.
ABSURD_POWER_FACTOR = 2.0
#: Samples kept per GPU and per shard for rates, newest last.
WINDOW_SAMPLES = 32


class GpuReading(NamedTuple):
    """One telemetry reading of a GPU (a row of ``GpuSamples``)."""

    timestamp_s: float
    power_w: float
    energy_j: float
    power_limit_w: float
    sm_clock_mhz: float
    utilization_pct: float
    temperature_c: float
    memory_used_mib: float


@dataclass
class GpuRecord:
    """What the controller knows of one GPU.

    Attributes:
        index: Index on its node.
        gpu_type: Catalog type.
        uuid: The agent's identifier for it.
        min_power_limit_w: Lowest settable limit, watts.
        max_power_limit_w: Highest settable limit, watts.
        acked_limit_w: Limit in force as last acked or reported, watts.
        latest: Latest telemetry reading (None: none yet).
        locked_max_sm_clock_mhz: Upper end of the acked SM clock lock (None: free), MHz.
        pending_limits_w: Power-limit commands not yet acked: command id -> watts.
        energy_window: Recent ``(timestamp_s, energy_j)`` pairs.
        power_cap_w: Readings above this are absurd and rejected, watts.
        failsafe_w: The fail-safe limit the agent holds for it, as acked, watts.
        pending_failsafe_w: Fail-safe limits sent and not yet acked: command id -> watts.
    """

    index: int
    gpu_type: str
    uuid: str
    min_power_limit_w: float
    max_power_limit_w: float
    acked_limit_w: float
    latest: GpuReading | None = None
    locked_max_sm_clock_mhz: int | None = None
    pending_limits_w: dict[int, float] = field(default_factory=dict)
    energy_window: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=WINDOW_SAMPLES)
    )
    power_cap_w: float = 0.0
    failsafe_w: float = 0.0
    pending_failsafe_w: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.power_cap_w = ABSURD_POWER_FACTOR * self.max_power_limit_w

    def worst_failsafe_w(self) -> float:
        """The highest fail-safe limit the agent may hold for it (acked or in flight), W."""
        return max([self.failsafe_w, *self.pending_failsafe_w.values()])

    def pending_limit_w(self) -> float | None:
        """Largest commanded, not yet acked limit, watts (None: none)."""
        return max(self.pending_limits_w.values()) if self.pending_limits_w else None

    def average_power_w(self) -> float | None:
        """Mean power over the energy window, watts (None: too few samples)."""
        if len(self.energy_window) < 2:
            return None
        (t0, e0), (t1, e1) = self.energy_window[0], self.energy_window[-1]
        return (e1 - e0) / (t1 - t0) if t1 > t0 else None


@dataclass
class ShardRecord:
    """Progress of one shard, from its node's telemetry.

    Attributes:
        shard_id: Shard identifier.
        job_id: Its job.
        latest: Latest sample.
        work_window: Recent ``(timestamp_s, work_units)`` pairs.
    """

    shard_id: str
    job_id: str
    latest: agent_pb2.ShardSample
    work_window: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=WINDOW_SAMPLES)
    )

    def work_rate(self) -> float:
        """Units of work per second over the window (0 with fewer than two samples)."""
        if len(self.work_window) < 2:
            return 0.0
        (t0, w0), (t1, w1) = self.work_window[0], self.work_window[-1]
        return max(0.0, (w1 - w0) / (t1 - t0)) if t1 > t0 else 0.0


@dataclass
class Session:
    """One live agent stream.

    Attributes:
        session_id: Unique id of the stream.
        node: Node name.
        outbox: Messages to send to the agent; a :class:`BadInput` ends the stream.
        unsent: Commands of the current control step, not yet flushed to ``outbox``.
    """

    session_id: str
    node: str
    outbox: asyncio.Queue[agent_pb2.ControllerMessage | Exception | None] = field(
        default_factory=asyncio.Queue
    )
    unsent: list[agent_pb2.Command] = field(default_factory=list)


@dataclass
class NodeRecord:
    """One configured node.

    Attributes:
        name: Node name.
        config_gpu_types: GPU types the config lists, in index order (may be empty for an
            NVML node).
        gpus: Its GPUs as last registered (empty until the first registration).
        session: The live stream, if any.
        last_telemetry_s: Monotonic time of its last telemetry (None: never).
        failsafe_active: The agent reported holding its GPUs at the fail-safe limits.
        shards: Its shards by id.
        power_caps_w: Per GPU, the ``power_cap_w`` of :attr:`gpus`, watts.
        stale_after_s: Telemetry older than this makes the node stale (depends on how
            often its agent sends), seconds.
    """

    name: str
    config_gpu_types: list[str]
    gpus: list[GpuRecord] = field(default_factory=list)
    session: Session | None = None
    last_telemetry_s: float | None = None
    failsafe_active: bool = False
    shards: dict[str, ShardRecord] = field(default_factory=dict)
    power_caps_w: np.ndarray = field(default_factory=lambda: np.zeros(0))
    stale_after_s: float = 0.0
