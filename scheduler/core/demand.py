"""A controller's demand curve: how much value (priority-weighted throughput, as the
max-throughput policy counts it) its GPUs would make of each total of watts.

A parent in a controller tree (:mod:`scheduler.tree.parent`) splits its budget among child
controllers along these curves. A policy that can value watts gives one
(``Policy.demand_curve``); decide() asks for it when ``DecideConfig.demand_points`` > 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DemandCurve:
    """Concave, rising: ``value[i]`` at ``watts[i]`` of summed limits.

    Attributes:
        watts: Summed limits, from the floor (every GPU at its minimum, stale GPUs at what
            they may hold) up to what the work can use, watts.
        value: Value at each, from 0.
    """

    watts: tuple[float, ...]
    value: tuple[float, ...]

    @staticmethod
    def from_segments(floor_w: float, dw: np.ndarray, dv: np.ndarray, points: int) -> DemandCurve:
        """The curve of upgrade segments (watts, value each), steepest first, thinned to
        about ``points`` points (thinning a concave curve keeps it concave)."""
        keep = dw > 0
        dw, dv = dw[keep], dv[keep]
        order = np.argsort(-dv / np.where(dw > 0, dw, 1.0), kind="stable")
        watts = floor_w + np.concatenate(([0.0], np.cumsum(dw[order])))
        value = np.concatenate(([0.0], np.cumsum(dv[order])))
        if len(watts) > points > 1:
            pick = np.unique(np.linspace(0, len(watts) - 1, points).round().astype(int))
            watts, value = watts[pick], value[pick]
        return DemandCurve(tuple(watts.tolist()), tuple(value.tolist()))
