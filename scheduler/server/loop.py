"""The control loop: every control period, observe, ``decide()``, and carry the actions out.

``decide()`` (scheduler/core) holds every safety rule; this loop only feeds it the truth
(acked and pending limits, stale nodes) and executes its actions in the order given.
A node that is stale is accounted at the larger of its commanded maximum and its
fail-safe limit, because its agent may have switched to the fail-safe limit by now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from typing import TYPE_CHECKING

from greenllm.proto.v1 import agent_pb2
from scheduler.core.decide import decide
from scheduler.core.powermodel import PowerModel
from scheduler.core.problem import Policy
from scheduler.core.types import Actions, DecideConfig, GPUState, ObservedState
from scheduler.policies import load_policy
from scheduler.server.jobs import JobRecord, JobTable
from scheduler.server.state import ClusterState
from scheduler.server.views import measure_job

if TYPE_CHECKING:
    from scheduler.server.persist import Persistence

log = logging.getLogger(__name__)

#: Times a job is placed again after lost nodes or failed shards before it is failed.
MAX_RESTARTS = 3
#: A GPU's readings teach the power model once its limit has held this long, seconds.
SETTLED_AFTER_S = 3.0

#: Heartbeats an agent gets per fail-safe timeout (at most one per control step).
HEARTBEATS_PER_TIMEOUT = 5


class ControlLoop:
    """Runs ``decide()`` every control period and executes its actions.

    Args:
        state: The cluster state.
        jobs: The job table.
        decide_config: Tuning of ``decide()``.
    """

    def __init__(
        self, state: ClusterState, jobs: JobTable, decide_config: DecideConfig | None = None
    ) -> None:
        self.state = state
        self.jobs = jobs
        self.decide_config = decide_config or DecideConfig()
        self.policy: Policy = load_policy(state.policy_name)
        #: Set to run a step now instead of at the end of the period.
        self.wake = asyncio.Event()
        self.last_actions = Actions()
        self.steps = 0
        self._load_weights_sent: dict[str, dict[str, float]] = {}
        self._notes_logged: set[str] = set()
        self._heartbeat_interval_s = state.config.failsafe.timeout_s / HEARTBEATS_PER_TIMEOUT
        self._last_heartbeat_s = -math.inf
        #: Throughput and power curves, from the catalog prior refined by telemetry.
        self.power_model = PowerModel()
        self._limit_since: dict[tuple[str, int], tuple[float, float]] = {}
        #: When this controller started, on the state's clock.
        self.started_s = state.clock()
        #: Writes state changes to SQLite after each step (None: nothing is kept).
        self.persistence: Persistence | None = None

    def set_policy(self, name: str) -> None:
        """Switch policy (takes effect at the next step).

        Raises:
            ConfigError: No policy of that name.
        """
        self.policy = load_policy(name)
        self.state.policy_name = name
        self.wake.set()

    async def run(self) -> None:
        """Step forever (until cancelled)."""
        period_s = self.state.config.control_period_s
        while True:
            try:
                self.step()
            except Exception:  # one bad step must not stop the controller
                log.exception("control step failed")
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), period_s)

    def observed(self, now_s: float) -> ObservedState:
        """The cluster as ``decide()`` sees it now."""
        state = self.state
        assigned = self.jobs.assignments()
        rates: dict[str, float] = {}
        for node in state.nodes.values():
            for record in node.shards.values():
                rates[record.shard_id] = record.work_rate()
        gpus = []
        for node in state.nodes.values():
            stale = state.is_stale(node, now_s)
            if not node.gpus:
                for index, gpu_type in enumerate(node.config_gpu_types):
                    # Never registered here: it holds at most its boot-time or current share.
                    failsafe_w = max(
                        state.failsafe_limit_w(gpu_type), state.failsafe_target_w(gpu_type)
                    )
                    gpus.append(
                        GPUState(node.name, index, gpu_type, 0.0, 0.0, failsafe_w, stale=True)
                    )
                continue
            # A stale node holds its commanded limits or (after the fail-safe timeout) its
            # fail-safe limits, switched lowerings first: count it at the larger sum.
            failsafe = stale and sum(g.worst_failsafe_w() for g in node.gpus) > sum(
                max(g.acked_limit_w, g.pending_limit_w() or 0.0) for g in node.gpus
            )
            for g in node.gpus:
                acked_w = g.worst_failsafe_w() if failsafe else g.acked_limit_w
                job_id, shard = assigned.get((node.name, g.index), (None, None))
                latest = g.latest
                gpus.append(
                    GPUState(
                        node=node.name,
                        index=g.index,
                        gpu_type=g.gpu_type,
                        power_w=latest.power_w if latest is not None else 0.0,
                        sm_clock_mhz=latest.sm_clock_mhz if latest is not None else 0.0,
                        acked_limit_w=acked_w,
                        pending_limit_w=g.pending_limit_w(),
                        locked_max_sm_clock_mhz=g.locked_max_sm_clock_mhz,
                        stale=stale,
                        job_id=job_id,
                        shard=shard,
                        work_rate=rates.get(f"{job_id}-{shard}", 0.0) if job_id else 0.0,
                    )
                )
        return ObservedState(
            now_s=now_s,
            budget_w=state.budget_w,
            reserve_w=state.reserve_w,
            gpus=tuple(gpus),
            jobs=tuple(j.job_state() for j in self.jobs.active()),
            power_model=self.power_model,
        )

    def step(self) -> Actions:
        """One control period: observe, decide, execute, and send heartbeats when due."""
        now_s = self.state.clock()
        self._reconcile_jobs(now_s)
        self._sync_failsafe()
        self._mark_running()
        observed = self.observed(now_s)
        self._learn(observed)
        actions = decide(observed, self.decide_config, self.policy)
        self.execute(actions)
        self.last_actions = actions
        self.steps += 1
        if self.persistence is not None:
            self.persistence.sync()
        for note in actions.notes:
            if note not in self._notes_logged:
                self._notes_logged.add(note)
                log.warning("decide: %s", note)
        if now_s - self._last_heartbeat_s >= self._heartbeat_interval_s:
            self._last_heartbeat_s = now_s
            heartbeat = agent_pb2.ControllerMessage(
                heartbeat=agent_pb2.Heartbeat(timestamp_s=time.time())
            )
            for session in self.state.live_sessions():
                session.outbox.put_nowait(heartbeat)
        return actions

    def _sync_failsafe(self) -> None:
        """Bring every live node's fail-safe limits to its share of the budget now (an acked
        command: until the ack, stale accounting counts the higher of old and new)."""
        for node in self.state.nodes.values():
            if node.session is None or not node.gpus:
                continue
            if any(g.pending_failsafe_w for g in node.gpus):
                continue
            target = [self.state.failsafe_target_w(g.gpu_type) for g in node.gpus]
            if any(abs(g.failsafe_w - t) > 1e-6 for g, t in zip(node.gpus, target, strict=True)):
                body = agent_pb2.SetFailsafeLimits(limits_w=target)
                self.state.send(node.name, agent_pb2.Command(set_failsafe_limits=body))

    def _learn(self, observed: ObservedState) -> None:
        """Feed settled readings of training GPUs to the power model: limit unchanged for
        :data:`SETTLED_AFTER_S`, no command pending, node fresh, work being done."""
        kinds = {j.job_id: j for j in observed.jobs}
        for g in observed.gpus:
            held = self._limit_since.get(g.key)
            if held is None or held[0] != g.acked_limit_w:
                self._limit_since[g.key] = (g.acked_limit_w, observed.now_s)
                continue
            job = kinds.get(g.job_id) if g.job_id else None
            if (
                job is None
                or job.kind != "train"
                or g.stale
                or g.pending_limit_w is not None
                or g.work_rate <= 0
                or observed.now_s - held[1] < SETTLED_AFTER_S
            ):
                continue
            power_w = self.state.nodes[g.node].gpus[g.index].average_power_w()
            if power_w is not None:
                self.power_model.observe(
                    g.gpu_type,
                    job.workload,
                    g.acked_limit_w,
                    g.locked_max_sm_clock_mhz,
                    power_w,
                    g.work_rate,
                )

    def _reconcile_jobs(self, now_s: float) -> None:
        """End jobs whose shards all finished; place again jobs that lost a node or a shard
        (a synchronous job restarts whole, from its last checkpoint); give up after
        :data:`MAX_RESTARTS`."""
        for job in self.jobs.active():
            if not job.gpus:
                continue
            states = {}
            for shard, (node, _) in job.gpus.items():
                record = self.state.nodes[node].shards.get(job.shard_id(shard))
                current = record is not None and record.latest.generation == job.generation
                states[shard] = record.latest if current and record else None
            lost = sorted({n for n, _ in job.gpus.values() if self._node_lost(n, now_s)})
            failed = [s for s in states.values() if s is not None and s.state == "failed"]
            if states and all(s is not None and s.state == "done" for s in states.values()):
                self._end(job, "done")
            elif lost or failed:
                why = f"node {', '.join(lost)} lost" if lost else f"shard failed: {failed[0].error}"
                self._restart(job, why)

    def _node_lost(self, name: str, now_s: float) -> bool:
        """No stream from the node for longer than :meth:`lost_after_s` (a node not heard
        from since this controller started is timed from its start)."""
        node = self.state.nodes[name]
        if node.session is not None:
            return False
        last = node.last_telemetry_s if node.last_telemetry_s is not None else self.started_s
        return now_s - last > self.lost_after_s()

    def lost_after_s(self) -> float:
        """How long a node may be gone before its shards are placed elsewhere, seconds (long
        enough for an agent to reconnect after a controller restart)."""
        return max(10.0, 2 * self.state.config.failsafe.timeout_s)

    def _stop_shards(self, job: JobRecord) -> None:
        for shard, (node, _) in sorted(job.gpus.items()):
            stop = agent_pb2.StopShard(shard_id=job.shard_id(shard))
            self.state.send(node, agent_pb2.Command(stop_shard=stop))
        self.state.flush()

    def _end(self, job: JobRecord, state: str) -> None:
        measure = measure_job(self.state, job)
        job.final = (measure.energy_j, measure.work_units)
        job.gpus.clear()
        job.state = state
        log.info("job %s %s", job.job_id, state)
        self.wake.set()

    def _restart(self, job: JobRecord, why: str) -> None:
        if job.restarts >= MAX_RESTARTS:
            log.error("job %s failed: %s (after %d restarts)", job.job_id, why, job.restarts)
            if self.persistence is not None:
                self.persistence.store.add_event(
                    "error", f"{why} after {job.restarts} restarts", job.job_id
                )
            self._stop_shards(job)
            self._end(job, "failed")
            return
        log.warning("job %s: %s; placing it again", job.job_id, why)
        if self.persistence is not None:
            self.persistence.store.add_event(
                "restart", f"{why}; placing it again (restart {job.restarts + 1})", job.job_id
            )
        self._stop_shards(job)
        measure = measure_job(self.state, job)
        job.carried = (measure.energy_j, measure.work_units)
        job.gpus.clear()
        job.energy_start_j.clear()
        job.generation += 1
        job.restarts += 1
        job.state = "pending"
        self.wake.set()

    def _mark_running(self) -> None:
        """A placed job runs once any of its shards of this generation reports progress."""
        for job in self.jobs.active():
            if job.state != "placed":
                continue
            for shard, (node, _) in job.gpus.items():
                record = self.state.nodes[node].shards.get(job.shard_id(shard))
                if record is not None and record.latest.generation == job.generation:
                    job.state = "running"
                    break

    def execute(self, actions: Actions) -> None:
        """Send the actions' commands, in ``decide()``'s order."""
        send = self.state.send
        for p in actions.placements:
            self._place(self.jobs.jobs[p.job_id], p.shard, p.node, p.index)
        for lim in actions.power_limits:
            send(
                lim.node,
                agent_pb2.Command(
                    set_power_limit=agent_pb2.SetPowerLimit(
                        gpu_index=lim.index, power_limit_w=lim.power_limit_w
                    )
                ),
            )
        for lock in actions.clock_locks:
            body = agent_pb2.LockSmClocks(
                gpu_index=lock.index,
                min_sm_clock_mhz=lock.min_sm_clock_mhz,
                max_sm_clock_mhz=lock.max_sm_clock_mhz,
            )
            send(lock.node, agent_pb2.Command(lock_sm_clocks=body))
        for reset in actions.clock_resets:
            body_r = agent_pb2.ResetSmClocks(gpu_index=reset.index)
            send(reset.node, agent_pb2.Command(reset_sm_clocks=body_r))
        self._send_load_weights(actions)
        self.state.flush()

    def _place(self, job: JobRecord, shard: int, node: str, index: int) -> None:
        job.gpus[shard] = (node, index)
        job.state = "placed"
        gpus = self.state.nodes[node].gpus
        window = gpus[index].energy_window if index < len(gpus) else None
        job.energy_start_j[(node, index)] = window[-1][1] if window else None
        start = agent_pb2.StartShard(
            shard_id=job.shard_id(shard),
            job_id=job.job_id,
            gpu_indices=[index],
            spec_json=job.spec_json,
            generation=job.generation,
        )
        self.state.send(node, agent_pb2.Command(start_shard=start))

    def _send_load_weights(self, actions: Actions) -> None:
        """Each node hosting a shard of a job gets the whole job's weights: a replica routes
        by its slice of all of them."""
        per_job: dict[str, dict[str, float]] = defaultdict(dict)
        nodes_of: dict[str, set[str]] = defaultdict(set)
        assigned = self.jobs.assignments()
        for w in actions.load_weights:
            _, shard = assigned.get((w.node, w.index), (w.job_id, None))
            if shard is not None:
                per_job[w.job_id][f"{w.job_id}-{shard}"] = w.weight
                nodes_of[w.job_id].add(w.node)
        per_node: dict[str, dict[str, float]] = defaultdict(dict)
        for job_id, weights in per_job.items():
            for node in nodes_of[job_id]:
                per_node[node].update(weights)
        for node, weights in per_node.items():
            if self._load_weights_sent.get(node) != weights:
                sent = self.state.send(
                    node,
                    agent_pb2.Command(set_load_weights=agent_pb2.SetLoadWeights(weights=weights)),
                )
                if sent is not None:
                    self._load_weights_sent[node] = weights

    def cancel(self, job: JobRecord) -> None:
        """Cancel a job: stop its shards, freeze its ledger and free its GPUs."""
        self._stop_shards(job)
        self._end(job, "cancelled")
