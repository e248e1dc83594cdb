"""The live demo: the embedded cluster on Ray, filled so that the budget binds, a cut below
the draw, then the budget raised again.

Two jobs (examples/demo/): a user's DDP training script on five ranks, more than one GPU
type holds, so it spans H100 and A100; and an inference job with up to three replicas
serving the Azure conversation trace. The demo runs them under min-energy and reads the
cluster's status every second (ten times a second for a few seconds after each budget
change). It sends the inference job's load itself, the arrivals its spec's ``infer.load``
describes, through the job's endpoint as any user would, so that every request's time to
first token and time per output token is timed where users see them. The report
(:mod:`scheduler.runtime.demo_report`) turns the readings into the summary and the plot.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from greenllm.cli.workdir import ship_working_dir
from greenllm.config import ClusterConfig, load_cluster_config
from greenllm.devices.catalog import get_spec
from greenllm.errors import GreenllmError
from greenllm.jobspec import JobSpec, load_job_spec
from greenllm.proto.v1 import cluster_pb2
from greenllm.rpc.client import ClusterClient
from greenllm.serving.arrivals import job_arrivals
from greenllm.serving.loadclient import LoadClient, LoadOptions
from scheduler.runtime import lifecycle
from scheduler.runtime.raynodes import free_port

#: The policy the demo runs: it sizes inference replicas to the load and honours SLOs.
POLICY = "min-energy"
#: Longest wait for both jobs to run (ranks started, replicas serving), seconds.
WARMUP_TIMEOUT_S = 150.0
#: After a budget change, status is read this often for :data:`FAST_S` seconds.
FAST_EVERY_S = 0.1
FAST_S = 3.0
#: An automatic cut sets the budget to this share of the draw just before it, ...
CUT_SHARE = 0.8
#: ... and at least this much above the GPUs' minimum limits plus the reserve, watts.
CUT_HEADROOM_W = 100.0
#: After the last arrival, how long the answers still streaming are waited for, seconds
#: (a request still streaming then counts as unfinished, not as failed).
DRAIN_S = 3.0


@dataclass
class JobSample:
    """One job in one status reading (inference: its replicas and their GPUs' power)."""

    state: str
    throughput: float
    work_units: float
    energy_j: float
    serving: int = 0
    replicas: int = 0
    serving_power_w: float = 0.0
    parked_power_w: float = 0.0
    gpu_wait_fraction: float | None = None
    cpu_bound: bool = False


@dataclass
class Sample:
    """One status reading; ``t_s`` from the start of the load (the demo's clock)."""

    t_s: float
    phase: str
    budget_w: float
    usable_w: float
    power_w: float
    limits_w: float
    jobs: dict[str, JobSample]


@dataclass
class Phases:
    """How long each phase lasts, seconds, and the cut (None: :data:`CUT_SHARE` of the draw
    just before it, rounded down to 50 W)."""

    full_s: float = 30.0
    cut_s: float = 30.0
    raised_s: float = 20.0
    cut_to_w: float | None = None

    @property
    def total_s(self) -> float:
        """The whole run after warm-up, seconds."""
        return self.full_s + self.cut_s + self.raised_s


@dataclass
class DemoResult:
    """What the demo measured (times on the demo's clock, seconds)."""

    policy: str
    budget_w: float
    reserve_w: float
    phases: Phases
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    warmup_s: float = 0.0
    cut_at_s: float = 0.0
    raised_at_s: float = 0.0
    end_s: float = 0.0
    cut_w: float = 0.0
    draw_before_cut_w: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    load_notes: list[str] = field(default_factory=list)
    final: dict[str, dict[str, Any]] = field(default_factory=dict)


def demo_config(base: Path, work_dir: Path) -> Path:
    """A copy of ``base`` with its own state dir, free ports and the demo's policy, so the
    demo touches nothing of the user's."""
    data = yaml.safe_load(base.read_text())
    data["state_dir"] = str(work_dir / "state")
    data["policy"] = POLICY
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


def read_sample(status: cluster_pb2.ClusterStatus, t_s: float, phase: str) -> Sample:
    """The status as one :class:`Sample`."""
    gpu_w = {(n.name, g.index): g.power_w for n in status.nodes for g in n.gpus}
    jobs: dict[str, JobSample] = {}
    for j in status.jobs:
        s = JobSample(j.state, j.throughput, j.work_units, j.energy_j, cpu_bound=j.cpu_bound)
        if j.HasField("gpu_wait_fraction"):
            s.gpu_wait_fraction = j.gpu_wait_fraction
        for r in j.replicas:
            watts = gpu_w.get((r.node, r.gpu_index), 0.0)
            s.replicas += 1
            if r.load_weight > 0:
                s.serving += 1
                s.serving_power_w += watts
            else:
                s.parked_power_w += watts
        jobs[j.id] = s
    return Sample(
        t_s, phase, status.budget_w, status.budget_w - status.reserve_w, status.power_w,
        status.accounted_power_limit_w, jobs,
    )  # fmt: skip


class _Load(threading.Thread):
    """The inference job's load, sent from a thread of its own (its own event loop)."""

    def __init__(self, spec: JobSpec, endpoint: str, duration_s: float) -> None:
        super().__init__(name="demo-load", daemon=True)
        self.arrivals = job_arrivals(spec.infer_settings)
        self.duration_s = duration_s
        self.client = LoadClient(LoadOptions(endpoint=endpoint, drain_timeout_s=DRAIN_S))
        self.started_s = time.monotonic()
        self.error: str | None = None

    def run(self) -> None:
        try:
            asyncio.run(self.client.run(self.arrivals, self.duration_s, "demo"))
        except Exception as exc:  # reported by the demo, which goes on without its load
            self.error = str(exc) or type(exc).__name__

    def records(self, t0: float) -> list[dict[str, Any]]:
        """Each request: when it was sent on the demo's clock, and what came back."""
        # the client's clock starts once it has found the model, a moment after ours
        offset = getattr(self.client, "_start", 0.0) or self.started_s
        offset -= t0
        return [
            {"sent_s": r.sent_s + offset, "status": r.status, "ttft_s": r.ttft_s,
             "tpot_s": r.tpot_s, "tokens": r.completion_tokens}
            for r in list(self.client.records)
        ]  # fmt: skip


def _serving(url: str) -> bool:
    try:
        return httpx.get(f"{url}/models", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _warm_up(client: ClusterClient, ids: dict[str, str], log: Callable[[str], None]) -> str:
    """Wait until the training job reports work and the inference endpoint answers; its URL."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < WARMUP_TIMEOUT_S:
        jobs = {j.id: j for j in client.get_status().jobs}
        train, infer = jobs.get(ids["train"]), jobs.get(ids["infer"])
        ready_train = train is not None and train.work_units > 0
        url = infer.endpoint if infer is not None else ""
        ready_infer = bool(url) and _serving(url)
        if ready_train and ready_infer:
            return url
        for j in (train, infer):
            if j is not None and j.state in ("failed", "cancelled"):
                raise GreenllmError(f"demo job {j.id} {j.state} before it ran: {j.reason}")
        log(
            f"warming up {time.monotonic() - t0:3.0f} s: training "
            f"{'reports work' if ready_train else 'starting its ranks'}, inference "
            f"{'serves' if ready_infer else 'starting its replicas'}"
        )
        time.sleep(2.0)
    raise GreenllmError(f"the demo jobs did not start within {WARMUP_TIMEOUT_S:g} s")


def _cut_budget(result: DemoResult, config: ClusterConfig, recent: list[Sample]) -> float:
    """The cut: as asked, or :data:`CUT_SHARE` of the recent draw rounded down to 50 W, but
    :data:`CUT_HEADROOM_W` above what every GPU's minimum limit and the reserve need."""
    if result.phases.cut_to_w is not None:
        return result.phases.cut_to_w
    floor_w = (
        result.reserve_w
        + CUT_HEADROOM_W
        + sum(get_spec(g.type).min_power_limit_w * g.count for n in config.nodes for g in n.gpus)
    )
    draw = sum(s.power_w for s in recent) / max(1, len(recent))
    return float(max(50 * int(CUT_SHARE * draw // 50), 50 * math.ceil(floor_w / 50)))


def run_demo(
    config_path: Path, train_spec: Path, infer_spec: Path, phases: Phases,
    log: Callable[[str], None],
) -> DemoResult:  # fmt: skip
    """Bring the cluster up, run the phases, take it down."""
    config: ClusterConfig = load_cluster_config(config_path)
    specs = {"train": load_job_spec(train_spec), "infer": load_job_spec(infer_spec)}
    prepare_models(list(specs.values()), log)
    result = DemoResult(str(config.policy), config.budget.budget_w, config.budget.reserve_w, phases)
    up = lifecycle.up(config_path, config, log=log)
    log(f"cluster up in {up.startup_s:.1f} s; policy {result.policy}")
    try:
        with ClusterClient(config) as client:
            _run(client, config, specs, result, log)
    finally:
        log("taking the cluster down")
        lifecycle.down(config, log=log)
    return result


def _run(
    client: ClusterClient, config: ClusterConfig, specs: dict[str, JobSpec],
    result: DemoResult, log: Callable[[str], None],
) -> None:  # fmt: skip
    ids = {}
    for kind, spec in specs.items():
        # The demo sends the inference load itself (see the module doc): not the ingress.
        doc = ship_working_dir(spec, config).model_dump_json(exclude={"infer": {"load"}})
        job = client.submit_job(doc)
        ids[kind] = job.id
        result.jobs[job.id] = {
            "name": spec.name, "kind": spec.kind, "shards": spec.shards,
            "min_shards": spec.min_shards, "gpu_types": list(spec.gpu_types),
            "unit": "samples" if spec.kind == "train" else "tokens",
            "slo": spec.slo.model_dump(),
        }  # fmt: skip
        log(f"submitted {job.id}: {spec.kind}, {spec.shards} shards on {spec.gpu_types}")
    w0 = time.monotonic()
    endpoint = _warm_up(client, ids, log)
    result.warmup_s = time.monotonic() - w0
    p = result.phases
    load = _Load(specs["infer"], endpoint, p.total_s)
    t0 = load.started_s
    load.start()
    log(f"both jobs run after {result.warmup_s:.0f} s; sending the trace to {endpoint}")
    phase, fast_until = "full", 0.0
    while (now := time.monotonic() - t0) < p.total_s:
        if phase == "full" and now >= p.full_s:
            result.draw_before_cut_w = sum(s.power_w for s in result.samples[-3:]) / 3
            result.cut_w = _cut_budget(result, config, result.samples[-3:])
            client.set_budget(result.cut_w)
            phase, result.cut_at_s = "cut", time.monotonic() - t0
            fast_until = result.cut_at_s + FAST_S
            log(f"t={now:5.1f} s  budget cut to {result.cut_w:g} W "
                f"(the cluster drew {result.draw_before_cut_w:.0f} W)")  # fmt: skip
        elif phase == "cut" and now >= p.full_s + p.cut_s:
            client.set_budget(result.budget_w)
            phase, result.raised_at_s = "raised", time.monotonic() - t0
            fast_until = result.raised_at_s + FAST_S
            log(f"t={now:5.1f} s  budget raised back to {result.budget_w:g} W")
        sample = read_sample(client.get_status(), time.monotonic() - t0, phase)
        result.samples.append(sample)
        fast = sample.t_s < fast_until
        if not fast or len(result.samples) % 10 == 0:
            log(progress_line(sample, result))
        step_s = FAST_EVERY_S if fast else 1.0
        time.sleep(max(0.0, step_s - (time.monotonic() - t0 - sample.t_s)))
    result.end_s = time.monotonic() - t0
    log("load done; waiting for the requests still in flight")
    load.join(timeout=DRAIN_S + 10.0)
    if load.error:
        log(f"the load failed: {load.error}")
    result.requests = load.records(t0)
    result.load_notes = list(load.client.notes)
    result.final = {
        j.id: {"state": j.state, "work_units": j.work_units, "energy_j": j.energy_j}
        for j in client.list_jobs() if j.id in result.jobs
    }  # fmt: skip


def progress_line(s: Sample, result: DemoResult) -> str:
    """One line per reading: power, limits and budget; each job's rate (and replicas)."""
    parts = []
    for jid, j in s.jobs.items():
        meta = result.jobs.get(jid, {})
        rate = f"{j.throughput:5.1f} {meta.get('unit', 'units')}/s"
        if meta.get("kind") == "infer":
            rate += f", {j.serving}/{j.replicas} replicas serving"
        parts.append(f"{meta.get('name', jid)} {rate}")
    return (
        f"{s.t_s:5.1f}s {s.phase:6} power {s.power_w:4.0f} W, limits {s.limits_w:4.0f} W, "
        f"budget {s.budget_w:g} W | " + " | ".join(parts)
    )


def samples_json(result: DemoResult) -> list[dict[str, Any]]:
    """The readings as plain data (samples.json)."""
    return [asdict(s) for s in result.samples]
