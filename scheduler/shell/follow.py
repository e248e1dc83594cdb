"""``budget.follow``: a budget that follows the grid signal.

At the first control step and at each new interval of the signal (and when the signal runs
out), the controller takes the budget the follow map gives for the signal's value then
(between its floor and ceiling) and sets it through :func:`scheduler.shell.operator.set_budget`,
the path an operator's ``budget set`` takes: on disk first, a cut lowers limits before any
raise, and the invariant holds as for any budget change. An operator's budget set by hand
holds until the signal's next interval. Each change is an event (``budget-follow``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from greenllm.config import BudgetFollow
from scheduler.shell import operator
from scheduler.shell.errors import BadInput
from scheduler.shell.ports import StoredEvent

if TYPE_CHECKING:
    from scheduler.shell.controller import ControllerShell

log = logging.getLogger(__name__)

#: Budgets closer than this are the same, watts.
SAME_W = 1e-6


class BudgetFollower:
    """Re-evaluates the followed budget once per signal interval.

    Args:
        follow: The ``budget.follow`` section.
    """

    def __init__(self, follow: BudgetFollow) -> None:
        self.follow = follow
        #: ``(interval index, ran out)`` last evaluated (None: not yet).
        self.evaluated: tuple[int, bool] | None = None
        #: The budget the map gave last, watts (None: not yet).
        self.target_w: float | None = None
        #: The signal value it was given for (gCO2e/kWh or price per kWh).
        self.value: float | None = None

    def describe(self) -> str:
        """One line for status: what the budget follows, and its value now."""
        f = self.follow
        unit = "gCO2e/kWh" if f.signal == "intensity" else "per kWh"
        text = f"follows {f.signal} ({f.map} map, floor {f.floor_w:g} W, ceiling {f.ceiling_w:g} W)"
        if self.value is not None and self.target_w is not None:
            text += f": {self.value:g} {unit} -> {self.target_w:g} W"
        return text

    def step(self, shell: ControllerShell) -> None:
        """Set the budget for the signal's value when a new interval began."""
        grid = shell.grid
        key = (grid.interval_now(), grid.ran_out())
        if key == self.evaluated:
            return
        value = grid.intensity_now() if self.follow.signal == "intensity" else grid.price_now()
        if value is None:
            return
        self.evaluated = key
        self.value = value
        target_w = self.follow.budget_w(value)
        self.target_w = target_w
        if abs(target_w - shell.budget_w) < SAME_W:
            return
        was_w = shell.budget_w
        try:
            operator.set_budget(shell, target_w, None)
        except BadInput as exc:
            # UNAVAILABLE on a cut: enforced anyway (not persisted); a raise waits for the
            # next interval. Anything else: the budget is unchanged.
            log.error("budget.follow: %s", exc.message)
            text = f"budget.follow could not set {target_w:g} W: {exc.message}"
            shell.persist.event(StoredEvent(shell.wall_clock(), None, "budget-follow", text))
            return
        text = (
            f"budget follows the grid: {self.follow.signal} {value:g} -> {target_w:g} W "
            f"(was {was_w:g} W)"
        )
        if key[1]:
            text += "; the signal ran out, its last value holds"
        log.info("%s", text)
        shell.persist.event(StoredEvent(shell.wall_clock(), None, "budget-follow", text))
