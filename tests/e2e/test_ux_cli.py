"""What a user meets at the CLI: help that reads as help, one-line errors that say what to
do, every option explained, choices listed, tables that are not cut when piped."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import yaml

from greenllm.cli import main as cli_main
from greenllm.config import registered_policies
from greenllm.devices.catalog import CATALOG
from greenllm.policy_guide import GUIDES, ORACLE

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli_main.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def offline_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A cluster.yaml whose controller address has nothing listening and whose state
    directory has no tokens file (as before the first ``greenllm up``)."""
    monkeypatch.delenv("GREENLLM_TOKEN", raising=False)
    data = yaml.safe_load((REPO / "cluster.yaml").read_text())
    address = f"127.0.0.1:{free_port()}"
    data["controller"] = {"address": address, "metrics_port": 0}
    data["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, address


LIVE_COMMANDS = [
    ["status"],
    ["jobs"],
    ["submit", str(REPO / "examples" / "jobs" / "train-tiny.yaml")],
    ["budget", "set", "1500"],
    ["policy", "set", "uniform"],
    ["logs", "job-1"],
    ["cancel", "job-1"],
]


@pytest.mark.parametrize("args", LIVE_COMMANDS, ids=lambda a: a[0])
def test_live_command_without_controller_says_start_one(
    args: list[str], offline_config: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, address = offline_config
    code, out, err = run(capsys, *args, "--config", str(path))
    assert code == 1 and out == ""
    assert one_line_error(err) == (
        f"greenllm: error: no controller running at {address} (start one with `greenllm up`)"
    )


def test_listening_controller_without_tokens_file_names_the_fix(
    offline_config: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, address = offline_config
    host, _, port = address.rpartition(":")
    with socket.socket() as listener:
        listener.bind((host, int(port)))
        listener.listen()
        code, _, err = run(capsys, "status", "--config", str(path))
    line = one_line_error(err)
    assert code == 1
    assert f"controller at {address} is running" in line
    assert "tokens does not exist" in line and "GREENLLM_TOKEN" in line


def test_bare_greenllm_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert code == 0 and err == ""
    assert out.startswith("Usage: greenllm")
    assert "Commands:" in out and len(out.splitlines()) > 10
    assert "error" not in out


@pytest.mark.parametrize("group", ["budget", "policy", "config"])
def test_bare_group_prints_its_help_not_an_error_line(
    group: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, group)
    assert code == 2 and out == ""
    assert err.startswith(f"Usage: greenllm {group}")
    assert "Commands:" in err and len(err.splitlines()) > 5
    assert "error" not in err


def _commands() -> Iterator[tuple[str, click.Command]]:
    cli_main._load_commands()

    def walk(cmd: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
        if isinstance(cmd, click.Group):
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, f"{path} {name}")
        else:
            yield path, cmd

    yield from walk(cli_main.cli, "greenllm")


#: Commands in files other engineers are changing now; strict, so it fails once fixed.
NOT_YET_HELPED: dict[str, str] = {}


def _help_cases() -> list[object]:
    cases: list[object] = []
    for path, cmd in _commands():
        marks = []
        if path in NOT_YET_HELPED:
            marks.append(pytest.mark.xfail(strict=True, reason=NOT_YET_HELPED[path]))
        cases.append(pytest.param(cmd, id=path, marks=marks))
    return cases


@pytest.mark.parametrize("cmd", _help_cases())
def test_every_option_has_help(cmd: click.Command) -> None:
    assert cmd.help, f"{cmd.name} has no help"
    missing = [p.opts[0] for p in cmd.params if isinstance(p, click.Option) and not p.help]
    assert missing == [], f"options without help: {missing}"


def test_policy_set_help_lists_every_policy_and_the_oracle(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "policy", "set", "--help")
    assert code == 0
    for name in registered_policies():
        assert f"{name}: " in out
    assert "oracle" in out and "sim" in out


def test_policy_list_describes_every_policy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "list", "--json")
    assert code == 0
    docs = json.loads(out)["policies"]
    assert [d["name"] for d in docs] == [*registered_policies(), ORACLE]
    assert all(d["optimises"] and d["when"] for d in docs)
    assert [d["live"] for d in docs] == [True] * len(registered_policies()) + [False]


def test_every_registered_policy_is_described() -> None:
    assert set(registered_policies()) | {ORACLE} == set(GUIDES)


def test_config_check_help_lists_gpu_types_and_policies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out, _ = run(capsys, "config", "check", "--help")
    flat = " ".join(out.split())
    for name in [*CATALOG, *registered_policies()]:
        assert name in flat


def test_gpus_says_which_node(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(REPO / "cluster.yaml")
    code, out, _ = run(capsys, "gpus", "--config", config, "--backend", "simulated")
    assert code == 0
    assert out.splitlines()[0].startswith(f"node node-h100 of {config} (the config's first")
    code, out, _ = run(capsys, "gpus", "--config", config, "--node", "node-l4", "--json")
    doc = json.loads(out)
    assert doc["node"] == "node-l4" and doc["config"] == config
    assert [g["type"] for g in doc["gpus"]] == ["L4"] * 4


def test_config_check_nvml_node_without_gpus_is_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nvml.yaml"
    path.write_text("nodes: [{name: box, backend: nvml}]\nbudget: {budget_w: 1000}\n")
    code, out, err = run(capsys, "config", "check", str(path))
    assert code == 0, err
    assert "summed TDP unknown" in out and "box" in out
    code, out, _ = run(capsys, "config", "check", str(path), "--json")
    assert json.loads(out)["nodes_without_gpu_list"] == ["box"]


def test_piped_table_keeps_its_width(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, _ = run(capsys, "policy", "list")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) > 80
    for name in [*registered_policies(), ORACLE]:
        assert GUIDES[name].optimises in out  # whole sentences, not cut or wrapped


def test_an_internal_error_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_a: object, **_k: object) -> list[object]:
        raise ZeroDivisionError("float division by zero")

    monkeypatch.delenv(cli_main.DEBUG_ENV, raising=False)
    monkeypatch.setattr("greenllm.cli.devices_cmd.get_gpus", broken)
    code, out, err = run(capsys, "gpus", "--config", str(REPO / "cluster.yaml"))
    line = one_line_error(err)
    assert code == 1 and out == ""
    assert line.startswith("greenllm: internal error: ZeroDivisionError")


def test_piped_config_summary_is_not_cut_to_80_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    name = "node-" + "x" * 50
    gpus = [{"type": t, "count": 2} for t in ("H100-SXM", "A100-SXM4", "L4", "A40")]
    path = tmp_path / "wide.yaml"
    path.write_text(
        yaml.safe_dump({"nodes": [{"name": name, "gpus": gpus}], "budget": {"budget_w": 3000}})
    )
    code, out, _ = run(capsys, "config", "check", str(path))
    assert code == 0
    row = next(line for line in out.splitlines() if name in line)
    assert "2 x H100-SXM, 2 x A100-SXM4, 2 x L4, 2 x A40" in row


def test_submitting_a_vllm_job_without_vllm_says_what_to_install(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "model").mkdir()
    job = tmp_path / "job.yaml"
    spec = {"name": "v", "kind": "infer", "infer": {"engine": "vllm", "vllm": {"model": "model"}}}
    job.write_text(yaml.safe_dump(spec))
    monkeypatch.delenv("GREENLLM_VLLM_PYTHON", raising=False)
    code, _, err = run(capsys, "submit", str(job))
    line = one_line_error(err)
    assert code != 0 and "GREENLLM_VLLM_PYTHON" in line and "pip install vllm" in line
    # greenllm's own python has no vLLM (it is never installed there)
    monkeypatch.setenv("GREENLLM_VLLM_PYTHON", sys.executable)
    code, _, err = run(capsys, "submit", str(job))
    assert code != 0 and "has no vllm package" in one_line_error(err)
