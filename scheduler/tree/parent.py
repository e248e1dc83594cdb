"""The parent of a controller tree: it splits its domain's watts among child controllers
from their demand curves, and never sends a grant that could put its domain over its limit.

Each child controller runs the ordinary shell over its subtree with its grant as its budget,
so its GPUs' limits stay within its grant (after the child's own transition window). The
parent reallocates every ``period_s`` (a few child control periods):

1. **Targets** (:func:`allocate_grants`): every child its floor (its GPUs' minimum limits and
   its stale GPUs' accounted limits), then the rest where it adds the most value per watt
   along the children's concave demand curves (watts -> value, as max-throughput values
   work), each child capped by its own domain's limit; watts no curve wants are spread over
   the children's remaining room, so a child can grow before the next round.
2. **Safety** (:func:`plan_grants`): a child counts at the larger of its grant and what its
   GPUs hold now (a lowered grant takes the child a window to carry out). Lowerings go out at
   once; a raise only as far as the sum over children stays within the parent's usable
   watts. A child whose report did not come counts at its last grant or holding, whichever
   is larger; a child that loses its parent keeps its last grant (it is already safe).

A cut at the parent reaches the GPUs within one parent period plus a child's transition
window; raises follow once the lowered children report holding less.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scheduler.core.demand import DemandCurve

#: Slack for floating-point sums, watts.
EPS_W = 1e-6


@dataclass(frozen=True)
class ChildReport:
    """What a child controller tells its parent.

    Attributes:
        held_w: The limits its GPUs may really hold now, summed (as its budget counts them).
        curve: Its demand curve (watts -> value), from its floor up.
    """

    held_w: float
    curve: DemandCurve


def allocate_grants(curves: list[DemandCurve], caps_w: list[float], usable_w: float) -> list[float]:
    """Target grants: floors first, then the steepest segments of all curves, then spare.

    Args:
        curves: Per child, its demand curve.
        caps_w: Per child, the most it may be given (its domain's limit - reserve), watts.
        usable_w: What the children's grants may sum to, watts.

    Returns:
        Per child, its target grant, watts (the floors when even they do not fit).
    """
    floors = np.array([min(c.watts[0], cap) for c, cap in zip(curves, caps_w, strict=True)], float)
    caps = np.array(caps_w, dtype=float)
    left = usable_w - float(np.sum(floors))
    grants = floors.copy()
    if left <= EPS_W:
        return grants.tolist()
    child, dw, slope = [], [], []
    for i, c in enumerate(curves):
        w, v = np.asarray(c.watts), np.asarray(c.value)
        step_w, step_v = np.diff(w), np.diff(v)
        keep = step_w > 0
        child.append(np.full(int(keep.sum()), i))
        dw.append(step_w[keep])
        slope.append(step_v[keep] / step_w[keep])
    if child:
        seg_child = np.concatenate(child)
        seg_w = np.concatenate(dw)
        order = np.argsort(-np.concatenate(slope), kind="stable")
        for s in order.tolist():  # segments of a concave curve come in its own order
            i = int(seg_child[s])
            take = min(float(seg_w[s]), caps[i] - grants[i], left)
            if take <= 0:
                continue
            grants[i] += take
            left -= take
            if left <= EPS_W:
                return grants.tolist()
    room = caps - grants
    if left > EPS_W and float(np.sum(room)) > 0:
        grants += room * min(1.0, left / float(np.sum(room)))
    return grants.tolist()


def plan_grants(
    granted_w: list[float], held_w: list[float], target_w: list[float], usable_w: float
) -> list[float]:
    """The grants to send now: lowerings at once, raises as far as the parent's limit allows.

    Args:
        granted_w: Per child, its grant in force, watts.
        held_w: Per child, what its GPUs may hold now, watts.
        target_w: Per child, its target grant, watts.
        usable_w: The parent's usable watts.

    Returns:
        Per child, its new grant (its old one where nothing is sent).
    """
    new = [min(g, t) for g, t in zip(granted_w, target_w, strict=True)]
    counted = [max(n, h) for n, h in zip(new, held_w, strict=True)]
    total = sum(counted)
    rises = sorted(
        (i for i, (g, t) in enumerate(zip(granted_w, target_w, strict=True)) if t > g + EPS_W),
        key=lambda i: granted_w[i] - target_w[i],
    )
    for i in rises:
        room = usable_w - total
        grow = max(target_w[i], held_w[i]) - counted[i]
        if grow <= room + EPS_W:
            new[i] = target_w[i]
        elif room > EPS_W:
            new[i] = max(new[i], counted[i] + room)
        else:
            continue
        total += max(new[i], held_w[i]) - counted[i]
        counted[i] = max(new[i], held_w[i])
    return new


@dataclass
class ParentController:
    """The parent's state: each child's grant and last report.

    Attributes:
        names: The children, by name.
        caps_w: Per child, the most it may be given, watts.
        usable_w: The parent's usable watts (its domain's limit - reserve, or the cluster
            budget - reserve when lower).
        grants_w: Per child, its grant in force, watts.
    """

    names: list[str]
    caps_w: list[float]
    usable_w: float
    grants_w: list[float]
    _held_w: list[float] | None = None

    def step(self, reports: dict[str, ChildReport]) -> dict[str, float]:
        """One reallocation from the children's reports (a missing child counts at the
        larger of its grant and its last holding).

        Returns:
            The grants that changed, by child.
        """
        held = list(self._held_w or self.grants_w)
        curves = []
        for i, name in enumerate(self.names):
            report = reports.get(name)
            if report is None:
                held[i] = max(held[i], self.grants_w[i])
                curves.append(DemandCurve((self.grants_w[i],), (0.0,)))  # keep its grant
            else:
                held[i] = report.held_w
                curves.append(report.curve)
        self._held_w = held
        target = allocate_grants(curves, self.caps_w, self.usable_w)
        for i, name in enumerate(self.names):
            if name not in reports:
                target[i] = max(target[i], self.grants_w[i])  # a silent child keeps its grant
        new = plan_grants(self.grants_w, held, target, self.usable_w)
        changed = {
            name: n
            for name, n, old in zip(self.names, new, self.grants_w, strict=True)
            if abs(n - old) > 1e-3
        }
        self.grants_w = new
        return changed
