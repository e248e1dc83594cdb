"""Route inference requests across replicas in proportion to their measured throughput.

Smooth weighted round robin (as in nginx): every pick adds each replica's weight to its
running score, takes the replica with the highest score and subtracts the total weight
from it. Over any window of picks each replica's share is within one request of its
weight's share, and picks of a heavy replica are spread out rather than bunched.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping

from greenllm.errors import GreenllmError


class NoReplicaError(GreenllmError):
    """No replica can take a request (none registered, or every weight is zero)."""


class Router:
    """Picks the replica for each request; weights can change at any time (thread-safe).

    Args:
        weights: Replica id -> weight (measured throughput, e.g. tokens/s); 0 takes no
            requests.

    Raises:
        ValueError: A weight is negative or not finite.
    """

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self._lock = threading.Lock()
        self._weights: dict[str, float] = {}
        self._scores: dict[str, float] = {}
        self.set_weights(weights or {})

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Replace the weights: replicas not named are removed, new ones added.

        Raises:
            ValueError: A weight is negative or not finite.
        """
        for replica, weight in weights.items():
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"replica {replica}: weight must be finite and >= 0, not {weight}")
        with self._lock:
            self._weights = dict(weights)
            self._scores = {r: self._scores.get(r, 0.0) for r in self._weights}

    def set_weight(self, replica: str, weight: float) -> None:
        """Add ``replica`` or change its weight.

        Raises:
            ValueError: ``weight`` is negative or not finite.
        """
        with self._lock:
            weights = {**self._weights, replica: weight}
        self.set_weights(weights)

    def remove(self, replica: str) -> None:
        """Stop routing to ``replica`` (no error if it is unknown)."""
        with self._lock:
            self._weights.pop(replica, None)
            self._scores.pop(replica, None)

    def weights(self) -> dict[str, float]:
        """A copy of the current weights."""
        with self._lock:
            return dict(self._weights)

    def pick(self) -> str:
        """The replica for the next request.

        Raises:
            NoReplicaError: No replica has a positive weight.
        """
        with self._lock:
            total = sum(self._weights.values())
            if total <= 0:
                raise NoReplicaError("no inference replica is available to take the request")
            for replica, weight in self._weights.items():
                self._scores[replica] += weight
            live = [r for r, w in self._weights.items() if w > 0]
            best = max(live, key=lambda r: self._scores[r])
            self._scores[best] -= total
            return best
