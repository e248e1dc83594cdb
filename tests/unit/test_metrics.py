"""The controller's Prometheus exporter, from hand-made status snapshots (no sockets)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from greenllm.cli.jobs_cmd import job_document
from greenllm.config import CarbonConfig, ControllerConfig, load_cluster_config
from greenllm.energy.carbon import GridIntensity, carbon_g
from greenllm.proto.v1 import cluster_pb2
from scheduler.server.metrics import JOB_STATES, NODE_PHASES, JobCounters, status_metrics

REPO = Path(__file__).resolve().parents[2]
NOW_S = 1_700_000_000.0
JOB_LABELS = {"job_id", "name", "kind"}


def job(
    job_id: str = "j1",
    state: str = "running",
    energy_j: float = 7_200.0,
    work_units: float = 900.0,
    kind: str = "train",
    min_throughput: float = 0.0,
    throughput: float = 30.0,
) -> cluster_pb2.Job:
    """One job as status lists it."""
    return cluster_pb2.Job(
        id=job_id,
        spec=cluster_pb2.JobSpec(name=f"{job_id}-name", kind=kind, min_throughput=min_throughput),
        state=state,
        throughput=throughput,
        energy_j=energy_j,
        work_units=work_units,
        submitted_at_s=NOW_S - 100,
        restarts=1,
    )


def status(*jobs: cluster_pb2.Job, at_s: float = NOW_S) -> cluster_pb2.ClusterStatus:
    """A two-node cluster (one live, one never heard from) running ``jobs``."""
    live = cluster_pb2.NodeStatus(
        name="node-a",
        connected=True,
        phase=cluster_pb2.NODE_PHASE_LIVE,
        telemetry_age_s=0.1,
        gpus=[
            cluster_pb2.GpuStatus(
                index=i, type="H100-SXM", power_limit_w=400, power_w=300 + i, energy_j=1e6 + i
            )
            for i in range(2)
        ],
    )
    silent = cluster_pb2.NodeStatus(
        name="node-b",
        stale=True,
        failsafe_active=True,
        phase=cluster_pb2.NODE_PHASE_UNKNOWN,
        telemetry_age_s=-1,
        gpus=[cluster_pb2.GpuStatus(index=0, type="L4", power_limit_w=72)],
    )
    return cluster_pb2.ClusterStatus(
        budget_w=2800,
        reserve_w=100,
        power_w=601,
        accounted_power_limit_w=872,
        policy="min-energy",
        nodes=[live, silent],
        jobs=list(jobs),
        timestamp_s=at_s,
        telemetry_samples=42,
        jobs_total=7,
        state_writable=True,
        refused_lowerings=3,
    )


def samples(snapshot: cluster_pb2.ClusterStatus, counters: JobCounters | None = None) -> dict:
    """``{metric name: [(labels, value), ...]}`` as a scraper reads the exposition."""

    class Collector:
        def collect(self):  # type: ignore[no-untyped-def]
            yield from status_metrics(snapshot, counters)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[s.name].append((s.labels, s.value))
    return out


def value(got: dict, name: str, **labels: str) -> float:
    """The one sample of ``name`` whose labels include ``labels``."""
    found = [v for lab, v in got[name] if labels.items() <= lab.items()]
    assert len(found) == 1, (name, labels, got[name])
    return float(found[0])


def test_counters_and_gauges_of_a_snapshot() -> None:
    got = samples(status(job()))
    assert value(got, "greenllm_budget_watts") == 2800
    assert value(got, "greenllm_headroom_watts") == 2800 - 100 - 872
    assert value(got, "greenllm_state_writable") == 1
    assert value(got, "greenllm_refused_lowerings_total") == 3
    assert value(got, "greenllm_jobs_submitted_total") == 7
    assert value(got, "greenllm_telemetry_samples_total") == 42
    assert value(got, "greenllm_policy_info", policy="min-energy") == 1
    assert value(got, "greenllm_gpu_energy_joules_total", node="node-a", gpu="1") == 1e6 + 1
    assert value(got, "greenllm_gpu_power_limit_watts", node="node-b", gpu="0", type="L4") == 72
    # A node never heard from has no energy reading: no sample rather than a false reset.
    assert all(lab["node"] == "node-a" for lab, _ in got["greenllm_gpu_energy_joules_total"])
    assert value(got, "greenllm_job_energy_joules_total", job_id="j1") == 7_200
    assert value(got, "greenllm_job_work_units_total", job_id="j1", unit="samples") == 900
    assert value(got, "greenllm_job_joules_per_unit", job_id="j1") == 8
    assert value(got, "greenllm_job_restarts_total", job_id="j1") == 1
    assert value(got, "greenllm_node_failsafe_active", node="node-b") == 1
    assert value(got, "greenllm_failsafe_nodes") == 1


def test_states_are_one_hot_gauges_and_labels_are_stable() -> None:
    got = samples(status(job("j1", "running"), job("j2", "done", kind="infer")))
    for job_id, now in (("j1", "running"), ("j2", "done")):
        states = {
            lab["state"]: v for lab, v in got["greenllm_job_state"] if lab["job_id"] == job_id
        }
        assert states == {s: float(s == now) for s in JOB_STATES}
    phases = {lab["phase"]: v for lab, v in got["greenllm_node_phase"] if lab["node"] == "node-b"}
    assert phases == {p: float(p == "unknown") for p in NODE_PHASES}
    assert value(got, "greenllm_job_work_units_total", job_id="j2") == 900
    assert got["greenllm_job_work_units_total"][1][0]["unit"] == "tokens"
    for name, series in got.items():
        if name.startswith("greenllm_job_") and name != "greenllm_job_state":
            for labels, _ in series:
                assert set(labels) - {"unit"} == JOB_LABELS, (name, labels)


def test_co2e_is_what_greenllm_jobs_reports() -> None:
    config = load_cluster_config(REPO / "cluster.yaml")
    j = job(energy_j=3.6e6 * 2)
    got = samples(status(j), JobCounters(config.carbon))
    expected = job_document(j, config)["co2e_g"]
    assert value(got, "greenllm_job_co2e_grams_total", job_id="j1") == pytest.approx(expected)
    world = GridIntensity.for_region(config.carbon.region)
    assert expected == pytest.approx(carbon_g(j.energy_j, world, config.carbon.pue))


def test_job_counters_never_go_back() -> None:
    counters = JobCounters(CarbonConfig(region="world", pue=1.0))
    seen = []
    for energy_j, work in ((1000.0, 10.0), (600.0, 4.0), (900.0, 8.0), (1500.0, 20.0)):
        got = samples(status(job(energy_j=energy_j, work_units=work)), counters)
        seen.append(
            (
                value(got, "greenllm_job_energy_joules_total"),
                value(got, "greenllm_job_work_units_total"),
            )
        )
    # A dip (e.g. a GPU counter reset) holds the counter; it follows again once passed.
    assert seen == [(1000, 10), (1000, 10), (1000, 10), (1500, 20)]
    co2e = value(got, "greenllm_job_co2e_grams_total")
    assert co2e == pytest.approx(carbon_g(1500, GridIntensity.for_region("world")))


def test_co2e_follows_a_time_series_of_intensities(tmp_path: Path) -> None:
    series = tmp_path / "grid.csv"
    series.write_text(f"timestamp,g_co2e_per_kwh\n{NOW_S - 1000},100\n{NOW_S + 50},500\n")
    counters = JobCounters(CarbonConfig(intensity_file=series, pue=1.5))
    samples(status(job(energy_j=3.6e6), at_s=NOW_S), counters)  # submitted NOW_S - 100
    got = samples(status(job(energy_j=2 * 3.6e6), at_s=NOW_S + 100), counters)
    # The first kWh under 100 g/kWh; the second over [NOW_S, NOW_S+100]: half at 100, half at 500.
    assert value(got, "greenllm_job_co2e_grams_total") == pytest.approx(1.5 * (100 + 300))


def test_forgets_jobs_status_no_longer_lists() -> None:
    counters = JobCounters()
    samples(status(job("j1"), job("j2")), counters)
    got = samples(status(job("j2")), counters)
    assert {lab["job_id"] for lab, _ in got["greenllm_job_energy_joules_total"]} == {"j2"}
    assert {lab["job_id"] for lab, _ in got["greenllm_job_state"]} == {"j2"}


def test_slo_attainment_of_running_jobs_with_a_rate_slo() -> None:
    got = samples(
        status(
            job("fast", min_throughput=20.0, throughput=30.0),
            job("queued", "pending", min_throughput=20.0, throughput=0.0),
            job("free", min_throughput=0.0),
        )
    )
    assert value(got, "greenllm_job_slo_attainment_ratio", job_id="fast") == 1.5
    assert {lab["job_id"] for lab, _ in got["greenllm_job_slo_attainment_ratio"]} == {"fast"}
    mins = {lab["job_id"] for lab, _ in got["greenllm_job_slo_min_throughput_units_per_second"]}
    assert mins == {"fast", "queued"}


def test_a_bad_carbon_setting_leaves_out_only_co2e() -> None:
    got = samples(status(job()), JobCounters(CarbonConfig(region="atlantis")))
    assert "greenllm_job_co2e_grams_total" not in got
    assert value(got, "greenllm_job_energy_joules_total") == 7_200


def test_metrics_address_is_a_host() -> None:
    assert ControllerConfig().metrics_address is None
    assert ControllerConfig(metrics_address="0.0.0.0").metrics_address == "0.0.0.0"
    for bad in ("", "a host"):
        with pytest.raises(ValueError, match="metrics_address"):
            ControllerConfig(metrics_address=bad)


def test_co2e_and_cost_are_the_controllers_books_when_it_sends_them() -> None:
    """A job whose status carries co2e_g (the controller booked it interval by interval)
    is exported as booked, not recomputed from one intensity; its cost beside it. The
    counter never goes back."""
    config = load_cluster_config(REPO / "cluster.yaml")
    counters = JobCounters(config.carbon)
    booked = job(energy_j=3.6e6)
    booked.co2e_g = 123.0
    booked.energy_cost = 0.25
    got = samples(status(booked), counters)
    assert value(got, "greenllm_job_co2e_grams_total", job_id="j1") == 123.0
    assert value(got, "greenllm_job_energy_cost_total", job_id="j1") == 0.25
    assert job_document(booked, config)["co2e_g"] == 123.0
    assert job_document(booked, config)["energy_cost"] == 0.25
    booked.co2e_g = 100.0  # a stale figure: held
    got = samples(status(booked), counters)
    assert value(got, "greenllm_job_co2e_grams_total", job_id="j1") == 123.0
    plain = job(energy_j=3.6e6)
    assert job_document(plain, config)["energy_cost"] is None
    assert "greenllm_job_energy_cost_total" not in samples(status(plain), JobCounters())


def test_jobs_table_shows_cost_only_when_the_signal_has_a_price(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from greenllm.cli import jobs_cmd

    config = load_cluster_config(REPO / "cluster.yaml")
    booked = job(energy_j=3.6e6)
    booked.co2e_g = 123.0
    pages = {"now": [booked]}

    class Client:
        def __enter__(self) -> Client:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def list_jobs_page(self, limit: int, token: str) -> cluster_pb2.ListJobsResponse:
            return cluster_pb2.ListJobsResponse(jobs=pages["now"], total=len(pages["now"]))

    monkeypatch.setattr(jobs_cmd, "client_for", lambda _path: (config, Client()))
    out = CliRunner().invoke(jobs_cmd.jobs, []).output
    assert "gCO2e" in out and "cost" not in out
    booked.energy_cost = 0.25
    out = CliRunner().invoke(jobs_cmd.jobs, []).output
    assert "cost" in out and "0.25" in out
