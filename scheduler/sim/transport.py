"""The in-memory transport: one stream per node between the controller shell and its agent.

A :class:`Channel` carries real ``greenllm.v1`` messages both ways in virtual time: to the
agent after ``ack_delay_s`` (jittered), to the controller after ``telemetry_delay_s``; each
direction keeps its order, as one gRPC stream does. It can be cut (a crash, a partition, a
controller restart): what is in flight is lost and both ends find the stream gone.
:class:`SimSession` is its controller end, the shell's
:class:`~scheduler.shell.ports.Session`.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from greenllm.proto.v1 import agent_pb2

_session_ids = itertools.count(1)


@dataclass
class Channel:
    """One agent stream in flight.

    Attributes:
        node: The node.
        down_delay_s: Mean delay controller -> agent, seconds.
        jitter_frac: Each message's delay is drawn within this fraction of the mean.
        up_delay_s: Delay agent -> controller, seconds.
        rng: The world's random stream (delays).
        open: False once cut or closed.
        closed_by_controller: Why the controller ended it ("" when it did not).
    """

    node: str
    down_delay_s: float
    jitter_frac: float
    up_delay_s: float
    rng: np.random.Generator
    open: bool = True
    closed_by_controller: str = ""
    _down: deque[tuple[float, agent_pb2.ControllerMessage]] = field(default_factory=deque)
    _up: deque[tuple[float, agent_pb2.AgentMessage]] = field(default_factory=deque)
    _down_last_s: float = 0.0
    _up_last_s: float = 0.0

    def send_down(self, now_s: float, message: agent_pb2.ControllerMessage) -> None:
        """Controller -> agent."""
        if not self.open:
            return
        j = self.jitter_frac
        delay_s = (
            self.down_delay_s * float(self.rng.uniform(1 - j, 1 + j)) if j else self.down_delay_s
        )
        self._down_last_s = max(now_s + delay_s, self._down_last_s)
        self._down.append((self._down_last_s, message))

    def send_up(self, now_s: float, message: agent_pb2.AgentMessage) -> None:
        """Agent -> controller."""
        if not self.open:
            return
        self._up_last_s = max(now_s + self.up_delay_s, self._up_last_s)
        self._up.append((self._up_last_s, message))

    def due_down(self, now_s: float) -> list[agent_pb2.ControllerMessage]:
        """Messages that reach the agent by ``now_s``, in order."""
        return _due(self._down, now_s)

    def due_up(self, now_s: float) -> list[agent_pb2.AgentMessage]:
        """Messages that reach the controller by ``now_s``, in order."""
        return _due(self._up, now_s)

    def cut(self) -> None:
        """The stream breaks: nothing in flight arrives."""
        self.open = False
        self._down.clear()
        self._up.clear()


M = TypeVar("M")


def _due(queue: deque[tuple[float, M]], now_s: float) -> list[M]:
    out = []
    while queue and queue[0][0] <= now_s + 1e-9:
        out.append(queue.popleft()[1])
    return out


class SimSession:
    """The controller's end of a :class:`Channel` (a :class:`~scheduler.shell.ports.Session`).

    Args:
        channel: The stream.
        clock: The virtual clock.
    """

    def __init__(self, channel: Channel, clock: Callable[[], float]) -> None:
        self.session_id = f"sim-{next(_session_ids)}"
        self.node = channel.node
        self.channel = channel
        self._clock = clock

    def deliver(self, message: agent_pb2.ControllerMessage) -> None:
        """Queue ``message`` to the agent."""
        self.channel.send_down(self._clock(), message)

    def close(self, reason: str) -> None:
        """End the stream (the agent reconnects)."""
        self.channel.closed_by_controller = reason
        self.channel.cut()
