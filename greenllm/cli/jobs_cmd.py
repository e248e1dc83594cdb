"""``greenllm submit``, ``jobs``, ``cancel`` and ``logs``: jobs on a running cluster.

A training job's working directory reaches every node the way Ray Jobs ships it: when the
cluster runs on Ray (``greenllm up`` wrote ``<state_dir>/runtime.json``), ``submit``
packages the folder with Ray's own packaging into Ray's GCS and puts the package URI
(``gcs://_ray_pkg_<hash>.zip``) in the spec; each agent has Ray unpack it on its node.
Otherwise the agents use the folder as it is (one machine, or a path shared by all).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from greenllm.cli.options import CONFIG_OPTION, JSON_OPTION
from greenllm.cli.output import emit_json, print_table
from greenllm.config import ClusterConfig, default_config_path, load_cluster_config
from greenllm.energy.carbon import GridIntensity, carbon_g
from greenllm.errors import ConfigError, GreenllmError
from greenllm.jobspec import JobSpec, is_package_uri, load_job_spec, parse_job_spec
from greenllm.proto.v1 import cluster_pb2
from greenllm.rpc.client import ClusterClient

#: Job states after which a job's output no longer grows.
ENDED_STATES = ("done", "failed", "cancelled")
#: Bytes asked per GetJobLogs call.
LOG_READ_BYTES = 256 * 1024


def _client(config_path: Path | None) -> tuple[ClusterConfig, ClusterClient]:
    config = load_cluster_config(config_path or default_config_path())
    return config, ClusterClient(config)


def ray_address(config: ClusterConfig) -> str | None:
    """The Ray cluster greenllm runs on (from ``<state_dir>/runtime.json``), if any."""
    try:
        doc = json.loads((config.state_dir / "runtime.json").read_text())
    except (OSError, ValueError):
        return None
    address = doc.get("address") if isinstance(doc, dict) else None
    return address if isinstance(address, str) and address else None


def upload_to_ray(folder: Path, address: str) -> str:
    """Package ``folder`` into the GCS of the Ray cluster at ``address`` (as ``ray job
    submit`` does: .gitignore and Ray's default excludes apply); returns its URI.

    Raises:
        GreenllmError: The upload failed (one line).
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    quiet = logging.getLogger("greenllm.upload")
    quiet.setLevel(logging.ERROR)
    started = not ray.is_initialized()
    try:
        if started:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        with tempfile.TemporaryDirectory(prefix="greenllm-pkg-") as scratch:
            env = upload_working_dir_if_needed(
                {"working_dir": str(folder)}, True, scratch_dir=scratch, logger=quiet
            )
    except Exception as exc:  # Ray's errors carry tracebacks: keep one line
        lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        raise GreenllmError(f"cannot upload {folder} to Ray at {address}: {lines[-1]}") from None
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
    return str(env["working_dir"])


def ship_working_dir(spec: JobSpec, config: ClusterConfig) -> JobSpec:
    """``spec`` with its local ``train.working_dir`` uploaded to the cluster's Ray (when it
    runs on Ray) and replaced by the package URI."""
    train = spec.train
    if train is None or not train.working_dir or is_package_uri(train.working_dir):
        return spec
    address = ray_address(config)
    if address is None:
        return spec
    uri = upload_to_ray(Path(train.working_dir), address)
    return spec.model_copy(update={"train": train.model_copy(update={"working_dir": uri})})


def throughput_of(job: cluster_pb2.Job) -> float | None:
    """The job's throughput, None when unknown: a training job whose ranks report no
    work (a script that never calls ``greenllm.job.report``) is metered but has no rate."""
    if job.spec.kind == "train" and job.work_units <= 0:
        return None
    return job.throughput


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
        "throughput": throughput_of(job),
        "unit": unit,
        "work_units": job.work_units,
        "steps": job.steps,
        "restarts": job.restarts,
        "energy_j": job.energy_j,
        "joules_per_unit": job.energy_j / job.work_units if job.work_units > 0 else None,
        "co2e_g": co2e_g,
        "submitted_at_s": job.submitted_at_s,
        **pacing_fields(job),
        **serving_fields(job),
    }


def serving_fields(job: cluster_pb2.Job) -> dict[str, Any]:
    """An inference job's ``endpoint`` (its OpenAI-compatible API; None: not served
    through the ingress), ``replicas`` (where each serves, its share of the requests),
    the slowest replica's ``ttft_p99_s``/``tpot_p99_s`` (None: none yet), requests
    ``queued`` and ``rejected``, and ``idle_energy_j``; an empty dict for training."""
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
            }
            for r in job.replicas
        ],
        "ttft_p99_s": job.ttft_p99_s or None,
        "tpot_p99_s": job.tpot_p99_s or None,
        "queued_requests": job.queued_requests,
        "rejected_requests": job.rejected_requests,
        "idle_energy_j": job.idle_energy_j,
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
    config, client = _client(config_path)
    spec = ship_working_dir(spec, config)
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
            "unknown" if d["throughput"] is None else f"{d['throughput']:.1f} {d['unit']}/s",
            d["work_units"],
            d["energy_j"],
            d["joules_per_unit"],
            d["co2e_g"],
        ]
        for d in docs
    ]
    cols = ["job", "kind", "state", "throughput", "work", "energy J", "J/unit", "gCO2e"]
    print_table(None, cols, rows)
    for d in docs:
        if d.get("endpoint"):
            click.echo(f"{d['id']}: OpenAI-compatible API at {d['endpoint']}")


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
@click.option("--rank", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which rank (training) or replica (inference).")  # fmt: skip
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the job ends.")
@click.option("--events", is_flag=True, help="Show the job's event log instead of its output.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="With --events: show at most this many events, the newest.",
)
@CONFIG_OPTION
@JSON_OPTION
def logs(
    job_id: str,
    rank: int,
    follow: bool,
    events: bool,
    limit: int,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Show the output (stdout and stderr) of one rank of JOB_ID, kept across restarts (the
    newest 10 MB); --follow keeps printing until the job ends or Ctrl-C. With --events: the
    job's event log (submitted, placed, running, restarts, and how it ended)."""
    if follow and (as_json or events):
        raise click.UsageError("--follow prints text: leave out --json and --events")
    _, client = _client(config_path)
    with client:
        if events:
            _print_events(client, job_id, limit, as_json)
        elif follow:
            _follow(client, job_id, rank)
        else:
            _print_output(client, job_id, rank, as_json)


def _print_events(client: ClusterClient, job_id: str, limit: int, as_json: bool) -> None:
    events = client.job_events(job_id, limit)
    docs = [
        {
            "timestamp_s": e.timestamp_s,
            "kind": e.kind,
            "message": e.message,
            "entity": e.entity,
            "key": e.key,
            "old": e.old,
        }
        for e in events
    ]
    if as_json:
        emit_json({"job_id": job_id, "events": docs})
        return
    for e in events:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.timestamp_s))
        click.echo(f"{stamp}  {e.kind:<10} {e.message}")


def _read_all(client: ClusterClient, job_id: str, rank: int, offset: int) -> tuple[bytes, int, Any]:
    """Everything kept from ``offset``: (data, next offset, last response)."""
    parts = []
    while True:
        got = client.get_job_logs(job_id, rank, offset, LOG_READ_BYTES)
        parts.append(got.data)
        offset = got.next_offset
        if len(got.data) < LOG_READ_BYTES:
            return b"".join(parts), offset, got


def _print_output(client: ClusterClient, job_id: str, rank: int, as_json: bool) -> None:
    data, offset, last = _read_all(client, job_id, rank, 0)
    if as_json:
        emit_json(
            {"job_id": job_id, "rank": rank, "generation": last.generation,
             "next_offset": offset, "size": last.size,
             "output": data.decode("utf-8", "replace")}
        )  # fmt: skip
        return
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


def _follow(client: ClusterClient, job_id: str, rank: int, poll_s: float = 0.5) -> None:
    """Print new output as it comes; stop (after a last look) once the job has ended."""
    offset, ended_at_s = 0, None
    try:
        while True:
            data, offset, _ = _read_all(client, job_id, rank, offset)
            if data:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
            if ended_at_s is None and client.get_job(job_id).state in ENDED_STATES:
                ended_at_s = time.monotonic()  # its last output may still be on its way
            if ended_at_s is not None and time.monotonic() - ended_at_s > 3 * poll_s:
                return
            time.sleep(poll_s)
    except KeyboardInterrupt:
        return


def register(cli: click.Group) -> None:
    """Add ``submit``, ``jobs``, ``cancel`` and ``logs`` to the CLI."""
    for command in (submit, jobs, cancel, logs):
        cli.add_command(command)
