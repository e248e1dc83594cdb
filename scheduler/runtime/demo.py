"""The live demo: the embedded cluster on Ray, a training and an inference job, a budget
cut half-way, live progress, then per-job figures, budget compliance and a plot."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from greenllm.cli.jobs_cmd import ship_working_dir
from greenllm.config import ClusterConfig, load_cluster_config
from greenllm.energy.carbon import GridIntensity, carbon_g
from greenllm.jobspec import JobSpec, load_job_spec
from greenllm.proto.v1 import cluster_pb2
from greenllm.rpc.client import ClusterClient
from scheduler.runtime import lifecycle
from scheduler.runtime.raynodes import free_port


@dataclass
class Sample:
    """One status reading during the demo."""

    t_s: float
    budget_w: float
    usable_w: float
    power_w: float
    accounted_limit_w: float
    node_power_w: dict[str, float]
    jobs: dict[str, tuple[str, float, float, float]]  # id -> (state, throughput, work, J)


@dataclass
class DemoResult:
    """What the demo measured."""

    samples: list[Sample] = field(default_factory=list)
    cut_at_s: float = 0.0
    jobs: list[dict[str, Any]] = field(default_factory=list)


def demo_config(base: Path, work_dir: Path) -> Path:
    """A copy of ``base`` with its own state dir and free ports, so the demo touches nothing
    of the user's."""
    data = yaml.safe_load(base.read_text())
    data["state_dir"] = str(work_dir / "state")
    data.setdefault("controller", {})
    data["controller"]["address"] = f"127.0.0.1:{free_port()}"
    data["controller"]["metrics_port"] = free_port()
    path = work_dir / "cluster.yaml"
    work_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def prepare_models(specs: list[JobSpec], log: Callable[[str], None]) -> None:
    """Train and cache the built-in models the jobs name before the cluster starts (the
    first time only), so no shard trains one under load."""
    from greenllm.workloads.registry import BUILTINS, pretrained_builtin

    for name in sorted({s.model for s in specs if s.model in BUILTINS}):
        log(f"preparing model {name!r} (trained once on the shipped corpus, then cached)")
        pretrained_builtin(name)


def _sample(status: cluster_pb2.ClusterStatus, t0: float) -> Sample:
    return Sample(
        t_s=time.monotonic() - t0,
        budget_w=status.budget_w,
        usable_w=status.budget_w - status.reserve_w,
        power_w=status.power_w,
        accounted_limit_w=status.accounted_power_limit_w,
        node_power_w={n.name: sum(g.power_w for g in n.gpus) for n in status.nodes},
        jobs={j.id: (j.state, j.throughput, j.work_units, j.energy_j) for j in status.jobs},
    )


def run_demo(
    config_path: Path,
    jobs: list[Path],
    duration_s: float,
    cut_budget_w: float,
    log: Callable[[str], None],
) -> tuple[ClusterConfig, DemoResult]:
    """Bring the cluster up, run the jobs with a budget cut half-way, take it down."""
    config = load_cluster_config(config_path)
    specs = [load_job_spec(j) for j in jobs]
    prepare_models(specs, log)
    result = DemoResult()
    up = lifecycle.up(config_path, config, log=log)
    log(f"cluster up in {up.startup_s:.1f} s; controller {up.controller_address}")
    try:
        with ClusterClient(config) as client:
            for spec in specs:
                # As `greenllm submit` does: a training job's folder is shipped through Ray.
                job = client.submit_job(ship_working_dir(spec, config).model_dump_json())
                log(f"submitted {job.id} ({spec.kind}, {spec.shards} shards)")
            t0 = time.monotonic()
            cut = False
            while (now := time.monotonic() - t0) < duration_s:
                if not cut and now >= duration_s / 2:
                    client.set_budget(cut_budget_w)
                    result.cut_at_s = now
                    cut = True
                    log(f"t={now:5.1f} s  budget cut to {cut_budget_w:g} W")
                sample = _sample(client.get_status(), t0)
                result.samples.append(sample)
                log(_progress_line(sample))
                time.sleep(max(0.0, 1.0 - (time.monotonic() - t0 - now)))
            result.jobs = [
                {"id": j.id, "kind": j.spec.kind, "state": j.state, "throughput": j.throughput,
                 "work_units": j.work_units, "energy_j": j.energy_j}
                for j in client.list_jobs()
            ]  # fmt: skip
    finally:
        log("taking the cluster down")
        lifecycle.down(config, log=log)
    return config, result


def _progress_line(s: Sample) -> str:
    jobs = "  ".join(f"{jid} {st} {thr:.0f}/s" for jid, (st, thr, _, _) in s.jobs.items())
    return f"{s.t_s:4.0f}s  {s.power_w:4.0f}/{s.budget_w:g} W  {jobs}"


def summarise(config: ClusterConfig, result: DemoResult) -> dict[str, Any]:
    """Per-job throughput, J/unit and CO2e; budget compliance of limits and of power."""
    intensity = GridIntensity.for_region(config.carbon.region)
    jobs = []
    for j in result.jobs:
        units = j["work_units"]
        jobs.append(
            {
                **j,
                "unit": "samples" if j["kind"] == "train" else "tokens",
                "joules_per_unit": j["energy_j"] / units if units > 0 else None,
                "co2e_g": carbon_g(j["energy_j"], intensity, config.carbon.pue),
            }
        )
    after_cut = [s for s in result.samples if s.t_s >= result.cut_at_s]
    settled = next((s.t_s - result.cut_at_s for s in after_cut if s.power_w <= s.budget_w), None)
    limits_settled = next(
        (s.t_s - result.cut_at_s for s in after_cut if s.accounted_limit_w <= s.usable_w + 1e-6),
        None,
    )
    # Between a cut and the acks of its lowerings the limits still answer the old budget.
    transition_end = result.cut_at_s + (limits_settled or 0.0)
    steady = [s for s in result.samples if not result.cut_at_s <= s.t_s < transition_end]
    limits_ok = sum(1 for s in steady if s.accounted_limit_w <= s.usable_w + 1e-6)
    over = [s for s in steady if s.power_w > s.budget_w]
    return {
        "jobs": jobs,
        "samples": len(result.samples),
        "steady_samples": len(steady),
        "limits_within_budget_samples": limits_ok,
        "power_over_budget_samples": len(over),
        "max_power_w": max((s.power_w for s in result.samples), default=0.0),
        "budget_cut_at_s": result.cut_at_s,
        "power_under_new_budget_after_s": settled,
        "limits_under_new_budget_after_s": limits_settled,
    }


def plot(result: DemoResult, path: Path) -> None:
    """PNG of power per node and in total against the budget over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s for s in result.samples]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.step(t, [s.budget_w for s in result.samples], where="post", color="black", label="budget")
    ax.plot(t, [s.power_w for s in result.samples], linewidth=2, label="cluster power")
    ax.plot(t, [s.accounted_limit_w for s in result.samples], linestyle="--", label="sum of limits")
    nodes = sorted({n for s in result.samples for n in s.node_power_w})
    for node in nodes:
        ax.plot(t, [s.node_power_w.get(node, 0.0) for s in result.samples], label=f"{node} power")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("watts")
    ax.set_title("greenllm demo: GPU power against the budget")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out: Path, summary: dict[str, Any], result: DemoResult) -> None:
    """summary.json, samples.json and power.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "samples.json").write_text(json.dumps([s.__dict__ for s in result.samples]))
    plot(result, out / "power.png")
