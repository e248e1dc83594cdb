"""``greenllm demo`` end to end (shortened phases): the budget binds, the cut below the draw
is obeyed within a second, training slows and comes back, inference keeps its SLO on as few
replicas as its load needs; every figure read from the demo's own --json summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow, pytest.mark.tiny_model]


def test_demo_binds_obeys_the_cut_and_keeps_the_slo(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "greenllm.cli.main", "demo", "--json", "--out", str(out),
           "--full-s", "20", "--cut-s", "20", "--raised-s", "15"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads(proc.stdout)
    assert json.loads((out / "summary.json").read_text()) == s
    assert (out / "demo.png").stat().st_size > 10_000
    assert s["policy"] == "min-energy"
    assert s["binding"]["binds"], s["binding"]
    cut = s["cut"]
    assert cut["below_draw"], cut
    assert cut["obeyed_after_s"] is not None and cut["obeyed_after_s"] <= 1.0, cut
    comp = s["compliance"]
    assert comp["seconds_over_budget_after_transition"] == 0.0, comp
    assert comp["seconds_limits_over_usable_after_transition"] == 0.0, comp
    train = s["training"]
    assert train["slowed_by_cut"], train
    assert train["returned_share"] is not None and train["returned_share"] >= 0.8, train
    tj = s["phases"]["full"]["jobs"][train["job"]]
    assert not tj["cpu_bound"], tj  # the simulated GPUs, not this CPU, set the pace
    inf = s["inference"]
    lat = inf["latency"]
    # judged before and under the cut; after the raise, judged when a request finished
    assert lat["full"]["slo_met"] is True and lat["cut"]["slo_met"] is True, lat
    assert lat["raised"]["slo_met"] is not False, lat
    assert inf["consolidation"]["parked_replica_s"] > 0, inf["consolidation"]
