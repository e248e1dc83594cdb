"""What ``decide()`` is told: every GPU counted safely, every job with its demand and SLO.

The budget counts each GPU at the highest limit it may really hold:

* a LIVE node's GPUs at the larger of their acked and pending limits (decide() commands
  them, lowerings first);
* a STALE or UNKNOWN node's (telemetry stopped, stream gone, or not registered since a
  controller restart) at the highest limit they may hold: acked or commanded, as
  persisted before any raise was sent; the catalog maximum when nothing is known. An agent
  only ever lowers a limit on its own (fail-safe and boot take the lower of its limit and
  its fail-safe limit), so it never holds more;
* a LOST node's (silent past the lost timeout) the same way while it may still be powered:
  its agent may be dead rather than cut off, and a dead agent applies no fail-safe (NVML
  limits outlive the process), so its GPUs hold what they were last given;
* a node KNOWN DOWN (an operator's ``greenllm node down``, or its Ray node died with its
  machine) at the lower of that and its fail-safe limit: it draws nothing now and its agent
  boots at no more than that.
"""

from __future__ import annotations

from collections.abc import Callable

from greenllm.devices.catalog import get_spec
from scheduler.core.lifecycle import NodePhase
from scheduler.core.types import GPUState, JobState, LatencyFeedback
from scheduler.shell.jobs import JobMeasure, JobRecord
from scheduler.shell.nodes import NodeRecord

#: Seconds over which an inference backlog should be drained (sets its demand).
DRAIN_HORIZON_S = 5.0
#: Most prompt tokens per output token planned with (a load of prompts alone).
MAX_PROMPT_PER_OUTPUT = 1e4


def gpu_states(
    nodes: dict[str, NodeRecord],
    assigned: dict[tuple[str, int], tuple[str, int, float]],
    reserved: set[tuple[str, int]],
    boot_limit_w: Callable[[str, str], float] | None = None,
) -> list[GPUState]:
    """Every GPU of every configured node, accounted safely.

    Args:
        nodes: The nodes, with their phases of this step.
        assigned: ``(node, index)`` -> ``(job_id, rank, work rate)`` of running shards.
        reserved: GPUs on which a shard is still stopping.
        boot_limit_w: The limit an agent that never registered boots a GPU (by type and
            node) at, its config fail-safe limit, watts: a node known down that never
            registered is counted at no more than that (None: at its maximum).
    """
    out: list[GPUState] = []
    for node in nodes.values():
        live = node.phase is NodePhase.LIVE
        if not node.gpus:
            for index, gpu_type in enumerate(node.config_gpu_types):
                max_w = get_spec(gpu_type).max_power_limit_w
                if node.down_reason and boot_limit_w is not None:
                    max_w = min(max_w, boot_limit_w(gpu_type, node.name))
                out.append(GPUState(node.name, index, gpu_type, 0.0, 0.0, max_w, stale=True))
            continue
        for g in node.gpus:
            latest = g.latest
            job_id, rank, rate = assigned.get((node.name, g.index), (None, None, 0.0))
            if live:
                acked_w, pending_w = g.acked_limit_w, g.pending_limit_w()
            else:
                acked_w, pending_w = g.worst_limit_w(), None
                if node.phase is NodePhase.LOST and node.down_reason:
                    acked_w = min(acked_w, g.worst_failsafe_w())
            out.append(
                GPUState(
                    node=node.name,
                    index=g.index,
                    gpu_type=g.gpu_type,
                    power_w=latest.power_w if latest is not None and live else 0.0,
                    sm_clock_mhz=latest.sm_clock_mhz if latest is not None and live else 0.0,
                    acked_limit_w=acked_w,
                    pending_limit_w=pending_w,
                    locked_max_sm_clock_mhz=g.locked_max_sm_clock_mhz,
                    stale=not live,
                    job_id=job_id,
                    shard=rank,
                    work_rate=rate,
                    min_limit_w=g.min_power_limit_w,
                    max_limit_w=g.max_power_limit_w,
                    refused_below_w=g.floor_w or 0.0,
                    reserved=(node.name, g.index) in reserved,
                )
            )
    return out


def job_state(job: JobRecord, measure: JobMeasure, now_s: float, period_s: float) -> JobState:
    """The job as ``decide()`` sees it: its demand and the rate its SLO needs now.

    Training: a deadline sets the rate still needed to finish on time (work left over time
    left), when the job's total work is known. Inference: demand is the measured arrival
    rate (or, when higher, the last seconds' rate: a burst) plus draining what waits, in
    output tokens; the prompt tokens that come with them (measured likewise) make the
    prefill share of the replicas' time
    (``prompt_tokens_per_output``). With a latency SLO the job needs that demand served;
    a throughput SLO asks for no more than it. Its replicas' measured latency goes with it
    (:class:`~scheduler.core.types.LatencyFeedback`).
    """
    spec = job.spec
    slo = spec.slo.min_throughput
    demand = mean_demand = None
    rho = 0.0
    latency = None
    if spec.kind == "train":
        total = spec.total_work_units()
        if spec.slo.deadline_s > 0 and total is not None:
            left_s = max(job.submitted_s + spec.slo.deadline_s - now_s, period_s)
            slo = max(slo, max(0.0, total - measure.work_units) / left_s)
    else:
        latency_slo = spec.slo.p99_ttft_s > 0 or spec.slo.p99_tpot_s > 0
        infer = spec.infer_settings
        rho = infer.prompt_tokens / infer.max_new_tokens  # until the load is measured
        if job.shards and measure.demand_known:
            drain = measure.queued_units / DRAIN_HORIZON_S
            need = measure.offered_rate + drain
            # no fixed headroom: the replicas' measured latency (SLO feedback) guards it
            mean_demand = need
            # a burst is served as it comes, not once the window's mean has caught up
            demand = max(mean_demand, measure.recent_offered_rate + drain)
            slo = demand if latency_slo else min(slo, demand)
            prompt_drain = measure.queued_prompt_tokens / DRAIN_HORIZON_S
            prompts = measure.offered_prompt_rate + prompt_drain
            rho = min(MAX_PROMPT_PER_OUTPUT, prompts / need) if need > 0 else rho
        if latency_slo:
            latency = LatencyFeedback(
                slo_ttft_s=spec.slo.p99_ttft_s,
                slo_tpot_s=spec.slo.p99_tpot_s,
                ttft_p99_s=measure.ttft_p99_s,
                tpot_p99_s=measure.tpot_p99_s,
                oldest_wait_s=measure.oldest_wait_s,
                since_scaled_s=now_s - job.replicas_since_s,
            )
    return JobState(
        job_id=job.job_id,
        kind=spec.kind,
        phase="pending" if not job.shards else "running",
        workload=spec.workload(),
        shards=spec.shards,
        priority=float(spec.priority),
        allowed_gpu_types=tuple(spec.gpu_types),
        preferred_gpu_types=tuple(spec.preferred_gpu_types),
        slo_units_per_s=slo,
        floor_w=spec.floor_w,
        demand_units_per_s=demand,
        mean_demand_units_per_s=mean_demand,
        min_shards=spec.min_shards,
        active_shards=job.active_replicas,
        prompt_tokens_per_output=rho,
        latency=latency,
    )
