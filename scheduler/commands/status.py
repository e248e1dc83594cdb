"""``greenllm status``: the cluster's budget, power, nodes, GPUs and jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from greenllm.cli.jobs_cmd import pacing_fields, serving_fields, throughput_of
from greenllm.cli.options import CONFIG_OPTION
from greenllm.cli.output import emit_json, print_table
from greenllm.proto.v1 import cluster_pb2
from greenllm.rpc.client import connect


def status_document(status: cluster_pb2.ClusterStatus) -> dict[str, Any]:
    """The ``greenllm status --json`` document (keys are a contract, see DESIGN.md)."""
    return {
        "budget_w": status.budget_w,
        "reserve_w": status.reserve_w,
        "power_w": status.power_w,
        "accounted_power_limit_w": status.accounted_power_limit_w,
        "shortfall_w": status.shortfall_w,
        "policy": status.policy,
        "jobs_waiting": status.jobs_waiting,
        "max_waiting_jobs": status.max_waiting_jobs,
        "domains": [
            {
                "name": d.name,
                "parent": d.parent or None,
                "limit_w": d.limit_w,
                "reserve_w": d.reserve_w,
                "accounted_power_limit_w": d.accounted_power_limit_w,
                "power_w": d.power_w,
                "bound": d.bound,
                "gpus": d.gpus,
            }
            for d in status.domains
        ],
        "nodes": [
            {
                "name": n.name,
                "connected": n.connected,
                "stale": n.stale,
                "failsafe_active": n.failsafe_active,
                "telemetry_age_s": n.telemetry_age_s if n.telemetry_age_s >= 0 else None,
                "phase": cluster_pb2.NodePhase.Name(n.phase).removeprefix("NODE_PHASE_").lower(),
                "down_reason": n.down_reason or None,
                "idle_energy_j": n.idle_energy_j,
                "releasable": n.releasable,
                "agent_state_error": n.agent_state_error or None,
                "energy_samples_rejected": dict(n.energy_samples_rejected),
                "gpus": [
                    {
                        "index": g.index,
                        "type": g.type,
                        "power_limit_w": g.power_limit_w,
                        "power_w": g.power_w,
                        "sm_clock_mhz": g.sm_clock_mhz,
                        "utilization_pct": g.utilization_pct,
                        "temperature_c": g.temperature_c,
                        "memory_used_mib": g.memory_used_mib,
                        "energy_j": g.energy_j,
                        "commanded_power_limit_w": g.commanded_power_limit_w,
                        "pending_power_limit_w": g.pending_power_limit_w or None,
                        "planned_power_limit_w": g.planned_power_limit_w or None,
                        "above_plan_w": g.above_plan_w,
                        "above_plan_reason": g.above_plan_reason or None,
                    }
                    for g in n.gpus
                ],
            }
            for n in status.nodes
        ],
        "jobs": [
            {
                "id": j.id,
                "name": j.spec.name,
                "kind": j.spec.kind,
                "state": j.state,
                "shards": j.spec.shards,
                "priority": j.spec.priority,
                "throughput": throughput_of(j),
                "work_units": j.work_units,
                "energy_j": j.energy_j,
                **pacing_fields(j),
                **serving_fields(j),
            }
            for j in status.jobs
        ],
        "jobs_total": status.jobs_total,
        "jobs_by_phase": dict(sorted(status.jobs_by_phase.items())),
        "jobs_truncated": status.jobs_truncated,
        "jobs_cap": status.jobs_cap,
        "state_writable": status.state_writable,
        "state_error": status.state_error or None,
    }


def _unknown(value: float | None) -> float | str:
    return "unknown" if value is None else value


def _node_state(n: cluster_pb2.NodeStatus) -> str:
    if n.down_reason:
        return "down"
    if not n.connected:
        return "failsafe" if n.failsafe_active else "disconnected"
    return "stale" if n.stale else "ok"


@click.command("status")
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status(config_path: Path | None, as_json: bool) -> None:
    """Show the cluster: budget, power, every node's GPUs, and the jobs."""
    with connect(config_path) as client:
        st = client.get_status()
    if as_json:
        emit_json(status_document(st))
        return
    click.echo(
        f"budget {st.budget_w:g} W (reserve {st.reserve_w:g} W), limits accounted "
        f"{st.accounted_power_limit_w:.0f} W, drawing {st.power_w:.0f} W, policy {st.policy}"
    )
    rows = [
        [
            n.name,
            _node_state(n),
            g.index,
            g.type,
            g.power_limit_w,
            g.power_w,
            g.sm_clock_mhz,
            g.utilization_pct,
        ]
        for n in st.nodes
        for g in n.gpus
    ]
    cols = ["node", "state", "gpu", "type", "limit W", "power W", "SM MHz", "util %"]
    print_table("GPUs", cols, rows)
    if st.domains:
        domains = [
            [
                d.name,
                d.parent or "-",
                d.limit_w,
                d.reserve_w,
                round(d.accounted_power_limit_w),
                round(d.power_w),
                d.gpus,
                "binds" if d.bound else "",
            ]
            for d in st.domains
        ]
        cols = ["domain", "parent", "limit W", "reserve W", "limits W", "power W", "gpus", ""]
        print_table("Power domains", cols, domains)
    if not st.state_writable:
        click.echo(f"state not saved: {st.state_error}")
    if st.jobs_by_phase:
        counts = ", ".join(f"{n} {phase}" for phase, n in sorted(st.jobs_by_phase.items()))
        shown = f" (showing {len(st.jobs)}, running first)" if st.jobs_truncated else ""
        click.echo(f"jobs: {counts}{shown}")
    for n in st.nodes:
        if n.agent_state_error:
            click.echo(f"node {n.name}: its agent cannot write its state: {n.agent_state_error}")
    if st.shortfall_w > 0:
        click.echo(
            f"warning: the GPUs hold {st.shortfall_w:.0f} W above budget - reserve", err=True
        )
        for n in st.nodes:
            for g in n.gpus:
                if g.above_plan_w > 0:
                    click.echo(
                        f"  {n.name} GPU {g.index}: {g.above_plan_w:.0f} W above plan: "
                        f"{g.above_plan_reason}",
                        err=True,
                    )
    if st.jobs:
        jobs = [
            [j.id, j.spec.kind, j.state, _unknown(throughput_of(j)), j.energy_j / 1000.0]
            for j in st.jobs
        ]
        print_table("Jobs", ["id", "kind", "state", "units/s", "energy kJ"], jobs)


def register(cli: click.Group) -> None:
    """Add ``status`` to the CLI."""
    cli.add_command(status)
