"""``greenllm sim --from-cluster``: the scenario of the cluster.yaml and job specs given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greenllm.config import load_cluster_config
from greenllm.errors import ConfigError
from scheduler.sim.from_cluster import ClusterNow, build_scenario, parse_schedule

REPO = Path(__file__).resolve().parents[2]


def test_the_cluster_and_its_jobs_become_a_scenario() -> None:
    config = load_cluster_config(REPO / "cluster.yaml")
    jobs = [REPO / "examples/jobs/train-tiny.yaml", REPO / "examples/jobs/infer-tiny.yaml"]
    sc = build_scenario(config, jobs, 100.0, parse_schedule("30:1600, 60:2800"))
    assert [n.name for n in sc.nodes] == config.names()
    assert sc.budget.budget_w == config.budget.budget_w and sc.budget.reserve_w == 100
    assert [(c.t_s, c.budget_w) for c in sc.budget.schedule] == [(30, 1600), (60, 2800)]
    train, infer = sc.jobs
    spec = train.train_settings
    assert train.sim.total_samples == spec.steps * spec.batch_size * train.shards
    assert infer.infer_settings.max_new_tokens == 32  # the same job, the same tokens
    assert infer.sim.fit_to_model_context  # requests as the served model takes them
    assert sc.control.control_period_s == config.control_period_s


def test_what_the_controller_says_wins() -> None:
    config = load_cluster_config(REPO / "cluster.yaml")
    now = ClusterNow(1500.0, 50.0, "min-energy", [{"name": "live", "kind": "infer", "shards": 2}])
    sc = build_scenario(config, [], 60.0, (), now)
    assert sc.budget.budget_w == 1500 and sc.policy == "min-energy"
    assert [j.name for j in sc.jobs] == ["live"]


def test_bad_input_is_one_line() -> None:
    with pytest.raises(ConfigError, match="'30-1600' is not T_S:BUDGET_W"):
        parse_schedule("30-1600")
    config = load_cluster_config(REPO / "cluster.yaml")
    with pytest.raises(ConfigError, match="below the sum of the GPUs' minimum power limits"):
        build_scenario(config, [], 60.0, [(10.0, 400.0)])
    with pytest.raises(ConfigError, match="reserve_w 100 W is not below the budget 100 W"):
        build_scenario(config, [], 60.0, [(10.0, 100.0)])


def test_a_training_slo_is_written_to_summary_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A training job with a min_throughput SLO: summary.json is written (its slo_met was a
    numpy bool, which json cannot write)."""
    import click
    from click.testing import CliRunner

    from scheduler.commands import sim as sim_command

    monkeypatch.setattr(sim_command, "cluster_now", lambda _path: None)  # no live cluster
    cli = click.Group()
    sim_command.register(cli)
    spec = tmp_path / "train.yaml"
    spec.write_text(
        "name: t\nkind: train\nshards: 2\ngpu_types: [H100-SXM]\nslo: {min_throughput: 5}\n"
    )
    out = tmp_path / "out"
    args = ["sim", "--from-cluster", "--config", str(REPO / "cluster.yaml"), "--jobs"]
    result = CliRunner().invoke(cli, [*args, str(spec), "--duration-s", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["slo_met"]["t"] in (True, False)
