"""What operators and ML engineers ask of the controller: jobs, budget, policy, a node known
down.

Every change is on disk before it is acknowledged. When the state directory cannot be
written, changes are refused with UNAVAILABLE, except a budget cut: lowering is always
safe, so a cut is enforced at once and the answer says it will not survive a restart.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import grpc

from greenllm.errors import ConfigError
from scheduler.core.lifecycle import JOB_TRANSITIONS, JobEvent, JobPhase, allows
from scheduler.policies import load_policy
from scheduler.shell import shortfall, transitions
from scheduler.shell.errors import BadInput
from scheduler.shell.jobs import JobRecord, measure_job, parse_submission, restored_job, stored_job
from scheduler.shell.ports import StoredEvent, Write

if TYPE_CHECKING:
    from scheduler.shell.controller import ControllerShell

log = logging.getLogger(__name__)

CANCELLED = "cancelled by an operator"
#: Longest policy name accepted, characters.
MAX_NAME_CHARS = 200


def submit(shell: ControllerShell, spec_json: str) -> JobRecord:
    """Validate and add a job; it is on disk when this returns.

    Raises:
        BadInput: INVALID_ARGUMENT (a bad spec, naming the field), RESOURCE_EXHAUSTED
            (``controller.max_waiting_jobs`` jobs already wait), UNAVAILABLE (not written).
    """
    spec = parse_submission(spec_json)
    cap = shell.config.controller.max_waiting_jobs
    if shell.jobs.waiting >= cap:
        raise BadInput(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"job {spec.name} was not submitted: {shell.jobs.waiting} jobs already wait for "
            f"GPUs, the most this cluster takes (controller.max_waiting_jobs = {cap}); "
            "submit again once some are placed or cancelled",
        )
    job = shell.jobs.add(spec, spec_json, shell.wall_clock(), shell.clock())
    event = StoredEvent(
        job.submitted_at_s,
        job.job_id,
        "submitted",
        f"job {job.job_id} submitted",
        "job",
        job.job_id,
    )
    changes = Write(jobs=[stored_job(job, measure_job(shell.nodes, job))], events=[event])
    try:
        shell.persist.durable(changes, f"job {spec.name} was not submitted")
    except BadInput:
        shell.jobs.forget(job.job_id)
        shell.jobs.last_seq -= 1
        raise
    shell.wake()
    return job


def cancel(shell: ControllerShell, job_id: str) -> JobRecord:
    """Cancel an active job: its shards stop, its ledger freezes, its GPUs are freed.

    Raises:
        BadInput: NOT_FOUND, FAILED_PRECONDITION (already ended), UNAVAILABLE (not written).
    """
    job = get(shell, job_id)
    if not allows(JOB_TRANSITIONS, job.phase, JobEvent.CANCEL):
        raise BadInput(
            grpc.StatusCode.FAILED_PRECONDITION, f"job {job.job_id} is already {job.phase.value}"
        )
    measure = measure_job(shell.nodes, job)
    ended = replace(
        stored_job(job, measure),
        phase=JobPhase.CANCELLED.value,
        reason=CANCELLED,
        final=True,
        ended_at_s=shell.wall_clock(),
        shards=(),
    )
    event = StoredEvent(
        shell.wall_clock(),
        job.job_id,
        JobPhase.CANCELLED.value,
        f"job {job.job_id} cancelled: {CANCELLED}",
        "job",
        job.job_id,
        job.phase.value,
    )
    shell.persist.durable(
        Write(jobs=[ended], events=[event]), f"job {job.job_id} was not cancelled"
    )
    transitions.end(shell, job, JobPhase.CANCELLED, CANCELLED)
    return job


def get(shell: ControllerShell, job_id: str) -> JobRecord:
    """A job by id, from memory or the store.

    Raises:
        BadInput: NOT_FOUND.
    """
    job = shell.job(job_id)
    if job is not None:
        return job
    stored = shell.persist.store.job(job_id) if len(job_id) <= 200 else None
    if stored is not None:
        try:
            return restored_job(stored, shell.clock(), shell.wall_clock())
        except (ConfigError, ValueError):
            pass
    raise BadInput(grpc.StatusCode.NOT_FOUND, f"no job {job_id[:200]!r}")


def set_budget(
    shell: ControllerShell, budget_w: float, reserve_w: float | None
) -> tuple[float, float]:
    """Set the budget (and reserve); on disk when this returns.

    Raises:
        BadInput: INVALID_ARGUMENT / FAILED_PRECONDITION (impossible values), UNAVAILABLE
            (not written: a cut is enforced anyway, a raise is not).
    """
    reserve_w = shell.reserve_w if reserve_w is None else reserve_w
    if not (math.isfinite(budget_w) and budget_w > 0):
        raise BadInput(grpc.StatusCode.INVALID_ARGUMENT, f"budget_w must be > 0, got {budget_w!r}")
    if not (math.isfinite(reserve_w) and 0 <= reserve_w < budget_w):
        raise BadInput(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"reserve_w must be in [0, budget_w), got {reserve_w!r}",
        )
    floor_w = min_limits_w(shell)
    if budget_w - reserve_w < floor_w:
        raise BadInput(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"budget {budget_w:g} W - reserve {reserve_w:g} W is below the sum of the GPUs' "
            f"minimum power limits ({floor_w:g} W)",
        )
    text = (
        f"budget {budget_w:g} W, reserve {reserve_w:g} W "
        f"(was {shell.budget_w:g} W, {shell.reserve_w:g} W)"
    )
    changes = Write(
        settings={"budget_w": budget_w, "reserve_w": reserve_w},
        events=[StoredEvent(shell.wall_clock(), None, "settings", text)],
    )

    def apply() -> None:
        shell.budget_w, shell.reserve_w = budget_w, reserve_w

    is_cut = budget_w - reserve_w < shell.usable_w
    _durable_change(
        shell, changes, apply, is_cut, "the budget was not changed", f"the cut to {budget_w:g} W"
    )
    return budget_w, reserve_w


def _durable_change(
    shell: ControllerShell,
    changes: Write,
    apply: Callable[[], None],
    is_cut: bool,
    not_changed: str,
    cut: str,
) -> None:
    """Write ``changes``, then ``apply`` them and wake the loop. When the write fails a cut
    is applied anyway (safe: limits only come down) and the error says it will not survive
    a restart; anything else is not applied.

    Raises:
        BadInput: UNAVAILABLE, the write failed.
    """
    try:
        shell.persist.durable(changes, not_changed)
    except BadInput as exc:
        if not is_cut:
            raise
        apply()
        shell.wake()
        raise BadInput(
            grpc.StatusCode.UNAVAILABLE,
            exc.message.replace(
                not_changed, f"{cut} is enforced now but will not survive a controller restart"
            ),
        ) from None
    apply()
    shell.wake()


def set_domain_limit(
    shell: ControllerShell, name: str, limit_w: float, reserve_w: float | None
) -> tuple[float, float]:
    """Set a power domain's limit (and reserve); on disk when this returns.

    Raises:
        BadInput: NOT_FOUND (no such domain), INVALID_ARGUMENT / FAILED_PRECONDITION
            (impossible values), UNAVAILABLE (not written: a cut is enforced anyway, a
            raise is not).
    """
    if name not in shell.domain_limits_w:
        known = (
            ", ".join(sorted(shell.domain_limits_w)) or "none: cluster.yaml has no power_domains"
        )
        raise BadInput(
            grpc.StatusCode.NOT_FOUND, f"no power domain {name[:100]!r} (known: {known})"
        )
    old_limit_w, old_reserve_w = shell.domain_limits_w[name]
    reserve_w = old_reserve_w if reserve_w is None else reserve_w
    if not (math.isfinite(limit_w) and limit_w > 0):
        raise BadInput(grpc.StatusCode.INVALID_ARGUMENT, f"limit_w must be > 0, got {limit_w!r}")
    if not (math.isfinite(reserve_w) and 0 <= reserve_w < limit_w):
        raise BadInput(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"reserve_w must be in [0, limit_w), got {reserve_w!r}",
        )
    at = shell.layout.names.index(name)
    floor_w = min_limits_w(shell, set(shell.layout.nodes_under(at)))
    if limit_w - reserve_w < floor_w:
        raise BadInput(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"domain {name}: limit {limit_w:g} W - reserve {reserve_w:g} W is below the sum of "
            f"its GPUs' minimum power limits ({floor_w:g} W)",
        )
    text = (
        f"domain {name}: limit {limit_w:g} W, reserve {reserve_w:g} W "
        f"(was {old_limit_w:g} W, {old_reserve_w:g} W)"
    )
    changes = Write(
        settings={f"domain.{name}.limit_w": limit_w, f"domain.{name}.reserve_w": reserve_w},
        events=[StoredEvent(shell.wall_clock(), None, "settings", text)],
    )

    def apply() -> None:
        shell.domain_limits_w[name] = (limit_w, reserve_w)

    is_cut = limit_w - reserve_w < old_limit_w - old_reserve_w
    not_changed, cut = "the domain limit was not changed", f"the cut of {name} to {limit_w:g} W"
    _durable_change(shell, changes, apply, is_cut, not_changed, cut)
    return limit_w, reserve_w


def budget_shortfall(shell: ControllerShell, domain: str = "") -> tuple[float, str]:
    """What the budget in force (or power domain ``domain``'s limit) leaves over once every
    GPU that can lower does (see :func:`scheduler.shell.shortfall.budget_shortfall`); a
    shortfall is logged and kept in the event log.

    Returns:
        ``(watts, reason)``; ``(0.0, "")`` when the budget can be met.
    """
    over_w, why = shortfall.budget_shortfall(shell, domain)
    if over_w > 0:
        what = f"budget {shell.budget_w:g} W"
        if domain:
            what = f"domain {domain} limit {shell.domain_limits_w[domain][0]:g} W"
        text = f"{what} cannot be met: {over_w:g} W over; {why}"
        log.warning("%s", text)
        shell.persist.event(StoredEvent(shell.wall_clock(), None, "shortfall", text))
    return over_w, why


def set_policy(shell: ControllerShell, name: str) -> str:
    """Switch the allocation policy (from the next step); on disk when this returns.

    Raises:
        BadInput: NOT_FOUND (no such policy), UNAVAILABLE (not written).
    """
    try:
        if len(name) > MAX_NAME_CHARS:
            raise ConfigError(f"unknown policy {name[:40]!r}... ({len(name)} characters)")
        policy = load_policy(name)
    except ConfigError as exc:
        raise BadInput(grpc.StatusCode.NOT_FOUND, str(exc)) from None
    changes = Write(
        settings={"policy": name},
        events=[StoredEvent(shell.wall_clock(), None, "settings", f"policy {name}")],
    )
    shell.persist.durable(changes, "the policy was not changed")
    shell.policy, shell.policy_name = policy, name
    shell.wake()
    return name


def node_down(shell: ControllerShell, name: str, reason: str) -> bool:
    """Say that node ``name`` is powered off (its machine is gone, or an operator knows it is
    off): its GPUs draw nothing and its agent boots at no more than its fail-safe limits,
    so from now on it is counted at the lower of its last limits and its fail-safe limits,
    and its shards are placed elsewhere at once. Until then a silent node is counted at the
    limits it may still hold, however long it stays silent.

    It holds until the node's agent registers again. It is not written to disk: a restarted
    controller counts the node at its persisted limits until it registers or is said to be
    down again (the safe side).

    Args:
        shell: The controller.
        name: The node.
        reason: Why it is known down (an operator's word, a Ray node's death), for the log.

    Returns:
        True when this call marked it down (False: it was already).

    Raises:
        BadInput: NOT_FOUND (no such node), FAILED_PRECONDITION (its agent is connected and
            reporting: it is not down).
    """
    node = shell.nodes.get(name)
    if node is None:
        known = ", ".join(sorted(shell.nodes)) or "none"
        raise BadInput(grpc.StatusCode.NOT_FOUND, f"no node {name[:100]!r} (nodes: {known})")
    if node.session is not None and node.fresh(shell.listen_now()):
        raise BadInput(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"node {name} is connected and reporting telemetry: it is not down",
        )
    if node.down_reason:
        return False
    node.down_reason = reason[:500] or "down"
    text = f"node {name} is down ({node.down_reason}): counted at its fail-safe limits"
    shell.persist.event(StoredEvent(shell.wall_clock(), None, "node_down", text, "node", name))
    shell.wake()
    return True


def min_limits_w(shell: ControllerShell, only: set[str] | None = None) -> float:
    """Sum of every GPU's lowest limit (reported, else the catalog's), watts; of the GPUs
    on the nodes ``only`` names when given."""
    from greenllm.devices.catalog import get_spec

    total = 0.0
    for node in shell.nodes.values():
        if only is not None and node.name not in only:
            continue
        if node.gpus:
            total += sum(g.min_power_limit_w for g in node.gpus)
        else:
            total += sum(get_spec(t).min_power_limit_w for t in node.config_gpu_types)
    return total
