"""The simulator as a twin of the live cluster: one workload both ways, figure by figure.

A short workload runs on the embedded cluster through the CLI, as a user runs it
(``greenllm up``, ``submit``, ``budget set``, ``status --json``), and the same workload
through ``greenllm sim --from-cluster`` (the same cluster.yaml, job specs and budget
schedule). Over a window before the budget cut and one after it, each side gives per-job
throughput (its unit per second), J/unit and the cluster's mean GPU power. Printed side by
side with the ratio live / sim; ``tests/e2e/test_twin.py`` fails beyond 15%.

Live figures are slopes fitted to the cluster's own counters (each job's ``work_units`` and
``energy_j``, every GPU's ``energy_j``) polled about once a second; simulated ones come from
the simulator's ``trace.csv`` over the same seconds after submission. The simulated model
sizes keep every simulated GPU slower than this machine's CPU, so the live jobs run at their
simulated GPUs' pace (each live job's ``gpu_wait_fraction`` is printed: near 0 when so).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from greenllm.rpc.client import connect
from scheduler.commands.status import status_document
from scheduler.runtime.raynodes import free_port

#: The live side reads status this often, seconds.
SAMPLE_EVERY_S = 0.5

REPO = Path(__file__).resolve().parents[1]
#: Seconds one ``greenllm sim`` run may take, and how often it is tried.
SIM_TIMEOUT_S, SIM_TRIES = 120.0, 3
TRAIN_DIR = REPO / "examples" / "train"


@dataclass(frozen=True)
class Plan:
    """A workload: job specs, one budget cut, how long, and the windows compared.

    Attributes:
        jobs: Job specs (as ``greenllm submit`` takes them).
        cut_at_s: When the budget is cut, seconds after the jobs are submitted.
        cut_to_w: The budget after the cut, watts.
        end_s: How long the workload runs, seconds after submission.
        windows: Named ``(start_s, end_s)`` windows, seconds after submission.
    """

    jobs: list[dict[str, Any]]
    cut_at_s: float
    cut_to_w: float
    end_s: float
    windows: dict[str, tuple[float, float]]


@dataclass
class Side:
    """One side's figures: ``figures[window][name]`` (name: ``JOB throughput``,
    ``JOB J/unit`` or ``cluster mean W``), units per job, and notes (live: the jobs'
    ``gpu_wait_fraction``)."""

    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def train_job(name: str, params: float, shards: int = 2) -> dict[str, Any]:
    """The demo's training job (examples/train/train_gpt2.py: a tiny GPT-2, batch 8 x 128
    tokens per rank) standing for a ``params``-parameter model on H100s."""
    return {
        "name": name, "kind": "train", "model": "tiny", "shards": shards,
        "gpu_types": ["H100-SXM", "A100-SXM4"], "preferred_gpu_types": ["H100-SXM"],
        "priority": 2, "simulated_model_params": params,
        "train": {
            "entrypoint": ["python", "train_gpt2.py", "--model", "tiny", "--batch-size", "8",
                           "--seq-len", "128", "--steps", "100000",
                           "--checkpoint-interval", "100000"],
            "working_dir": str(TRAIN_DIR), "batch_size": 8, "seq_len": 128, "steps": 100000,
        },
    }  # fmt: skip


def infer_job(name: str, params: float, every_s: float, gpu_types: list[str]) -> dict[str, Any]:
    """The demo's inference job (tiny model, 32 + 32 tokens, batch 8, two replicas)
    standing for a ``params``-parameter model, sent one request every ``every_s`` seconds.

    The load is a request trace (written by :func:`job_files`), so both sides serve the same
    requests at the same rate whenever their load starts (live: once the endpoint answers).
    """
    return {
        "name": name, "kind": "infer", "model": "tiny", "shards": 2, "gpu_types": gpu_types,
        "priority": 1, "simulated_model_params": params,
        "infer": {"batch_size": 8, "prompt_tokens": 32, "max_new_tokens": 32,
                  "load": {"process": "trace", "trace_file": TRACE, "every_s": every_s,
                           "duration_s": 100000}},
    }  # fmt: skip


#: Stands for the trace file of an inference job in :func:`infer_job`'s spec.
TRACE = "<trace>"
#: How long a trace lasts, seconds (longer than any plan).
TRACE_S = 600.0


def write_trace(path: Path, every_s: float, prompt: int, output: int) -> None:
    """A request trace (Azure columns, seconds): one request every ``every_s``."""
    times = np.arange(0.0, TRACE_S, every_s)
    rows = [f"{t:.3f},{prompt},{output}" for t in times]
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")


def cli(*args: str, timeout_s: float = 240) -> str:
    """Run ``greenllm ARGS`` as a user would; its stdout.

    Raises:
        RuntimeError: It failed (its stderr).
    """
    proc = subprocess.run(
        [sys.executable, "-m", "greenllm.cli.main", *args],
        capture_output=True, text=True, timeout=timeout_s, cwd=REPO,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"greenllm {' '.join(args[:2])}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def cluster_config(work: Path, base: Path = REPO / "cluster.yaml") -> Path:
    """A copy of the embedded cluster.yaml with its own state folder and free ports."""
    data = yaml.safe_load(base.read_text())
    # Its own name: `sim --from-cluster` looks for a live controller of the cluster's name
    # (also through this machine's Ray), and must not find another cluster's.
    data["name"] = f"twin-{free_port()}"
    data["state_dir"] = str(work / "state")
    data["controller"] = {"address": f"127.0.0.1:{free_port()}", "metrics_port": free_port()}
    path = work / "cluster.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def job_files(work: Path, plan: Plan) -> list[Path]:
    """The plan's job specs as files."""
    paths = []
    for spec in plan.jobs:
        load = spec.get("infer", {}).get("load", {})
        if load.get("trace_file") == TRACE:
            trace = work / f"{spec['name']}-trace.csv"
            infer = spec["infer"]
            write_trace(trace, load["every_s"], infer["prompt_tokens"], infer["max_new_tokens"])
            load = {k: v for k, v in load.items() if k != "every_s"}
            spec = {**spec, "infer": {**infer, "load": {**load, "trace_file": str(trace)}}}
        path = work / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        paths.append(path)
    return paths


def run_sim(config: Path, jobs: list[Path], plan: Plan, out: Path) -> Side:
    """The workload through ``greenllm sim --from-cluster`` (no controller may be up)."""
    args = ["sim", "--from-cluster", "--config", str(config), "--out", str(out)]
    for path in jobs:
        args += ["--jobs", str(path)]
    args += ["--budget-schedule", f"{plan.cut_at_s:g}:{plan.cut_to_w:g}"]
    args += ["--duration-s", f"{plan.end_s:g}", "--json"]
    for attempt in range(SIM_TRIES):  # its look for a live controller may hang on a Ray
        try:  # cluster being torn down (another user's): try again
            summary = json.loads(cli(*args, timeout_s=SIM_TIMEOUT_S))
            break
        except subprocess.TimeoutExpired:
            if attempt == SIM_TRIES - 1:
                raise
    with (out / "trace.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    times = np.array(sorted({float(r["t"]) for r in rows}))
    dt = float(np.median(np.diff(times))) if len(times) > 1 else 0.1
    side = Side(units=dict(summary["units"]))
    for window, (a, b) in plan.windows.items():
        work: dict[str, float] = {}
        energy: dict[str, float] = {}
        cluster_j = 0.0
        for r in rows:
            if not a < float(r["t"]) <= b:
                continue
            joules = float(r["power_w"]) * dt
            cluster_j += joules
            if r["job"]:
                work[r["job"]] = work.get(r["job"], 0.0) + float(r["work"])
                energy[r["job"]] = energy.get(r["job"], 0.0) + joules
        figures = side.figures[window] = {"cluster mean W": cluster_j / (b - a)}
        for job in side.units:
            w = work.get(job, 0.0)
            figures[f"{job} throughput"] = w / (b - a)
            figures[f"{job} J/unit"] = energy.get(job, 0.0) / w if w > 0 else float("inf")
    return side


def run_live(config: Path, jobs: list[Path], plan: Plan, log: Any = print) -> Side:
    """The workload on the embedded cluster, through the CLI; the cluster is taken down."""
    cli("up", "--config", str(config), "--json", timeout_s=300)
    samples: list[tuple[float, dict[str, Any]]] = []
    try:
        for path in jobs:
            cli("submit", str(path), "--config", str(config), "--json")
        t0 = time.monotonic()
        cut = False
        while (now := time.monotonic() - t0) < plan.end_s:
            if not cut and now >= plan.cut_at_s:
                cli("budget", "set", f"{plan.cut_to_w:g}", "--config", str(config))
                cut = True
                log(f"t={time.monotonic() - t0:5.1f} s  budget cut to {plan.cut_to_w:g} W")
            before = time.monotonic()
            # through the API in this process: a `greenllm status` subprocess costs seconds
            # of start-up on a busy machine, so too few readings fell in a window
            with connect(config) as client:
                doc = status_document(client.get_status())
            samples.append(((before + time.monotonic()) / 2 - t0, doc))
            jobs_now = ", ".join(
                f"{j['name']} {j['state']} {j['throughput'] or 0:.0f}/s" for j in doc["jobs"]
            )
            log(f"t={samples[-1][0]:5.1f} s  {doc['power_w']:5.0f} W  {jobs_now}")
            time.sleep(SAMPLE_EVERY_S)
    finally:
        try:
            cli("down", "--config", str(config), timeout_s=180)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            log(f"down: {exc}")
    return live_side(samples, plan)


def _slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return float("nan")
    t, y = np.array(points).T
    return float(np.polyfit(t, y, 1)[0])


def live_side(samples: list[tuple[float, dict[str, Any]]], plan: Plan) -> Side:
    """Per-window slopes of the live counters (work, energy per job; every GPU's energy)."""
    side = Side()
    for window, (a, b) in plan.windows.items():
        chosen = [(t, d) for t, d in samples if a <= t <= b]
        gpu_j = [(t, sum(g["energy_j"] for n in d["nodes"] for g in n["gpus"])) for t, d in chosen]
        figures = side.figures[window] = {"cluster mean W": _slope(gpu_j)}
        names = sorted({j["name"] for _, d in chosen for j in d["jobs"]})
        for name in names:
            rows = [(t, j) for t, d in chosen for j in d["jobs"] if j["name"] == name]
            rate = _slope([(t, j["work_units"]) for t, j in rows])
            watts = _slope([(t, j["energy_j"]) for t, j in rows])
            figures[f"{name} throughput"] = rate
            figures[f"{name} J/unit"] = watts / rate if rate > 0 else float("inf")
            side.units[name] = "samples" if rows[-1][1]["kind"] == "train" else "tokens"
            waits = [j.get("gpu_wait_fraction") for _, j in rows]
            side.notes[f"{window} {name} gpu_wait_fraction"] = waits[-1] if waits else None
    return side


def ratios(live: Side, sim: Side) -> dict[str, dict[str, float]]:
    """``live / sim`` for every figure both sides have, per window."""
    out: dict[str, dict[str, float]] = {}
    for window, figures in sim.figures.items():
        theirs = live.figures.get(window, {})
        out[window] = {
            k: theirs[k] / v for k, v in figures.items() if k in theirs and v not in (0.0,)
        }
    return out


def table(live: Side, sim: Side) -> str:
    """Live, sim and live / sim per window and figure."""
    lines = [f"{'window':<10} {'figure':<32} {'live':>10} {'sim':>10} {'live/sim':>9}"]
    r = ratios(live, sim)
    for window, figures in sim.figures.items():
        for name, value in figures.items():
            job = name.split(" ")[0]
            unit = sim.units.get(job, "")
            shown = name.replace("throughput", f"{unit}/s").replace("J/unit", f"J/{unit[:-1]}")
            mine = live.figures.get(window, {}).get(name, float("nan"))
            ratio = r[window].get(name, float("nan"))
            lines.append(f"{window:<10} {shown:<32} {mine:>10.2f} {value:>10.2f} {ratio:>9.3f}")
    for key, wait in live.notes.items():
        lines.append(f"live {key}: {'n/a' if wait is None else f'{wait:.1%}'}")
    return "\n".join(lines)


def run_twin(plan: Plan, work: Path, log: Any = print) -> tuple[Side, Side]:
    """The plan in the simulator, then live; returns ``(live, sim)``."""
    from greenllm.workloads.registry import load_model

    config = cluster_config(work)
    paths = job_files(work, plan)
    sim = run_sim(config, paths, plan, work / "sim")
    if any(j["kind"] == "infer" for j in plan.jobs):
        load_model("tiny")  # cached before the cluster starts: no replica trains it
    live = run_live(config, paths, plan, log)
    return live, sim


#: The default workload: the demo's training and inference jobs, standing for models big
#: enough that their simulated GPUs, not this machine's CPU, set the pace.
PLAN = Plan(
    jobs=[
        train_job("twin-train", 2e10),
        infer_job("twin-infer", 1.3e10, 0.4, ["A100-SXM4"]),
    ],
    cut_at_s=45.0,
    cut_to_w=1500.0,
    end_s=85.0,
    windows={"before cut": (20.0, 44.0), "after cut": (52.0, 85.0)},
)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="greenllm-twin-") as tmp:
        live, sim = run_twin(PLAN, Path(tmp), lambda m: print(m, flush=True))
    print(table(live, sim))


if __name__ == "__main__":
    main()
