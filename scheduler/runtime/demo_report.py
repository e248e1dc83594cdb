"""The demo's figures from its readings: whether the budget bound, how fast the cut was
obeyed, compliance, each job's throughput and J/unit per phase, the inference SLO per phase,
what consolidating replicas saved; and the plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from greenllm.config import ClusterConfig
from greenllm.energy.carbon import GridIntensity, carbon_g
from scheduler.runtime.demo import DemoResult, Sample, samples_json

#: The budget binds when the limits use at least this share of budget - reserve.
BINDS_SHARE = 0.97
#: Readings this long after a budget change are left out of a phase's means, seconds.
SETTLE_S = 3.0
#: Watts of rounding allowed when comparing limits with the budget.
EPS_W = 1e-6


def _phase_bounds(r: DemoResult) -> dict[str, tuple[float, float]]:
    return {
        "full": (0.0, r.cut_at_s),
        "cut": (r.cut_at_s, r.raised_at_s),
        "raised": (r.raised_at_s, r.end_s),
    }


def _after(r: DemoResult, at_s: float, ok: Any) -> float | None:
    """Seconds from ``at_s`` to the first reading at or after it for which ``ok`` holds."""
    return next((s.t_s - at_s for s in r.samples if s.t_s >= at_s and ok(s)), None)


def _job_phase(r: DemoResult, jid: str, ps: list[Sample]) -> dict[str, Any]:
    rows = [s.jobs[jid] for s in ps if jid in s.jobs]
    if len(rows) < 2:
        return {}
    span_s = ps[-1].t_s - ps[0].t_s
    work = rows[-1].work_units - rows[0].work_units
    energy = rows[-1].energy_j - rows[0].energy_j
    out: dict[str, Any] = {
        "throughput": work / span_s if span_s > 0 else None,
        "joules_per_unit": energy / work if work > 0 else None,
        "mean_power_w": energy / span_s if span_s > 0 else None,
        "gpu_wait_fraction_max": max(
            (x.gpu_wait_fraction for x in rows if x.gpu_wait_fraction is not None), default=None
        ),
        "cpu_bound": any(x.cpu_bound for x in rows),
    }
    if r.jobs[jid]["kind"] == "infer":
        serving = [x.serving for x in rows]
        out["replicas_serving"] = {
            "min": min(serving),
            "max": max(serving),
            "mean": float(np.mean(serving)),
        }
    return out


def _latency(r: DemoResult, start: float, end: float) -> dict[str, Any]:
    """Requests sent in [start, end): answered, failed, still streaming when the demo ended;
    p99 TTFT (the unfinished ones' first tokens included) and p99 TPOT (answered ones)."""
    sent = [q for q in r.requests if start <= q["sent_s"] < end]
    ok = [q for q in sent if q["status"] == "ok"]
    unfinished = [q for q in sent if q["status"] == "unfinished"]
    out: dict[str, Any] = {
        "requests": len(sent),
        "ok": len(ok),
        "unfinished": len(unfinished),
        "failed": len(sent) - len(ok) - len(unfinished),
    }
    for key, pool in (("ttft_s", ok + unfinished), ("tpot_s", ok)):
        vals = [q[key] for q in pool if q[key] is not None]
        out[f"p99_{key}"] = float(np.percentile(vals, 99)) if vals else None
    return out


def _slo_met(lat: dict[str, Any], slo: dict[str, Any]) -> bool | None:
    """False on a failed request or a p99 over its SLO; None when there is nothing to judge
    (no SLO, or no request of the phase got that far before the demo ended)."""
    keys = [k for k in ("ttft_s", "tpot_s") if slo[f"p99_{k}"] > 0]
    if lat["failed"] or any(
        lat[f"p99_{k}"] is not None and lat[f"p99_{k}"] > slo[f"p99_{k}"] for k in keys
    ):
        return False
    return None if not keys or any(lat[f"p99_{k}"] is None for k in keys) else True


def _consolidation(r: DemoResult, jid: str) -> dict[str, Any]:
    """Replica-seconds parked and an estimate of the energy it saved (see the note)."""
    parked_s = saved_j = serving_s = 0.0
    for a, b in zip(r.samples, r.samples[1:], strict=False):
        j = a.jobs.get(jid)
        if j is None or j.replicas == 0:
            continue
        dt = b.t_s - a.t_s
        parked = j.replicas - j.serving
        serving_s += j.serving * dt
        parked_s += parked * dt
        if parked and j.serving:
            per_serving_w = j.serving_power_w / j.serving
            saved_j += dt * (parked * per_serving_w - j.parked_power_w)
    rows = [s.jobs[jid] for s in r.samples if jid in s.jobs]
    tokens = rows[-1].work_units - rows[0].work_units if rows else 0.0
    energy = rows[-1].energy_j - rows[0].energy_j if rows else 0.0
    return {
        "replicas": r.jobs[jid]["shards"],
        "min_replicas": r.jobs[jid]["min_shards"],
        "serving_replica_s": serving_s,
        "parked_replica_s": parked_s,
        "estimated_saved_j": saved_j,
        "joules_per_token": energy / tokens if tokens > 0 else None,
        "estimated_joules_per_token_all_serving": (
            (energy + saved_j) / tokens if tokens > 0 else None
        ),
        "note": "estimated: had the parked replicas served, each would have drawn what a "
        "serving replica drew at the same moment (decode is memory-bound: a thinner batch "
        "keeps a replica busy about as long), instead of its parked power; an upper estimate",
    }


def summarise(config: ClusterConfig, r: DemoResult) -> dict[str, Any]:
    """The demo's figures (see the module doc); every time on the demo's clock, seconds."""
    intensity = GridIntensity.for_region(config.carbon.region)
    bounds = _phase_bounds(r)
    phases: dict[str, Any] = {}
    for name, (start, end) in bounds.items():
        settle = 0.0 if name == "full" else SETTLE_S
        ps = [s for s in r.samples if start + settle <= s.t_s < end]
        budget = ps[0].budget_w if ps else None
        phases[name] = {
            "start_s": start,
            "end_s": end,
            "budget_w": budget,
            "usable_w": ps[0].usable_w if ps else None,
            "mean_power_w": float(np.mean([s.power_w for s in ps])) if ps else None,
            "mean_limits_w": float(np.mean([s.limits_w for s in ps])) if ps else None,
            "jobs": {jid: _job_phase(r, jid, ps) for jid in r.jobs},
        }
    full = phases["full"]
    binds = full["mean_limits_w"] is not None and (
        full["mean_limits_w"] >= BINDS_SHARE * full["usable_w"]
    )
    usable_cut = r.cut_w - r.reserve_w
    limits_after = _after(r, r.cut_at_s, lambda s: s.limits_w <= usable_cut + EPS_W)
    power_after = _after(r, r.cut_at_s, lambda s: s.power_w <= r.cut_w)
    obeyed = None if limits_after is None or power_after is None else max(limits_after, power_after)
    # Compliance: a reading's power holds until the next reading.
    over_s = over_after_s = limits_over_s = overshoot = 0.0
    transition = (r.cut_at_s, r.cut_at_s + (obeyed if obeyed is not None else 1.0))
    for a, b in zip(r.samples, r.samples[1:], strict=False):
        dt = b.t_s - a.t_s
        inside = transition[0] <= a.t_s < transition[1]
        if a.power_w > a.budget_w:
            over_s += dt
            over_after_s += 0.0 if inside else dt
            overshoot = max(overshoot, a.power_w - a.budget_w)
        if a.limits_w > a.usable_w + EPS_W and not inside:
            limits_over_s += dt
    jobs = []
    for jid, meta in r.jobs.items():
        final = r.final.get(jid, {})
        units, energy = final.get("work_units", 0.0), final.get("energy_j", 0.0)
        jobs.append(
            {
                "id": jid,
                **meta,
                "state": final.get("state"),
                "work_units": units,
                "energy_j": energy,
                "joules_per_unit": energy / units if units > 0 else None,
                "co2e_g": carbon_g(energy, intensity, config.carbon.pue),
            }
        )
    train = next(j for j in jobs if j["kind"] == "train")["id"]
    infer = next(j for j in jobs if j["kind"] == "infer")["id"]
    rate = {n: phases[n]["jobs"][train].get("throughput") for n in phases}
    slo = r.jobs[infer]["slo"]
    latency = {n: _latency(r, *bounds[n]) for n in bounds}
    for n in latency:
        latency[n]["slo_met"] = _slo_met(latency[n], slo)
    return {
        "policy": r.policy,
        "warmup_s": r.warmup_s,
        "budget": {
            "initial_w": r.budget_w,
            "cut_w": r.cut_w,
            "raised_w": r.budget_w,
            "reserve_w": r.reserve_w,
            "cut_at_s": r.cut_at_s,
            "raised_at_s": r.raised_at_s,
            "end_s": r.end_s,
        },
        "binding": {
            "binds": binds,
            "mean_limits_w": full["mean_limits_w"],
            "usable_w": full["usable_w"],
            "mean_power_w": full["mean_power_w"],
            "share_of_usable": (full["mean_limits_w"] or 0) / (full["usable_w"] or 1),
        },
        "cut": {
            "draw_before_w": r.draw_before_cut_w,
            "budget_w": r.cut_w,
            "below_draw": r.cut_w < r.draw_before_cut_w,
            "limits_under_after_s": limits_after,
            "power_under_after_s": power_after,
            "obeyed_after_s": obeyed,
        },
        "compliance": {
            "seconds_over_budget": over_s,
            "seconds_over_budget_after_transition": over_after_s,
            "max_overshoot_w": overshoot,
            "seconds_limits_over_usable_after_transition": limits_over_s,
            "samples": len(r.samples),
        },
        "training": {
            "job": train,
            "throughput": rate,
            "slowed_by_cut": rate["cut"] is not None
            and rate["full"] is not None
            and rate["cut"] < rate["full"],
            "returned_share": (rate["raised"] / rate["full"])
            if rate["raised"] and rate["full"]
            else None,
        },
        "inference": {
            "job": infer,
            "slo": {k: slo[k] for k in ("p99_ttft_s", "p99_tpot_s")},
            "latency": latency,
            "load_notes": r.load_notes,
            "consolidation": _consolidation(r, infer),
        },
        "phases": phases,
        "jobs": jobs,
    }


def _rate(r: DemoResult, jid: str, what: str, over_s: float) -> tuple[list[float], list[float]]:
    """The job's energy (power, W) or work (throughput) per second over at least ``over_s``."""
    t, w = [], []
    pts = [(s.t_s, getattr(s.jobs[jid], what)) for s in r.samples if jid in s.jobs]
    k = 0
    for i, (ti, vi) in enumerate(pts):
        while k + 1 < i and ti - pts[k + 1][0] >= over_s:
            k += 1
        if i and ti - pts[k][0] >= min(over_s, 0.5):
            t.append(ti)
            w.append((vi - pts[k][1]) / (ti - pts[k][0]))
    return t, w


def plot(r: DemoResult, summary: dict[str, Any], path: Path) -> None:
    """demo.png: watts (budget, sum of limits, cluster power, power per job); each job's
    throughput; the inference replicas serving and every request's time to first token."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s for s in r.samples]
    fig, (ax_w, ax_r, ax_n) = plt.subplots(
        3, 1, figsize=(10, 9), sharex=True, gridspec_kw={"height_ratios": [3, 2, 2]}
    )
    for ax in (ax_w, ax_r, ax_n):
        ax.axvspan(r.cut_at_s, r.raised_at_s, color="tab:red", alpha=0.07, lw=0)
    ax_w.step(t, [s.budget_w for s in r.samples], where="post", color="black", label="budget")
    ax_w.step(
        t,
        [s.limits_w for s in r.samples],
        where="post",
        color="tab:gray",
        linestyle="--",
        label="sum of limits",
    )
    ax_w.plot(t, [s.power_w for s in r.samples], color="tab:blue", lw=2, label="cluster power")
    infer = summary["inference"]["job"]
    train = summary["training"]["job"]
    for jid, color in ((train, "tab:orange"), (infer, "tab:green")):
        jt, jw = _rate(r, jid, "energy_j", 2.0)
        ax_w.plot(jt, jw, color=color, label=f"{r.jobs[jid]['name']} power")
    ax_w.set_ylabel("watts")
    ax_w.set_ylim(bottom=0)
    ax_w.legend(loc="lower left", fontsize=8, ncol=3)
    cut = summary["cut"]
    obeyed = cut["obeyed_after_s"]
    ax_w.set_title(
        f"greenllm demo ({r.policy}): budget {r.budget_w:g} W, cut to {r.cut_w:g} W at "
        f"{r.cut_at_s:.0f} s (obeyed in "
        + (f"{obeyed:.1f} s" if obeyed is not None else "-")
        + f"), raised at {r.raised_at_s:.0f} s"
    )
    ax_r.plot(
        *_rate(r, train, "work_units", 5.0),
        color="tab:orange",
        label=f"{r.jobs[train]['name']} samples/s (over 5 s)",
    )
    ax_r.set_ylabel("samples/s")
    ax_r.set_ylim(bottom=0)
    ax_t = ax_r.twinx()
    ax_t.plot(
        *_rate(r, infer, "work_units", 3.0),
        color="tab:green",
        label=f"{r.jobs[infer]['name']} tokens/s (over 3 s)",
    )
    ax_t.set_ylabel("tokens/s")
    ax_t.set_ylim(bottom=0)
    lines = ax_r.get_lines() + ax_t.get_lines()
    ax_r.legend(lines, [ln.get_label() for ln in lines], loc="lower left", fontsize=8)
    serving = [s.jobs[infer].serving if infer in s.jobs else 0 for s in r.samples]
    ax_n.step(t, serving, where="post", color="tab:green", lw=2, label="replicas serving")
    ax_n.axhline(r.jobs[infer]["shards"], color="tab:green", ls=":", label="replicas placed")
    ax_n.set_ylim(0, r.jobs[infer]["shards"] + 0.5)
    ax_n.set_ylabel("replicas")
    ax_n.set_xlabel("seconds (load started at 0)")
    ax_l = ax_n.twinx()
    ok = [q for q in r.requests if q["status"] == "ok" and q["ttft_s"] is not None]
    ax_l.scatter(
        [q["sent_s"] for q in ok],
        [q["ttft_s"] for q in ok],
        s=6,
        color="tab:purple",
        alpha=0.5,
        label="request TTFT",
    )
    slo = summary["inference"]["slo"]["p99_ttft_s"]
    if slo > 0:
        ax_l.axhline(slo, color="tab:purple", ls="--", lw=1, label="p99 TTFT SLO")
    ax_l.set_ylabel("TTFT (s)")
    ax_l.set_ylim(bottom=0)
    handles = ax_n.get_lines() + ax_l.get_lines() + ax_l.collections[:1]
    ax_n.legend(handles, [h.get_label() for h in handles], loc="lower left", fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out: Path, summary: dict[str, Any], r: DemoResult) -> None:
    """summary.json, samples.json, requests.json and demo.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "samples.json").write_text(json.dumps(samples_json(r)))
    (out / "requests.json").write_text(json.dumps(r.requests))
    plot(r, summary, out / "demo.png")
