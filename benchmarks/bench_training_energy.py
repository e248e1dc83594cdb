"""Training energy against the limit of the physics: how close min-energy gets.

For each training job of the mixed scenario (examples/scenarios/mixed.yaml), alone on its GPUs,
with a 1% slowdown allowance (it must keep 99% of its uncapped rate):

* min-energy: the controller's own shell in the simulator, the job's SLO set to 99% of its
  uncapped rate (it learns the job's true size from telemetry); J/sample and rate over the
  run after a warm-up;
* best static limit: an exhaustive sweep of power limits (the same limit on every GPU, equal
  micro-batch shares, as plain data-parallel training runs), the cheapest within the
  allowance;
* best locked clock: the same sweep over SM clocks;
* Zeus-style profiling: Zeus's optimizer measures each limit over warm-up steps and keeps the
  cheapest within the allowance; on the simulated GPUs a measurement is exact, so it finds
  the sweep's limit (printed to say so, not as a different figure).

Plus a job that spans two types (4 H100 + 4 A100): min-energy chooses a limit per type and
micro-batch shares together, against the best single static limit with equal shares.
Goal: within 1 point of the sweep's best; the spanning job below the best single limit.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from greenllm.devices import physics
from greenllm.devices.catalog import get_spec
from scheduler.policies.min_energy import MinEnergyPolicy
from scheduler.sim.engine import Simulation
from scheduler.sim.scenario import Scenario, ScenarioJob, load_scenario

ALLOWANCE = 0.01
DURATION_S = 120.0
WARMUP_S = 30.0
MIXED = Path(__file__).resolve().parents[1] / "examples" / "scenarios" / "mixed.yaml"


def _rate_power(
    types: list[str], wl: physics.Workload, limit_w: float | None, clock: int | None
) -> tuple[float, float]:
    """Job rate (equal shares: n x the slowest GPU) and summed power at one setting."""
    points = []
    for t in types:
        spec = get_spec(t)
        lim = (
            spec.max_power_limit_w
            if limit_w is None
            else min(spec.max_power_limit_w, max(spec.min_power_limit_w, limit_w))
        )
        points.append(physics.operating_point(spec, wl, lim, clock))
    slowest = min(p.throughput for p in points)
    # a GPU faster than the slowest waits, idle, for the rest of each step
    power = sum(
        p.power_w * slowest / p.throughput + get_spec(t).idle_power_w * (1 - slowest / p.throughput)
        for p, t in zip(points, types, strict=True)
    )
    return len(types) * slowest, power


def sweep(types: list[str], wl: physics.Workload) -> dict[str, tuple[float, float]]:
    """Best static limit and best locked clock within the allowance: (J/sample, rate)."""
    top, _ = _rate_power(types, wl, None, None)
    lo = min(get_spec(t).min_power_limit_w for t in types)
    hi = max(get_spec(t).max_power_limit_w for t in types)
    out: dict[str, tuple[float, float]] = {}
    for name, settings in (
        ("limit", [(float(w), None) for w in np.arange(lo, hi + 1, 5.0)]),
        ("clock", [(None, c) for c in get_spec(types[0]).supported_sm_clocks_mhz()]),
    ):
        best = (math.inf, 0.0)
        for limit_w, clock in settings:
            rate, power = _rate_power(types, wl, limit_w, clock)
            if rate >= (1 - ALLOWANCE) * top and power / rate < best[0]:
                best = (power / rate, rate)
        out[name] = best
    out["uncapped"] = (_rate_power(types, wl, None, None)[1] / top, top)
    return out


def min_energy(job: ScenarioJob, nodes: list[dict[str, Any]], target: float) -> tuple[float, float]:
    """The job alone under min-energy with an SLO of ``target`` samples/s: (J/sample, rate)
    after the warm-up."""
    doc = job.model_dump(mode="json", exclude_none=True)
    doc["slo"] = {"min_throughput": target}
    doc["sim"] = (
        {"true_model_params": job.sim.true_model_params} if job.sim.true_model_params else {}
    )
    sc = Scenario.model_validate(
        {
            "duration_s": DURATION_S,
            "nodes": nodes,
            "budget": {"frac_of_tdp": 1.0},
            "policy": "min-energy",
            "jobs": [doc],
        }
    )
    sim = Simulation(sc, Path("."), MinEnergyPolicy(), "min-energy")
    energy0 = work0 = 0.0
    while sim.k < sim.steps_total():
        sim.step()
        if abs(sim.k * sc.control.step_s - WARMUP_S) < 1e-9:
            [model] = sim.world.jobs.values()
            energy0, work0 = model.energy_j, model.work_units
    [model] = sim.world.jobs.values()
    work = model.work_units - work0
    return (model.energy_j - energy0) / work, work / (DURATION_S - WARMUP_S)


def _report(name: str, types: list[str], job: ScenarioJob) -> None:
    wl = job.true_workload("train")
    best = sweep(types, wl)
    e_unc, top = best["uncapped"]
    nodes = [
        {"name": f"n-{t}", "gpus": [{"type": t, "count": types.count(t)}]}
        for t in dict.fromkeys(types)
    ]
    e_me, r_me = min_energy(job, nodes, (1 - ALLOWANCE) * top)
    e_lim, _ = best["limit"]
    e_clk, _ = best["clock"]
    print(
        f"{name:<22} {len(types)} x {'+'.join(dict.fromkeys(types)):<19} saving vs uncapped: "
        f"min-energy {1 - e_me / e_unc:6.1%} (rate {r_me / top:5.3f}x), best limit "
        f"{1 - e_lim / e_unc:6.1%}, best clock {1 - e_clk / e_unc:6.1%}, Zeus-style = best limit; "
        f"min-energy - best = {(e_lim - e_me) / e_unc * 100:+5.1f} points"
    )


def main() -> None:
    """Print each job's savings against the sweeps."""
    sc, _ = load_scenario(MIXED)
    measured_s = DURATION_S - WARMUP_S
    print(f"1% slowdown allowance; min-energy measured over {measured_s:g} s after {WARMUP_S:g} s")
    for job in sc.jobs:
        if job.kind != "train":
            continue
        gpu_type = (job.preferred_gpu_types or job.gpu_types)[0]
        _report(job.name, [gpu_type] * job.shards, job)
    spanning = next(j for j in sc.jobs if j.name == "pretrain-7b")
    _report("pretrain-7b (spanning)", ["H100-SXM"] * 4 + ["A100-SXM4"] * 4, spanning)


if __name__ == "__main__":
    main()
