"""``greenllm logs``: a rank's output (stdout and stderr), or a job's event log."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from greenllm.cli.jobs_cmd import client_for
from greenllm.cli.options import CONFIG_OPTION, JSON_OPTION
from greenllm.cli.output import emit_json
from greenllm.rpc.client import ClusterClient

#: Job states after which a job's output no longer grows.
ENDED_STATES = ("done", "failed", "cancelled")
#: Bytes asked per GetJobLogs call.
LOG_READ_BYTES = 256 * 1024


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
    _, client = client_for(config_path)
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
