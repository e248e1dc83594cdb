"""The simulated control plane's timing, and the cluster config the simulated controller
runs with: how long a budget change may take to reach the GPUs (the transition window the
budget invariant allows), and how long agents may take to come back to a restarted
controller."""

from __future__ import annotations

from greenllm.config import ClusterConfig, parse_cluster_config
from greenllm.rpc.reconnect import Backoff
from scheduler.sim.scenario import ControlPlane, Scenario


def transition_window_s(plane: ControlPlane) -> float:
    """How long after a budget change the GPUs may still hold limits above it, seconds: one
    control period, then two round trips of a command (a lowering refused on one GPU is made
    up on others), and two steps of rounding."""
    round_trip_s = plane.ack_delay_s * (1 + plane.ack_jitter_frac) + plane.telemetry_delay_s
    return plane.control_period_s + 2 * round_trip_s + 2 * plane.step_s


def reconnect_s(plane: ControlPlane) -> float:
    """How long after a controller starts its agents may still be reconnecting, seconds:
    their longest reconnect delay (the live agent's backoff, which the simulated agents
    run), then their registration's round trip."""
    round_trip_s = plane.ack_delay_s * (1 + plane.ack_jitter_frac) + plane.telemetry_delay_s
    return Backoff().longest_delay_s() + round_trip_s


def shell_config(sc: Scenario, budget_w: float) -> ClusterConfig:
    """The cluster config the simulated controller runs with."""
    plane = sc.control
    return parse_cluster_config(
        {
            "name": sc.name,
            "nodes": [
                {"name": n, "gpus": [g.model_dump() for g in node.gpus]}
                for node in sc.nodes
                for n in node.names()
            ],
            "budget": {"budget_w": budget_w, "reserve_w": sc.budget.reserve_w},
            "policy": sc.policy if sc.policy != "oracle" else "max-throughput",
            "control_period_s": plane.control_period_s,
            "telemetry_interval_s": plane.step_s,
            "failsafe": {"timeout_s": plane.failsafe_timeout_s},
            "auth": {"enabled": False},
            # every job the scenario submits may wait (a refusal would end the run)
            "controller": {"max_waiting_jobs": max(1000, sum(len(j.ids()) for j in sc.jobs))},
            "power_domains": [d.model_dump() for d in sc.power_domains],
        },
        f"scenario {sc.name}",
    )
