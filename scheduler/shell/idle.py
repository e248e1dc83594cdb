"""The cluster's idle energy: what GPUs drew while no job held them, per node.

A GPU is held by a job while a shard of the job runs on it, except an inference replica
drained by the policy (parked): from its drain its GPU is the cluster's (see
:func:`scheduler.shell.jobs.park`). What the cluster's GPUs draw while nobody holds them
is the price of capacity nobody used; a node none of whose GPUs is held is releasable (an
operator or an autoscaler could switch it off).

Counters are cumulative, so the books are read every :data:`IDLE_BOOK_EVERY_S` (not every
control step, which would cost a pass over every GPU each period): a GPU that changed
hands in between is booked as it was at the read. The figure is an estimate to that
resolution and says so in its documentation.
"""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.shell.nodes import NodeRecord

#: Idle energy is booked this often, seconds.
IDLE_BOOK_EVERY_S = 5.0


class IdleBooks:
    """Idle energy per node (see module doc)."""

    def __init__(self) -> None:
        self.by_node_j: dict[str, float] = {}
        self._last_j: dict[tuple[str, int], float] = {}
        self._booked_s = float("-inf")

    def book(
        self, nodes: dict[str, NodeRecord], held: Iterable[tuple[str, int]], now_s: float
    ) -> None:
        """Book what each GPU drew since the last read, as idle when nobody holds it now."""
        if now_s - self._booked_s < IDLE_BOOK_EVERY_S:
            return
        self._booked_s = now_s
        taken = set(held)
        for node in nodes.values():
            for g in node.gpus:
                counter_j = g.energy_j()
                if counter_j is None:
                    continue
                key = (node.name, g.index)
                last_j = self._last_j.get(key)
                self._last_j[key] = counter_j
                if last_j is not None and key not in taken and counter_j >= last_j:
                    self.by_node_j[node.name] = self.by_node_j.get(node.name, 0.0) + (
                        counter_j - last_j
                    )


def releasable(node: NodeRecord, held: set[tuple[str, int]]) -> bool:
    """The node has GPUs and no job holds any of them."""
    return bool(node.gpus) and not any((node.name, g.index) in held for g in node.gpus)
