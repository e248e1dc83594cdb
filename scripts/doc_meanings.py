"""What each key of the ``--json`` documents and output files means (units in the names:
``_w`` watts, ``_j`` joules, ``_s`` seconds, ``_mhz``, ``_mib``, ``_pct``, ``_g`` grams CO2e).

The keys themselves come from the code (``scripts/doc_samples.py``); a key missing here is
rendered as undocumented and fails ``tests/unit/test_ux_docs.py``.
"""

from __future__ import annotations

JOB = {
    "id": "Job id, assigned by the controller.",
    "name": "The job spec's `name`.",
    "kind": "`train` or `infer`.",
    "state": "pending (waiting for GPUs), placed, running, done, failed or cancelled.",
    "model": "The job spec's `model`.",
    "shards": "Training shards or inference replicas, one GPU each.",
    "priority": "The job spec's `priority`.",
    "throughput": "Work rate now, `unit` per second.",
    "unit": "`samples` (training) or `tokens` (inference: output tokens generated).",
    "work_units": "Work done so far, in `unit`.",
    "steps": "Training steps done (0 for inference).",
    "restarts": "How often a shard was restarted.",
    "energy_j": "GPU energy of its shards so far, joules (measured by the agents).",
    "joules_per_unit": "energy_j / work_units (null before any work).",
    "co2e_g": "Emissions of energy_j, grams CO2e (the config's carbon region/series and PUE).",
    "submitted_at_s": "Submission time, Unix seconds.",
    "gpu_wait_fraction": "Simulated GPUs only: share (0-1) of the recent time its simulated "
    "GPUs waited for this machine's CPU instead of working (null: not measured, e.g. real "
    "GPUs). See docs/simulated-gpus.md.",
    "cpu_bound": "gpu_wait_fraction went above 0.1 (and not yet back below 0.05): the CPU, "
    "not the simulated GPUs, sets its throughput and J/unit.",
}

GPU = {
    "index": "GPU index on its node.",
    "type": "Catalog GPU type.",
    "power_limit_w": "Power limit now, watts.",
    "power_w": "Power draw now, watts.",
    "sm_clock_mhz": "SM clock now, MHz.",
    "utilization_pct": "GPU utilization, percent.",
    "temperature_c": "Temperature, degrees Celsius.",
    "memory_used_mib": "Device memory in use, MiB.",
    "energy_j": "Energy counter, joules.",
    "commanded_power_limit_w": "Limit the controller last commanded, watts.",
    "pending_power_limit_w": "Limit sent but not yet acknowledged, watts (null when none).",
}

STATUS = {
    "budget_w": "Cluster GPU power budget, watts.",
    "reserve_w": "Headroom kept unallocated, watts.",
    "power_w": "Sum of the latest power readings, watts.",
    "accounted_power_limit_w": "Sum of the limits the controller counts against the budget "
    "(stale nodes at their highest possible limits), watts.",
    "shortfall_w": "Watts the accounted limits exceed budget - reserve by: a cut the GPUs "
    "cannot meet (0 when within; see docs/faults.md).",
    "policy": "Allocation policy in force.",
    "jobs_waiting": "Jobs waiting for GPUs.",
    "max_waiting_jobs": "Jobs that may wait before a submission is refused "
    "(`controller.max_waiting_jobs`).",
    "domains": "The power domains of cluster.yaml's `power_domains`, parents first (empty "
    "when none): each `{name, parent, limit_w, reserve_w, accounted_power_limit_w, power_w, "
    "bound, gpus}`: its parent (null for a top domain), its limit and reserve, its GPUs' "
    "limits as accounted and their power draw (watts), whether its limit binds, and how many "
    "GPUs are under it (docs/power-domains.md).",
    "nodes": "One entry per node.",
    "nodes[].name": "Node name.",
    "nodes[].connected": "Whether its agent is connected.",
    "nodes[].stale": "Connected but its telemetry stopped.",
    "nodes[].failsafe_active": "Its agent holds its fail-safe limits.",
    "nodes[].telemetry_age_s": "Age of its latest telemetry, seconds (null when none).",
    "nodes[].phase": "unknown (not registered since the controller started), live, stale "
    "(silent: counted at the highest limits it may hold) or lost (its shards placed "
    "elsewhere; still counted at those limits unless known down).",
    "nodes[].down_reason": "Why it is known powered off (`greenllm node down`, or its Ray "
    "node died): counted at no more than its fail-safe limits until its agent registers "
    "again (null when not known down).",
    "nodes[].idle_energy_j": "Energy its GPUs drew while no job held them (idle, or a "
    "drained inference replica's) since the controller started, joules; booked every 5 s, "
    "so an estimate to that resolution.",
    "nodes[].releasable": "No job holds any of its GPUs now (an operator or an autoscaler "
    "could switch it off).",
    "nodes[].agent_state_error": "Why its agent cannot write its state file (null when it "
    "can; it retries).",
    "nodes[].energy_samples_rejected": "Energy readings not booked since the controller "
    "started, by kind (`counter-back`, `implausible`).",
    "nodes[].gpus": "One entry per GPU.",
    **{f"nodes[].gpus[].{k}": v for k, v in GPU.items()},
    "nodes[].gpus[].planned_power_limit_w": "Limit the controller last commanded to it, watts "
    "(null before any).",
    "nodes[].gpus[].above_plan_w": "Watts it is counted at above that plan (0 when none).",
    "nodes[].gpus[].above_plan_reason": "Why (a refused lowering, a stale node, a lowering "
    "not acked yet); null when none.",
    "jobs": "At most `jobs_cap` jobs: running first, then placed, pending (in submission "
    "order), then the most recently ended. `greenllm jobs` pages through all of them.",
    **{f"jobs[].{k}": v for k, v in JOB.items()},
    "jobs_total": "Jobs ever submitted.",
    "jobs_by_phase": "Every job ever submitted, counted by state (pending, placed, running, "
    "done, failed, cancelled); states with no job are left out.",
    "jobs_truncated": "True when `jobs` lists fewer jobs than the controller holds (the cap).",
    "jobs_cap": "The most jobs `jobs` lists.",
    "state_writable": "False when the controller cannot save its state (disk full, "
    "read-only, path missing, or its database replaced, deleted or damaged): changes are "
    "refused until it can, the cluster is kept safe from memory.",
    "state_error": "Why, naming the file (null when it can).",
}

GPUS = {
    "node": "The node of the config whose GPUs are shown.",
    "config": "The cluster.yaml used.",
    "backend": "`nvml` (real GPUs), `simulated`, or both, comma-separated.",
    "gpus": "One entry per GPU.",
    "gpus[].uuid": "GPU UUID (`sim-...` for simulated GPUs).",
    "gpus[].backend": "`nvml` or `simulated`.",
    "gpus[].min_power_limit_w": "Lowest settable power limit, watts.",
    "gpus[].max_power_limit_w": "Highest settable power limit, watts.",
    "gpus[].default_power_limit_w": "Default power limit, watts.",
    "gpus[].min_sm_clock_mhz": "Lowest supported SM clock, MHz.",
    "gpus[].max_sm_clock_mhz": "Highest supported SM clock, MHz.",
    "gpus[].memory_total_mib": "Device memory, MiB.",
    **{f"gpus[].{k}": v for k, v in GPU.items()},
}

CONFIG_CHECK = {
    "file": "The file checked.",
    "valid": "Always true (an invalid file is a one-line error instead).",
    "name": "The config's `name`.",
    "policy": "The config's `policy`.",
    "budget_w": "`budget.budget_w`, watts.",
    "reserve_w": "`budget.reserve_w`, watts.",
    "usable_budget_w": "budget_w - reserve_w: what limits may sum to, watts.",
    "sum_tdp_w": "Summed TDP of the listed GPUs, watts.",
    "sum_min_power_limit_w": "Summed minimum power limits of the listed GPUs, watts.",
    "gpu_count": "GPUs listed.",
    "nodes": "One entry per node.",
    "nodes[].name": "Node name.",
    "nodes[].backend": "`simulated` or `nvml`.",
    "nodes[].gpus": "GPU type of each listed GPU, in index order.",
    "control_period_s": "Seconds between allocations.",
    "telemetry_interval_s": "Seconds between GPU samples.",
    "failsafe_timeout_s": "Seconds without the controller before agents apply fail-safe limits.",
    "controller_address": "host:port of the controller.",
    "state_dir": "State directory (absolute).",
    "carbon_region": "Grid region for CO2e.",
    "nodes_without_gpu_list": "nvml nodes that list no GPUs (discovered when their agent "
    "starts; not in the sums).",
    "power_domains": "The power tree, parents first (empty without `power_domains`): each "
    "`{name, parent, usable_w, nodes}`: its parent (null for a top domain), its limit - "
    "reserve in watts, and every node under it.",
    "oversubscribed": "One line per domain whose children may draw more than it allows (a "
    "child's limit above it, or its children's limits summing above it): allowed, the parent "
    "binds first.",
}

PROFILE = {
    "[].gpu_type": "GPU type profiled (the catalog type, or what the real GPU reports).",
    "[].gpu_index": "NVML index of the real GPU profiled (--gpu), or null (simulated).",
    "[].simulated": "Whether the figures come from the calibrated model (--gpu-type).",
    "[].workload": "`train`, `prefill` or `decode`.",
    "[].batch": "Batch size of the workload.",
    "[].model_params": "Parameters of the simulated model, or null on a real GPU.",
    "[].unit": "Unit of throughput and joules_per_unit (`samples`, `tokens`, `steps`).",
    "[].requested_power_limit_w": "Power limit asked for, watts (null when clocks are swept).",
    "[].requested_sm_clock_mhz": "SM clock asked for, MHz (null when limits are swept); "
    "sm_clock_mhz is the one reached (the GPU's clock grid).",
    "[].power_limit_w": "Power limit in force in this row, watts (the maximum when SM clocks "
    "are swept).",
    "[].sm_clock_mhz": "SM clock reached in this row, MHz.",
    "[].power_w": "Power drawn, watts.",
    "[].throughput": "Work rate, units/s (samples/s for train, tokens/s for prefill/decode).",
    "[].relative_throughput": "throughput / the same workload uncapped at maximum clock.",
    "[].joules_per_unit": "Energy per unit of work, joules.",
    "[].relative_energy": "joules_per_unit / the uncapped run's.",
}

MEASUREMENT = {
    "name": "The measurement window's name (`command`).",
    "duration_s": "How long the command ran, seconds.",
    "start_unix_s": "Start, Unix seconds.",
    "end_unix_s": "End, Unix seconds.",
    "gpu_energy_j": "Joules per GPU, by UUID (simulated GPUs included, counted or not).",
    "gpus_excluded": "UUIDs of GPUs read but left out of the total (simulated ones, unless "
    "--include-simulated).",
    "cpu_energy_j": "Joules per RAPL zone, or null when RAPL is unreadable (never 0).",
    "cpu_unavailable_reason": "Why cpu_energy_j is null.",
    "cpu_estimate_j": "The labelled CPU ESTIMATE (--cpu-estimate), joules, or null.",
    "cpu_estimate": "How the estimate was made: source, energy_j, cpu_time_s, watts_per_core "
    "(null without --cpu-estimate).",
    "total_energy_j": "Sum of the devices with in_total, joules; null when nothing is counted.",
    "total_includes": "What the total adds up: `gpu`, then `rapl` or `estimate`.",
    "avg_power_w": "total_energy_j / duration_s, watts.",
    "short_window": "A GPU energy counter may not have updated in so short a window.",
    "devices": "One row per GPU, RAPL zone and the CPU estimate.",
    "devices[].device": "Label (`gpu0 H100-SXM`, `cpu package-0`, `cpu estimate`).",
    "devices[].kind": "`gpu` or `cpu`.",
    "devices[].uuid": "GPU UUID (null for CPU rows).",
    "devices[].source": "`nvml-counter`, `nvml-polled-power`, `simulated`, `rapl` or `estimate`.",
    "devices[].energy_j": "Energy over the run, joules.",
    "devices[].duration_s": "Length of the run, seconds.",
    "devices[].avg_power_w": "energy_j / duration_s, watts.",
    "devices[].in_total": "Whether the row counts towards total_energy_j and CO2e.",
    "devices[].short_window": "The row's counter may not have updated in the window.",
}

METER = {
    "command": "The command run, as a list.",
    "exit_status": "Its exit status (128+N when killed by signal N).",
    "signal": "The signal that killed it, or null.",
    "gpu_backend": "Sources of the GPUs read (`nvml-counter`, `simulated`...), or null.",
    "gpu_note": "Says when GPUs are simulated and whether they are counted.",
    "metered": "Devices read from real counters (or the labelled CPU estimate).",
    "simulated": "Simulated GPUs (their model's idle draw, not a measurement).",
    "in_total": "Devices counted in total_energy_j and CO2e.",
    "simulated_in_total": "Whether the simulated GPUs are counted (--include-simulated).",
    **MEASUREMENT,
    "carbon_g": "Emissions of total_energy_j, grams CO2e (null when nothing is counted).",
    "carbon": "How carbon_g was computed.",
    "carbon.g_co2e": "Same as carbon_g.",
    "carbon.energy_kwh": "total_energy_j in kWh.",
    "carbon.intensity": "Region key or intensity file used.",
    "carbon.intensity_source": "Where the intensity figure comes from.",
    "carbon.intensity_g_per_kwh": "Average grid intensity over the run, gCO2e/kWh.",
    "carbon.pue": "Power usage effectiveness applied.",
}

_FIGURES = {
    "method": "`baseline` (the uncompressed model) or the method chain (`prune+int8`).",
    "parameters": "Parameters, quantized weights included.",
    "bytes": "Size of the saved weights, bytes.",
    "perplexity": "Held-out perplexity.",
    "eval_tokens": "Held-out tokens scored.",
    "tokens_per_s": "Generated tokens per second: median over the runs.",
    "tokens_per_s_min": "Slowest run.",
    "tokens_per_s_max": "Fastest run.",
    "tokens_per_s_spread": "(max - min) / median (null from a single run).",
    "tokens_per_s_noisy": "Spread above max_spread, or unknown.",
    "joules_per_token": "Energy per generated token, joules: median over the runs.",
    "joules_per_token_min": "Lowest run.",
    "joules_per_token_max": "Highest run.",
    "joules_per_token_spread": "(max - min) / median (null from a single run).",
    "joules_per_token_noisy": "Spread above max_spread, or unknown.",
    "energy_source": "`nvml-counter`, `rapl`, `estimate`, joined by `+`.",
    "energy_is_estimate": "Whether any part of the joules is modelled, not measured.",
    "repeats": "Timed runs.",
    "tokens_per_run": "Median tokens generated per run.",
    "run_s": "Median run length, seconds.",
    "kernels": "Matmul paths of the quantized layers.",
    "artifact": "Folder of the saved model (an inference job can name it as `model`).",
    "details": "What the method did (sparsity, ranks, student shape...).",
}

COMPRESS = {
    "model": "The model compressed.",
    "device": "Where it was evaluated.",
    "energy_sources": "Every energy source used.",
    "energy_note": "Whether J/token is measured or an estimate.",
    "timing_note": "How tokens/s and J/token were timed.",
    "max_spread": "Spread above which a figure is marked noisy, fraction.",
    "cpu_threads": "Torch CPU threads while timing (null: torch's default).",
    "baseline": "The uncompressed model's figures (the one baseline of every ratio).",
    **{f"baseline.{k}": v for k, v in _FIGURES.items()},
    "results": "One entry per method.",
    **{f"results[].{k}": v for k, v in _FIGURES.items()},
    **{
        f"results[].{k}_ratio": f"{k} / the baseline's {k}"
        for k in ("parameters", "bytes", "perplexity", "tokens_per_s", "joules_per_token")
    },
    "results[].tokens_per_s_ratio_noisy": "The method's or the baseline's tokens/s is noisy.",
    "results[].joules_per_token_ratio_noisy": "The method's or the baseline's J/token is noisy.",
    "plot": "Path of pareto.png.",
    "report": "Path of report.json.",
}

OTHERS = {
    "jobs": {
        "jobs": "One page of jobs, newest first (`--limit` of them).",
        **{f"jobs[].{k}": v for k, v in JOB.items()},
        "total": "Jobs ever submitted.",
        "next_page_token": "Pass as `--page-token` for the next page (null: this was the last).",
    },
    "submit": JOB,
    "cancel": JOB,
    "logs": {
        "job_id": "The job.",
        "events": "Its events, oldest first.",
        "events[].timestamp_s": "When, Unix seconds.",
        "events[].kind": "The new phase of a transition, or the event's kind (e.g. `submitted`).",
        "events[].message": "What happened.",
    },
    "budget set": {
        "budget_w": "Budget now in force, watts.",
        "reserve_w": "Reserve, watts.",
        "shortfall_w": "Watts the GPUs will still hold above budget - reserve once every GPU "
        "that can lower does (0: the cut can be met; otherwise the command exits 3).",
        "shortfall_reason": "Why, naming the GPUs that hold it up (empty when none).",
        "domain": "With `--domain`: the power domain whose limit was set (`budget_w` and "
        "`reserve_w` are then its `limit_w` and `reserve_w`, and the shortfall is of its "
        "GPUs); null for the cluster budget.",
    },
    "policy set": {"policy": "Policy now in force."},
    "node down": {
        "node": "The node.",
        "changed": "False when it was already known down.",
        "phase": "Its phase now (lost from the next control step).",
    },
    "policy list": {
        "policies": "Every policy, then the oracle.",
        "policies[].name": "Policy name.",
        "policies[].optimises": "What it optimises.",
        "policies[].when": "When to use it.",
        "policies[].live": "Whether a live controller can run it (false for the oracle).",
    },
}


def _load() -> dict[str, str]:
    from greenllm.docgen import docstring_parts
    from greenllm.serving.report import LoadReport

    return docstring_parts(LoadReport)[1]


CLI = {
    "load": _load(),
    "status": STATUS,
    "gpus": GPUS,
    "config check": CONFIG_CHECK,
    "profile": PROFILE,
    "meter": METER,
    "compress": COMPRESS,
    **OTHERS,
}
#: Keys holding mappings with data-dependent keys (by UUID, zone, job, method...).
CLI_MAPS = frozenset(
    {
        "gpu_energy_j",
        "cpu_energy_j",
        "cpu_estimate",
        "baseline.details",
        "nodes[].energy_samples_rejected",
        "results[].details",
        "errors",
        "jobs_by_phase",
    }
)

SUMMARY = {
    "policy": "Policy simulated.",
    "duration_s": "Virtual seconds simulated.",
    "energy_j": "GPU energy of the whole cluster, joules.",
    "work": "Work done per job, in its unit.",
    "units": "Unit per job: `samples` (training) or `tokens` (inference).",
    "unit_notes": "What each unit counts (tokens: output tokens generated, as the live "
    "cluster counts them).",
    "joules_per_unit": "energy per unit of work, per job, joules: the energy of the GPUs the "
    "job held while it held them (a drained inference replica's GPU is back with the cluster).",
    "idle_energy_j": "Energy of the GPUs no job held (idle, or a drained replica's), joules: "
    "what the cluster pays for capacity nobody used.",
    "idle_energy_by_node_j": "idle_energy_j per node, joules.",
    "releasable_s": "Per node: seconds during which none of its GPUs was held by a job (an "
    "operator or autoscaler could have switched it off).",
    "budget_violation_s": "Seconds measured power was above the budget, the transition "
    "after each budget change included.",
    "max_overshoot_w": "Largest excess of power over the budget, watts (transitions included).",
    "transition_window_s": "How long after a budget change limits may still answer the old "
    "budget, seconds (one control period plus two command round trips); a controller outage "
    "during it holds it open, and it starts over when a controller runs again.",
    "budget_violation_after_transition_s": "Seconds power was above the budget outside the "
    "transition windows.",
    "max_overshoot_after_transition_w": "Largest excess outside the transition windows, watts.",
    "limits_over_budget_s": "Seconds, outside transitions, the limits held summed above "
    "budget - reserve (the safety invariant; should be 0).",
    "max_limits_over_budget_w": "Largest such excess, watts.",
    "domain_limits_over_s": (
        "Seconds in which the limits the GPUs under some power domain really held summed "
        "above that domain's limit - reserve, outside the transition window after a change "
        "of its limit (the invariant per domain; 0 without power_domains)."
    ),
    "max_domain_limits_over_w": "Per power domain that went over: its largest excess, watts.",
    "slo_met": "Per job: whether its SLO was met.",
    "slo_detail": "Per job: why (or `no SLO`).",
    "unmet_slo_reports": "Per job: the reason the policy reported for giving up its SLO.",
    "throughput_vs_unbounded": "Per job: work done / the same scenario's work with no budget.",
    "weighted_throughput_vs_unbounded": "Priority-weighted mean of throughput_vs_unbounded.",
    "cut_response_s": "For each budget cut, seconds until power was under the new budget.",
    "p99_ttft_s": "Per inference job: 99th-percentile time to first token, seconds.",
    "p99_tpot_s": "Per inference job: 99th-percentile time per output token after the "
    "first, seconds.",
    "decide_cpu_ms_mean": "Mean CPU time of one decide() call, milliseconds.",
    "decide_cpu_ms_max": "Largest CPU time of one decide() call, milliseconds.",
}
SUMMARY_MAPS = frozenset(
    {
        "work",
        "units",
        "unit_notes",
        "joules_per_unit",
        "slo_met",
        "slo_detail",
        "unmet_slo_reports",
        "throughput_vs_unbounded",
        "p99_ttft_s",
        "p99_tpot_s",
        "idle_energy_by_node_j",
        "releasable_s",
    }
)

TRACE = {
    "t": "Virtual time, seconds.",
    "node": "Node name.",
    "gpu": "GPU index on the node.",
    "gpu_type": "Catalog GPU type.",
    "job": "Job on the GPU (empty when idle).",
    "power_limit_w": "Power limit held, watts.",
    "sm_clock_mhz": "SM clock, MHz.",
    "power_w": "Power drawn, watts.",
    "work": "Units of work done by this GPU since the previous recorded row (output tokens "
    "for inference; samples for training).",
}
BUDGET = {"t": "Virtual time of the change, seconds.", "budget_w": "Budget from then, watts."}
