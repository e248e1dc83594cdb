"""A mixed cluster under one budget: what inference gives back to training.

8 H100 + 4 A100 at 45% of their summed TDP: a training job (7e9 parameters, four H100
ranks, a throughput SLO above what the budget allows, so it takes every watt it is given)
beside an inference job (8e9 parameters, 4 H100 + 4 A100 replicas, SLO p99 TTFT <= 2 s and
TPOT <= 0.25 s) serving each load shape of :mod:`greenllm.serving.shapes`. Both runs use the
min-energy policy and the controller's own shell in the simulator:

* static partition: every inference replica serves all the time (no ``min_shards``);
* shared: the replica count follows the load (``min_shards: 1``); a drained replica's GPU
  is parked at its lowest limit and its watts go to the training job.

Printed: training samples and J/sample, inference J/token (GPUs held) and SLO, the cluster's
energy, the training job's mean summed limits (the watts it got), and the GPU-seconds the
inference job gave back (parked). Ratios are shared / static.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from greenllm.serving.shapes import SHAPES, shaped_load, write_load
from scheduler.policies.min_energy import MinEnergyPolicy
from scheduler.sim.engine import Simulation
from scheduler.sim.scenario import Scenario

DURATION_S = 240.0
RATES = {"trace": 6.0, "prefill-heavy": 20.0, "decode-heavy": 4.0, "bursty": 6.0, "quiet": 6.0}


def scenario(trace: Path, scale: bool) -> Scenario:
    """Training on four H100s beside an inference job on 4 H100 + 4 A100."""
    infer: dict[str, Any] = {
        "name": "serve",
        "kind": "infer",
        "shards": 8,
        "priority": 2,
        "gpu_types": ["H100-SXM", "A100-SXM4"],
        "preferred_gpu_types": ["A100-SXM4"],
        "simulated_model_params": 8.0e9,
        "slo": {"p99_ttft_s": 2.0, "p99_tpot_s": 0.25},
        "infer": {
            "batch_size": 64,
            "load": {"process": "trace", "trace_file": str(trace), "duration_s": DURATION_S},
        },
    }
    if scale:
        infer["min_shards"] = 1
    train = {
        "name": "train",
        "kind": "train",
        "shards": 4,
        "priority": 1,
        "gpu_types": ["H100-SXM"],
        "simulated_model_params": 7.0e9,
        "slo": {"min_throughput": 1000},
        "train": {"batch_size": 8, "seq_len": 2048},
    }
    return Scenario.model_validate(
        {
            "name": "mixed-shapes",
            "duration_s": DURATION_S + 10,
            "seed": 2,
            "nodes": [
                {"name": "h100", "count": 2, "gpus": [{"type": "H100-SXM", "count": 4}]},
                {"name": "a100", "gpus": [{"type": "A100-SXM4", "count": 4}]},
            ],
            "budget": {"frac_of_tdp": 0.45, "reserve_w": 100},
            "jobs": [train, infer],
        }
    )


class _Limits:
    """Takes each step's readings (the simulator's trace hook): the training job's summed
    limits, and how many GPUs no job held."""

    def __init__(self) -> None:
        self.train_w: list[float] = []
        self.free: list[int] = []

    def record(self, t: float, gpus: Any, readings: Any) -> None:
        train = np.array([j == "train" for j in readings.job])
        self.train_w.append(float(np.sum(readings.limit_w[train])))
        self.free.append(int(np.sum(~readings.held)))


def run(trace: Path, scale: bool) -> dict[str, Any]:
    """One simulation's figures."""
    hook = _Limits()
    sc = scenario(trace, scale)
    sim = Simulation(sc, Path("."), MinEnergyPolicy(), "min-energy", trace=hook)  # type: ignore[arg-type]
    result = sim.run()
    summary = result.summary(None)
    return {
        "samples": summary["work"]["train"],
        "j_per_sample": summary["joules_per_unit"]["train"],
        "tokens": summary["work"]["serve"],
        "j_per_token": summary["joules_per_unit"]["serve"],
        "slo": summary["slo_met"]["serve"],
        "energy_j": result.energy_j,
        "train_limits_w": float(np.mean(hook.train_w)),
        # GPUs no job held beyond the four training ranks: the inference job's parked ones
        "parked_gpu_s": float(np.sum(hook.free) * sim.plane.step_s),
    }


def main() -> None:
    """Print, per load shape, the static partition against the shared cluster."""
    print(
        f"load average: {os.getloadavg()[0]:.1f}; {DURATION_S:g} s, 8 H100 + 4 A100 at 45% "
        "of TDP, training on 4 H100 beside inference on 4 H100 + 4 A100 (min-energy)"
    )
    print(
        f"{'shape':<14} {'run':<8} {'samples':>8} {'J/sample':>9} {'J/token':>8} {'SLO':>4} "
        f"{'cluster MJ':>10} {'train W':>8} {'GPU-s given':>11}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for shape in SHAPES:
            trace = write_load(
                shaped_load(shape, DURATION_S, RATES[shape], seed=2), Path(tmp) / f"{shape}.csv"
            )
            static, shared = run(trace, False), run(trace, True)
            for label, r in (("static", static), ("shared", shared)):
                print(
                    f"{shape:<14} {label:<8} {r['samples']:8.0f} {r['j_per_sample']:9.1f} "
                    f"{r['j_per_token']:8.3f} {'met' if r['slo'] else 'MISS':>4} "
                    f"{r['energy_j'] / 1e6:10.3f} {r['train_limits_w']:8.0f} "
                    f"{r['parked_gpu_s']:11.0f}"
                )
            samples_x = shared["samples"] / static["samples"]
            work_per_j = (shared["samples"] / shared["energy_j"]) / (
                static["samples"] / static["energy_j"]
            )
            print(
                f"{'':<14} shared/static: training samples {samples_x:.3f}x, samples per "
                f"cluster joule {work_per_j:.3f}x (same inference work), inference J/token "
                f"{shared['j_per_token'] / static['j_per_token']:.3f}x; training got "
                f"{shared['train_limits_w'] - static['train_limits_w']:+.0f} W",
                flush=True,
            )
