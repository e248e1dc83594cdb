"""The allocation problem a policy solves, and the answer it gives.

``decide()`` builds a :class:`Problem` over the GPUs it may command (not stale): per GPU
its limit range, per job and GPU type a :class:`Group` of GPUs that share one curve.
A synchronous data-parallel training job is one group (its shards share a type, see
:mod:`scheduler.core.placement`) and so gets one limit for all shards: watts that would
make one shard faster than the others buy nothing. Inference replicas of one type form
one group too (equal limits are optimal for identical concave curves).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from scheduler.core.domains import Caps
from scheduler.core.powermodel import Curve, PowerModel
from scheduler.core.types import JobState, SLOReport


@dataclass
class Group:
    """GPUs of one type running shards of one job.

    Attributes:
        job: The job.
        gpu_type: Their catalog type.
        rows: Their positions in the problem's GPU arrays.
        lo_w: Lowest limit the policy may give them (type minimum or the job's floor), W.
        hi_w: Highest limit (type maximum), watts.
        curve: Rate and power per GPU at candidate limits from ``lo_w`` to ``hi_w``.
        clock_curve: Rate and power per GPU at each locked SM clock.
    """

    job: JobState
    gpu_type: str
    rows: np.ndarray
    lo_w: float
    hi_w: float
    curve: Curve
    clock_curve: Curve

    @property
    def size(self) -> int:
        """Number of GPUs in the group."""
        return len(self.rows)


@dataclass
class Problem:
    """Power limits for ``n`` GPUs summing to at most ``budget_w``.

    Attributes:
        budget_w: What the limits of these GPUs may sum to, watts.
        min_w: Per GPU, lowest settable limit, watts.
        max_w: Per GPU, highest settable limit, watts.
        tdp_w: Per GPU, TDP, watts.
        busy: Per GPU, whether a shard runs on it.
        groups: The busy GPUs, grouped per job and type.
        model: The power model the curves came from.
        caps: The power domains' caps over these GPUs, the cluster's (``budget_w``) at
            position 0 (None: no power tree; ``budget_w`` alone). A policy that ignores
            them is still safe (``decide()`` fits its limits under every cap) but may
            leave watts unused that another domain could have taken.
    """

    budget_w: float
    min_w: np.ndarray
    max_w: np.ndarray
    tdp_w: np.ndarray
    busy: np.ndarray
    groups: list[Group]
    model: PowerModel
    caps: Caps | None = None

    def floor_w(self) -> np.ndarray:
        """Per GPU, lowest limit a policy should give (job floors on busy GPUs), watts."""
        lo = self.min_w.copy()
        for g in self.groups:
            lo[g.rows] = g.lo_w
        return lo

    def jobs(self) -> list[JobState]:
        """Jobs with at least one group, in first-seen order."""
        seen: dict[str, JobState] = {}
        for g in self.groups:
            seen.setdefault(g.job.job_id, g.job)
        return list(seen.values())


@dataclass
class Allocation:
    """A policy's answer.

    Attributes:
        limits_w: Per GPU of the problem, the power limit, watts.
        lock_max_sm_clock_mhz: Per GPU, SM clock lock upper end, MHz (0: clocks free).
        unmet_slos: Jobs whose SLO cannot be met, and why.
        parked: Per GPU, True for an inference replica taken out of service (drained: no
            new requests; its limit and clock lock are the policy's parking ones). None: none.
        active_replicas: Per inference job whose replica count the policy chose, how many
            serve.
    """

    limits_w: np.ndarray
    lock_max_sm_clock_mhz: np.ndarray
    unmet_slos: list[SLOReport] = field(default_factory=list)
    parked: np.ndarray | None = None
    active_replicas: dict[str, int] = field(default_factory=dict)


class Policy(Protocol):
    """An allocation policy (registered under the ``greenllm.policies`` entry points)."""

    name: str

    def allocate(self, problem: Problem) -> Allocation:
        """Choose every GPU's power limit (and optional clock lock) within the budget."""
        ...


def fill_level(lo_w: np.ndarray, hi_w: np.ndarray, weight: np.ndarray, budget_w: float) -> float:
    """Largest ``s`` with ``sum(clip(s * weight, lo, hi)) <= budget_w`` (bisection).

    Used by the proportional baselines: ``weight`` 1 gives an equal split, TDP gives a
    TDP-proportional one; clamping into each GPU's range is redistributed.
    """
    if float(np.sum(hi_w)) <= budget_w:
        return float(np.max(hi_w / np.maximum(weight, 1e-12)))
    lo_s, hi_s = 0.0, float(np.max(hi_w / np.maximum(weight, 1e-12)))
    for _ in range(60):
        mid = 0.5 * (lo_s + hi_s)
        if float(np.sum(np.clip(mid * weight, lo_w, hi_w))) <= budget_w:
            lo_s = mid
        else:
            hi_s = mid
    return lo_s


def no_locks(n: int) -> np.ndarray:
    """A lock array meaning 'clocks free' for ``n`` GPUs."""
    return np.zeros(n, dtype=int)
