"""How a node agent keeps its stream to the controller: reconnect delays and telemetry
batches, written once for the live agent (``workers/agent/agent.py``, on the event loop's
clock) and the simulator's agents (``scheduler/sim``, on the virtual clock).

The simulator's budget-invariant tests size the time agents may take to come back to a
restarted controller from :meth:`Backoff.longest_delay_s`, so they are calibrated to the
backoff production uses: a changed backoff changes both.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from greenllm.proto.v1 import agent_pb2


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: ``initial_s`` doubling up to ``max_s``, spread by +-``jitter``.

    Attributes:
        initial_s: First delay, seconds.
        max_s: Largest base delay, seconds.
        jitter: Fraction each delay is spread by (agents of a restarted controller do not
            all come back in the same instant).
    """

    initial_s: float = 0.2
    max_s: float = 5.0
    jitter: float = 0.2

    def grow(self, base_s: float | None) -> float:
        """The next base delay after ``base_s`` (None: the first retry), seconds."""
        return self.initial_s if base_s is None else min(self.max_s, base_s * 2)

    def spread(self, base_s: float, rng: random.Random | None = None) -> float:
        """``base_s`` with jitter applied, seconds (``rng``: the draw's source)."""
        return base_s * (rng or random).uniform(1 - self.jitter, 1 + self.jitter)

    def longest_delay_s(self) -> float:
        """The longest delay between two connection attempts, seconds."""
        return self.max_s * (1 + self.jitter)


@dataclass
class Reconnect:
    """When an agent tries its stream again: after each lost stream a longer delay, back
    to the first once the controller has registered it.

    Attributes:
        backoff: The delays.
        rng: Source of the jitter (seeded in the simulator).
    """

    backoff: Backoff = field(default_factory=Backoff)
    rng: random.Random | None = None
    _base_s: float | None = None

    def registered(self) -> None:
        """The controller accepted the agent: the next loss starts from the first delay."""
        self._base_s = None

    def lost(self) -> float:
        """The stream is gone (or could not be opened): seconds until the next attempt."""
        self._base_s = self.backoff.grow(self._base_s)
        return self.backoff.spread(self._base_s, self.rng)


@dataclass
class TelemetryBatch:
    """GPU samples gathered every tick, sent as one message every ``ticks`` ticks.

    Attributes:
        ticks: Ticks per message (at least 1).
    """

    ticks: int
    samples: agent_pb2.GpuSamples = field(default_factory=agent_pb2.GpuSamples)
    _count: int = 0

    def add(self, samples: agent_pb2.GpuSamples) -> agent_pb2.GpuSamples | None:
        """Add one tick's samples; the batch once it is full (then a new one starts)."""
        self.samples.MergeFrom(samples)
        self._count += 1
        if self._count < max(1, self.ticks):
            return None
        full, self.samples, self._count = self.samples, agent_pb2.GpuSamples(), 0
        return full
