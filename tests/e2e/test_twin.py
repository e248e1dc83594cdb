"""The simulator is a twin of the live cluster: one short workload on the embedded cluster
(through the CLI: up, submit, budget set, status --json) and through
``greenllm sim --from-cluster`` with the same cluster.yaml, job specs and budget schedule
give the same per-job throughput, J/unit and cluster mean power, before and after a cut
(within 15%; ``python -m benchmarks twin`` prints the figures and ratios).

The jobs are the demo's, standing for models big enough that their simulated GPUs, not this
machine's CPU, set the pace: training (examples/train/train_gpt2.py, tiny GPT-2, 2 ranks of
8 x 128 tokens) as a 2e10-parameter model on H100s (~22 samples/s a rank, where the CPU does
~100), and inference (tiny model, 2 replicas, 32 + 32 tokens) as a 1.3e10-parameter model on
A100s, sent one request every 0.4 s from a trace so both sides serve the same requests.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # the harness is the benchmark's (python -m benchmarks twin)
    sys.path.insert(0, str(REPO))

from benchmarks.bench_twin import (  # noqa: E402
    Plan,
    infer_job,
    ratios,
    run_twin,
    table,
    train_job,
)

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow, pytest.mark.tiny_model]

TOLERANCE = 0.15
FIGURES = ("throughput", "J/unit")
PLAN = Plan(
    jobs=[train_job("twin-train", 2e10), infer_job("twin-infer", 1.3e10, 0.4, ["A100-SXM4"])],
    cut_at_s=40.0,
    cut_to_w=1500.0,
    end_s=70.0,
    windows={"before cut": (22.0, 39.0), "after cut": (46.0, 70.0)},
)


def test_live_and_simulated_runs_agree(tmp_path: Path) -> None:
    live, sim = run_twin(PLAN, tmp_path)
    print("\n" + table(live, sim))
    r = ratios(live, sim)
    for window in PLAN.windows:
        names = set(sim.figures[window])
        jobs = ("twin-train", "twin-infer")
        assert names == {"cluster mean W"} | {f"{j} {f}" for j in jobs for f in FIGURES}
        assert set(live.figures[window]) == names, live.figures
        for name in names:
            ratio = r[window][name]
            assert math.isfinite(ratio) and abs(ratio - 1) <= TOLERANCE, (window, name, ratio)
    assert sim.units == live.units == {"twin-train": "samples", "twin-infer": "tokens"}
    # the cut slows training on both sides, by the same amount
    before, after = (live.figures[w]["twin-train throughput"] for w in PLAN.windows)
    assert after < 0.6 * before
    # the live job ran at its simulated GPUs' pace, not the CPU's
    waits = [v for k, v in live.notes.items() if k.endswith("gpu_wait_fraction")]
    assert len(waits) == 4 and all(w is not None and w < 0.1 for w in waits), live.notes
