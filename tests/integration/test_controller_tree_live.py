"""A live controller tree: two child controllers (real gRPC servers, real agents on
loopback) under the parent loop the simulator runs. Watts follow the work, and a cut of the
parent's limit is held by the GPUs of both children together."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from greenllm.config import load_cluster_config
from greenllm.rpc.client import ClusterClient
from scheduler.server.app import Controller
from scheduler.tree.live import Child, ParentLoop, load_tree
from tests.integration.conftest import Fleet, LoopThread, write_config

pytestmark = pytest.mark.timeout(150)

TRAIN = {
    "name": "t",
    "kind": "train",
    "shards": 4,
    "gpu_types": ["H100-SXM"],
    "train": {"seq_len": 2048},
}


@pytest.fixture
def children(
    tmp_path: Path, loop_thread: LoopThread
) -> Iterator[dict[str, tuple[Controller, Fleet, Path]]]:
    out = {}
    for name, node in (("row-h", "node-h100"), ("row-a", "node-a100")):
        base = yaml.safe_load((Path(__file__).resolve().parents[2] / "cluster.yaml").read_text())
        only = [n for n in base["nodes"] if n["name"] == node]
        (tmp_path / name).mkdir()
        path = write_config(tmp_path / name, nodes=only, budget={"budget_w": 1400, "reserve_w": 0})
        data = yaml.safe_load(path.read_text())
        data["controller"]["demand_points"] = 32
        path.write_text(yaml.safe_dump(data))
        config = load_cluster_config(path)
        ctl = Controller(config)
        loop_thread.run(ctl.start())
        out[name] = (ctl, Fleet(config, loop_thread), path)
    try:
        yield out
    finally:
        for ctl, fleet, _ in out.values():
            fleet.stop()
            loop_thread.run(ctl.stop(0))


def test_watts_follow_the_work_and_a_parent_cut_holds_across_children(children, wait) -> None:  # type: ignore[no-untyped-def]
    clients = {
        name: ClusterClient(load_cluster_config(path)) for name, (_, _, path) in children.items()
    }
    for name, (ctl, _, _) in children.items():
        wait(lambda ctl=ctl: all(n.gpus for n in ctl.shell.nodes.values()), 20, f"{name}'s agents")
    clients["row-h"].submit_job(json.dumps(TRAIN))
    loop = ParentLoop([Child(n, c) for n, c in clients.items()], [2400, 2400], 2000)

    def real_w(name: str) -> float:
        return sum(children[name][1].limits_w())

    def settle(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            loop.step()
            time.sleep(0.3)

    settle(4.0)
    grants = dict(zip(["row-h", "row-a"], loop.parent.grants_w, strict=True))
    assert grants["row-h"] > grants["row-a"]  # the busy child gets the watts
    assert sum(loop.parent.grants_w) <= 2000 + 1e-6
    assert real_w("row-h") + real_w("row-a") <= 2000 + 1e-6
    loop.parent.usable_w = 1300.0  # the parent's feed is cut
    loop.step()
    wait(
        lambda: real_w("row-h") + real_w("row-a") <= 1300 + 1e-6, 10, "both children under the cut"
    )
    settle(2.0)
    assert real_w("row-h") + real_w("row-a") <= 1300 + 1e-6
    for c in clients.values():
        c.close()


def test_a_tree_file_is_validated_in_one_line(tmp_path: Path) -> None:
    from greenllm.errors import ConfigError

    path = tmp_path / "tree.yaml"
    path.write_text(
        yaml.safe_dump(
            {"limit_w": 1000, "children": [{"name": "a", "config": "a.yaml", "limit_w": 5}]}
        )
    )
    with pytest.raises(ConfigError) as info:
        load_tree(path)
    assert str(info.value).startswith(str(path)) and "children" in str(info.value)


def test_tree_run_once_from_the_cli(children, tmp_path: Path, wait) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    for name, (ctl, _, _) in children.items():
        wait(lambda ctl=ctl: all(n.gpus for n in ctl.shell.nodes.values()), 20, f"{name}'s agents")
    tree = {
        "limit_w": 2000,
        "period_s": 0.5,
        "children": [
            {"name": name, "config": str(path), "limit_w": 2400}
            for name, (_, _, path) in children.items()
        ],
    }
    path = tmp_path / "tree.yaml"
    path.write_text(yaml.safe_dump(tree))
    out = subprocess.run(
        [sys.executable, "-m", "greenllm.cli.main", "tree", "run", str(path), "--once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "parent of row-h, row-a: 2000 W usable" in out.stdout
    # both children started at 1,400 W (2,800 W): the parent lowers them to fit 2,000 W
    lowered = [line for line in out.stdout.splitlines() if "grant 1400 W ->" in line]
    assert len(lowered) == 2, out.stdout
    budgets = [ctl.shell.budget_w for ctl, _, _ in children.values()]
    assert sum(budgets) <= 2000 + 1e-6
