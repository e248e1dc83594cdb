"""Turning a policy's targets into safe power-limit commands.

The invariant: the sum of commanded limits never exceeds ``budget - reserve``, nor, for
each power domain, its ``limit - reserve`` over its GPUs (:mod:`scheduler.core.domains`),
where a GPU counts at the maximum of its acked and pending limits (a command may or may not have
landed yet) and a stale GPU counts at that maximum and gets no command. Steps:

1. Clamp targets into each GPU's range; where they still sum above what the non-stale
   GPUs of a domain (or the cluster) may use, shrink every such GPU's headroom above its
   minimum by the same factor, deepest domains first.
2. Hysteresis, three bands per GPU around its commanded limit (as Meta's Dynamo does
   around its capping and uncapping thresholds): a target more than ``lower_band`` below
   lowers at once; one more than ``raise_band`` above raises; in between the limit holds.
   A hold that would break a cap is released.
3. Ordering: if any lowering is sent now or still unacked, only lowerings go out and
   raises wait. Otherwise raises go out where they fit, counting every GPU at the max of
   what it has acked, has pending and is now sent: a raise under a domain (or cluster)
   that would go over waits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scheduler.core.domains import EPS_W, Caps
from scheduler.core.domains import fit_sum as fit_budget

__all__ = ["EPS_W", "LimitPlan", "LimitState", "fit_budget", "plan_limits"]


@dataclass(frozen=True)
class LimitState:
    """Per-GPU arrays describing limits now.

    Attributes:
        acked_w: Acked limit, watts.
        pending_w: Largest unacked commanded limit, watts (NaN: none).
        stale: Telemetry too old: counted at its max, never commanded.
        min_w: Lowest settable limit, watts.
        max_w: Highest settable limit, watts.
        tdp_w: TDP, watts.
    """

    acked_w: np.ndarray
    pending_w: np.ndarray
    stale: np.ndarray
    min_w: np.ndarray
    max_w: np.ndarray
    tdp_w: np.ndarray

    @property
    def has_pending(self) -> np.ndarray:
        """Per GPU, whether a command is unacked."""
        return ~np.isnan(self.pending_w)

    @property
    def commanded_w(self) -> np.ndarray:
        """Per GPU, the limit once every command lands, watts."""
        return np.where(self.has_pending, self.pending_w, self.acked_w)

    @property
    def accounted_w(self) -> np.ndarray:
        """Per GPU, what the budget counts now: max of acked and pending, watts."""
        return np.fmax(self.acked_w, self.pending_w)


@dataclass(frozen=True)
class LimitPlan:
    """The safe outcome.

    Attributes:
        new_w: Per GPU, the limit it is commanded to (NaN: no command).
        order: GPU positions to command, lowerings first.
        raises_deferred: Raises were held back until lowerings are acked.
        infeasible: Even every minimum limit does not fit the budget.
    """

    new_w: np.ndarray
    order: np.ndarray
    raises_deferred: bool
    infeasible: bool


def plan_limits(
    state: LimitState,
    target_w: np.ndarray,
    usable_w: float,
    lower_band_frac: float,
    raise_band_frac: float,
    caps: Caps | None = None,
) -> LimitPlan:
    """Safe commands that move limits towards ``target_w``.

    Args:
        state: Limits now.
        target_w: Per GPU, the policy's target, watts (ignored on stale GPUs).
        usable_w: ``budget - reserve``, watts.
        lower_band_frac: Hysteresis lower band, fraction of TDP.
        raise_band_frac: Hysteresis raise band, fraction of TDP.
        caps: The cluster's and every power domain's caps over these GPUs (None: the
            cluster's ``usable_w`` alone).
    """
    n = len(target_w)
    if caps is None:
        caps = Caps(("",), np.array([-1]), np.array([usable_w]), np.zeros(n, dtype=int))
    live = ~state.stale
    accounted = state.accounted_w
    commanded = state.commanded_w
    live_caps = caps.less(np.where(live, 0.0, accounted))
    target = np.clip(np.floor(target_w * 1000.0) / 1000.0, state.min_w, state.max_w)
    floor = np.where(live, state.min_w, 0.0)
    raw, infeasible = live_caps.fit(np.where(live, target, 0.0), floor)
    delta = raw - commanded
    hold = (
        live & (delta >= -lower_band_frac * state.tdp_w) & (delta <= raise_band_frac * state.tdp_w)
    )
    held = np.where(hold, commanded, raw)
    over = live_caps.over(np.where(live, held, 0.0))
    if over.any():  # a hold may not break a cap: release those above their target there
        held = np.where(hold & (commanded > raw) & live_caps.under_any(over), raw, held)
    new = np.where(live, held, np.nan)
    lower = live & (new < commanded - EPS_W)
    rise = live & (new > commanded + EPS_W)
    outstanding = live & state.has_pending & (state.pending_w < state.acked_w - EPS_W)
    deferred = False
    if lower.any() or outstanding.any():
        deferred = bool(rise.any())
        send = lower
    else:
        after = np.where(rise, np.fmax(accounted, new), accounted)
        over = caps.over(after)
        send = rise & ~caps.under_any(over) if over.any() else rise
        deferred = bool((rise & ~send).any())
    out = np.where(send, new, np.nan)
    order = np.flatnonzero(send)
    order = order[np.argsort(out[order] - commanded[order], kind="stable")]
    return LimitPlan(new_w=out, order=order, raises_deferred=deferred, infeasible=infeasible)
