"""What the shell writes to its store, and reads back at start.

Rules:

* an operator's change (budget, policy, a submitted or cancelled job) is written durably
  before it is acknowledged (:meth:`Persister.durable`);
* every GPU's highest possible limit (acked or commanded) and fail-safe limit are written
  before any command that raises them leaves: when that write fails, the raises are taken
  back (lowerings still go out), so a restarted controller never counts a GPU below what it
  may hold;
* when the store cannot write, the controller keeps the cluster safe from memory, keeps
  heartbeats going, refuses new changes (UNAVAILABLE) and says so in status; what it could
  not write is written when the store works again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc

from greenllm.errors import ConfigError
from scheduler.shell.errors import BadInput
from scheduler.shell.jobs import RECENT_ENDED, JobRecord, measure_job, restored_job, stored_job
from scheduler.shell.nodes import GpuRecord
from scheduler.shell.ports import Store, StoredEvent, StoredGpu, StoreError, Write

if TYPE_CHECKING:
    from scheduler.shell.controller import ControllerShell

log = logging.getLogger(__name__)

#: How often the ledger of running jobs is written, seconds.
LEDGER_PERIOD_S = 5.0
#: Events held while the store cannot write; older ones beyond this are dropped.
MAX_HELD_EVENTS = 10_000
#: Slack when comparing limits, watts.
EPS_W = 1e-6
#: How often the store is checked (still the file opened, still readable), seconds.
CHECK_PERIOD_S = 5.0


class Persister:
    """The shell's side of the store.

    Args:
        shell: The shell it persists.
        store: The store.
    """

    def __init__(self, shell: ControllerShell, store: Store) -> None:
        self.shell = shell
        self.store = store
        #: Why the last write failed (None: the store works).
        self.error: str | None = None
        self.events_dropped = 0
        self._events: list[StoredEvent] = []
        self._dirty: set[str] = set()
        self._saved_gpus: dict[tuple[str, int], tuple[float, float]] = {}
        self._ledger_at_s = -LEDGER_PERIOD_S
        self._checked_at_s = -CHECK_PERIOD_S

    # -- start ---------------------------------------------------------------------------
    def restore(self) -> None:
        """Take back settings, jobs and GPU limits.

        Raises:
            StoreError: The store cannot be read.
        """
        shell = self.shell
        snap = self.store.load(RECENT_ENDED)
        settings = snap.settings
        if "budget_w" in settings:
            shell.budget_w = float(settings["budget_w"])
            shell.reserve_w = float(settings.get("reserve_w", shell.reserve_w))
        for name, (_limit_w, reserve_w) in list(shell.domain_limits_w.items()):
            stored_limit = settings.get(f"domain.{name}.limit_w")
            if isinstance(stored_limit, (int, float)):
                stored_reserve = settings.get(f"domain.{name}.reserve_w", reserve_w)
                shell.domain_limits_w[name] = (float(stored_limit), float(stored_reserve))
        policy = settings.get("policy")
        if isinstance(policy, str):
            shell.policy_name = policy
        now_s, wall_s = shell.clock(), shell.wall_clock()
        for stored in snap.jobs:
            try:
                job = restored_job(stored, now_s, wall_s)
            except (ConfigError, ValueError) as exc:
                log.error("stored job %s cannot be read back, left out: %s", stored.job_id, exc)
                continue
            shell.jobs.put(job)
        shell.jobs.last_seq = snap.last_seq
        for g in sorted(snap.gpus, key=lambda g: (g.node, g.index)):
            node = shell.nodes.get(g.node)
            if node is None or g.index != len(node.gpus):
                continue
            node.gpus.append(
                GpuRecord(
                    g.index,
                    g.gpu_type,
                    "",
                    g.min_power_limit_w,
                    g.max_power_limit_w,
                    g.limit_w,
                    g.failsafe_w,
                )
            )
            self._saved_gpus[(g.node, g.index)] = (g.limit_w, g.failsafe_w)
        if snap.jobs or settings:
            log.info(
                "restored %d jobs, budget %g W, policy %s",
                len(shell.jobs.jobs),
                shell.budget_w,
                shell.policy_name,
            )

    # -- bookkeeping ---------------------------------------------------------------------
    def event(self, event: StoredEvent) -> None:
        """Log an event (written with the next step's transaction)."""
        self._events.append(event)
        if len(self._events) > MAX_HELD_EVENTS:
            self.events_dropped += len(self._events) - MAX_HELD_EVENTS
            del self._events[: len(self._events) - MAX_HELD_EVENTS]

    def dirty(self, job: JobRecord) -> None:
        """Write ``job`` with the next step's transaction."""
        self._dirty.add(job.job_id)

    def durable(self, changes: Write, what: str) -> None:
        """Write an operator's change (with what is pending) on disk now.

        Raises:
            BadInput: UNAVAILABLE: the store cannot write (``what`` was not done).
        """
        changes.events[:0] = self._events
        try:
            self.store.write(changes, durable=True)
        except StoreError as exc:
            del changes.events[: len(self._events)]
            self._failed(exc)
            raise BadInput(
                grpc.StatusCode.UNAVAILABLE,
                f"state not saved ({exc.message}): {what}",
            ) from None
        self._events = []
        self.error = None

    # -- every step ----------------------------------------------------------------------
    def step(self, now_s: float) -> None:
        """Write this step's changes; take back raises that could not be written. Every
        :data:`CHECK_PERIOD_S` the store is checked even when nothing is written."""
        shell = self.shell
        if now_s - self._checked_at_s >= CHECK_PERIOD_S:
            self._checked_at_s = now_s
            try:
                self.store.check()
            except StoreError as exc:
                self._failed(exc)
        changes = Write(events=list(self._events))
        raised: list[tuple[str, GpuRecord, tuple[float, float]]] = []
        for node in shell.nodes.values():
            if not node.registered:
                continue
            for g in node.gpus:
                worst = (g.worst_limit_w(), g.worst_failsafe_w())
                saved = self._saved_gpus.get((node.name, g.index))
                if (
                    saved is not None
                    and abs(saved[0] - worst[0]) < EPS_W
                    and abs(saved[1] - worst[1]) < EPS_W
                ):
                    continue
                changes.gpus.append(
                    StoredGpu(
                        node.name,
                        g.index,
                        g.gpu_type,
                        g.min_power_limit_w,
                        g.max_power_limit_w,
                        worst[0],
                        worst[1],
                    )
                )
                if saved is None:
                    # unknown to a restarted controller: counted at its type's maximum then,
                    # unless the config does not list the node's GPUs
                    if not node.config_gpu_types:
                        raised.append((node.name, g, (0.0, 0.0)))
                elif worst[0] > saved[0] + EPS_W or worst[1] > saved[1] + EPS_W:
                    raised.append((node.name, g, saved))
        ledger_due = now_s - self._ledger_at_s >= LEDGER_PERIOD_S
        due = {j.job_id: j for j in shell.jobs.busy()} if ledger_due else {}
        for job_id in self._dirty:  # a waiting job's ledger does not change while it waits
            job = shell.jobs.jobs.get(job_id)
            if job is not None:
                due[job_id] = job
        for job in sorted(due.values(), key=lambda j: j.seq):
            changes.jobs.append(stored_job(job, measure_job(shell.nodes, job)))
        if not changes:
            return
        try:
            self.store.write(changes, durable=bool(raised))
        except StoreError as exc:
            self._failed(exc)
            self._take_back(raised)
            return
        self.error = None
        self._events = []
        self._dirty.clear()
        if ledger_due:
            self._ledger_at_s = now_s
        for row in changes.gpus:
            self._saved_gpus[(row.node, row.index)] = (row.limit_w, row.failsafe_w)

    def _take_back(self, raised: list[tuple[str, GpuRecord, tuple[float, float]]]) -> None:
        """Unqueue this step's commands that would raise a GPU above what is on disk."""
        shell = self.shell
        for node, gpu, (limit_w, failsafe_w) in raised:
            for cmd in list(shell.outbox.get(node, [])):
                action = cmd.WhichOneof("action")
                if action == "set_power_limit" and cmd.set_power_limit.gpu_index == gpu.index:
                    if cmd.set_power_limit.power_limit_w > limit_w + EPS_W:
                        shell.unqueue(node, cmd.command_id)
                elif action == "set_failsafe_limits":
                    limits = cmd.set_failsafe_limits.limits_w
                    if gpu.index < len(limits) and limits[gpu.index] > failsafe_w + EPS_W:
                        shell.unqueue(node, cmd.command_id)

    def _failed(self, exc: StoreError) -> None:
        if self.error != exc.message:
            log.error(
                "cannot write the controller's state: %s (keeping the cluster safe from "
                "memory; changes are refused until it works)",
                exc.message,
            )
        self.error = exc.message
