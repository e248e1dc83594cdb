"""Per-node records: GPUs with their limits, readings and commands in flight; shard reports."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from greenllm.proto.v1 import agent_pb2
from scheduler.core.lifecycle import NodePhase
from scheduler.shell.ports import Session

#: A power reading above this multiple of the GPU's highest limit is absurd.
ABSURD_POWER_FACTOR = 2.0
#: Samples kept per GPU and per shard for rates, newest last.
WINDOW_SAMPLES = 32
#: Inference arrivals: the span of the short rate that catches a burst, seconds.
BURST_SPAN_S = 5.0
#: Energy between two readings above this multiple of the GPU's highest limit times the
#: time between them (plus :data:`ENERGY_SLACK_S` of it) is implausible: not booked.
ENERGY_MARGIN = 1.5
#: Seconds at the GPU's highest limit allowed on top of that, s.
ENERGY_SLACK_S = 0.1
#: Kinds of energy readings not booked.
COUNTER_BACK, IMPLAUSIBLE = "counter-back", "implausible"


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
        gpu_type: Its type.
        uuid: The agent's identifier for it.
        min_power_limit_w: Lowest limit it reported, watts.
        max_power_limit_w: Highest limit it reported, watts.
        acked_limit_w: Limit in force as last acked or reported, watts.
        failsafe_w: Fail-safe limit its agent holds for it, as acked, watts.
        pending_limits_w: Power-limit commands not yet acked: command id -> watts.
        pending_failsafe_w: Fail-safe limits sent, not yet acked: command id -> watts.
        locked_max_sm_clock_mhz: Upper end of the acked SM clock lock (None: free), MHz.
        floor_w: After a refused lowering, the lowest limit it is planned at, watts.
        floor_until_s: When the floor is dropped and a lowering tried again, seconds.
        latest: Latest reading (None: none yet).
        energy_window: Recent ``(timestamp_s, energy_j)`` pairs.
        limit_since: ``(limit_w, since_s)``: the acked limit and since when it holds.
        energy_offset_j: Added to its raw energy counter to give the booked counter, joules:
            a counter that goes back (a driver reload, a GPU reset) or jumps by more than
            the GPU could draw is a new base, so the booked counter never goes back and
            never grows faster than the GPU can draw.
        energy_base: ``(timestamp_s, raw energy_j)`` of the last reading whose counter
            moved (what the next change is measured from).
        read_at_s: When its latest reading arrived, on the controller's clock, seconds.
        boot_limit_w: While its agent cannot write its state: the highest limit the state
            on disk lets it boot at, watts (None: its state is on disk). A restarted agent
            may hold that until the controller speaks, so a node not LIVE counts it.
        asked_w: The limit last commanded, watts (None: none yet).
        refused_w: After a refused lowering, the limit it held (kept past ``floor_until_s``,
            until it reports holding less): the least it is known to hold, watts.
        refused_reason: What the refusal said.
    """

    index: int
    gpu_type: str
    uuid: str
    min_power_limit_w: float
    max_power_limit_w: float
    acked_limit_w: float
    failsafe_w: float
    pending_limits_w: dict[int, float] = field(default_factory=dict)
    pending_failsafe_w: dict[int, float] = field(default_factory=dict)
    locked_max_sm_clock_mhz: int | None = None
    floor_w: float | None = None
    floor_until_s: float = 0.0
    latest: GpuReading | None = None
    energy_window: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=WINDOW_SAMPLES)
    )
    limit_since: tuple[float, float] = (0.0, 0.0)
    energy_offset_j: float = 0.0
    energy_base: tuple[float, float] | None = None
    read_at_s: float = 0.0
    boot_limit_w: float | None = None
    asked_w: float | None = None
    refused_w: float | None = None
    refused_reason: str = ""

    @property
    def power_cap_w(self) -> float:
        """Power readings above this are absurd, watts."""
        return ABSURD_POWER_FACTOR * self.max_power_limit_w

    def pending_limit_w(self) -> float | None:
        """Largest commanded, not yet acked limit, watts (None: none)."""
        return max(self.pending_limits_w.values()) if self.pending_limits_w else None

    def worst_limit_w(self) -> float:
        """The highest limit the GPU may hold now (acked or in flight, or what its agent
        boots it at while its state is not on disk), watts."""
        boot = [] if self.boot_limit_w is None else [self.boot_limit_w]
        return max([self.acked_limit_w, *self.pending_limits_w.values(), *boot])

    def worst_failsafe_w(self) -> float:
        """The highest fail-safe limit its agent may hold for it (acked or in flight), W."""
        return max([self.failsafe_w, *self.pending_failsafe_w.values()])

    def average_power_w(self) -> float | None:
        """Mean power over the energy window, watts (None: too few samples)."""
        if len(self.energy_window) < 2:
            return None
        (t0, e0), (t1, e1) = self.energy_window[0], self.energy_window[-1]
        return (e1 - e0) / (t1 - t0) if t1 > t0 else None

    def energy_j(self) -> float | None:
        """Its booked energy counter at the latest reading, joules (None: no reading)."""
        return self.energy_window[-1][1] if self.energy_window else None

    def book_energy(self, timestamp_s: float, raw_j: float) -> str | None:
        """Take a reading of its raw energy counter into the booked counter.

        The change since the base (the last reading whose counter moved) is booked when it
        is non-negative and no more than the GPU could draw since (:data:`ENERGY_MARGIN` x
        its highest limit x the seconds since the base, plus :data:`ENERGY_SLACK_S` of it:
        a counter that updates seldom is measured over the time it stood still);
        otherwise the reading is a new base and nothing is booked for the interval.

        Returns:
            None when booked, else the kind of rejection (:data:`COUNTER_BACK`,
            :data:`IMPLAUSIBLE`).
        """
        base, self.energy_base = self.energy_base, (timestamp_s, raw_j)
        kind = None
        if base is not None and raw_j == base[1]:
            self.energy_base = base  # the counter stood still: the base keeps its time
        elif base is not None:
            delta_j = raw_j - base[1]
            most_j = self.max_power_limit_w * (
                ENERGY_MARGIN * max(0.0, timestamp_s - base[0]) + ENERGY_SLACK_S
            )
            if delta_j < 0:
                kind = COUNTER_BACK
            elif delta_j > most_j:
                kind = IMPLAUSIBLE
            if kind is not None:
                self.energy_offset_j -= delta_j
        self.energy_window.append((timestamp_s, raw_j + self.energy_offset_j))
        return kind

    def booked_of(self, raw_j: float) -> float:
        """A raw counter value of this GPU (e.g. one a shard reports) as booked, joules."""
        return raw_j + self.energy_offset_j


@dataclass
class ShardReport:
    """What a node reports of one shard it runs.

    Attributes:
        latest: The latest sample.
        work_window: Recent ``(timestamp_s, work_units)`` pairs.
        offered_window: Recent ``(timestamp_s, offered_units)`` pairs (inference arrivals).
        prompt_window: Recent ``(timestamp_s, offered_prompt_tokens)`` pairs (inference).
    """

    latest: agent_pb2.ShardSample
    work_window: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=WINDOW_SAMPLES)
    )
    offered_window: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=WINDOW_SAMPLES)
    )
    prompt_window: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=WINDOW_SAMPLES)
    )

    _work_rate: float = 0.0
    _offered_rate: float = 0.0
    _prompt_rate: float = 0.0
    _recent_rates: tuple[float, float] | None = None  # until the next sample

    def add(self, sample: agent_pb2.ShardSample) -> None:
        """Take a newer sample."""
        self.latest = sample
        self._recent_rates = None
        self.work_window.append((sample.timestamp_s, sample.work_units))
        self.offered_window.append((sample.timestamp_s, sample.offered_units))
        self.prompt_window.append((sample.timestamp_s, sample.offered_prompt_tokens))
        self._work_rate = _rate(self.work_window)
        self._offered_rate = _rate(self.offered_window)
        self._prompt_rate = _rate(self.prompt_window)

    def work_rate(self) -> float:
        """Units of work per second over the window (0 with fewer than two samples)."""
        return self._work_rate

    def offered_rate(self) -> float:
        """Units of work arriving per second over the window (inference)."""
        return self._offered_rate

    def offered_prompt_rate(self) -> float:
        """Prompt tokens arriving per second over the window (inference)."""
        return self._prompt_rate

    def recent_offered_rates(self) -> tuple[float, float]:
        """Units of work and prompt tokens arriving per second over the last
        :data:`BURST_SPAN_S` (inference): a burst shows here long before it moves the
        window's mean."""
        if self._recent_rates is None:  # read every step per shard, changed per sample
            self._recent_rates = (
                _recent_rate(self.offered_window),
                _recent_rate(self.prompt_window),
            )
        return self._recent_rates


def _recent_rate(window: deque[tuple[float, float]]) -> float:
    """The rate over the newest :data:`BURST_SPAN_S` of ``window`` (0: too few samples)."""
    if len(window) < 2:
        return 0.0
    t1, w1 = window[-1]
    for t0, w0 in reversed(window):
        if t1 - t0 >= BURST_SPAN_S:
            return max(0.0, (w1 - w0) / (t1 - t0))
    return 0.0


def _rate(window: deque[tuple[float, float]]) -> float:
    if len(window) < 2:
        return 0.0
    (t0, w0), (t1, w1) = window[0], window[-1]
    return max(0.0, (w1 - w0) / (t1 - t0)) if t1 > t0 else 0.0


@dataclass
class NodeRecord:
    """One node of the config.

    Attributes:
        name: Node name.
        config_gpu_types: GPU types the config lists, in index order (may be empty for an
            NVML node).
        gpus: Its GPUs as last registered (empty until it registers, or restored).
        registered: Its agent registered with this controller at least once.
        session: The live stream, if any.
        phase: Its lifecycle phase.
        phase_since_s: When it entered that phase, seconds.
        last_telemetry_s: Time of its last telemetry (None: none since it registered).
        contact_s: Time of its last registration or telemetry (None: neither).
        stale_after_s: Telemetry older than this makes it stale, seconds.
        failsafe_active: The agent reported holding its GPUs at their fail-safe limits.
        shards: The shards it reports, by shard id.
        last_sent_s: When a message last went to its agent (heartbeats follow it), seconds.
        address: Where other nodes reach it (from its registration; "" unknown).
        down_reason: Why it is known powered off ("" when it is not known to be): an
            operator's ``greenllm node down``, or its Ray node's death. Cleared when its agent
            registers again.
        agent_state_error: Why its agent cannot write its state ("" when it can).
        energy_rejected: Energy readings not booked since start, by kind.
    """

    name: str
    config_gpu_types: list[str]
    gpus: list[GpuRecord] = field(default_factory=list)
    registered: bool = False
    session: Session | None = None
    phase: NodePhase = NodePhase.UNKNOWN
    phase_since_s: float = 0.0
    last_telemetry_s: float | None = None
    contact_s: float | None = None
    stale_after_s: float = 1.0
    failsafe_active: bool = False
    shards: dict[str, ShardReport] = field(default_factory=dict)
    last_sent_s: float = -np.inf
    address: str = ""
    down_reason: str = ""
    agent_state_error: str = ""
    energy_rejected: dict[str, int] = field(default_factory=dict)

    def fresh(self, now_s: float) -> bool:
        """Connected, with telemetry (or its registration) younger than :attr:`stale_after_s`."""
        last = self.contact_s
        return self.session is not None and last is not None and now_s - last <= self.stale_after_s
