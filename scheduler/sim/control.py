"""The simulated control plane: what the controller knows, and its command pipe.

The controller sees telemetry ``telemetry_delay_s`` late and marks a node stale when its
telemetry is older than ``stale_after_s`` (it then counts at its commanded maximum).
After ``lost_after_s`` the node is declared down: it still counts, but at its GPUs'
minimum limits, the limits a restarted agent boots with, so its return never needs
budget someone else holds. Commands reach a node's agent in order (one stream per node)
after a delay drawn per node and control period; the agent applies and acks them at that
moment; a crash loses the commands in flight to it.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from scheduler.sim.scenario import ControlPlane


@dataclass(frozen=True)
class Telemetry:
    """One step's readings of every GPU, as agents report them.

    Attributes:
        produced_s: When measured, seconds.
        alive: Per GPU, whether its node reported.
        power_w: Measured average power over the step, watts (noisy).
        work_rate: Measured work rate, units/s (noisy).
        sm_clock_mhz: SM clock while busy (or idle clock), MHz.
        limit_w: Power limit in force, watts.
        steady: Per GPU, busy all step with one workload (usable to learn curves).
    """

    produced_s: float
    alive: np.ndarray
    power_w: np.ndarray
    work_rate: np.ndarray
    sm_clock_mhz: np.ndarray
    limit_w: np.ndarray
    steady: np.ndarray


@dataclass(order=True)
class Command:
    """A command in flight to a node's agent."""

    apply_s: float
    seq: int
    gpu: int = field(compare=False)
    kind: str = field(compare=False)  # "limit" | "lock" | "reset"
    value: float = field(compare=False, default=0.0)


class ControllerView:
    """The controller's knowledge of limits, acks, telemetry and node health."""

    def __init__(
        self,
        plane: ControlPlane,
        node_of: list[str],
        limits_w: np.ndarray,
        min_w: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        self.plane = plane
        self.node_of = node_of
        self.min_w = min_w
        n = len(node_of)
        self.acked_w = limits_w.astype(float).copy()
        self.outstanding: list[deque[float]] = [deque() for _ in range(n)]
        self.locked: list[int | None] = [None] * n
        self.node_seen_s: dict[str, float] = dict.fromkeys(node_of, 0.0)
        self.lost: set[str] = set()
        self.latest: Telemetry | None = None
        self._inbox: deque[tuple[float, Telemetry]] = deque()
        self._pipe: list[Command] = []
        self._node_next_s: dict[str, float] = {}
        self._seq = 0
        self._rng = rng

    # -- telemetry ---------------------------------------------------------------------
    def send_telemetry(self, sample: Telemetry) -> None:
        """An agent sample leaves the nodes; it arrives ``telemetry_delay_s`` later."""
        self._inbox.append((sample.produced_s + self.plane.telemetry_delay_s, sample))

    def receive(self, now_s: float) -> list[Telemetry]:
        """Deliver the samples due by ``now_s``; returns them, oldest first."""
        got = []
        while self._inbox and self._inbox[0][0] <= now_s + 1e-9:
            sample = self._inbox.popleft()[1]
            got.append(sample)
            self.latest = sample
            for i in np.flatnonzero(sample.alive):
                self.node_seen_s[self.node_of[i]] = sample.produced_s
        return got

    def node_health(self, now_s: float) -> set[str]:
        """Nodes whose telemetry is stale at ``now_s`` (down ones included).

        A node silent for ``lost_after_s`` is declared down: its GPUs now count at their
        minimum limits, the limits its agent boots with when it comes back.
        """
        stale: set[str] = set()
        for node, seen in self.node_seen_s.items():
            age = now_s - seen
            if age > self.plane.lost_after_s and node not in self.lost:
                self.lost.add(node)
                for i in np.flatnonzero(np.asarray(self.node_of) == node).tolist():
                    self.outstanding[i].clear()
                    self.acked_w[i] = self.min_w[i]
                    self.locked[i] = None
            if age > self.plane.stale_after_s:
                stale.add(node)
        return stale

    def rejoin(self, node: str, now_s: float) -> None:
        """A rebooted node registers again, reporting its GPUs at their minimum limits."""
        self.lost.discard(node)
        self.node_seen_s[node] = now_s
        for i in np.flatnonzero(np.asarray(self.node_of) == node).tolist():
            self.outstanding[i].clear()
            self.acked_w[i] = self.min_w[i]
            self.locked[i] = None

    def drop_commands(self, node: str) -> None:
        """``node`` crashed: what was in flight to it is lost."""
        self._pipe = [c for c in self._pipe if self.node_of[c.gpu] != node]
        heapq.heapify(self._pipe)

    # -- commands ----------------------------------------------------------------------
    def pending_w(self, i: int) -> float | None:
        """Largest outstanding limit of GPU ``i``, watts."""
        return max(self.outstanding[i]) if self.outstanding[i] else None

    def send(self, now_s: float, gpu: int, kind: str, value: float = 0.0) -> None:
        """Queue a command to GPU ``gpu``'s agent (FIFO per node)."""
        node = self.node_of[gpu]
        jitter = self.plane.ack_jitter_frac
        delay = self.plane.ack_delay_s * float(self._rng.uniform(1 - jitter, 1 + jitter))
        apply_s = max(now_s + delay, self._node_next_s.get(node, 0.0))
        self._node_next_s[node] = apply_s
        self._seq += 1
        heapq.heappush(self._pipe, Command(apply_s, self._seq, gpu, kind, value))
        if kind == "limit":
            self.outstanding[gpu].append(value)

    def due(self, now_s: float) -> list[Command]:
        """Commands whose agent applies them by ``now_s``, in order."""
        out = []
        while self._pipe and self._pipe[0].apply_s <= now_s + 1e-9:
            out.append(heapq.heappop(self._pipe))
        return out

    def ack(self, cmd: Command) -> None:
        """The agent applied ``cmd`` and says so."""
        i = cmd.gpu
        if cmd.kind == "limit":
            self.acked_w[i] = cmd.value
            if self.outstanding[i]:
                self.outstanding[i].popleft()
        elif cmd.kind == "lock":
            self.locked[i] = int(cmd.value)
        else:
            self.locked[i] = None
