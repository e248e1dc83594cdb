"""The controller shell: one control step, and what agents and operators tell it.

A step: expire overdue acks; ``reconcile()`` lifecycles; bring fail-safe limits to the
budget; account every GPU safely and ``decide()``; turn the actions into commands;
persist what a restart must know (every raise is on disk before it is sent); send each
node its commands in one batch, and heartbeats. The live controller calls :meth:`step`
from its event loop, the simulator from its virtual clock; both hand agent messages to
:meth:`register` and :meth:`on_message`, and operator requests to :mod:`scheduler.shell.operator`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace

import grpc
import numpy as np

from greenllm.config import ClusterConfig
from greenllm.power_domains import DomainLayout
from greenllm.proto.v1 import agent_pb2
from scheduler.core.decide import decide
from scheduler.core.lifecycle import NODE_TRANSITIONS, NodeEvent, Timeouts
from scheduler.core.powermodel import PowerModel
from scheduler.core.problem import Policy
from scheduler.core.types import Actions, DecideConfig, ObservedState
from scheduler.policies import load_policy
from scheduler.shell import execute, transitions
from scheduler.shell.cpubound import note_cpu_bound
from scheduler.shell.errors import BadInput
from scheduler.shell.failsafe import failsafe_targets
from scheduler.shell.follow import BudgetFollower
from scheduler.shell.grid import GridBooks
from scheduler.shell.idle import IdleBooks
from scheduler.shell.jobs import (
    JobRecord,
    JobTable,
    ShardRecord,
    fill_energy_bases,
    measure_job,
    placeable,
)
from scheduler.shell.learning import learn
from scheduler.shell.ledger import Ledger
from scheduler.shell.nodes import NodeRecord
from scheduler.shell.observed import gpu_states, job_state
from scheduler.shell.persist import Persister
from scheduler.shell.ports import Session, Store, StoredEvent

log = logging.getLogger(__name__)

#: Heartbeats an agent gets per fail-safe timeout.
HEARTBEATS_PER_TIMEOUT = 5
#: Telemetry older than this many telemetry intervals makes a node stale (at least 1 s).
STALE_INTERVALS = 5
#: Steps whose duration is kept (for the step-time percentiles in status).
STEP_TIMES_KEPT = 40
#: A GPU that refused a lowering is planned at its limit for this long, then tried again, s.
REFUSAL_RETRY_S = 60.0


def default_stale_after_s(config: ClusterConfig) -> float:
    """Seconds without telemetry after which a node counts as stale."""
    return max(1.0, STALE_INTERVALS * config.telemetry_interval_s)


class ControllerShell:
    """The controller's state and its control step.

    Args:
        config: The cluster config.
        store: Where state is persisted (read back at construction).
        clock: Monotonic clock, seconds (virtual in the simulator).
        wall_clock: Unix time, seconds (for the event log and job times).
        decide_config: Tuning of ``decide()``.
        timeouts: Lifecycle state timeouts (default: from the fail-safe timeout).
        seed: Seed of the controller's own random stream (sampling what it learns from).
        stale_after_s: Telemetry older than this makes a node stale (default: from the
            telemetry interval).
        policy: The allocation policy (default: the persisted or configured one, by name).

    Raises:
        StoreError: The store cannot be read.
    """

    def __init__(
        self,
        config: ClusterConfig,
        store: Store,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        decide_config: DecideConfig | None = None,
        timeouts: Timeouts | None = None,
        seed: int = 0,
        stale_after_s: float | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.wall_clock = wall_clock
        self.decide_config = decide_config or DecideConfig(
            demand_points=config.controller.demand_points
        )
        self.timeouts = timeouts or Timeouts.for_failsafe(config.failsafe.timeout_s)
        self.stale_after_s = (
            stale_after_s if stale_after_s is not None else default_stale_after_s(config)
        )
        self.period_s = config.control_period_s
        self.heartbeat_s = config.failsafe.timeout_s / HEARTBEATS_PER_TIMEOUT
        self.ack_timeout_s = max(5.0, 10 * self.period_s)
        self.budget_w = config.budget.budget_w
        self.reserve_w = config.budget.reserve_w
        #: The power tree's shape; each domain's limit and reserve now, by name (watts).
        self.layout = config.domain_layout()
        self.domain_limits_w: dict[str, tuple[float, float]] = {
            d.name: (d.limit_w, d.reserve_w) for top in config.power_domains for d, _ in top.walk()
        }
        self.policy_name = config.policy
        now_s = clock()
        self.started_s = now_s
        self.nodes = {
            n.name: NodeRecord(
                n.name, n.gpu_types(), phase_since_s=now_s, stale_after_s=self.stale_after_s
            )
            for n in config.nodes
        }
        self.ledger = Ledger(self.nodes)
        self.jobs = JobTable()
        #: Shards of earlier generations or ended jobs, until they have stopped.
        self.stopping: dict[tuple[str, int, int], ShardRecord] = {}
        #: When a StopShard last went out: ``(node, shard id, generation)`` -> seconds.
        self.orphan_stops: dict[tuple[str, str, int], float] = {}
        #: Jobs whose SLO decide() says the budget cannot meet, with why.
        self.unmet_slos: dict[str, str] = {}
        #: What GPUs drew while no job held them, per node (see :mod:`.idle`).
        self.idle = IdleBooks()
        #: StartShard commands awaiting their ack, by command id.
        self.start_commands: dict[int, ShardRecord] = {}
        #: Per job, the load weights last sent, and the nodes they went to.
        self.weights_sent: dict[str, tuple[dict[str, float], set[str]]] = {}
        #: Base URL of the inference ingress (``http://host:port``; "" while none serves):
        #: job J's API is ``<ingress_url>/jobs/J/v1``.
        self.ingress_url = ""
        self.power_model = PowerModel()
        self.rng = np.random.default_rng([seed, 0x5EED])
        self.last_actions = Actions()
        self.steps = 0
        #: CPU seconds the last decide() took.
        self.decide_cpu_s = 0.0
        #: Clock seconds spent inside control steps since start (see :meth:`listen_now`).
        self.blocked_s = 0.0
        #: Wall seconds of the recent steps.
        self.step_wall_s: deque[float] = deque(maxlen=STEP_TIMES_KEPT)
        self.refused_lowerings = 0
        #: Commands of this step per node, sent together by :meth:`flush`.
        self.outbox: dict[str, list[agent_pb2.Command]] = {}
        self.persist = Persister(self, store)
        self.persist.restore()
        self.policy: Policy = policy if policy is not None else load_policy(self.policy_name)
        #: The grid signal and each job's gCO2e and cost (see :mod:`.grid`).
        self.grid = GridBooks.for_config(self, config, self.persist.restored_settings)
        #: ``budget.follow``: the budget that follows the signal (None: not configured).
        self.follower = BudgetFollower(config.budget.follow) if config.budget.follow else None
        self._wake = False
        self._early_step_used = False
        self._last_step_s = -np.inf
        self._notes_logged: set[str] = set()
        #: Called when something asks for an early step (the live loop wakes on it).
        self.on_wake: Callable[[], None] = lambda: None
        #: Receives shards' output from telemetry (node, chunks); the live server keeps it.
        self.on_logs: Callable[[str, Sequence[agent_pb2.LogChunk]], None] = lambda _n, _c: None

    # -- scheduling ----------------------------------------------------------------------
    @property
    def usable_w(self) -> float:
        """Budget minus reserve, watts."""
        return self.budget_w - self.reserve_w

    @property
    def domains(self) -> DomainLayout | None:
        """The power tree with each domain's usable watts now (None: no tree)."""
        if not self.layout.names:
            return None
        usable = tuple(
            lim - res for lim, res in map(self.domain_limits_w.__getitem__, self.layout.names)
        )
        return replace(self.layout, usable_w=usable)

    def wake(self) -> None:
        """Ask for a step before the period ends (at most one early step per period)."""
        self._wake = True
        self.on_wake()

    def due(self, now_s: float) -> bool:
        """Whether a step should run now: the period has passed, or a wake came and no early
        step was taken this period."""
        if now_s - self._last_step_s >= self.period_s - 1e-9:
            return True
        return self._wake and not self._early_step_used

    def wait_s(self, now_s: float) -> float:
        """Seconds until the next step is due (0: now)."""
        return 0.0 if self.due(now_s) else self._last_step_s + self.period_s - now_s

    # -- agents --------------------------------------------------------------------------
    def register(
        self,
        msg: agent_pb2.Register,
        session: Session,
        peer_address: str = "",
        identity: str | None = None,
    ) -> NodeRecord:
        """An agent opened its stream and registered.

        Args:
            msg: Its registration.
            session: Its stream.
            peer_address: The address the stream comes from (when it names none).
            identity: The node its credential belongs to (None: the credential names no
                node); an agent may register only as itself.

        Raises:
            BadInput: The registration is refused (see :meth:`Ledger.register`);
                PERMISSION_DENIED when the credential belongs to another node.
        """
        if identity is not None and identity != msg.node:
            raise BadInput(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the credential of node {identity[:100]!r} cannot register node "
                f"{msg.node[:100]!r}",
            )
        now_s, listen_s = self.clock(), self.listen_now()
        node, remarks = self.ledger.register(
            msg, session, self.stale_after_s, now_s, peer_address, listen_s
        )
        node.down_reason = ""  # it reports again: not down
        old = node.phase
        node.phase = NODE_TRANSITIONS[(old, NodeEvent.REGISTERED)]
        node.phase_since_s = listen_s
        node.last_sent_s = now_s
        for _, nodes in self.weights_sent.values():
            nodes.discard(node.name)
        self.persist.event(
            StoredEvent(
                self.wall_clock(),
                None,
                node.phase.value,
                f"node {node.name} registered",
                "node",
                node.name,
                old.value,
            )
        )
        for remark in remarks:
            log.warning("%s", remark)
            self.persist.event(
                StoredEvent(self.wall_clock(), None, "limit-above-commanded", remark)
            )
        self.wake()
        return node

    def disconnect(self, session: Session) -> None:
        """An agent's stream ended (its node is stale until it registers again)."""
        if self.ledger.disconnect(session):
            self.wake()

    def on_message(self, session: Session, message: agent_pb2.AgentMessage) -> None:
        """Telemetry or acks from a registered agent.

        Raises:
            BadInput: The message is refused (the stream should end with its status).
        """
        kind = message.WhichOneof("body")
        if kind == "telemetry":
            self.ledger.ingest(session, message.telemetry, self.clock(), self.listen_now())
            if message.telemetry.logs:
                self.on_logs(session.node, message.telemetry.logs)
        elif kind == "acks":
            for ack in message.acks.acks:
                self._on_ack(session, ack)
            if self.last_actions.raises_deferred and not self.ledger.power_commands_pending():
                self.wake()
        else:
            raise BadInput(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"node {session.node}: unexpected {kind or 'empty message'} after register",
            )

    def _on_ack(self, session: Session, ack: agent_pb2.CommandAck) -> None:
        result = self.ledger.on_ack(session, ack)
        cmd = result.command
        if cmd.action == "start_shard":
            transitions.start_acked(
                self, ack.command_id, "" if ack.success else ack.reason or "refused"
            )
        elif result.refused_lowering:
            gpu = self.nodes[cmd.node].gpus[cmd.gpu_index]
            gpu.floor_w = gpu.refused_w = gpu.acked_limit_w
            gpu.floor_until_s = self.clock() + REFUSAL_RETRY_S
            gpu.refused_reason = (ack.reason or "no reason given")[:200]
            self.refused_lowerings += 1
            self.wake()
            text = (
                f"node {cmd.node} GPU {cmd.gpu_index} refused a lowering to {cmd.value:g} W "
                f"({ack.reason or 'no reason given'}): planned at {gpu.acked_limit_w:g} W, the "
                f"rest of the cluster makes room"
            )
            log.warning("%s", text)
            self.persist.event(StoredEvent(self.wall_clock(), None, "refused", text))
        elif not ack.success:
            log.debug("node %s: %s failed: %s", cmd.node, cmd.action, ack.reason)

    # -- the step ------------------------------------------------------------------------
    def listen_now(self) -> float:
        """The controller's listening time: its clock, less the time spent in control steps
        (messages wait while a step runs). Node contact and node timeouts are measured in
        it, so a slow step never makes healthy nodes look silent."""
        return self.clock() - self.blocked_s

    def step(self) -> Actions:
        """One control step (see the module docstring)."""
        started, clock_s = time.perf_counter(), self.clock()
        try:
            return self._step()
        finally:
            self.step_wall_s.append(time.perf_counter() - started)
            self.blocked_s += max(0.0, self.clock() - clock_s)

    def _step(self) -> Actions:
        now_s = self.clock()
        early = now_s - self._last_step_s < self.period_s - 1e-9
        self._early_step_used = early
        self._wake = False
        self._last_step_s = now_s
        for name in self.ledger.overdue(self.listen_now(), self.ack_timeout_s):
            session = self.nodes[name].session
            if session is not None:
                log.warning(
                    "node %s: commands unacked for %g s; ending its stream",
                    name,
                    self.ack_timeout_s,
                )
                session.close(f"commands unacked for {self.ack_timeout_s:g} s")
                self.ledger.disconnect(session)
        for node in self.nodes.values():
            for g in node.gpus:
                if g.floor_w is not None and now_s >= g.floor_until_s:
                    g.floor_w = None
        for cid in [c for c in self.start_commands if c not in self.ledger.pending]:
            del self.start_commands[cid]  # its stream ended: the shard times out
        for job in self.jobs.active():
            fill_energy_bases(self.nodes, job)
        transitions.reconcile_step(self, now_s)
        if self.follower is not None:
            self.follower.step(self)
        self._sync_failsafe(now_s)
        observed = self.observed(now_s)
        self.grid.step()
        self.idle.book(self.nodes, self.held_gpus(observed), now_s)
        note_cpu_bound(self)
        learn(self.power_model, observed, self.nodes, self.rng)
        started_s = time.process_time()
        actions = decide(observed, self.decide_config, self.policy)
        self.decide_cpu_s = time.process_time() - started_s
        execute.carry_out(self, actions, now_s)
        self.persist.step(now_s)
        self.flush(now_s)
        self._note_bound_domains(self.last_actions.bound_domains, actions.bound_domains)
        self.last_actions = actions
        self.steps += 1
        self.jobs.trim()
        for note in actions.notes:
            if note not in self._notes_logged:
                self._notes_logged.add(note)
                log.warning("decide: %s", note)
        return actions

    def _note_bound_domains(self, before: tuple[str, ...], now: tuple[str, ...]) -> None:
        """An event when a power domain starts or stops binding."""
        for name in sorted(set(now) - set(before)):
            limit_w, reserve_w = self.domain_limits_w[name]
            text = (
                f"domain {name} binds: its GPUs want more than its limit {limit_w:g} W "
                f"- reserve {reserve_w:g} W allows"
            )
            log.info("%s", text)
            self.persist.event(StoredEvent(self.wall_clock(), None, "domain-bound", text))
        for name in sorted(set(before) - set(now)):
            text = f"domain {name} no longer binds"
            self.persist.event(StoredEvent(self.wall_clock(), None, "domain-released", text))

    def held_gpus(self, observed: ObservedState) -> set[tuple[str, int]]:
        """GPUs a job holds now: a shard of it runs there, not a drained replica."""
        parked = {gpu for job in self.jobs.active() for gpu in job.parked_since_j}
        return {
            (g.node, g.index)
            for g in observed.gpus
            if g.job_id is not None and (g.node, g.index) not in parked
        }

    def observed(self, now_s: float) -> ObservedState:
        """The cluster as ``decide()`` sees it now."""
        assigned: dict[tuple[str, int], tuple[str, int, float]] = {}
        reserved = {(s.node, s.index) for s in self.stopping.values() if not s.phase.ended}
        jobs = []
        for job in self.jobs.busy():
            measure = measure_job(self.nodes, job)
            jobs.append(job_state(job, measure, now_s, self.period_s))
            for shard in job.shards.values():
                report = self.nodes[shard.node].shards.get(shard.shard_id)
                rate = report.work_rate() if report is not None else 0.0
                assigned[(shard.node, shard.index)] = (job.job_id, shard.rank, rate)
        gpus = tuple(gpu_states(self.nodes, assigned, reserved, self.boot_limit_w))
        for job in placeable(self.jobs.queue(), gpus):
            jobs.append(job_state(job, measure_job(self.nodes, job), now_s, self.period_s))
        return ObservedState(
            now_s=now_s,
            budget_w=self.budget_w,
            reserve_w=self.reserve_w,
            gpus=gpus,
            jobs=tuple(jobs),
            power_model=self.power_model,
            domains=self.domains,
        )

    def boot_limit_w(self, gpu_type: str, node: str) -> float:
        """The limit an agent that never registered boots a GPU at (its config share), W."""
        return self.config.failsafe_limit_w(gpu_type, node=node)

    def _sync_failsafe(self, now_s: float) -> None:
        """Bring connected nodes' fail-safe limits to their share of the budget now."""
        for name, target in failsafe_targets(self.nodes, self.usable_w, self.domains).items():
            node = self.nodes[name]
            if any(g.pending_failsafe_w for g in node.gpus):
                continue
            if any(abs(g.failsafe_w - t) > 1e-6 for g, t in zip(node.gpus, target, strict=True)):
                body = agent_pb2.SetFailsafeLimits(limits_w=target)
                self.queue(name, agent_pb2.Command(set_failsafe_limits=body), now_s)

    # -- commands ------------------------------------------------------------------------
    def queue(self, node: str, command: agent_pb2.Command, now_s: float) -> int | None:
        """Record ``command`` as pending and hold it for this step's batch to ``node``.

        Returns:
            Its command id (None: the node has no stream; nothing was queued).
        """
        cid = self.ledger.send(node, command, self.listen_now())
        if cid is not None:
            self.outbox.setdefault(node, []).append(command)
        return cid

    def unqueue(self, node: str, cid: int) -> None:
        """Take back a command queued this step (it is not sent and no longer pending)."""
        self.outbox[node] = [c for c in self.outbox.get(node, []) if c.command_id != cid]
        if cid in self.ledger.pending:
            self.ledger._drop(cid)

    def flush(self, now_s: float) -> None:
        """Send each node its batch, in order; heartbeats to nodes that got nothing lately."""
        for name, commands in self.outbox.items():
            session = self.nodes[name].session
            if commands and session is not None:
                session.deliver(
                    agent_pb2.ControllerMessage(commands=agent_pb2.CommandBatch(commands=commands))
                )
                self.nodes[name].last_sent_s = now_s
        self.outbox = {}
        beat = None
        for node in self.nodes.values():
            if node.session is not None and now_s - node.last_sent_s >= self.heartbeat_s:
                if beat is None:
                    beat = agent_pb2.ControllerMessage(
                        heartbeat=agent_pb2.Heartbeat(timestamp_s=self.wall_clock())
                    )
                node.session.deliver(beat)
                node.last_sent_s = now_s

    def job(self, job_id: str) -> JobRecord | None:
        """An active or recently ended job by id (None: not in memory)."""
        return self.jobs.jobs.get(job_id)
