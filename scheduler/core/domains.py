"""Power domains as arrays: the cluster budget and every domain of the power tree as caps
on sums of GPU limits.

Domain 0 is the cluster (the operator's budget minus reserve, every GPU); the configured
domains (site, row, rack...) follow, parents before children. Each GPU belongs to the
domain feeding its node directly (its *leaf*; 0 when no tree is configured) and so to every
domain above it. The budget invariant holds per domain: the limits the GPUs of a domain may
hold sum to at most its cap. Sums are taken level by level (one numpy operation per tree
level), so a check costs O(GPUs + domains), not O(GPUs x domains).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from greenllm.power_domains import DomainLayout

#: Slack for floating-point sums, watts.
EPS_W = 1e-6


@dataclass(frozen=True)
class Caps:
    """Caps on sums of per-GPU watts: the cluster (position 0) and every domain.

    Attributes:
        names: Per cap, its name ("" for the cluster).
        parent: Per cap, its parent's position (-1 for the cluster); parents come first.
        cap_w: Per cap, the most the limits of its GPUs may sum to, watts.
        leaf: Per GPU, the position of its leaf cap (0: the cluster only).
    """

    names: tuple[str, ...]
    parent: np.ndarray
    cap_w: np.ndarray
    leaf: np.ndarray

    @staticmethod
    def build(layout: DomainLayout | None, usable_w: float, nodes: list[str]) -> Caps:
        """The caps of the cluster budget and the tree over GPUs on ``nodes``.

        Args:
            layout: The power tree (None: the cluster budget alone).
            usable_w: Budget minus reserve, watts.
            nodes: Per GPU, its node.
        """
        if layout is None or not layout.names:
            return Caps(("",), np.array([-1]), np.array([usable_w]), np.zeros(len(nodes), int))
        where = layout.domain_of_node
        return Caps(
            names=("", *layout.names),
            parent=np.array([-1, *(p + 1 for p in layout.parent)], dtype=int),
            cap_w=np.array([usable_w, *layout.usable_w], dtype=float),
            leaf=np.array([where.get(n, -1) + 1 for n in nodes], dtype=int),
        )

    @property
    def size(self) -> int:
        """Number of caps (the cluster included)."""
        return len(self.cap_w)

    @cached_property
    def _depth(self) -> np.ndarray:
        """Per cap, its depth (the cluster 0)."""
        depth = np.zeros(self.size, dtype=int)
        for d in range(1, self.size):
            depth[d] = depth[self.parent[d]] + 1
        return depth

    @cached_property
    def _levels(self) -> list[np.ndarray]:
        """Cap positions by depth, deepest last (the cluster alone at depth 0)."""
        depth = self._depth
        return [np.flatnonzero(depth == k) for k in range(int(depth.max()) + 1)]

    @cached_property
    def _ancestor(self) -> np.ndarray:
        """``[cap, depth]``: the cap's ancestor (itself included) at that depth, -1 below
        its own depth."""
        depth = self._depth
        out = np.full((self.size, len(self._levels)), -1, dtype=int)
        for d in range(self.size):
            at = d
            while at >= 0:
                out[d, depth[at]] = at
                at = int(self.parent[at])
        return out

    def ancestors(self, leaf: np.ndarray) -> np.ndarray:
        """``[i, depth]``: the cap at each depth above leaf ``leaf[i]`` (itself included),
        -1 below its depth."""
        return self._ancestor[leaf]

    def subset(self, rows: np.ndarray) -> Caps:
        """The same caps over the GPUs at ``rows`` only."""
        return Caps(self.names, self.parent, self.cap_w, self.leaf[rows])

    def less(self, used_w: np.ndarray) -> Caps:
        """These caps with ``used_w`` (per GPU, watts) taken out of each."""
        return Caps(self.names, self.parent, self.cap_w - self.totals(used_w), self.leaf)

    def totals(self, per_gpu_w: np.ndarray) -> np.ndarray:
        """Per cap, the sum of ``per_gpu_w`` over its GPUs (descendants included), watts."""
        out = np.bincount(self.leaf, weights=per_gpu_w, minlength=self.size).astype(float)
        for level in reversed(self._levels[1:]):
            np.add.at(out, self.parent[level], out[level])
        return out

    def over(self, per_gpu_w: np.ndarray) -> np.ndarray:
        """Per cap, whether ``per_gpu_w`` sums above it."""
        return self.totals(per_gpu_w) > self.cap_w + EPS_W

    def under_any(self, flagged: np.ndarray) -> np.ndarray:
        """Per GPU, whether any cap above it (its leaf included) is ``flagged``."""
        hit = flagged.copy()
        for level in self._levels[1:]:
            hit[level] |= hit[self.parent[level]]
        return hit[self.leaf]

    def members(self, cap: int) -> np.ndarray:
        """Positions of the GPUs under cap ``cap``."""
        inside = np.zeros(self.size, dtype=bool)
        inside[cap] = True
        return np.flatnonzero(self.under_any(inside))

    def fit(self, target_w: np.ndarray, min_w: np.ndarray) -> tuple[np.ndarray, bool]:
        """Shrink headroom above the minimums until every cap holds, deepest caps first.

        Inside an over-cap domain every GPU's headroom shrinks by the same factor; a
        parent's shrinking only lowers, so its children stay within theirs. One vectorised
        pass per tree level.

        Returns:
            The targets, and whether some cap is below its GPUs' summed minimums (those
            GPUs are then at their minimums).
        """
        out = target_w.astype(float).copy()
        infeasible = False
        for depth in range(len(self._levels) - 1, -1, -1):
            over = self.totals(out) > self.cap_w + EPS_W
            if not over[self._levels[depth]].any():
                continue
            above = self._ancestor[self.leaf, depth]  # per GPU, its cap at this depth
            rows = np.flatnonzero(above >= 0)
            rows = rows[over[above[rows]]]
            cap_of = above[rows]
            floor = np.bincount(cap_of, weights=min_w[rows], minlength=self.size)
            head_w = out[rows] - min_w[rows]
            head = np.bincount(cap_of, weights=head_w, minlength=self.size)
            short = self.cap_w < floor - EPS_W
            infeasible |= bool(short[over].any())
            spare = np.maximum(self.cap_w - floor, 0.0)
            scale = np.where(head > 0, spare / np.where(head > 0, head, 1.0), 0.0)
            scale = np.where(short, 0.0, np.minimum(scale, 1.0))
            out[rows] = min_w[rows] + np.floor(head_w * scale[cap_of] * 1000.0) / 1000.0
        return out, infeasible


def fit_sum(target_w: np.ndarray, min_w: np.ndarray, cap_w: float) -> tuple[np.ndarray, bool]:
    """Shrink headroom above the minimums so targets sum to at most ``cap_w``.

    Returns:
        The targets, and whether the cap is below the sum of the minimums (then every
        target is its minimum).
    """
    total = float(np.sum(target_w))
    if total <= cap_w + EPS_W:
        return target_w, False
    floor = float(np.sum(min_w))
    if cap_w < floor - EPS_W:
        return min_w.copy(), True
    head = target_w - min_w
    scale = max(0.0, (cap_w - floor) / float(np.sum(head)))
    fitted = min_w + np.floor(head * scale * 1000.0) / 1000.0
    return fitted, False
