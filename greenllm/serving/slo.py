"""What a replica tells the controller about its latency SLO: the p99 TTFT and TPOT of the
requests it finished within the last :data:`LATENCY_WINDOW_S`, the same window for the live
replica (:mod:`workers.serve.replica_metrics`) and the simulator's (:mod:`scheduler.sim.world`), so
the controller's SLO feedback (:mod:`scheduler.policies.scaling`) reads both alike. Older
requests no longer count: a miss measured minutes ago says nothing of the replicas now.
"""

from __future__ import annotations

from collections import deque

from greenllm.serving.report import percentile

#: Finished requests count toward the reported percentiles for this long, seconds.
LATENCY_WINDOW_S = 15.0


class RecentLatencies:
    """TTFT and TPOT of the requests finished in the last :data:`LATENCY_WINDOW_S`.

    Args:
        window_s: The window, seconds.
    """

    def __init__(self, window_s: float = LATENCY_WINDOW_S) -> None:
        self.window_s = window_s
        self._ttft: deque[tuple[float, float]] = deque()
        self._tpot: deque[tuple[float, float]] = deque()

    def add(self, now_s: float, ttft_s: float | None, tpot_s: float | None) -> None:
        """A request finished at ``now_s`` (TPOT None: it produced one token)."""
        if ttft_s is not None:
            self._ttft.append((now_s, ttft_s))
        if tpot_s is not None:
            self._tpot.append((now_s, tpot_s))

    def p99(self, now_s: float) -> tuple[float, float]:
        """``(TTFT, TPOT)`` 99th percentiles over the window, seconds (0: none finished)."""
        self._prune(now_s)
        ttft = percentile([v for _, v in self._ttft], 99)
        tpot = percentile([v for _, v in self._tpot], 99)
        return ttft or 0.0, tpot or 0.0

    def _prune(self, now_s: float) -> None:
        for window in (self._ttft, self._tpot):
            while window and window[0][0] < now_s - self.window_s:
                window.popleft()
