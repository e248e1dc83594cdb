"""The three budget breaks found in the controller shell, each driven through the shared shell
with the in-memory transport, checking the limits the simulated GPUs really hold."""

from __future__ import annotations

from typing import Any

from shellkit import CONTROL, two_node_sim

from scheduler.shell import operator
from scheduler.shell.jobs import measure_job
from scheduler.sim.engine import Simulation

TRAIN = {
    "name": "t",
    "kind": "train",
    "shards": 2,
    "gpu_types": ["H100-SXM"],
    "train": {"seq_len": 2048},
}


def sim(duration_s: float, **extra: Any) -> Simulation:
    return two_node_sim(duration_s, TRAIN, **extra)


def run_until(s: Simulation, t_s: float) -> None:
    while s.k * s.plane.step_s < t_s - 1e-9:
        s.step()


def limits(s: Simulation, node: str) -> list[float]:
    return [g.power_limit_w() for g in s.nodes[node].gpus]


def test_restarted_controller_counts_an_unregistered_node_at_its_persisted_limits() -> None:
    """Break (a): a node not re-registered after a controller restart was counted at its
    fail-safe share, not at the limits it held, and the others were raised into the gap."""
    first = {**TRAIN, "priority": 3}  # on "busy", at its maximum
    second = {**TRAIN, "name": "u", "priority": 1}  # on "idle", with what is left
    control = {**CONTROL, "failsafe_timeout_s": 3.0, "lost_after_s": 5.0}
    s = sim(
        14.0,
        jobs=[first, second],
        control=control,
        failures=[{"node": "busy", "kind": "partition", "at_s": 6.0, "recover_s": 13.0}],
        controller_restarts=[{"at_s": 6.2, "down_s": 0.3}],
    )
    run_until(s, 6.0)
    assert sum(limits(s, "busy")) > 1.2 * sum(limits(s, "idle")), "the first job holds more"
    while s.k * s.plane.step_s < 14.0:
        s.step()
        assert s.real_limits_w() <= 2000 + 1e-6, (s.k, limits(s, "busy"), limits(s, "idle"))
    assert s.result.limits_over_budget_s == 0.0


def test_nodes_restarted_while_the_controller_is_down_boot_within_the_current_budget() -> None:
    """Break (b): an agent restarted while the controller was down booted at its share of the
    config's budget, not the operator's current one (here: one agent restarts, and one node
    reboots, its GPUs back at their default limits until its agent boots)."""
    s = sim(
        12.0,
        failures=[
            {"node": "idle", "kind": "agent_restart", "at_s": 6.0},
            {"node": "busy", "kind": "crash", "at_s": 6.5, "recover_s": 7.0},
        ],
        controller_restarts=[{"at_s": 4.0, "down_s": 6.0}],
    )
    run_until(s, 2.0)
    assert s.shell is not None
    operator.set_budget(s.shell, 1000.0, None)  # the operator's cut, after the config's 2000 W
    s.result.budget_change(2.0, s.budget_w, 1000.0)
    s.budget_w = 1000.0
    while s.k * s.plane.step_s < 12.0:
        s.step()
        if s.k * s.plane.step_s > 2.0 + s.window_s:
            assert s.real_limits_w() <= 1000 + 1e-6, (s.k, limits(s, "busy"), limits(s, "idle"))


def test_a_refused_lowering_is_compensated_by_the_rest_of_the_cluster() -> None:
    """Break (c): a GPU that refused a lowering was never compensated: the cluster stayed over
    budget, every raise stayed deferred, and the loop spun on every ack."""
    wide = {**TRAIN, "shards": 4}  # on both nodes: 500 W a GPU under 2,000 W
    s = sim(
        10.0,
        jobs=[wide],
        failures=[{"node": "busy", "kind": "refuse_lowering", "at_s": 0.0, "below_w": 400.0}],
        budget={"budget_w": 2000, "reserve_w": 0, "schedule": [{"t_s": 4.0, "budget_w": 1500}]},
    )
    result = s.run()
    assert result.limits_over_budget_s == 0.0
    held = limits(s, "busy") + limits(s, "idle")
    assert min(limits(s, "busy")) >= 400 and sum(held) <= 1500 + 1e-6, held
    assert s.shell is not None and s.shell.refused_lowerings > 0
    periods = 10.0 / s.plane.control_period_s
    assert s.shell.steps <= 2 * periods + 5, "acks wake the loop at most once per period"
    assert "refused" in [e.kind for e in s.store.event_log]


def accounted_w(s: Simulation, node: str) -> float:
    """The limits the controller counts ``node``'s GPUs at, watts."""
    assert s.shell is not None
    return sum(
        g.accounted_limit_w for g in s.shell.observed(s.shell.clock()).gpus if g.node == node
    )


def test_a_node_whose_agent_died_is_counted_at_the_limits_its_gpus_still_hold() -> None:
    """Issue 19 (a): a node whose agent died (its machine up, its GPUs at the limits they were
    given) was counted at its fail-safe share once lost, which nobody applied, and the rest
    of the cluster was raised into the gap: real limits over the budget until it came back."""
    first = {**TRAIN, "priority": 3}  # on "busy", near its maximum
    second = {**TRAIN, "name": "u", "priority": 1}  # on "idle", with what is left
    s = sim(
        14.0,
        jobs=[first, second],
        failures=[{"node": "busy", "kind": "agent_crash", "at_s": 5.0, "recover_s": 13.0}],
    )
    run_until(s, 5.0)
    held_w = sum(limits(s, "busy"))
    assert held_w > 1.2 * sum(limits(s, "idle")), "the first job holds more"
    while s.k * s.plane.step_s < 14.0:
        s.step()
        assert s.real_limits_w() <= 2000 + 1e-6, (s.k, limits(s, "busy"), limits(s, "idle"))
        if 9.0 <= s.k * s.plane.step_s < 13.0:  # lost (2 s), not known down
            assert accounted_w(s, "busy") >= held_w - 1e-6
    assert s.result.limits_over_budget_s == 0.0


def test_a_dead_agent_is_counted_at_its_limits_after_a_controller_restart() -> None:
    """Issue 19 (a), with a controller restart: the node never reports to the new controller,
    which counted it at its fail-safe share after the lost timeout."""
    first = {**TRAIN, "priority": 3}
    second = {**TRAIN, "name": "u", "priority": 1}
    s = sim(
        14.0,
        jobs=[first, second],
        failures=[{"node": "busy", "kind": "agent_crash", "at_s": 5.0}],  # never comes back
        controller_restarts=[{"at_s": 5.5, "down_s": 0.5}],
    )
    run_until(s, 5.0)
    held_w = sum(limits(s, "busy"))
    while s.k * s.plane.step_s < 14.0:
        s.step()
        assert s.real_limits_w() <= 2000 + 1e-6, (s.k, limits(s, "busy"), limits(s, "idle"))
    assert accounted_w(s, "busy") >= held_w - 1e-6
    assert s.result.limits_over_budget_s == 0.0


def test_a_node_whose_machine_died_is_known_down_through_the_ray_path() -> None:
    """A crashed node (its machine gone) is told to the controller as the live runtime tells a
    Ray node's death: it is lost at once (its shards placed elsewhere before the lost timeout)
    and counted at no more than its fail-safe limits, which it boots at."""
    control = {**CONTROL, "lost_after_s": 30.0}  # the lost timeout alone would not do it
    s = sim(
        12.0,
        jobs=[{**TRAIN, "priority": 3}],
        control=control,
        failures=[{"node": "busy", "kind": "crash", "at_s": 5.0}],
    )
    run_until(s, 5.0)
    assert s.shell is not None
    failsafe_w = sum(g.worst_failsafe_w() for g in s.shell.nodes["busy"].gpus)
    run_until(s, 8.0)
    node = s.shell.nodes["busy"]
    assert node.phase.value == "lost" and node.down_reason
    assert accounted_w(s, "busy") <= failsafe_w + 1e-6
    job = next(iter(s.shell.jobs.jobs.values()))
    assert {sh.node for sh in job.shards.values()} == {"idle"}  # placed again
    assert s.result.limits_over_budget_s == 0.0


def test_a_job_placed_right_after_a_controller_restart_has_its_energy_booked() -> None:
    """Issue 19 (d): a job placed on nodes that had just registered with a restarted
    controller (no energy reading yet) had no counter to measure from, and finished with
    energy_j 0 however long it ran."""
    job = {**TRAIN, "sim": {"arrive_s": 3.0}}  # submitted while the controller is down
    s = sim(12.0, jobs=[job], controller_restarts=[{"at_s": 2.0, "down_s": 2.0}])
    run_until(s, 12.0)
    assert s.shell is not None
    record = next(iter(s.shell.jobs.jobs.values()))
    assert record.phase.value == "running"
    measured_j = measure_job(s.shell.nodes, record).energy_j
    true_j = next(iter(s.world.jobs.values())).energy_j
    assert true_j > 1000.0
    # the books close at the latest reading, up to a telemetry period behind the truth
    assert 0.8 * true_j <= measured_j <= true_j, (measured_j, true_j)
