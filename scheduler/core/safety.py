"""Turning a policy's targets into safe power-limit commands.

The invariant: the sum of commanded limits never exceeds ``budget - reserve``, where a
GPU counts at the maximum of its acked and pending limits (a command may or may not have
landed yet) and a stale GPU counts at that maximum and gets no command. Steps:

1. Clamp targets into each GPU's range; if they still sum above what the non-stale GPUs
   may use, shrink every GPU's headroom above its minimum by the same factor.
2. Hysteresis, three bands per GPU around its commanded limit (as Meta's Dynamo does
   around its capping and uncapping thresholds): a target more than ``lower_band`` below
   lowers at once; one more than ``raise_band`` above raises; in between the limit holds.
   A hold that would break the budget is released.
3. Ordering: if any lowering is sent now or still unacked, only lowerings go out and
   raises wait. Otherwise raises go out, and only if they fit counting every GPU at the
   max of what it has acked, has pending and is now sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Slack for floating-point sums, watts.
EPS_W = 1e-6


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


def fit_budget(target_w: np.ndarray, min_w: np.ndarray, budget_w: float) -> tuple[np.ndarray, bool]:
    """Shrink headroom above the minimums so targets sum to at most ``budget_w``.

    Returns:
        The targets, and whether the budget is below the sum of the minimums (then every
        target is its minimum).
    """
    total = float(np.sum(target_w))
    if total <= budget_w + EPS_W:
        return target_w, False
    floor = float(np.sum(min_w))
    if budget_w < floor:
        return min_w.copy(), True
    head = target_w - min_w
    scale = (budget_w - floor) / float(np.sum(head))
    fitted = min_w + np.floor(head * scale * 1000.0) / 1000.0
    return fitted, False


def plan_limits(
    state: LimitState,
    target_w: np.ndarray,
    usable_w: float,
    lower_band_frac: float,
    raise_band_frac: float,
) -> LimitPlan:
    """Safe commands that move limits towards ``target_w``.

    Args:
        state: Limits now.
        target_w: Per GPU, the policy's target, watts (ignored on stale GPUs).
        usable_w: ``budget - reserve``, watts.
        lower_band_frac: Hysteresis lower band, fraction of TDP.
        raise_band_frac: Hysteresis raise band, fraction of TDP.
    """
    live = ~state.stale
    accounted = state.accounted_w
    commanded = state.commanded_w
    budget_live = usable_w - float(np.sum(accounted[~live]))
    target = np.clip(np.floor(target_w * 1000.0) / 1000.0, state.min_w, state.max_w)
    raw, infeasible = fit_budget(target[live], state.min_w[live], budget_live)
    cur = commanded[live]
    delta = raw - cur
    hold = (delta >= -lower_band_frac * state.tdp_w[live]) & (
        delta <= raise_band_frac * state.tdp_w[live]
    )
    held = np.where(hold, cur, raw)
    if float(np.sum(held)) > budget_live + EPS_W:
        held = np.where(hold & (cur > raw), raw, held)
    new = np.full(len(target_w), np.nan)
    new[live] = held
    lower = live & (new < commanded - EPS_W)
    rise = live & (new > commanded + EPS_W)
    outstanding = live & state.has_pending & (state.pending_w < state.acked_w - EPS_W)
    deferred = False
    if lower.any() or outstanding.any():
        deferred = bool(rise.any())
        send = lower
    else:
        after = np.where(rise, np.fmax(accounted, new), accounted)
        if float(np.sum(after)) <= usable_w + EPS_W:
            send = rise
        else:
            deferred = bool(rise.any())
            send = np.zeros_like(rise)
    out = np.where(send, new, np.nan)
    order = np.flatnonzero(send)
    order = order[np.argsort(out[order] - commanded[order], kind="stable")]
    return LimitPlan(new_w=out, order=order, raises_deferred=deferred, infeasible=infeasible)
