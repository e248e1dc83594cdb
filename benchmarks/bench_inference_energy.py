"""Inference energy on loads nobody tuned to: the static peak fleet against min-energy.

Each load shape of :mod:`greenllm.serving.shapes` (the shipped conversation trace's arrival
gaps with other token mixes and rates: the trace as it is, prefill-heavy, decode-heavy,
bursty, a quiet hour) is served by an 8e9-parameter model on 8 H100 + 8 A100 (16 replicas,
batch 64, SLO p99 TTFT <= 2 s and p99 TPOT <= 0.25 s), each run in the simulator with the
controller's own shell:

* static: every replica serving at its maximum power limit, clocks free (policy uniform);
* min-energy: the replica count and clocks follow the load (``min_shards: 1``).

Printed per run: J per output token of the GPUs the job holds while it holds them (a
drained replica's GPU is back with the cluster), J per output token of the whole fleet
(the 16 GPUs, idle ones included: what the cluster pays when nothing else uses the freed
GPUs), p99 TTFT and TPOT against the SLO, and GPUs held over time (min / mean / max).
Goals: every SLO the static fleet meets, min-energy meets; its held J/token <= 0.45x the
static fleet's. Noisy only in wall time: the simulation itself is deterministic.

Then held-out loads nobody tuned to (:func:`greenllm.serving.shapes.random_load`: random
token mixes, rates and swings, one per seed of :data:`HELDOUT_SEEDS`, each
:data:`HELDOUT_S` long) on the same fleet: the same figures, and whether min-energy missed
an SLO the static fleet met or used more J/token.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from greenllm.devices import physics
from greenllm.devices.catalog import get_spec
from greenllm.serving.shapes import SHAPES, random_load, shaped_load, write_load
from scheduler.core.problem import Policy
from scheduler.policies import load_policy
from scheduler.policies.min_energy import MinEnergyPolicy
from scheduler.sim.engine import Simulation
from scheduler.sim.scenario import Scenario

DURATION_S = 300.0
SLO = {"p99_ttft_s": 2.0, "p99_tpot_s": 0.25}
GOAL = 0.45
#: Mean request rate of each shape, requests/s (the 16 replicas serve ~33/s of the trace's
#: mix at full power, ~115/s prefill-heavy, ~18/s decode-heavy).
RATES = {"trace": 10.0, "prefill-heavy": 30.0, "decode-heavy": 6.0, "bursty": 10.0, "quiet": 10.0}
#: Seeds of the held-out random loads, and how long each runs, seconds.
HELDOUT_SEEDS = tuple(range(1, 9))
HELDOUT_S = 150.0
#: Held-out loads are also judged beyond this long after each step change of their rate
#: (as the property test in tests/unit/test_inference_load_shapes.py), seconds.
TRANSITION_S = 10.0
FLEET = {"H100-SXM": 8, "A100-SXM4": 8}
PARAMS = 8.0e9


def scenario(trace: Path, scale: bool, duration_s: float = DURATION_S) -> Scenario:
    """The load on 8 H100 + 8 A100, an 8e9-parameter model on 16 replicas."""
    job: dict[str, Any] = {
        "name": "serve",
        "kind": "infer",
        "shards": 16,
        "gpu_types": ["H100-SXM", "A100-SXM4"],
        "simulated_model_params": PARAMS,
        "slo": dict(SLO),
        "infer": {
            "batch_size": 64,
            "load": {"process": "trace", "trace_file": str(trace), "duration_s": duration_s},
        },
    }
    if scale:
        job["min_shards"] = 1
    return Scenario.model_validate(
        {
            "name": "load-shape",
            "duration_s": duration_s + 20,
            "seed": 1,
            "nodes": [
                {"name": "h100", "gpus": [{"type": "H100-SXM", "count": 8}]},
                {"name": "a100", "gpus": [{"type": "A100-SXM4", "count": 8}]},
            ],
            "budget": {"frac_of_tdp": 1.0},
            "jobs": [job],
        }
    )


def run(trace: Path, policy: Policy, scale: bool, duration_s: float = DURATION_S) -> dict[str, Any]:
    """One simulation's figures."""
    sim = Simulation(scenario(trace, scale, duration_s), Path("."), policy, policy.name)
    result = sim.run()
    summary = result.summary(None)
    tokens = summary["work"]["serve"]
    held = np.asarray(result.held_gpus)
    [job] = sim.world.jobs.values()
    return {
        "finished": [
            (f.arrive_s - job.submitted_s, f.ttft_s, f.tpot_s, f.tokens) for f in job.finished
        ],
        "held_j_per_token": summary["joules_per_unit"]["serve"],
        "fleet_j_per_token": result.energy_j / tokens if tokens > 0 else float("inf"),
        "ttft_s": summary["p99_ttft_s"]["serve"],
        "tpot_s": summary["p99_tpot_s"]["serve"],
        "slo_met": summary["slo_met"]["serve"],
        "detail": summary["slo_detail"]["serve"],
        "held": (int(held.min()), float(held.mean()), int(held.max())) if len(held) else (0, 0, 0),
    }


def fleet_rates() -> tuple[float, float]:
    """The fleet's prefill and decode (batch 64) rates at full power, tokens/s."""
    prefill = decode = 0.0
    for gpu_type, count in FLEET.items():
        spec = get_spec(gpu_type)
        for kind, batch in (("prefill", 1), ("decode", 64)):
            wl = physics.Workload(kind, batch=batch, model_params=PARAMS)  # type: ignore[arg-type]
            rate = count * physics.operating_point(spec, wl, spec.max_power_limit_w).throughput
            if kind == "prefill":
                prefill += rate
            else:
                decode += rate
    return prefill, decode


def _row(label: str, name: str, rate: float, r: dict[str, Any], static: dict[str, Any]) -> str:
    held_x = r["held_j_per_token"] / static["held_j_per_token"]
    fleet_x = r["fleet_j_per_token"] / static["fleet_j_per_token"]
    lo, mean, hi = r["held"]
    slos = "met" if r["slo_met"] else "MISSED: " + r["detail"]
    return (
        f"{name:<14} {label:<11} {rate:6.1f} {r['held_j_per_token']:10.3f} "
        f"{held_x:8.3f} {r['fleet_j_per_token']:11.3f} {fleet_x:8.3f} "
        f"{r['ttft_s']:8.2f}s {r['tpot_s']:8.3f}s {lo:>8d}/{mean:5.1f}/{hi:<4d}  {slos}"
    )


def beyond_transitions(r: dict[str, Any], steps_every_s: float) -> tuple[float, float, bool]:
    """p99 TTFT and TPOT, seconds, of the requests that arrived at least
    :data:`TRANSITION_S` after a step change of the rate (every ``steps_every_s``), and
    whether both meet the SLO."""
    kept = [f for f in r["finished"] if f[0] % steps_every_s >= TRANSITION_S]
    ttft = float(np.percentile([f[1] for f in kept], 99)) if kept else 0.0
    tpots = [f[2] for f in kept if f[3] > 1]
    tpot = float(np.percentile(tpots, 99)) if tpots else 0.0
    return ttft, tpot, ttft <= SLO["p99_ttft_s"] and tpot <= SLO["p99_tpot_s"]


def heldout(tmp: Path) -> None:
    """The held-out random loads: static vs min-energy on each."""
    prefill, decode = fleet_rates()
    print(
        f"held-out random loads ({HELDOUT_S:g} s each; fleet at full power: {prefill:,.0f} "
        f"prefill / {decode:,.0f} decode tokens/s)"
    )
    ratios, regressions, dearer, beyond = [], [], [], []
    for seed in HELDOUT_SEEDS:
        load = random_load(seed, HELDOUT_S, prefill, decode)
        trace = write_load(load.arrivals, tmp / f"random-{seed}.csv")
        static = run(trace, load_policy("uniform"), scale=False, duration_s=HELDOUT_S)
        green = run(trace, MinEnergyPolicy(), scale=True, duration_s=HELDOUT_S)
        print(f"seed {seed}: {load.describe()}")
        rate = len(load.arrivals) / HELDOUT_S
        for label, r in (("static", static), ("min-energy", green)):
            print(_row(label, f"random {seed}", rate, r, static))
        steps_s = load.period_s / 2
        (st_ttft, st_tpot, st_met), (gr_ttft, gr_tpot, gr_met) = (
            beyond_transitions(static, steps_s),
            beyond_transitions(green, steps_s),
        )
        print(
            f"{'':<14} beyond {TRANSITION_S:g} s after each rate step: p99 TTFT "
            f"{st_ttft:.2f} / {gr_ttft:.2f} s, TPOT {st_tpot:.3f} / {gr_tpot:.3f} s (static / "
            f"min-energy)"
        )
        ratios.append(green["held_j_per_token"] / static["held_j_per_token"])
        if static["slo_met"] and not green["slo_met"]:
            regressions.append(seed)
        if st_met and not gr_met:
            beyond.append(seed)
        if ratios[-1] > 1.0:
            dearer.append(seed)
    print(
        f"held-out: held J/token x static {min(ratios):.3f}-{max(ratios):.3f} (geometric mean "
        f"{float(np.exp(np.mean(np.log(ratios)))):.3f}); an SLO the static fleet met missed on "
        f"seeds {regressions or 'none'} over the whole run, on seeds {beyond or 'none'} beyond "
        f"{TRANSITION_S:g} s after each rate step; more J/token than static on seeds "
        f"{dearer or 'none'}"
    )


def main() -> None:
    """Print the table: each shape, static vs min-energy."""
    print(
        f"load average: {os.getloadavg()[0]:.1f}; {DURATION_S:g} s per load, 8 H100 + 8 A100, "
        f"8e9 params, batch 64, SLO p99 TTFT <= {SLO['p99_ttft_s']} s, TPOT <= "
        f"{SLO['p99_tpot_s']} s"
    )
    print(
        f"{'shape':<14} {'run':<11} {'req/s':>6} {'J/tok held':>10} {'x static':>8} "
        f"{'J/tok fleet':>11} {'x static':>8} {'p99 TTFT':>9} {'p99 TPOT':>9} "
        f"{'GPUs held min/mean/max':>22}  SLOs"
    )
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in SHAPES:
            arrivals = shaped_load(shape, DURATION_S, RATES[shape], seed=1)
            trace = write_load(arrivals, Path(tmp) / f"{shape}.csv")
            started = time.perf_counter()
            static = run(trace, load_policy("uniform"), scale=False)
            green = run(trace, MinEnergyPolicy(), scale=True)
            rate = len(arrivals) / DURATION_S  # what was sent (the trace's gaps, in order)
            for label, r in (("static", static), ("min-energy", green)):
                print(_row(label, shape, rate, r, static))
            ok = (green["slo_met"] or not static["slo_met"]) and (
                green["held_j_per_token"] <= GOAL * static["held_j_per_token"]
            )
            verdicts.append(ok)
            print(f"{'':<14} ({time.perf_counter() - started:.1f} s)", flush=True)
        met = sum(verdicts)
        print(
            f"goal (every SLO the static fleet meets met, held J/token <= {GOAL}x): met on "
            f"{met} of {len(verdicts)} shapes",
            flush=True,
        )
        heldout(Path(tmp))
