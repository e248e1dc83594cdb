"""The simulation loop: the live controller's own shell against simulated nodes, in virtual time.

Every step the engine fires the scenario's events (budget changes and job submissions go
through the same operator API as ``greenllm budget set`` and ``greenllm submit``; nodes
crash, partition, reboot, refuse lowerings; the controller is killed and restarted from its
store), delivers what is due on each node's stream, lets the
:class:`~scheduler.shell.controller.ControllerShell` step when it is due, runs the physics,
and records what really happened: power, work, energy, and the sum of the limits the GPUs
really hold against the budget.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from greenllm.devices.catalog import get_spec
from greenllm.proto.v1 import agent_pb2
from scheduler.core.lifecycle import Timeouts
from scheduler.core.problem import Policy
from scheduler.core.types import DecideConfig
from scheduler.shell import operator
from scheduler.shell.controller import ControllerShell
from scheduler.shell.errors import BadInput
from scheduler.shell.memstore import MemoryStore
from scheduler.sim.nodes import SimNode, VirtualClock, embedded_agents
from scheduler.sim.physics_step import Physics
from scheduler.sim.plane import reconnect_s, shell_config, transition_window_s
from scheduler.sim.results import SimResult, TraceWriter, slo_met
from scheduler.sim.scenario import Scenario
from scheduler.sim.transport import Channel, SimSession
from scheduler.sim.world import World

Event = tuple[float, int, str, Any]


class Simulation:
    """One run of a scenario under one policy.

    Args:
        scenario: The scenario.
        base_dir: Folder relative paths in the scenario are taken from.
        policy: The allocation policy.
        policy_name: Its name, for the summary.
        unbounded: Ignore the budget (the reference run for ``throughput_vs_unbounded``).
        trace: Where to write trace rows (None: no trace).
        progress: Called with the fraction done now and then.
        decide_config: Tuning of the controller's decide() (None: the defaults).
    """

    def __init__(
        self,
        scenario: Scenario,
        base_dir: Path,
        policy: Policy,
        policy_name: str,
        unbounded: bool = False,
        trace: TraceWriter | None = None,
        progress: Callable[[float], None] | None = None,
        decide_config: DecideConfig | None = None,
    ) -> None:
        self.sc = scenario
        self.plane = scenario.control
        self.policy = policy
        self.decide_config = decide_config
        self.trace = trace
        self.progress = progress
        self.clock = VirtualClock(0.0)
        self.rng = np.random.default_rng([scenario.seed, 1])
        self.world = World(base_dir, scenario.seed)
        sum_tdp_w = scenario.sum_tdp_w()
        max_w = sum(
            n.count * sum(get_spec(t).max_power_limit_w for t in n.gpu_types())
            for n in scenario.nodes
        )
        self.unbounded = unbounded
        self.budget_w = (
            max_w + scenario.budget.reserve_w if unbounded else scenario.budget.watts(sum_tdp_w)
        )
        self.config = shell_config(scenario, self.budget_w)
        self.layout = self.config.domain_layout()
        self.store = MemoryStore()
        self.shell: ControllerShell | None = self._new_shell()
        factory = embedded_agents()
        interval_s = self.plane.control_period_s
        self.nodes: dict[str, SimNode] = {}
        for spec in scenario.nodes:
            for k, name in enumerate(spec.names()):
                types = spec.gpu_types()
                failsafe = [self.config.failsafe_limit_w(t, node=name) for t in types]
                node = SimNode(
                    name,
                    types,
                    self.world,
                    factory,
                    failsafe,
                    self.plane.failsafe_timeout_s,
                    interval_s,
                    self.plane.power_noise_frac,
                    scenario.seed * 100_003 + k,
                    telemetry_ticks=round(self.plane.control_period_s / self.plane.step_s),
                )
                node.boot(0.0)
                self.nodes[name] = node
        self.sessions: dict[str, SimSession] = {}
        self.physics = Physics(list(self.nodes.values()), self.world)
        self.result = SimResult.empty(policy_name, scenario.duration_s, scenario.jobs)
        self.result.nodes([n.name for n, _ in self.physics.gpus])
        self.ids: dict[str, str] = {}
        self._events: list[Event] = []
        self._seq = 0
        #: Steps taken.
        self.k = 0
        self._schedule()
        self.window_s = transition_window_s(self.plane)

    def _new_shell(self) -> ControllerShell:
        lost_s = self.plane.lost_after_s
        shell = ControllerShell(
            self.config,
            self.store,
            clock=self.clock,
            wall_clock=self.clock,
            timeouts=Timeouts(node_stale_s=lost_s, node_unknown_s=lost_s),
            seed=self.sc.seed,
            stale_after_s=self.plane.stale_after_s,
            policy=self.policy,
            decide_config=self.decide_config,
        )
        return shell

    # -- events --------------------------------------------------------------------------
    def _at(self, t_s: float, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t_s, self._seq, kind, payload))

    def _schedule(self) -> None:
        sc = self.sc
        if not self.unbounded:
            for change in sc.budget.schedule:
                if change.domain is not None:
                    self._at(change.t_s, "domain", (change.domain, change.budget_w))
                else:
                    self._at(change.t_s, "budget", change.watts(sc.sum_tdp_w()))
        for job in sc.jobs:
            for name in job.ids():
                self._at(job.sim.arrive_s, "submit", (job, name))
        for f in sc.failures:
            self._at(f.at_s, f.kind, f)
            if f.recover_s is not None:
                self._at(f.recover_s, f"end-{f.kind}", f)
        for r in sc.controller_restarts:
            self._at(r.at_s, "kill-controller", r)
            self._at(r.at_s + r.down_s, "start-controller", r)

    def _fire(self, t: float) -> None:
        retry: list[Event] = []
        while self._events and self._events[0][0] <= t + 1e-9:
            ev = heapq.heappop(self._events)
            if not self._apply(t, ev[2], ev[3]):
                retry.append(ev)
        for ev in retry:  # the operator tries again once the controller is back
            heapq.heappush(self._events, ev)
        self._retrying = bool(retry)

    def _apply(self, t: float, kind: str, what: Any) -> bool:
        shell = self.shell
        if kind in ("budget", "domain", "submit") and shell is None:
            return False
        if kind == "domain":
            assert shell is not None
            name, limit_w = what
            old_w = self.layout.usable_w[self.layout.names.index(name)]
            new_limit_w, reserve_w = operator.set_domain_limit(shell, name, limit_w, None)
            self.layout = self.layout.with_usable(name, new_limit_w - reserve_w)
            self.result.domain_change(t, name, old_w, new_limit_w - reserve_w)
        elif kind == "budget":
            assert shell is not None
            operator.set_budget(shell, float(what), None)
            self.result.budget_change(t, self.budget_w, float(what))
            self.budget_w = float(what)
        elif kind == "submit":
            assert shell is not None
            job, name = what
            record = operator.submit(shell, job.spec_json(name))
            self.ids[record.job_id] = name
            self.world.add_job(record.job_id, name, job, t, len(self.ids))
        elif kind == "kill-controller":
            if self.shell is not None:
                self.result.controller_down(t, self.window_s)
            self._kill_controller()
        elif kind == "start-controller":
            if self.shell is None:
                self.result.controller_up(t, reconnect_s(self.plane), self.window_s)
            self.shell = self._new_shell()
            for node in self.nodes.values():
                if not node.up:  # Ray still knows which machines are gone
                    self._tell_down(node.name)
        else:
            self._node_event(t, kind, what)
        return True

    def apply_budget(self, t: float, budget_w: float) -> bool:
        """Set the budget now as an operator would (the parent of a controller tree does).

        Returns:
            False when no controller runs to take it.
        """
        return self._apply(t, "budget", budget_w)

    def _node_event(self, t: float, kind: str, f: Any) -> None:
        node = self.nodes[f.node]
        if kind == "crash" and node.up:
            self._disconnect(node.name)
            self.world.node_down(node.name)
            node.crash(t)
            self._tell_down(node.name)
        elif kind == "end-crash" and not node.up:
            node.reboot(t)
            self.physics.rebase(node)
        elif kind == "partition":
            node.partitioned = True
            if node.channel is not None:
                node.channel.cut()
        elif kind == "end-partition":
            node.partitioned = False
        elif kind == "agent_crash" and node.up and node.agent is not None:
            self._disconnect(node.name)
            self.world.node_down(node.name)  # its shards die with it
            node.agent_crash(t)
        elif kind == "end-agent_crash" and node.up and node.agent is None:
            node.boot(t)
        elif kind == "agent_restart" and node.up:
            self._disconnect(node.name)
            node.boot(t)
        elif kind == "refuse_lowering":
            for g in node.gpus:
                g.refuse_below_w = float(f.below_w)
        elif kind == "end-refuse_lowering":
            for g in node.gpus:
                g.refuse_below_w = 0.0
        elif kind == "state_unwritable":
            node.state.fail = "No space left on device"
        elif kind == "end-state_unwritable":
            node.state.fail = None

    def _tell_down(self, name: str) -> None:
        """Tell the controller that node ``name``'s machine is gone, as the live runtime does
        when its Ray node dies (:func:`scheduler.shell.operator.node_down`)."""
        if self.shell is not None:
            operator.node_down(self.shell, name, "its Ray node died")

    def _kill_controller(self) -> None:
        self.shell = None
        self.sessions.clear()
        for node in self.nodes.values():
            if node.channel is not None:
                node.channel.cut()

    def _disconnect(self, name: str) -> None:
        session = self.sessions.pop(name, None)
        if session is not None and self.shell is not None:
            self.shell.disconnect(session)

    # -- streams -------------------------------------------------------------------------
    def _agents(self, t: float) -> None:
        for node in self.nodes.values():
            if not node.up or node.agent is None:
                continue
            ch = node.channel
            if ch is not None and not ch.open and (not node.partitioned or ch.closed_by_controller):
                node.drop_stream(t)
                ch = None
            if ch is None and t >= node.connect_at_s - 1e-9:
                if self.shell is None or node.partitioned:
                    node.drop_stream(t)
                else:
                    ch = node.channel = Channel(
                        node.name,
                        self.plane.ack_delay_s,
                        self.plane.ack_jitter_frac,
                        self.plane.telemetry_delay_s,
                        self.rng,
                    )
                    ch.send_up(t, node.agent.registration())
            if ch is not None:
                for msg in ch.due_down(t):
                    reply = node.agent.on_message(msg, t)
                    if msg.WhichOneof("body") == "registered":
                        node.reconnect.registered()
                    if reply is not None:
                        ch.send_up(t, reply)
            node.agent.check_failsafe(t)
            silent_s = t - node.agent.last_contact_s
            if ch is not None and not ch.open and silent_s > self.plane.failsafe_timeout_s:
                node.drop_stream(t)  # a partitioned agent gives up on its dead stream

    def _controller(self, t: float) -> None:
        shell = self.shell
        if shell is None:
            return
        for node in self.nodes.values():
            ch = node.channel
            if ch is None or not ch.open:
                if node.name in self.sessions and (ch is None or ch.closed_by_controller):
                    self._disconnect(node.name)
                continue
            for msg in ch.due_up(t):
                self._from_agent(shell, node, ch, msg, t)
        if shell.due(t):
            shell.step()
            self.result.decide_cpu_s.append(shell.decide_cpu_s)

    def _from_agent(
        self,
        shell: ControllerShell,
        node: SimNode,
        ch: Channel,
        msg: agent_pb2.AgentMessage,
        t: float,
    ) -> None:
        if msg.WhichOneof("body") == "register":
            session = SimSession(ch, self.clock)
            try:
                shell.register(msg.register, session)
            except BadInput:
                ch.cut()
                return
            self.sessions[node.name] = session
            ch.send_down(
                t,
                agent_pb2.ControllerMessage(
                    registered=agent_pb2.Registered(session_id=session.session_id)
                ),
            )
            return
        current = self.sessions.get(node.name)
        if current is None or current.channel is not ch:
            return
        session = current
        try:
            shell.on_message(session, msg)
        except BadInput:
            ch.cut()
            self._disconnect(node.name)

    def _telemetry(self, t: float) -> None:
        factory = next(iter(self.nodes.values())).factory
        for node in self.nodes.values():
            if not node.up or node.agent is None:
                continue
            full = node.telemetry.add(factory.sample(node.gpus, t))
            ch = node.channel
            if full is not None and ch is not None and ch.open and node.agent.registered:
                ch.send_up(t, node.agent.telemetry(full, t))

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> SimResult:
        """Simulate the whole scenario; returns the metrics."""
        steps = self.steps_total()
        report_every = max(1, steps // 20)
        while self.k < steps:
            self.step()
            if self.progress is not None and self.k % report_every == 0:
                self.progress(self.k / steps)
        return self.finish()

    def steps_total(self) -> int:
        """Steps the scenario takes."""
        return math.ceil(self.sc.duration_s / self.plane.step_s - 1e-9)

    def step(self) -> None:
        """One step of virtual time (events, streams, the controller, physics, records)."""
        dt = self.plane.step_s
        k = self.k
        t = k * dt
        if k == 0:
            self.result.budget_change(0.0, None, self.budget_w)
            self.result.track_domains(self.layout.names, self.layout.usable_w)
        self.clock.t_s = t
        self._fire(t)
        self._agents(t)
        self._controller(t)
        readings = self.physics.step(t, dt)
        self.clock.t_s = t + dt
        for node in self.nodes.values():
            node.set_time(t + dt)
        self._telemetry(t + dt)
        self._finish_jobs(t + dt)
        self.result.step(
            t + dt,
            dt,
            readings,
            self.budget_w,
            self.real_limits_w(),
            self.sc.budget.reserve_w,
            self.window_s,
            [n.up for n, _ in self.physics.gpus],
        )
        if self.layout.names:
            held_w = self.domain_limits_w()
            self.result.domain_step(t + dt, dt, self.layout.names, held_w, self.window_s)
        if self.trace is not None:
            self.trace.record(t + dt, self.physics.gpus, readings)
        self.k += 1

    def domain_limits_w(self) -> list[float]:
        """Per power domain, the limits its powered nodes' GPUs really hold now, watts."""
        out = [0.0] * len(self.layout.names)
        for name, node in self.nodes.items():
            held_w = node.real_limits_w()
            for at in self.layout.chain(name):
                out[at] += held_w
        return out

    def real_limits_w(self) -> float:
        """Sum of the limits the GPUs of powered nodes really hold now, watts."""
        return sum(n.real_limits_w() for n in self.nodes.values())

    def finish(self) -> SimResult:
        """Take the per-job totals; returns the metrics."""
        if self.shell is not None:
            self.result.unmet_slo_reports.update(
                {self.ids.get(j, j): why for j, why in self.shell.unmet_slos.items()}
            )
        why: dict[str, str] = {}
        if self.shell is not None:
            why = {
                self.ids[j.job_id]: j.reason
                for j in self.shell.jobs.jobs.values()
                if j.job_id in self.ids and j.reason.startswith("unplaceable")
            }
        self.result.finish(
            self.world.jobs.values(), slo_met(self.world.jobs.values(), self.sc, why)
        )
        return self.result

    def _finish_jobs(self, t: float) -> None:
        for job in self.world.jobs.values():
            if job.finished_s is not None:
                continue
            shards = self.world.current_shards(job)
            if job.spec.kind == "train":
                total = job.spec.sim.total_samples
                finished = total is not None and job.samples_done >= total - 1e-6
            else:
                arrivals = job.arrivals
                finished = (
                    arrivals is not None
                    and arrivals.ended(t)
                    and not job.backlog
                    and all(s.replica.empty for s in shards)
                )
            if finished:
                job.finished_s = t
                for s in shards:
                    s.state = "done"
