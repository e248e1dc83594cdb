"""Per-request energy: a replica's GPU energy split among the requests of each batched step.

The replica reads its GPU's energy counter at the end of every batched step (a prefill of
the requests joining, or a decode of every running row). The energy since the previous
reading goes to the step's requests in proportion to the tokens each processed there
(its prompt in a prefill, one token in a decode). Energy read while no request is in flight
is idle energy. Every joule between the first and the last reading goes to exactly one
of the two, so

    sum(request energies) + idle energy == metered energy

holds to rounding, whatever the counter's update period.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class EnergyTotals:
    """A replica's energy since it started, joules.

    Attributes:
        metered_j: GPU energy between the first and the latest counter reading.
        attributed_j: Of it, split among requests (finished or still in flight).
        idle_j: Of it, read while no request was in flight.
    """

    metered_j: float
    attributed_j: float
    idle_j: float


class RequestEnergySplit:
    """Splits counter readings between steps' requests and idle time (thread-safe).

    Args:
        read_energy_j: Returns the GPU's monotonic energy counter, joules.
    """

    def __init__(self, read_energy_j: Callable[[], float]) -> None:
        self._read = read_energy_j
        self._lock = threading.Lock()
        self._start_j = self._last_j = read_energy_j()
        self._attributed_j = 0.0
        self._idle_j = 0.0

    @property
    def start_j(self) -> float:
        """The counter's reading when the ledger started, joules."""
        return self._start_j

    @property
    def last_j(self) -> float:
        """The counter's reading up to which energy is booked, joules."""
        with self._lock:
            return self._last_j

    def _delta_j(self) -> float:
        now_j = self._read()
        delta_j = max(0.0, now_j - self._last_j)
        self._last_j = max(now_j, self._last_j)
        return delta_j

    def idle(self) -> float:
        """Book the energy since the last reading as idle; returns it, joules."""
        with self._lock:
            delta_j = self._delta_j()
            self._idle_j += delta_j
            return delta_j

    def step(self, tokens: Mapping[K, float]) -> dict[K, float]:
        """Split the energy since the last reading among a step's requests by tokens.

        Args:
            tokens: Request -> tokens it processed in the step (all zero: equal shares;
                empty: booked as idle).

        Returns:
            Request -> joules it gets.
        """
        with self._lock:
            delta_j = self._delta_j()
            if not tokens:
                self._idle_j += delta_j
                return {}
            total = float(sum(tokens.values()))
            self._attributed_j += delta_j
            if total <= 0:
                return {key: delta_j / len(tokens) for key in tokens}
            return {key: delta_j * n / total for key, n in tokens.items()}

    def totals(self) -> EnergyTotals:
        """Energy so far (up to the latest reading), joules."""
        with self._lock:
            return EnergyTotals(
                metered_j=self._last_j - self._start_j,
                attributed_j=self._attributed_j,
                idle_j=self._idle_j,
            )
