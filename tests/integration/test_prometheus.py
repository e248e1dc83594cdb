"""A real Prometheus server scrapes the controller; its view agrees with the controller's.

Prometheus (the ``prometheus`` binary, Debian package ``prometheus``) runs on loopback with
a 1 s scrape interval and its storage in the test's temp dir, against an in-process
controller with the three simulated agents, whose shards report steady work. The test
skips where the binary is absent.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from greenllm.config import ClusterConfig, load_cluster_config
from greenllm.energy.carbon import GridIntensity, carbon_g
from greenllm.rpc.client import ClusterClient
from scheduler.server.app import Controller
from workers.agent.agent import Backoff, NodeAgent
from workers.shardhost import ShardStatus

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]  # ~17 s: a real Prometheus scrapes

PROMETHEUS = shutil.which("prometheus")
NO_PROMETHEUS = "no `prometheus` binary on PATH (Debian: apt-get install prometheus)"
#: Units of work per second each shard reports.
SHARD_RATE = 50.0
SHARDS = 2
TRAIN: dict[str, Any] = {
    "name": "train-metered",
    "kind": "train",
    "shards": SHARDS,
    "gpu_types": ["H100-SXM"],
    "slo": {"min_throughput": 20},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SteadyShards:
    """A shard runner whose shards run nothing but report ``SHARD_RATE`` units per second."""

    def __init__(self) -> None:
        self.running: dict[str, tuple[ShardStatus, float]] = {}

    def start(self, shard_id: str, gpu_index: int, spec_json: str, generation: int = 0) -> None:
        job_id = shard_id.rpartition("-")[0]
        status = ShardStatus(shard_id, job_id, generation=generation)
        self.running[shard_id] = (status, time.monotonic())

    def stop(self, shard_id: str, timeout_s: float | None = 30.0) -> bool:
        return self.running.pop(shard_id, None) is not None

    def set_load_weights(self, weights: dict[str, float]) -> None:
        pass

    def statuses(self) -> list[ShardStatus]:
        now = time.monotonic()
        for status, started in self.running.values():
            status.work_units = SHARD_RATE * (now - started)
            status.steps = int(status.work_units // 8)
        return [status for status, _ in self.running.values()]


class Prometheus:
    """A Prometheus server scraping ``target`` every second, on a free loopback port.

    Args:
        workdir: Holds its config, its storage and its log.
        target: ``host:port`` of the metrics endpoint.
    """

    def __init__(self, workdir: Path, target: str) -> None:
        assert PROMETHEUS is not None
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log_path = workdir / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": "greenllm", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        argv = [
            PROMETHEUS,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={self.url.removeprefix('http://')}",
            "--log.level=warn",
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def get(self, path: str, **params: Any) -> Any:
        """The ``data`` of a Prometheus HTTP API reply."""
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at_s: float) -> dict[str, float]:
        """An instant query at ``at_s``: ``{json of the labels: value}``."""
        data = self.get("/api/v1/query", query=expr, time=f"{at_s:.3f}")
        return {
            json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in data["result"]
        }

    def scalar(self, expr: str, at_s: float) -> float:
        """The one value of an instant query (fails when it has none or several)."""
        result = self.query(expr, at_s)
        assert len(result) == 1, (expr, result)
        return next(iter(result.values()))

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"prometheus exited {self.proc.returncode}: {self.log()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def steady_fleet(config: ClusterConfig, loop_thread: Any) -> Iterator[list[NodeAgent]]:
    """The config's agents, their shards reporting steady work."""
    backoff = Backoff(initial_s=0.05, max_s=0.3)
    agents = [
        NodeAgent(config, n.name, backoff=backoff, shard_runner=SteadyShards())
        for n in config.nodes
    ]
    tasks = [loop_thread.spawn(a.run()) for a in agents]
    try:
        yield agents
    finally:
        for task in tasks:
            loop_thread.cancel(task)


@pytest.fixture
def prometheus(
    tmp_path: Path, config: ClusterConfig, controller: Controller
) -> Iterator[Prometheus]:
    if PROMETHEUS is None:
        pytest.skip(NO_PROMETHEUS)
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    server = Prometheus(workdir, f"127.0.0.1:{config.controller.metrics_port}")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.skipif(PROMETHEUS is None, reason=NO_PROMETHEUS)
def test_prometheus_rates_agree_with_the_controller(
    config: ClusterConfig,
    controller: Controller,
    steady_fleet: list[NodeAgent],
    prometheus: Prometheus,
    wait: Callable[[Callable[[], bool], float, str], float],
) -> None:
    wait(prometheus.ready, 30, f"prometheus to be ready: {prometheus.log_path}")
    with ClusterClient(config) as client:
        job_id = client.submit_job(json.dumps(TRAIN)).id
        wait(lambda: client.get_status().jobs[0].state == "running", 20, "the job to run")

        def scraped_for(seconds: float) -> bool:
            expr = f'count_over_time(greenllm_job_state{{job_id="{job_id}",state="running"}}[1h])'
            got = prometheus.query(expr, time.time())
            return bool(got) and next(iter(got.values())) >= seconds

        wait(lambda: scraped_for(12), 60, f"12 scrapes of the running job: {prometheus.log()}")
        (target,) = prometheus.get("/api/v1/targets", state="active")["activeTargets"]
        assert (target["health"], target["lastError"]) == ("up", ""), target

        at_s = time.time()
        counted_w = prometheus.scalar("sum(rate(greenllm_gpu_energy_joules_total[10s]))", at_s)
        gauge_w = prometheus.scalar("avg_over_time(greenllm_cluster_power_watts[10s])", at_s)
        assert counted_w == pytest.approx(gauge_w, rel=0.05), "energy counters vs cluster power"
        assert counted_w > 0

        # Prometheus's latest energy figures trail the controller's by at most a few scrapes.
        scraped_j = prometheus.scalar("sum(greenllm_gpu_energy_joules_total)", time.time())
        status = client.get_status()
        own_j = sum(g.energy_j for n in status.nodes for g in n.gpus)
        assert -1e-9 * own_j <= own_j - scraped_j <= 4 * status.power_w  # float sums differ
        (job,) = [j for j in status.jobs if j.id == job_id]
        job_j = prometheus.scalar(f'greenllm_job_energy_joules_total{{job_id="{job_id}"}}', at_s)
        assert 0 < job_j <= job.energy_j

        # The job's counters rise: at the rate its shards report, and with its GPUs' power.
        selector = f'{{job_id="{job_id}"}}'
        work = prometheus.query(f"rate(greenllm_job_work_units_total{selector}[10s])", at_s)
        ((labels, work_rate),) = work.items()
        assert json.loads(labels)["unit"] == "samples"
        assert work_rate == pytest.approx(SHARDS * SHARD_RATE, rel=0.1)
        job_w = prometheus.scalar(f"rate(greenllm_job_energy_joules_total{selector}[10s])", at_s)
        assert 0 < job_w < counted_w
        ratio = prometheus.scalar(f"greenllm_job_slo_attainment_ratio{selector}", at_s)
        assert ratio == pytest.approx(SHARDS * SHARD_RATE / 20, rel=0.1)
        co2e_per_j = prometheus.scalar(
            f"greenllm_job_co2e_grams_total{selector} / greenllm_job_energy_joules_total{selector}",
            at_s,
        )
        intensity = GridIntensity.for_region(config.carbon.region)
        assert co2e_per_j == pytest.approx(carbon_g(1.0, intensity, config.carbon.pue))
        for counter in ("work_units", "energy_joules", "co2e_grams"):
            expr = f"greenllm_job_{counter}_total{selector}"
            (series,) = prometheus.get(
                "/api/v1/query_range", query=expr, start=at_s - 10, end=at_s, step=1
            )["result"]
            values = [float(v) for _, v in series["values"]]
            assert len(values) >= 8 and values[-1] > values[0], (expr, values)
            assert values == sorted(values), (expr, values)


def _bindable(host: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((host, 0))
    except OSError:
        return False
    return True


@pytest.mark.timeout(60)
def test_metrics_listen_on_metrics_address(tmp_path: Path, loop_thread: Any) -> None:
    """``controller.metrics_address`` moves the endpoint off the controller's host; it serves
    the text format 0.0.4 even to a scraper that prefers OpenMetrics."""
    host = "127.0.0.2"
    if not _bindable(host):
        pytest.skip(f"{host} (loopback) cannot be bound here")
    port = _free_port()
    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "cluster.yaml").read_text())
    data["state_dir"] = str(tmp_path / "state")
    data["controller"] = {
        "address": f"127.0.0.1:{_free_port()}",
        "metrics_port": port,
        "metrics_address": host,
    }
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(data))
    controller = Controller(load_cluster_config(tmp_path / "cluster.yaml"))
    loop_thread.run(controller.start())
    try:
        request = urllib.request.Request(
            f"http://{host}:{port}/metrics",
            headers={"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert "greenllm_budget_watts 2800.0" in reply.read().decode()
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    finally:
        loop_thread.run(controller.stop(0))
