"""What a node agent keeps across its own restarts: the limits it may be held to.

Two lists, one value per GPU index: the fail-safe limits the controller last sent, and the
highest limit the controller may believe each GPU holds (what it last commanded, written
before a raise is applied). At boot the agent sets each GPU to the lowest of its limit now,
its fail-safe limit and that commanded limit, so a restarted agent, or a rebooted node, never
holds more than a controller counts it at. Written atomically (temporary file, fsync,
rename), so a crash leaves the old state or the new one, never half of either.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class AgentStateError(Exception):
    """The agent's state could not be written."""


@dataclass(frozen=True)
class AgentState:
    """The persisted limits.

    Attributes:
        failsafe_limits_w: Fail-safe limit per GPU index, watts (None: never told).
        commanded_limits_w: Highest limit per GPU index the controller may count, watts
            (None: never commanded).
    """

    failsafe_limits_w: tuple[float, ...] | None = None
    commanded_limits_w: tuple[float, ...] | None = None


class AgentStateStore(Protocol):
    """Where an agent's state lives (a file; memory in the simulator)."""

    def load(self) -> AgentState:
        """The state last saved (empty when none or unreadable)."""
        ...

    def save(self, state: AgentState) -> None:
        """Replace the state.

        Raises:
            AgentStateError: Nothing was written.
        """
        ...


class MemoryAgentState:
    """An :class:`AgentStateStore` in memory (outlives the agents that use it)."""

    def __init__(self) -> None:
        self.state = AgentState()
        self.fail: str | None = None

    def load(self) -> AgentState:
        """See :meth:`AgentStateStore.load`."""
        return self.state

    def save(self, state: AgentState) -> None:
        """See :meth:`AgentStateStore.save`."""
        if self.fail is not None:
            raise AgentStateError(self.fail)
        self.state = state


def _limits(value: object) -> tuple[float, ...] | None:
    if not isinstance(value, list) or not all(isinstance(v, int | float) for v in value):
        return None
    limits = tuple(float(v) for v in value)
    return limits if all(math.isfinite(v) and v > 0 for v in limits) else None


class AgentStateFile:
    """An :class:`AgentStateStore` in a JSON file.

    Args:
        path: The file (its folder is created when missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> AgentState:
        """See :meth:`AgentStateStore.load` (a missing or damaged file reads as empty)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return AgentState()
        if not isinstance(data, dict):
            return AgentState()
        return AgentState(
            _limits(data.get("failsafe_limits_w")), _limits(data.get("commanded_limits_w"))
        )

    def save(self, state: AgentState) -> None:
        """See :meth:`AgentStateStore.save`."""
        doc = {
            "failsafe_limits_w": list(state.failsafe_limits_w) if state.failsafe_limits_w else None,
            "commanded_limits_w": list(state.commanded_limits_w)
            if state.commanded_limits_w
            else None,
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".agent-state-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(doc, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise AgentStateError(f"{self.path}: {exc.strerror or exc}") from None
