"""A simulated site under a 20% cut, run by one controller and by a controller tree.

The site: rows of racks of 8-GPU nodes (H100 and A100 racks), each rack on a feed of 75%
of its GPUs' maximum limits, each row on 90% of its racks' feeds, the site on 85% of its
rows'; training jobs fill every GPU. At ``cut_at_s`` the cluster budget is cut by 20%. For
each way of running it, the run prints: the simulator's wall time, the controller's decide()
CPU time (per child in the tree), how long until the GPUs' real limits fitted the new site
budget, and for the tree how long until every child's fitted its new grant (the time per
level), and whether any domain at any level went over its limit outside its transition
window.

    python -m benchmarks controller_tree      # GREENLLM_BENCH_GPUS=10000 for a smaller site
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.policies import load_policy
from scheduler.sim.engine import Simulation
from scheduler.sim.scenario import Scenario
from scheduler.tree.sim import TreeSimulation

NODES_PER_RACK = 8
RACKS_PER_ROW = 16
DURATION_S = 8.0
CUT_AT_S = 4.0


def site(n_gpus: int) -> Scenario:
    """The site scenario with ``n_gpus`` GPUs (rounded to whole racks)."""
    n_racks = max(2 * RACKS_PER_ROW, n_gpus // (8 * NODES_PER_RACK))
    nodes: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for r in range(n_racks // RACKS_PER_ROW):
        racks = []
        for k in range(RACKS_PER_ROW):
            gpu, max_w = ("H100-SXM", 700.0) if k % 2 == 0 else ("A100-SXM4", 400.0)
            name = f"r{r}k{k}"
            nodes.append(
                {"name": name, "count": NODES_PER_RACK, "gpus": [{"type": gpu, "count": 8}]}
            )
            feed = 0.75 * NODES_PER_RACK * 8 * max_w
            racks.append({"name": f"rack{r}.{k}", "limit_w": feed, "nodes": [f"{name}-*"]})
        rows.append(
            {"name": f"row{r}", "limit_w": 0.9 * sum(d["limit_w"] for d in racks), "domains": racks}
        )
    site_w = 0.85 * sum(d["limit_w"] for d in rows)
    per_type = len(nodes) // 2 * NODES_PER_RACK
    jobs = [
        {
            "name": f"train-{t[:4].lower()}",
            "kind": "train",
            "shards": 8,
            "gpu_types": [t],
            "simulated_model_params": 7e9,
            "train": {"batch_size": 8, "seq_len": 2048},
            "sim": {"count": per_type},
        }
        for t in ("H100-SXM", "A100-SXM4")
    ]
    return Scenario.model_validate(
        {
            "name": f"site-{n_gpus}",
            "duration_s": DURATION_S,
            "nodes": nodes,
            "budget": {
                "budget_w": site_w,
                "schedule": [{"t_s": CUT_AT_S, "budget_w": 0.8 * site_w}],
            },
            "power_domains": [{"name": "site", "limit_w": site_w, "domains": rows}],
            "jobs": jobs,
        }
    )


def _fit_s(times: list[float], held: list[float], limit_w: float) -> float | None:
    for t, w in zip(times, held, strict=True):
        if t > CUT_AT_S and w <= limit_w + 1e-6:
            return t - CUT_AT_S
    return None


def one_controller(sc: Scenario) -> None:
    """The whole site under one controller."""
    started = time.perf_counter()
    sim = Simulation(sc, Path("."), load_policy("max-throughput"), "max-throughput")
    res = sim.run()
    wall = time.perf_counter() - started
    new_w = 0.8 * sc.budget.watts(0.0)
    fit = _fit_s(res.times_s, res.limits_w, new_w)
    cpu = np.array(res.decide_cpu_s) * 1e3
    print(
        f"  one controller : sim wall {wall:6.1f} s, decide() CPU mean {cpu.mean():6.1f} ms "
        f"max {cpu.max():6.1f} ms; limits fit the cut after {fit} s; domains over: "
        f"{res.domain_limits_over_s:g} s, site over: {res.limits_over_budget_s:g} s"
    )


def tree(sc: Scenario) -> None:
    """The site as a parent over a child controller per row."""
    started = time.perf_counter()
    sim = TreeSimulation(sc, Path("."))
    for _ in sim.run():
        pass
    wall = time.perf_counter() - started
    cpu = np.concatenate([np.array(c.result.decide_cpu_s) for c in sim.children.values()]) * 1e3
    over = sum(
        c.result.domain_limits_over_s + c.result.limits_over_budget_s for c in sim.children.values()
    )
    period_s = next(iter(sim.children.values())).plane.control_period_s
    for at_s, fit_s, children_s in sim.result.cuts:
        print(
            f"  controller tree: {len(sim.children)} children; sim wall {wall:6.1f} s, child "
            f"decide() CPU mean {cpu.mean():6.1f} ms max {cpu.max():6.1f} ms; cut at {at_s:g} s: "
            f"site limits fit after {fit_s} s ({(fit_s or 0) / period_s:.1f} control periods), "
            f"every child within its new grant after {children_s} s; over (any level): "
            f"{sim.result.over_s + over:g} s"
        )


def main() -> None:
    """Run both at the size asked (``GREENLLM_BENCH_GPUS``, default 100,000 GPUs)."""
    n_gpus = int(os.environ.get("GREENLLM_BENCH_GPUS", "100000"))
    sc = site(n_gpus)
    gpus = sum(n.count * len(n.gpu_types()) for n in sc.nodes)
    print(
        f"site of {gpus} GPUs, {len(sc.power_domains[0].domains)} rows of {RACKS_PER_ROW} "
        f"racks; 20% cut at {CUT_AT_S:g} s:"
    )
    tree(sc)
    one_controller(sc)


if __name__ == "__main__":
    main()
