"""Replicas behind one endpoint, and how a request picks one.

Routing is the ingress's and the simulator's one rule (:func:`greenllm.serving.routing.route_key`,
weighted least-loaded as nginx's ``least_conn`` with weights): a request goes to the replica
of its model with the fewest requests in flight (queued + in batch, the new one counted) per
unit of weight; ties go to the lowest name. A replica with weight 0 takes no new requests;
one whose queue is full is skipped. The weights are meant to follow each replica's measured
throughput at its current power limit and clocks (the controller sets them;
:meth:`ReplicaPool.set_weights` can be called at any time, from any thread).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from greenllm.serving.routing import route_key
from greenllm.workloads import Tokenizer
from workers.serve.metrics import ReplicaMetrics
from workers.serve.stream import (
    ModelNotFoundError,
    QueueFullError,
    ReplicaStoppedError,
    RequestStream,
    Sampling,
    ServeError,
)


class Replica(Protocol):
    """What the pool needs of a replica (:class:`workers.serve.engine.ReplicaEngine` is one)."""

    name: str
    model_id: str
    context_tokens: int
    tokenizer: Tokenizer
    max_queue: int

    @property
    def running(self) -> bool:
        """Whether it takes requests."""
        ...

    def load_now(self) -> tuple[int, int]:
        """``(queued, in batch)`` requests."""
        ...

    def check(self, prompt_tokens: int, max_tokens: int) -> None:
        """Raise the :class:`ServeError` a request of these sizes would get."""
        ...

    def submit(
        self,
        prompt_ids: Sequence[int],
        max_tokens: int,
        sampling: Sampling | None = None,
        request_id: str | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        tokens: bool = True,
    ) -> RequestStream:
        """Queue a request (raises :class:`ServeError` when refused)."""
        ...

    def metrics(self) -> ReplicaMetrics:
        """Its figures now."""
        ...

    def stop(self, reason: str = "replica stopped", timeout_s: float = 30.0) -> None:
        """Stop it; its queued and running requests fail."""
        ...


@dataclass(frozen=True)
class ModelInfo:
    """A model the pool serves.

    Attributes:
        model_id: Its name in the API.
        context_tokens: Its context, tokens (0: unknown).
        tokenizer: Its tokenizer.
    """

    model_id: str
    context_tokens: int
    tokenizer: Tokenizer


class ReplicaPool:
    """Replicas by name, their weights, and the routing of requests (thread-safe).

    Args:
        replicas: Replicas to start with (weight 1 each).
    """

    def __init__(self, replicas: Sequence[Replica] = ()) -> None:
        self._lock = threading.Lock()
        self._replicas: dict[str, Replica] = {}
        self._weights: dict[str, float] = {}
        for replica in replicas:
            self.add(replica)

    def add(self, replica: Replica, weight: float = 1.0) -> None:
        """Add (or replace) a replica under its name."""
        _check_weight(replica.name, weight)
        with self._lock:
            self._replicas[replica.name] = replica
            self._weights[replica.name] = weight

    def remove(self, name: str) -> Replica | None:
        """Stop routing to ``name``; returns it (None if unknown). It is not stopped."""
        with self._lock:
            self._weights.pop(name, None)
            return self._replicas.pop(name, None)

    def replicas(self) -> dict[str, Replica]:
        """The replicas by name."""
        with self._lock:
            return dict(self._replicas)

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Set the weights of the replicas named (others keep theirs; unknown names are
        ignored). 0 takes no new requests.

        Raises:
            ValueError: A weight is negative or not finite (nothing is changed).
        """
        for name, weight in weights.items():
            _check_weight(name, weight)
        with self._lock:
            for name, weight in weights.items():
                if name in self._replicas:
                    self._weights[name] = float(weight)

    def weights(self) -> dict[str, float]:
        """A copy of the weights."""
        with self._lock:
            return dict(self._weights)

    def models(self) -> list[ModelInfo]:
        """The models served, one entry each (from their first replica)."""
        seen: dict[str, ModelInfo] = {}
        for replica in self.replicas().values():
            if replica.model_id not in seen:
                seen[replica.model_id] = ModelInfo(
                    replica.model_id, replica.context_tokens, replica.tokenizer
                )
        return list(seen.values())

    def model(self, model_id: str) -> ModelInfo:
        """The model ``model_id``.

        Raises:
            ModelNotFoundError: No replica serves it.
        """
        for info in self.models():
            if info.model_id == model_id:
                return info
        raise ModelNotFoundError(f"The model `{model_id}` does not exist.", param="model")

    def candidates(self, model_id: str) -> list[Replica]:
        """The running replicas of ``model_id`` with a positive weight, best first."""
        with self._lock:
            live = [
                (name, r)
                for name, r in self._replicas.items()
                if r.model_id == model_id and self._weights[name] > 0 and r.running
            ]
            scored = []
            for name, replica in live:
                queued, in_batch = replica.load_now()
                scored.append((route_key(queued + in_batch, self._weights[name], name), replica))
            return [replica for _, replica in sorted(scored, key=lambda s: s[0])]

    def submit(
        self,
        model_id: str,
        prompt_ids: Sequence[int],
        max_tokens: int,
        sampling: Sampling | None = None,
        request_id: str | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        tokens: bool = True,
    ) -> tuple[Replica, RequestStream]:
        """Route a request: the best replica that accepts it.

        Raises:
            ModelNotFoundError: No replica serves ``model_id`` (404).
            ReplicaStoppedError: No replica of it can take requests (503).
            QueueFullError: Every replica's queue is full (429).
            ServeError: The request itself is refused (e.g. too long, 400).
        """
        self.model(model_id)
        full: list[QueueFullError] = []
        for replica in self.candidates(model_id):
            try:
                return replica, replica.submit(
                    prompt_ids, max_tokens, sampling, request_id, loop, tokens
                )
            except QueueFullError as exc:
                full.append(exc)
            except ReplicaStoppedError:
                continue
        if full:
            raise QueueFullError(
                f"All {len(full)} replicas of `{model_id}` are at capacity; retry later.",
                retry_after_s=min(e.retry_after_s for e in full),
            )
        raise ReplicaStoppedError(f"No replica of `{model_id}` is available to take requests.")

    def metrics(self) -> dict[str, ReplicaMetrics]:
        """Every replica's figures, by name."""
        return {name: r.metrics() for name, r in self.replicas().items()}

    def stop_all(self, reason: str = "endpoint stopped") -> None:
        """Stop every replica (their requests fail with ``reason``)."""
        for replica in self.replicas().values():
            replica.stop(reason)


def _check_weight(name: str, weight: float) -> None:
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"replica {name}: weight must be finite and >= 0, not {weight}")


__all__ = ["ModelInfo", "Replica", "ReplicaPool", "ServeError"]
