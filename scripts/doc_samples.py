"""Sample documents for the references in docs/, produced by the code itself: the CLI run
in-process where it is cheap (config check, gpus, policy list, profile, meter, sim), the
document builders fed synthetic inputs where a run is not (status, jobs, compress).

Used by ``scripts/gen_docs.py``; the keys (not the values) end up in the docs.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from greenllm.cli import main as cli_main
from greenllm.cli.jobs_cmd import job_document
from greenllm.compression.evaluate import Evaluation, Generation, Stat
from greenllm.compression.report import MethodResult, build_report
from greenllm.config import load_cluster_config
from greenllm.proto.v1 import cluster_pb2

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster.yaml"
SCENARIO = REPO / "examples" / "scenarios" / "small.yaml"
METER_ARGS = ("meter", "--config", str(CLUSTER), "--backend", "simulated")
#: Virtual seconds of the sample scenario run (short: only the file formats matter).
SIM_DURATION_S = 4.0


def run_json(*args: str) -> Any:
    """Run ``greenllm ARGS --json`` in-process; its stdout as JSON.

    Raises:
        RuntimeError: The command failed.
    """
    argv = list(args)
    argv.insert(argv.index("--") if "--" in argv else len(argv), "--json")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main.main(argv)
    if code != 0:
        raise RuntimeError(f"greenllm {' '.join(argv)}: exit {code}")
    return json.loads(out.getvalue())


def status_sample() -> dict[str, Any]:
    """``greenllm status --json`` for one node with one GPU and one job."""
    from scheduler.commands.status import status_document

    status = cluster_pb2.ClusterStatus(
        nodes=[cluster_pb2.NodeStatus(gpus=[cluster_pb2.GpuStatus()])],
        jobs=[cluster_pb2.Job()],
        jobs_by_phase={"running": 1},
    )
    return status_document(status)


def job_sample() -> dict[str, Any]:
    """One job as ``greenllm jobs --json`` lists it (also ``submit``/``cancel --json``)."""
    return job_document(cluster_pb2.Job(), load_cluster_config(CLUSTER))


def compress_sample() -> dict[str, Any]:
    """``greenllm compress --json`` (and report.json) for a baseline and one method."""

    def result(method: str) -> MethodResult:
        stat = Stat(1.0, 0.9, 1.1, 5)
        generation = Generation(stat, stat, "estimate", True, 256, 1.0)
        return MethodResult(method, 10, 40, Evaluation(10.0, 100, generation))

    report = build_report("tiny", "cpu", result("baseline"), [result("int8")])
    report["plot"] = "OUT/pareto.png"
    report["report"] = "OUT/report.json"
    return report


def load_sample() -> dict[str, Any]:
    """``greenllm load --json`` (a run with no request)."""
    from greenllm.serving.report import LoadReport

    head = {"endpoint": "", "model": "", "api": "", "load": "", "duration_s": 0.0}
    return LoadReport.from_records([], 1.0, **head).to_dict()


def sim_outputs() -> tuple[dict[str, Any], str, str, str]:
    """summary.json, the header lines of trace.csv and budget.csv, and their line ending
    (``\\n`` or ``\\r\\n``), of a short run."""
    scenario = yaml.safe_load(SCENARIO.read_text())
    scenario["duration_s"] = SIM_DURATION_S
    with tempfile.TemporaryDirectory(prefix="greenllm-docs-") as tmp:
        path = Path(tmp) / "scenario.yaml"
        path.write_text(yaml.safe_dump(scenario))
        out = Path(tmp) / "out"
        summary = run_json("sim", str(path), "--out", str(out))
        raw = [(out / f).read_bytes() for f in ("trace.csv", "budget.csv")]
    headers = [r.decode("utf-8").splitlines()[0] for r in raw]
    ending = "\\r\\n" if any(b"\r\n" in r for r in raw) else "\\n"
    return summary, headers[0], headers[1], ending


def cli_samples() -> dict[str, Any]:
    """Every ``--json`` document, by command."""
    job = job_sample()
    return {
        "status": status_sample(),
        "jobs": {"jobs": [job], "total": 1, "next_page_token": "100"},
        "submit": job,
        "cancel": job,
        "logs": {"job_id": "", "events": [{"timestamp_s": 0.0, "kind": "", "message": ""}]},
        "budget set": {
            "budget_w": 0.0,
            "reserve_w": 0.0,
            "shortfall_w": 0.0,
            "shortfall_reason": "",
        },
        "policy set": {"policy": ""},
        "node down": {"node": "", "changed": True, "phase": ""},
        "policy list": run_json("policy", "list"),
        "config check": run_json("config", "check", str(CLUSTER)),
        "gpus": run_json("gpus", "--config", str(CLUSTER), "--backend", "simulated"),
        "profile": run_json(
            "profile", "--gpu-type", "L4", "--workload", "train", "--power-limits", "60:72:12"
        ),
        "meter": run_json(*METER_ARGS, "--", sys.executable, "-c", "pass"),
        "compress": compress_sample(),
        "load": load_sample(),
    }
