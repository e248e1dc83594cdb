"""``greenllm submit``, ``greenllm jobs``, ``greenllm cancel``: jobs on a running cluster."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from greenllm.cli.options import CONFIG_OPTION, JSON_OPTION
from greenllm.cli.output import emit_json, print_table
from greenllm.config import ClusterConfig, default_config_path, load_cluster_config
from greenllm.energy.carbon import GridIntensity, carbon_g
from greenllm.jobspec import load_job_spec
from greenllm.proto.v1 import cluster_pb2
from greenllm.rpc.client import ClusterClient


def _client(config_path: Path | None) -> tuple[ClusterConfig, ClusterClient]:
    config = load_cluster_config(config_path or default_config_path())
    return config, ClusterClient(config)


def job_document(job: cluster_pb2.Job, config: ClusterConfig) -> dict[str, Any]:
    """One job as JSON: progress, energy, J/unit and CO2e (the config's carbon settings)."""
    unit = "samples" if job.spec.kind == "train" else "tokens"
    if config.carbon.intensity_file is not None:
        intensity = GridIntensity.from_csv(config.carbon.intensity_file)
        co2e_g = carbon_g(
            job.energy_j, intensity, config.carbon.pue, job.submitted_at_s, time.time()
        )
    else:
        co2e_g = carbon_g(
            job.energy_j, GridIntensity.for_region(config.carbon.region), config.carbon.pue
        )
    return {
        "id": job.id,
        "name": job.spec.name,
        "kind": job.spec.kind,
        "state": job.state,
        "model": job.spec.model,
        "shards": job.spec.shards,
        "priority": job.spec.priority,
        "throughput": job.throughput,
        "unit": unit,
        "work_units": job.work_units,
        "steps": job.steps,
        "restarts": job.restarts,
        "energy_j": job.energy_j,
        "joules_per_unit": job.energy_j / job.work_units if job.work_units > 0 else None,
        "co2e_g": co2e_g,
        "submitted_at_s": job.submitted_at_s,
    }


@click.command("submit")
@click.argument("job_file", type=click.Path(path_type=Path, dir_okay=False))
@CONFIG_OPTION
@JSON_OPTION
def submit(job_file: Path, config_path: Path | None, as_json: bool) -> None:
    """Submit JOB_FILE (a job spec: kind train or infer, model, shards, GPU types,
    priority, SLO); prints the job's id. The format is described in docs/job-spec.md."""
    spec = load_job_spec(job_file)
    config, client = _client(config_path)
    with client:
        job = client.submit_job(spec.model_dump_json())
    if as_json:
        emit_json(job_document(job, config))
    else:
        click.echo(f"submitted {job.id} ({spec.kind}, {spec.shards} shards): {job.state}")


@click.command("jobs")
@CONFIG_OPTION
@JSON_OPTION
def jobs(config_path: Path | None, as_json: bool) -> None:
    """List jobs with their throughput, energy, J per unit and CO2e."""
    config, client = _client(config_path)
    with client:
        docs = [job_document(j, config) for j in client.list_jobs()]
    if as_json:
        emit_json({"jobs": docs})
        return
    rows = [
        [
            d["id"],
            d["kind"],
            d["state"],
            f"{d['throughput']:.1f} {d['unit']}/s",
            d["work_units"],
            d["energy_j"],
            d["joules_per_unit"],
            d["co2e_g"],
        ]
        for d in docs
    ]
    cols = ["job", "kind", "state", "throughput", "work", "energy J", "J/unit", "gCO2e"]
    print_table(None, cols, rows)


@click.command("cancel")
@click.argument("job_id")
@CONFIG_OPTION
@JSON_OPTION
def cancel(job_id: str, config_path: Path | None, as_json: bool) -> None:
    """Cancel JOB_ID: stop its shards and free its GPUs."""
    config, client = _client(config_path)
    with client:
        job = client.cancel_job(job_id)
    if as_json:
        emit_json(job_document(job, config))
    else:
        click.echo(f"{job.id}: {job.state}")


@click.command("logs")
@click.argument("job_id")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Show at most this many events, the newest.",
)
@CONFIG_OPTION
@JSON_OPTION
def logs(job_id: str, limit: int, config_path: Path | None, as_json: bool) -> None:
    """Show JOB_ID's event log: submitted, placed, running, restarts, and how it ended."""
    _, client = _client(config_path)
    with client:
        events = client.job_events(job_id, limit)
    docs = [{"timestamp_s": e.timestamp_s, "kind": e.kind, "message": e.message} for e in events]
    if as_json:
        emit_json({"job_id": job_id, "events": docs})
        return
    for e in events:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.timestamp_s))
        click.echo(f"{stamp}  {e.kind:<10} {e.message}")


def register(cli: click.Group) -> None:
    """Add ``submit``, ``jobs``, ``cancel`` and ``logs`` to the CLI."""
    for command in (submit, jobs, cancel, logs):
        cli.add_command(command)
