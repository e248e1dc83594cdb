"""Prometheus metrics of the controller, read from a status snapshot at scrape time.

The HTTP server runs on its own thread; each scrape builds the snapshot on the event
loop (where the state lives) so it never sees a half-updated state. Labels are stable:
a series never changes its labels during its life. A job's or a node's phase is its own
gauge, one series per phase, 1 for the phase it is in and 0 for the others (the
kube-state-metrics idiom: ``greenllm_job_state{state="running"} == 1``). Job series
carry ``job_id`` (never ``job``, which Prometheus reserves for the scrape job).

Counters: a GPU's energy counter is the GPU's own (it restarts from 0 with its agent or
node, which ``rate()`` handles). A job's energy, work and CO2e never decrease while the
controller runs (a dip in the controller's figure, e.g. a GPU counter reset, holds the
counter until the figure passes it again).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from greenllm.config import CarbonConfig
from greenllm.energy.carbon import GridIntensity, carbon_g
from greenllm.errors import ConfigError
from greenllm.proto.v1 import cluster_pb2

log = logging.getLogger(__name__)

#: Seconds a scrape waits for the event loop.
SNAPSHOT_TIMEOUT_S = 2.0
#: Every job state, in lifecycle order (``Job.state``).
JOB_STATES = ("pending", "placed", "running", "done", "failed", "cancelled")
#: Every node phase (``NodeStatus.phase``, lower case).
NODE_PHASES = ("unknown", "live", "stale", "lost")
#: Unit of work of each job kind.
WORK_UNITS = {"train": "samples", "infer": "tokens"}

Family = GaugeMetricFamily | CounterMetricFamily | InfoMetricFamily
GPU_LABELS = ["node", "gpu", "type"]
JOB_LABELS = ["job_id", "name", "kind"]


@dataclass
class JobTotals:
    """A job's counters as exported.

    Attributes:
        energy_j: Energy of its GPUs, joules (the highest figure seen).
        work_units: Samples or tokens done (the highest figure seen).
        co2e_g: Emissions of ``energy_j``, grams CO2e (None: no carbon settings).
        at_unix_s: When ``co2e_g`` was last brought up to date, Unix seconds.
    """

    energy_j: float
    work_units: float
    co2e_g: float | None
    at_unix_s: float


class JobCounters:
    """Monotonic per-job energy, work and CO2e from successive status snapshots.

    CO2e is :func:`~greenllm.energy.carbon.carbon_g` with the config's ``carbon``
    settings, as ``greenllm jobs`` computes it: a job first seen is charged over the window
    from its submission to now (or its end); each later energy increase over the window
    since the previous scrape, so a time series of grid intensities weighs each joule with
    the intensity in force when it was drawn. With a constant intensity, the counter is
    exactly ``carbon_g(energy_j, intensity, pue)``.

    Args:
        carbon: The carbon settings (the defaults when None).
    """

    def __init__(self, carbon: CarbonConfig | None = None) -> None:
        carbon = carbon or CarbonConfig()
        self.pue = carbon.pue
        self.intensity: GridIntensity | None
        try:
            if carbon.intensity_file is not None:
                self.intensity = GridIntensity.from_csv(carbon.intensity_file)
            else:
                self.intensity = GridIntensity.for_region(carbon.region)
        except ConfigError as exc:
            log.error("metrics: no CO2e counters: %s", exc)
            self.intensity = None
        self._jobs: dict[str, JobTotals] = {}
        self._lock = threading.Lock()

    def _co2e_g(self, energy_j: float, start_unix_s: float, end_unix_s: float) -> float:
        assert self.intensity is not None
        start_unix_s = max(start_unix_s, self.intensity.times_unix_s[0])
        end_unix_s = max(end_unix_s, start_unix_s)
        return carbon_g(energy_j, self.intensity, self.pue, start_unix_s, end_unix_s)

    def update(self, status: cluster_pb2.ClusterStatus) -> dict[str, JobTotals]:
        """Bring every listed job's counters up to ``status``; forget jobs it no longer lists.

        Returns:
            A copy of the totals by job id.
        """
        with self._lock:
            listed = set()
            for job in status.jobs:
                listed.add(job.id)
                end_s = job.ended_at_s or status.timestamp_s
                t = self._jobs.get(job.id)
                if t is None:
                    co2e = None
                    if self.intensity is not None:
                        co2e = self._co2e_g(job.energy_j, job.submitted_at_s, end_s)
                    self._jobs[job.id] = JobTotals(job.energy_j, job.work_units, co2e, end_s)
                    continue
                if job.energy_j > t.energy_j:
                    if t.co2e_g is not None:
                        added = job.energy_j - t.energy_j
                        t.co2e_g += self._co2e_g(added, t.at_unix_s, end_s)
                    t.energy_j = job.energy_j
                    t.at_unix_s = max(t.at_unix_s, end_s)
                t.work_units = max(t.work_units, job.work_units)
            for gone in self._jobs.keys() - listed:
                del self._jobs[gone]
            return {k: JobTotals(**vars(v)) for k, v in self._jobs.items()}


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"greenllm_{name}", doc, labels=labels)


def _counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(f"greenllm_{name}", doc, labels=labels)


#: Cluster-wide families without labels: (name, is a counter, help).
CLUSTER_FAMILIES = (
    ("budget_watts", False, "Cluster GPU power budget."),
    ("reserve_watts", False, "Budget kept unallocated."),
    ("cluster_power_watts", False, "Sum of the connected GPUs' latest power readings."),
    ("accounted_power_limit_watts", False, "Sum of limits as accounted for the budget."),
    ("headroom_watts", False, "budget - reserve - accounted power limits."),
    ("agents_connected", False, "Node agents with a live stream."),
    ("stale_nodes", False, "Nodes whose telemetry is too old (or never came)."),
    ("failsafe_nodes", False, "Nodes reporting their fail-safe limits are in force."),
    (
        "state_writable",
        False,
        "1 when the controller can write its state (0: disk full, read-only, or its database "
        "replaced, deleted or damaged; status' state_error says which, naming the file).",
    ),
    ("telemetry_samples", True, "GPU telemetry samples ingested since start."),
    ("refused_lowerings", True, "Power-limit lowerings GPUs refused since start."),
    ("jobs_submitted", True, "Jobs ever submitted (status jobs_total)."),
    (
        "budget_shortfall_watts",
        False,
        "Watts the GPUs hold (as accounted) above budget - reserve: a cut they cannot meet.",
    ),
    ("jobs_waiting", False, "Jobs waiting for GPUs."),
    ("max_waiting_jobs", False, "Jobs that may wait before SubmitJob is refused."),
)


def cluster_metrics(status: cluster_pb2.ClusterStatus) -> list[Family]:
    """Cluster-wide families: budget, power, limits, nodes, the state directory."""
    nodes = status.nodes
    values = [
        status.budget_w,
        status.reserve_w,
        status.power_w,
        status.accounted_power_limit_w,
        status.budget_w - status.reserve_w - status.accounted_power_limit_w,
        sum(n.connected for n in nodes),
        sum(n.stale for n in nodes),
        sum(n.failsafe_active for n in nodes),
        status.state_writable,
        status.telemetry_samples,
        status.refused_lowerings,
        status.jobs_total,
        status.shortfall_w,
        status.jobs_waiting,
        status.max_waiting_jobs,
    ]
    out: list[Family] = []
    for (name, is_counter, doc), value in zip(CLUSTER_FAMILIES, values, strict=True):
        family = (_counter if is_counter else _gauge)(name, doc)
        family.add_metric([], float(value))
        out.append(family)
    policy = InfoMetricFamily("greenllm_policy", "The allocation policy in force.")
    policy.add_metric([], {"policy": status.policy})
    phase = _gauge("node_phase", "1 for the node's phase, 0 for the others.", ["node", "phase"])
    failsafe = _gauge("node_failsafe_active", "1 while the node's fail-safe is in force.", ["node"])
    age = _gauge("node_telemetry_age_seconds", "Seconds since the node's telemetry.", ["node"])
    unsaved = _gauge(
        "agent_state_unwritable",
        "1 while the node's agent cannot write its state file (it retries).",
        ["node"],
    )
    rejected = _counter(
        "energy_samples_rejected",
        "Energy readings not booked (kind: counter-back, implausible).",
        ["node", "kind"],
    )
    for node in nodes:
        unsaved.add_metric([node.name], float(bool(node.agent_state_error)))
        for kind in sorted(node.energy_samples_rejected):
            rejected.add_metric([node.name, kind], node.energy_samples_rejected[kind])
        now = cluster_pb2.NodePhase.Name(node.phase).removeprefix("NODE_PHASE_").lower()
        for p in NODE_PHASES:
            phase.add_metric([node.name, p], float(p == now))
        failsafe.add_metric([node.name], float(node.failsafe_active))
        if node.telemetry_age_s >= 0:
            age.add_metric([node.name], node.telemetry_age_s)
    return [*out, policy, phase, failsafe, age, unsaved, rejected]


def domain_metrics(status: cluster_pb2.ClusterStatus) -> list[Family]:
    """Per power domain families (label ``domain``); none without power domains."""
    limit = _gauge("domain_limit_watts", "The power domain's limit.", ["domain"])
    reserve = _gauge("domain_reserve_watts", "Kept below the domain's limit.", ["domain"])
    held = _gauge(
        "domain_accounted_power_limit_watts",
        "Sum of the limits of the domain's GPUs as accounted (at most limit - reserve).",
        ["domain"],
    )
    power = _gauge("domain_power_watts", "Sum of the domain's GPUs' power readings.", ["domain"])
    bound = _gauge("domain_bound", "1 while the domain's limit binds its GPUs.", ["domain"])
    for d in status.domains:
        limit.add_metric([d.name], d.limit_w)
        reserve.add_metric([d.name], d.reserve_w)
        held.add_metric([d.name], d.accounted_power_limit_w)
        power.add_metric([d.name], d.power_w)
        bound.add_metric([d.name], float(d.bound))
    return [limit, reserve, held, power, bound]


def gpu_metrics(status: cluster_pb2.ClusterStatus) -> list[Family]:
    """Per-GPU families (labels ``node``, ``gpu``, ``type``)."""
    limit = _gauge("gpu_power_limit_watts", "Power limit in force.", GPU_LABELS)
    commanded = _gauge(
        "gpu_commanded_power_limit_watts", "Limit last commanded and acked.", GPU_LABELS
    )
    power = _gauge("gpu_power_watts", "Latest power reading.", GPU_LABELS)
    clock = _gauge("gpu_sm_clock_mhz", "Latest SM clock.", GPU_LABELS)
    util = _gauge("gpu_utilization_percent", "Latest utilization.", GPU_LABELS)
    above = _gauge(
        "gpu_above_plan_watts",
        "Watts the GPU is accounted at above the limit last commanded (refused, stale).",
        GPU_LABELS,
    )
    energy = _counter(
        "gpu_energy_joules",
        "The GPU's energy counter (restarts from 0 with its agent or node; use rate()).",
        GPU_LABELS,
    )
    for node in status.nodes:
        for g in node.gpus:
            labels = [node.name, str(g.index), g.type]
            limit.add_metric(labels, g.power_limit_w)
            commanded.add_metric(labels, g.commanded_power_limit_w)
            power.add_metric(labels, g.power_w)
            clock.add_metric(labels, g.sm_clock_mhz)
            util.add_metric(labels, g.utilization_pct)
            above.add_metric(labels, g.above_plan_w)
            if node.telemetry_age_s >= 0:  # no reading yet: no sample (not a false reset)
                energy.add_metric(labels, g.energy_j)
    return [limit, commanded, power, clock, util, above, energy]


def job_metrics(status: cluster_pb2.ClusterStatus, totals: dict[str, JobTotals]) -> list[Family]:
    """Per-job families (labels ``job_id``, ``name``, ``kind``; ``totals`` by job id)."""
    state = _gauge(
        "job_state", "1 for the state the job is in, 0 for the others.", [*JOB_LABELS, "state"]
    )
    throughput = _gauge(
        "job_throughput_units_per_second", "Work rate of a job (samples or tokens).", JOB_LABELS
    )
    energy_now = _gauge("job_energy_joules", "Energy of a job's GPUs since placed.", JOB_LABELS)
    jpu = _gauge("job_joules_per_unit", "Energy per unit of work of a job.", JOB_LABELS)
    slo = _gauge(
        "job_slo_min_throughput_units_per_second", "The job's SLO minimum rate.", JOB_LABELS
    )
    attainment = _gauge(
        "job_slo_attainment_ratio",
        "Running jobs with a rate SLO: throughput / min_throughput (>= 1: met).",
        JOB_LABELS,
    )
    energy = _counter("job_energy_joules", "Energy of a job's GPUs.", JOB_LABELS)
    co2e = _counter("job_co2e_grams", "Emissions of a job's energy (grid x PUE).", JOB_LABELS)
    work = _counter("job_work_units", "Work done by a job.", [*JOB_LABELS, "unit"])
    restarts = _counter("job_restarts", "Times the job was placed again.", JOB_LABELS)
    for job in status.jobs:
        labels = [job.id, job.spec.name, job.spec.kind]
        for s in JOB_STATES:
            state.add_metric([*labels, s], float(s == job.state))
        throughput.add_metric(labels, job.throughput)
        energy_now.add_metric(labels, job.energy_j)
        if job.work_units > 0:
            jpu.add_metric(labels, job.energy_j / job.work_units)
        if job.spec.min_throughput > 0:
            slo.add_metric(labels, job.spec.min_throughput)
            if job.state == "running":
                attainment.add_metric(labels, job.throughput / job.spec.min_throughput)
        restarts.add_metric(labels, job.restarts)
        t = totals.get(job.id)
        if t is None:
            continue
        energy.add_metric(labels, t.energy_j)
        if t.co2e_g is not None:
            co2e.add_metric(labels, t.co2e_g)
        work.add_metric([*labels, WORK_UNITS.get(job.spec.kind, "units")], t.work_units)
    return [state, throughput, energy_now, jpu, slo, attainment, energy, co2e, work, restarts]


def status_metrics(
    status: cluster_pb2.ClusterStatus, counters: JobCounters | None = None
) -> list[Family]:
    """The metric families of one status snapshot.

    Args:
        status: The snapshot.
        counters: The job counters kept between scrapes (None: fresh, default carbon).
    """
    totals = (counters or JobCounters()).update(status)
    return [
        *cluster_metrics(status),
        *domain_metrics(status),
        *gpu_metrics(status),
        *job_metrics(status, totals),
    ]


class StatusCollector(Collector):
    """Collects :func:`status_metrics` from a snapshot taken on the controller's loop.

    Args:
        status: Builds the snapshot (called on ``loop``).
        loop: The controller's event loop.
        carbon: The carbon settings of the CO2e counters (the defaults when None).
    """

    def __init__(
        self,
        status: Callable[[], cluster_pb2.ClusterStatus],
        loop: asyncio.AbstractEventLoop,
        carbon: CarbonConfig | None = None,
    ) -> None:
        self._status = status
        self._loop = loop
        self._counters = JobCounters(carbon)

    def collect(self) -> Iterator[Family]:
        async def snapshot() -> cluster_pb2.ClusterStatus:
            return self._status()

        future = asyncio.run_coroutine_threadsafe(snapshot(), self._loop)
        yield from status_metrics(future.result(timeout=SNAPSHOT_TIMEOUT_S), self._counters)


def serve_metrics(
    status: Callable[[], cluster_pb2.ClusterStatus],
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    carbon: CarbonConfig | None = None,
) -> WSGIServer:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the server.

    Always in the Prometheus text format 0.0.4 (client_golang's default), whatever the
    scraper accepts: in OpenMetrics the counter ``greenllm_job_energy_joules_total`` and the
    older gauge ``greenllm_job_energy_joules`` would be one family name twice.

    Args:
        status: Builds a status snapshot (called on ``loop``).
        loop: The controller's event loop.
        host: Address to listen on (IPv4 or IPv6 literal, or a name).
        port: TCP port.
        carbon: The config's carbon settings, for the CO2e counters.

    Raises:
        OSError: ``host:port`` cannot be bound.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status, loop, carbon))
    app = make_wsgi_app(registry)

    def text_format(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ.pop("HTTP_ACCEPT", None)
        return app(environ, start_response)

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = make_server(host, port, text_format, Server, QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
