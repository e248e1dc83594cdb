"""``greenllm submit``, ``jobs`` and ``cancel``: jobs on a running cluster (``logs`` is in
:mod:`greenllm.cli.logs_cmd`; how a working directory reaches the nodes, in
:mod:`greenllm.cli.workdir`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from greenllm.cli.options import CONFIG_OPTION, JSON_OPTION
from greenllm.cli.output import emit_json, print_table
from greenllm.cli.workdir import ship_working_dir
from greenllm.config import ClusterConfig, default_config_path, load_cluster_config
from greenllm.energy.carbon import GridIntensity, carbon_g
from greenllm.errors import ConfigError
from greenllm.jobspec import JobSpec, load_job_spec, parse_job_spec
from greenllm.proto.v1 import cluster_pb2
from greenllm.rpc.client import ClusterClient

__all__ = ["job_document", "pacing_fields", "serving_fields", "ship_working_dir", "throughput_of"]


def client_for(config_path: Path | None) -> tuple[ClusterConfig, ClusterClient]:
    config = load_cluster_config(config_path or default_config_path())
    return config, ClusterClient(config)


def throughput_of(job: cluster_pb2.Job) -> float | None:
    """The job's throughput, None when unknown: a training job whose ranks report no
    work (a script that never calls ``greenllm.job.report``) is metered but has no rate."""
    if job.spec.kind == "train" and job.work_units <= 0:
        return None
    return job.throughput


def job_document(job: cluster_pb2.Job, config: ClusterConfig) -> dict[str, Any]:
    """One job as JSON: progress, energy, J/unit, CO2e (as the controller booked it against
    the grid signal interval by interval; for a job it has no books of, from the config's
    carbon settings) and ``energy_cost`` (None: the signal has no price)."""
    unit = "samples" if job.spec.kind == "train" else "tokens"
    energy_cost = job.energy_cost if job.HasField("energy_cost") else None
    if job.HasField("co2e_g"):  # booked by the controller, interval by interval
        co2e_g = job.co2e_g
    elif config.carbon.intensity_file is not None:
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
        "throughput": throughput_of(job),
        "unit": unit,
        "work_units": job.work_units,
        "steps": job.steps,
        "restarts": job.restarts,
        "energy_j": job.energy_j,
        "joules_per_unit": job.energy_j / job.work_units if job.work_units > 0 else None,
        "co2e_g": co2e_g,
        "energy_cost": energy_cost,
        "submitted_at_s": job.submitted_at_s,
        **pacing_fields(job),
        **serving_fields(job),
    }


def serving_fields(job: cluster_pb2.Job) -> dict[str, Any]:
    """An inference job's ``endpoint`` (its OpenAI-compatible API; None: not served
    through the ingress), ``replicas`` (where each serves, its share of the requests),
    the slowest replica's ``ttft_p99_s``/``tpot_p99_s`` (None: none yet), requests
    ``queued`` and ``rejected``, and ``idle_energy_j``; an empty dict for training. Each
    replica names its ``engine`` (``greenllm`` or ``vllm``) and, for vLLM, its
    ``engine_metrics``."""
    if job.spec.kind != "infer":
        return {}
    return {
        "endpoint": job.endpoint or None,
        "replicas": [
            {
                "shard_id": r.shard_id,
                "node": r.node,
                "gpu_index": r.gpu_index,
                "endpoint": r.endpoint or None,
                "load_weight": r.load_weight,
                "state": r.state,
                "engine": r.engine_metrics.engine if r.HasField("engine_metrics") else "greenllm",
                "engine_metrics": engine_metrics(r),
            }
            for r in job.replicas
        ],
        "ttft_p99_s": job.ttft_p99_s or None,
        "tpot_p99_s": job.tpot_p99_s or None,
        "queued_requests": job.queued_requests,
        "rejected_requests": job.rejected_requests,
        "idle_energy_j": job.idle_energy_j,
    }


def engine_metrics(replica: cluster_pb2.Replica) -> dict[str, Any] | None:
    """A replica's engine figures (vLLM's /metrics and its proxy's token counts); None
    for greenllm's own engine."""
    if not replica.HasField("engine_metrics"):
        return None
    m = replica.engine_metrics
    return {
        "requests_running": m.requests_running,
        "requests_waiting": m.requests_waiting,
        "kv_cache_usage": m.kv_cache_usage,
        "prompt_tokens": m.prompt_tokens,
        "generation_tokens": m.generation_tokens,
        "requests_succeeded": m.requests_succeeded,
        "proxy_prefill_tokens": m.proxy_prefill_tokens,
        "proxy_decode_tokens": m.proxy_decode_tokens,
        "metrics_ok": m.metrics_ok,
    }


def pacing_fields(job: cluster_pb2.Job) -> dict[str, Any]:
    """``gpu_wait_fraction`` (None: not measured, e.g. real GPUs) and ``cpu_bound``: how
    much of the time the job's simulated GPUs waited for this machine's CPU."""
    wait = job.gpu_wait_fraction if job.HasField("gpu_wait_fraction") else None
    return {"gpu_wait_fraction": wait, "cpu_bound": job.cpu_bound}


def quick_spec(
    name: str, shards: int, gpu_types: str, working_dir: Path | None, command: tuple[str, ...]
) -> JobSpec:
    """The training job of ``greenllm submit --name ... -- CMD ARGS``.

    Raises:
        ConfigError: A bad name, GPU type, command, or working directory.
    """
    if not command:
        raise ConfigError("submit: give the command after --, e.g. -- python train.py")
    folder = (working_dir or Path.cwd()).resolve()
    if not folder.is_dir():
        raise ConfigError(f"submit: --working-dir {folder} is not a folder")
    data = {
        "name": name,
        "kind": "train",
        "shards": shards,
        "gpu_types": [t.strip() for t in gpu_types.split(",") if t.strip()],
        "train": {"entrypoint": list(command), "working_dir": str(folder)},
    }
    return parse_job_spec(data, "submit")


@click.command("submit")
@click.argument("words", nargs=-1, type=click.UNPROCESSED, metavar="JOB_FILE | -- CMD [ARGS]...")
@click.option("--name", help="Quick form: submit CMD (after --) as a training job of this name.")
@click.option(
    "--shards",
    type=click.IntRange(1, 100_000),
    default=1,
    show_default=True,
    help="Quick form: ranks (one GPU each).",
)
@click.option("--gpu-types", default="", help="Quick form: allowed GPU types, comma-separated.")
@click.option(
    "--working-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Quick form: the folder CMD runs in, shipped to every node (default: this one).",
)
@CONFIG_OPTION
@JSON_OPTION
def submit(
    words: tuple[str, ...],
    name: str | None,
    shards: int,
    gpu_types: str,
    working_dir: Path | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Submit JOB_FILE (a job spec: kind train or infer, model, shards, GPU types,
    priority, SLO), or with --name a training command, like ray job submit or sbatch
    --wrap: greenllm submit --name NAME --shards N -- python train.py ARGS. Each rank runs
    the command with torchrun's environment in the working directory; a local working
    directory is uploaded to the cluster's Ray. Prints the job's id."""
    if name is not None:
        spec = quick_spec(name, shards, gpu_types, working_dir, words)
    elif len(words) != 1 or gpu_types or working_dir is not None:
        raise ConfigError("submit: give one JOB_FILE, or --name NAME and -- CMD ARGS")
    else:
        spec = load_job_spec(words[0])
    if spec.infer is not None and spec.infer.engine == "vllm":
        from greenllm.vllm_env import check_vllm

        check_vllm(spec.infer.vllm_settings.python)  # one line when vLLM is missing
    config, client = client_for(config_path)
    spec = ship_working_dir(spec, config)
    with client:
        job = client.submit_job(spec.model_dump_json())
    if as_json:
        emit_json(job_document(job, config))
    else:
        click.echo(f"submitted {job.id} ({spec.kind}, {spec.shards} shards): {job.state}")


@click.command("jobs")
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    help="Jobs per page, newest first.",
)
@click.option(
    "--page-token",
    default="",
    help="Where to go on from: the next_page_token a previous page printed.",
)
@CONFIG_OPTION
@JSON_OPTION
def jobs(config_path: Path | None, as_json: bool, limit: int, page_token: str) -> None:
    """List jobs, newest first, with their throughput, energy, J per unit and CO2e.

    Every job ever submitted, a page at a time (`greenllm status` shows the running ones
    first, and counts every job by phase).
    """
    config, client = client_for(config_path)
    with client:
        page = client.list_jobs_page(limit, page_token)
    docs = [job_document(j, config) for j in page.jobs]
    if as_json:
        emit_json(
            {"jobs": docs, "total": page.total, "next_page_token": page.next_page_token or None}
        )
        return
    rows = [
        [
            d["id"],
            d["kind"],
            d["state"],
            "unknown" if d["throughput"] is None else f"{d['throughput']:.1f} {d['unit']}/s",
            d["work_units"],
            d["energy_j"],
            d["joules_per_unit"],
            d["co2e_g"],
        ]
        for d in docs
    ]
    cols = ["job", "kind", "state", "throughput", "work", "energy J", "J/unit", "gCO2e"]
    if any(d["energy_cost"] is not None for d in docs):  # the grid signal carries a price
        cols.append("cost")
        for row, d in zip(rows, docs, strict=True):
            row.append(d["energy_cost"])
    print_table(None, cols, rows)
    for d in docs:
        if d.get("endpoint"):
            click.echo(f"{d['id']}: OpenAI-compatible API at {d['endpoint']}")
    if page.next_page_token:
        click.echo(
            f"{len(docs)} of {page.total} jobs; more with --page-token {page.next_page_token}"
        )


@click.command("cancel")
@click.argument("job_id")
@CONFIG_OPTION
@JSON_OPTION
def cancel(job_id: str, config_path: Path | None, as_json: bool) -> None:
    """Cancel JOB_ID: stop its shards and free its GPUs."""
    config, client = client_for(config_path)
    with client:
        job = client.cancel_job(job_id)
    if as_json:
        emit_json(job_document(job, config))
    else:
        click.echo(f"{job.id}: {job.state}")


def register(cli: click.Group) -> None:
    """Add ``submit``, ``jobs``, ``cancel`` and ``logs`` to the CLI."""
    from greenllm.cli.logs_cmd import logs

    for command in (submit, jobs, cancel, logs):
        cli.add_command(command)
