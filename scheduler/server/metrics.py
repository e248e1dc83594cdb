"""Prometheus metrics of the controller, read from a status snapshot at scrape time.

The HTTP server runs on its own thread; each scrape builds the snapshot on the event
loop (where the state lives) so it never sees a half-updated state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from greenllm.proto.v1 import cluster_pb2

#: Seconds a scrape waits for the event loop.
SNAPSHOT_TIMEOUT_S = 2.0


def status_metrics(
    status: cluster_pb2.ClusterStatus,
) -> list[GaugeMetricFamily | CounterMetricFamily]:
    """The metric families of one status snapshot."""

    def gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"greenllm_{name}", doc, labels=labels)

    budget = gauge("budget_watts", "Cluster GPU power budget.")
    budget.add_metric([], status.budget_w)
    reserve = gauge("reserve_watts", "Budget kept unallocated.")
    reserve.add_metric([], status.reserve_w)
    power = gauge("cluster_power_watts", "Sum of the connected GPUs' latest power readings.")
    power.add_metric([], status.power_w)
    accounted = gauge(
        "accounted_power_limit_watts",
        "Sum of power limits as accounted for the budget (stale nodes at their maximum).",
    )
    accounted.add_metric([], status.accounted_power_limit_w)
    headroom = gauge("headroom_watts", "budget - reserve - accounted power limits.")
    headroom.add_metric([], status.budget_w - status.reserve_w - status.accounted_power_limit_w)
    connected = gauge("agents_connected", "Node agents with a live stream.")
    connected.add_metric([], sum(n.connected for n in status.nodes))
    stale = gauge("stale_nodes", "Nodes whose telemetry is too old (or never came).")
    stale.add_metric([], sum(n.stale for n in status.nodes))
    failsafe = gauge("failsafe_nodes", "Nodes reporting their fail-safe limits are in force.")
    failsafe.add_metric([], sum(n.failsafe_active for n in status.nodes))
    samples = CounterMetricFamily(
        "greenllm_telemetry_samples", "GPU telemetry samples ingested since start."
    )
    samples.add_metric([], status.telemetry_samples)

    gpu_labels = ["node", "gpu", "type"]
    limit = gauge("gpu_power_limit_watts", "Power limit in force.", gpu_labels)
    gpu_power = gauge("gpu_power_watts", "Latest power reading.", gpu_labels)
    clock = gauge("gpu_sm_clock_mhz", "Latest SM clock.", gpu_labels)
    util = gauge("gpu_utilization_percent", "Latest utilization.", gpu_labels)
    for node in status.nodes:
        for g in node.gpus:
            labels = [node.name, str(g.index), g.type]
            limit.add_metric(labels, g.power_limit_w)
            gpu_power.add_metric(labels, g.power_w)
            clock.add_metric(labels, g.sm_clock_mhz)
            util.add_metric(labels, g.utilization_pct)

    job_labels = ["job", "kind", "state"]
    throughput = gauge("job_throughput_units_per_second", "Work rate of a job.", job_labels)
    energy = gauge("job_energy_joules", "Energy of a job's GPUs since it was placed.", job_labels)
    jpu = gauge("job_joules_per_unit", "Energy per unit of work of a job.", job_labels)
    for job in status.jobs:
        labels = [job.id, job.spec.kind, job.state]
        throughput.add_metric(labels, job.throughput)
        energy.add_metric(labels, job.energy_j)
        if job.work_units > 0:
            jpu.add_metric(labels, job.energy_j / job.work_units)
    return [
        budget,
        reserve,
        power,
        accounted,
        headroom,
        connected,
        stale,
        failsafe,
        samples,
        limit,
        gpu_power,
        clock,
        util,
        throughput,
        energy,
        jpu,
    ]


class StatusCollector(Collector):
    """Collects :func:`status_metrics` from a snapshot taken on the controller's loop.

    Args:
        status: Builds the snapshot (called on ``loop``).
        loop: The controller's event loop.
    """

    def __init__(
        self, status: Callable[[], cluster_pb2.ClusterStatus], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._status = status
        self._loop = loop

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        async def snapshot() -> cluster_pb2.ClusterStatus:
            return self._status()

        future = asyncio.run_coroutine_threadsafe(snapshot(), self._loop)
        yield from status_metrics(future.result(timeout=SNAPSHOT_TIMEOUT_S))


def serve_metrics(
    status: Callable[[], cluster_pb2.ClusterStatus],
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
) -> WSGIServer:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the server."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status, loop))
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server
