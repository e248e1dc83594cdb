"""Where inference energy goes: an ablation nobody publishes.

The first five minutes of a production LLM conversation trace (Azure, 2023; CC-BY: see
greenllm/data/traces/README.md) replayed on a heterogeneous cluster (4 H100 + 4 A100) serving
a 7B-parameter model on 8 replicas, each run in the simulator with the controller's own
shell. Printed per run: J per output token, p99 time to first token and time per
output token, and the ratio of J/token to the baseline:

* baseline: a static fleet provisioned for the peak: every replica serving, at its maximum
  power limit, clocks free;
* clocks only: min-energy's clock (and limit) per replica, every replica serving;
* replica count only: min-energy's replica count (the rest drained and parked), serving
  replicas at their maximum limit with free clocks;
* both: count and clocks;
* both + batch size: both, at the largest decode batch (of a sweep) that still meets the
  SLOs (the batch size is chosen offline, per run, not by the controller).

Goal: <= 0.45x the baseline's J/token with every SLO met. Also printed: the mean power of
the 8 GPUs and its part above their idle floor (what a drained, parked replica still draws:
idle power is paid whether a GPU serves or not, unless its GPU is given to other work).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from greenllm.serving.arrivals import CONVERSATION_TRACE
from scheduler.core.problem import Policy
from scheduler.policies import load_policy
from scheduler.policies.min_energy import MinEnergyPolicy
from scheduler.sim.engine import Simulation
from scheduler.sim.scenario import Scenario

DURATION_S = 300.0
SLO = {"p99_ttft_s": 2.0, "p99_tpot_s": 0.1}
BATCHES = (32, 64, 128)
GOAL = 0.45


def scenario(batch: int, scale: bool) -> Scenario:
    """The trace on 4 H100 + 4 A100, a 7B model on 8 replicas."""
    job: dict[str, Any] = {
        "name": "chat",
        "kind": "infer",
        "shards": 8,
        "gpu_types": ["H100-SXM", "A100-SXM4"],
        "simulated_model_params": 7.0e9,
        "slo": dict(SLO),
        "infer": {
            "batch_size": batch,
            "load": {
                "process": "trace",
                "trace_file": str(CONVERSATION_TRACE),
                "duration_s": DURATION_S,
            },
        },
    }
    if scale:
        job["min_shards"] = 1
    return Scenario.model_validate(
        {
            "name": "conversation-trace",
            "duration_s": DURATION_S + 20,
            "seed": 1,
            "nodes": [
                {"name": "h100", "gpus": [{"type": "H100-SXM", "count": 4}]},
                {"name": "a100", "gpus": [{"type": "A100-SXM4", "count": 4}]},
            ],
            "budget": {"frac_of_tdp": 1.0},
            "jobs": [job],
        }
    )


def run(label: str, policy: Policy, batch: int, scale: bool) -> dict[str, Any]:
    """One simulation; its J/token, p99s and whether the SLOs were met."""
    started = time.perf_counter()
    sim = Simulation(scenario(batch, scale), Path("."), policy, label)
    result = sim.run()
    summary = result.summary(None)
    idle_w = sum(g.spec.idle_power_w for node in sim.nodes.values() for g in node.gpus)
    return {
        "power_w": float(sum(result.power_w) / len(result.power_w)),
        "idle_w": idle_w,
        "label": label,
        "batch": batch,
        "j_per_token": summary["joules_per_unit"]["chat"],
        "ttft_s": summary["p99_ttft_s"]["chat"],
        "tpot_s": summary["p99_tpot_s"]["chat"],
        "slo_met": summary["slo_met"]["chat"],
        "detail": summary["slo_detail"]["chat"],
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    """Print the ablation table (one run each)."""
    print(
        f"load average: {os.getloadavg()[0]:.1f}; trace: {CONVERSATION_TRACE.name}, "
        f"{DURATION_S:g} s, SLO p99 TTFT <= {SLO['p99_ttft_s']} s, TPOT <= {SLO['p99_tpot_s']} s"
    )
    rows = [
        run("baseline (peak fleet, max limits)", load_policy("uniform"), 32, False),
        run("clocks only", MinEnergyPolicy(scale_replicas=False), 32, False),
        run("replica count only", MinEnergyPolicy(tune_power="none"), 32, True),
        run("both", MinEnergyPolicy(), 32, True),
    ]
    sweep = [run(f"both + batch {b}", MinEnergyPolicy(), b, True) for b in BATCHES]
    meeting = [r for r in sweep if r["slo_met"]]
    best = min(meeting or sweep, key=lambda r: r["j_per_token"])
    rows.append({**best, "label": f"both + batch size ({best['batch']})"})
    base = rows[0]["j_per_token"]
    base_above_w = rows[0]["power_w"] - rows[0]["idle_w"]
    print(
        f"{'run':<34} {'J/token':>8} {'x base':>7} {'power':>7} {'above idle':>10} "
        f"{'p99 TTFT':>9} {'p99 TPOT':>9}  SLOs"
    )
    for r in rows:
        above = (r["power_w"] - r["idle_w"]) / base_above_w
        slos = "met" if r["slo_met"] else "MISSED: " + r["detail"]
        print(
            f"{r['label']:<34} {r['j_per_token']:8.4f} {r['j_per_token'] / base:7.3f} "
            f"{r['power_w']:6.0f}W {above:9.3f}x {r['ttft_s']:8.3f}s {r['tpot_s']:8.4f}s  {slos}"
        )
    final = rows[-1]["j_per_token"] / base
    verdict = "met" if final <= GOAL and rows[-1]["slo_met"] else "NOT met"
    print(
        f"best: {final:.3f}x the baseline's J/token (goal <= {GOAL}x): {verdict}; the GPUs' "
        f"idle floor is {rows[0]['idle_w']:.0f} W of the baseline's {rows[0]['power_w']:.0f} W"
    )
