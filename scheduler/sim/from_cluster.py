"""Ask "what if" of the real cluster: a scenario built from cluster.yaml and job specs.

``greenllm sim --from-cluster`` takes the cluster's nodes, budget, reserve, policy and control
settings from its cluster.yaml and the jobs from job-spec files (the ones ``greenllm submit``
takes); when its controller is up, the budget, policy and active jobs in force now come from
it instead (the cluster as it is). A budget schedule tries a cut or a raise before it is
applied. Nodes that discover their GPUs (NVML) must list them in cluster.yaml to be simulated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenllm.config import ClusterConfig, load_yaml_mapping, validate
from greenllm.errors import ConfigError
from greenllm.jobspec import load_job_spec
from scheduler.sim.scenario import ControlPlane, Scenario

#: The simulated controller's stale timeout (the scenario default), seconds.
STALE_S = ControlPlane().stale_after_s


@dataclass
class ClusterNow:
    """What a running controller says (None fields: not known).

    Attributes:
        budget_w: The budget in force, watts.
        reserve_w: The reserve in force, watts.
        policy: The policy in force.
        job_specs: The active jobs' specs (JSON documents).
    """

    budget_w: float | None = None
    reserve_w: float | None = None
    policy: str | None = None
    job_specs: list[dict[str, Any]] = field(default_factory=list)


def parse_schedule(text: str) -> list[tuple[float, float]]:
    """``T:WATTS[,T:WATTS...]`` (seconds, watts) as pairs.

    Raises:
        ConfigError: One line naming the bad entry.
    """
    out = []
    for item in (p.strip() for p in text.split(",") if p.strip()):
        t_s, sep, watts = item.partition(":")
        try:
            if not sep:
                raise ValueError
            out.append((float(t_s), float(watts)))
        except ValueError:
            raise ConfigError(f"--budget-schedule: {item!r} is not T_S:BUDGET_W") from None
    return out


def _job(doc: dict[str, Any]) -> dict[str, Any]:
    """A job spec as a scenario job: training with known total work finishes after it;
    inference requests fit the served model's context, as this cluster serves them."""
    job = dict(doc)
    if job.get("kind") == "infer":
        job["sim"] = {"fit_to_model_context": True}
    if job.get("kind") == "train":
        train = job.get("train") or {}
        total = train.get("total_samples")
        if total is None and train.get("steps") is not None:
            total = train["steps"] * train.get("batch_size", 8) * job.get("shards", 1)
        if total is not None:
            job["sim"] = {"total_samples": float(total)}
    return job


def build_scenario(
    config: ClusterConfig,
    job_files: Sequence[Path],
    duration_s: float,
    schedule: Sequence[tuple[float, float]] = (),
    now: ClusterNow | None = None,
    policy: str | None = None,
) -> Scenario:
    """The scenario of ``config`` running ``job_files`` (and the cluster's active jobs).

    Raises:
        ConfigError: A node without listed GPUs, a bad job file, or a scenario that cannot
            work (one line naming what).
    """
    now = now or ClusterNow()
    nodes = []
    for n in config.nodes:
        if not n.gpus:
            raise ConfigError(
                f"node {n.name}: its GPUs are discovered (nvml), so cannot be simulated: list "
                "them under gpus: in cluster.yaml"
            )
        nodes.append({"name": n.name, "gpus": [g.model_dump() for g in n.gpus]})
    jobs = [_job(spec) for spec in now.job_specs]
    for path in job_files:
        spec = load_job_spec(path)
        jobs.append(_job(spec.model_dump(mode="json", exclude_none=True)))
    names = [j["name"] for j in jobs]
    for i, job in enumerate(jobs):  # two jobs of one name: number them
        if names.count(job["name"]) > 1:
            job["name"] = f"{job['name']}-{i}"
    budget_w = now.budget_w if now.budget_w is not None else config.budget.budget_w
    reserve_w = now.reserve_w if now.reserve_w is not None else config.budget.reserve_w
    doc: dict[str, Any] = {
        "name": f"{config.name}-what-if",
        "duration_s": duration_s,
        "policy": policy or now.policy or config.policy,
        "nodes": nodes,
        "budget": {
            "budget_w": budget_w,
            "reserve_w": reserve_w,
            "schedule": [{"t_s": t, "budget_w": w} for t, w in schedule],
        },
        "jobs": jobs,
        "control": {
            "control_period_s": config.control_period_s,
            "step_s": config.telemetry_interval_s,
            "failsafe_timeout_s": config.failsafe.timeout_s,
            "lost_after_s": max(
                10.0,
                2 * config.failsafe.timeout_s,
                STALE_S + config.failsafe.timeout_s + config.telemetry_interval_s,
            ),
        },
    }
    if config.carbon.signal_file is not None:  # its grid signal, and the budget following it
        doc["signal_file"] = str(config.carbon.signal_file)
        if config.budget.follow is not None:
            doc["budget"]["follow"] = config.budget.follow.model_dump()
    return validate(Scenario, doc, f"{config.name} (from its cluster.yaml)")


def cluster_now(config_path: Path | None) -> ClusterNow | None:
    """What the cluster's controller says now (None: no controller answers)."""
    from greenllm.rpc.client import ControllerError, connect

    try:
        with connect(config_path, timeout_s=3.0) as client:
            status = client.get_status()
            specs = [
                json.loads(client.get_job(j.id).spec.spec_json)
                for j in status.jobs
                if j.state in ("pending", "placed", "running")
            ]
    except (ControllerError, ConfigError):
        return None
    return ClusterNow(status.budget_w, status.reserve_w, status.policy, specs)


def load_job_files(paths: Sequence[Path]) -> list[Path]:
    """The job files, checked to exist and hold a mapping (errors name the file)."""
    for p in paths:
        load_yaml_mapping(p)
    return list(paths)
