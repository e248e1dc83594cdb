"""What :func:`scheduler.core.decide.decide` reads and what it returns.

These types are the contract between ``decide()`` and whoever runs it (the live
controller in ``scheduler/server`` and the simulator in ``scheduler/sim``).

How a controller fills in :class:`GPUState`:

* ``acked_limit_w`` is the power limit the agent last confirmed as applied (at start,
  the limit the agent reported when it registered).
* ``pending_limit_w`` is the **largest** limit commanded but not yet acked, or None when
  every command was acked. Keep an outstanding command until its ack arrives (or until
  the node is declared lost); when several are outstanding, report their maximum.
* ``stale`` is True when the node's telemetry is older than the controller's staleness
  timeout (or its stream is down). ``decide()`` then counts the GPU at
  ``max(acked_limit_w, pending_limit_w)`` and sends it no command. Once an unreachable
  agent may have applied its fail-safe limit (after the fail-safe timeout), report that
  limit as pending too if it is higher. Never leave a known node out of ``gpus``: once
  it is known to be down (drawing nothing), count it, stale, at the limits its agent
  will come back with (an agent should boot capped at its minimum limits), so its
  return never needs budget that was given to others meanwhile.
* ``locked_max_sm_clock_mhz`` is the upper end of the SM clock lock last acked (None:
  clocks free).
* ``work_rate`` is the measured work per second of the shard on the GPU (samples/s for
  training, tokens/s for inference), 0 when idle or unknown.

How a controller executes :class:`Actions`:

1. Send ``power_limits`` in the order given: every lowering comes before any raise.
   ``decide()`` emits raises only when no lowering is outstanding and the raised limits
   fit the budget even before anything else is acked, so the controller never has to
   hold raises back itself; it just must not reorder them.
2. ``clock_locks`` and ``clock_resets`` may go at any time (a lock only lowers power;
   an unlock is still bounded by the power limit).
3. ``placements`` start shards on GPUs (the shard's job moves to running);
   ``load_weights`` set each shard's share of its job's requests (inference) or
   micro-batches (training).
4. Record every power-limit command as pending until acked (see above).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from greenllm.devices.physics import Workload
from scheduler.core.demand import DemandCurve
from scheduler.core.domains import DomainLayout

if TYPE_CHECKING:
    from scheduler.core.powermodel import PowerModel

JobKind = Literal["train", "infer"]
JobPhase = Literal["pending", "running", "done", "failed", "cancelled"]


@dataclass(frozen=True)
class GPUState:
    """The controller's view of one GPU.

    Attributes:
        node: Node name.
        index: GPU index on the node.
        gpu_type: Catalog type, e.g. ``"H100-SXM"``.
        power_w: Latest measured board power, watts.
        sm_clock_mhz: Latest measured SM clock, MHz.
        acked_limit_w: Power limit the agent last acked, watts.
        pending_limit_w: Largest commanded, not yet acked limit, watts (None: none).
        locked_max_sm_clock_mhz: Upper end of the acked SM clock lock, MHz (None: free).
        stale: Telemetry is too old to trust (the GPU gets no commands).
        job_id: Job whose shard runs on the GPU (None: idle).
        shard: Shard index of that job on this GPU.
        work_rate: Measured work of the shard per second (samples/s or tokens/s).
        min_limit_w: Lowest limit it reported, watts (0: the catalog's).
        max_limit_w: Highest limit it reported, watts (0: the catalog's).
        refused_below_w: It refused a lowering below this limit (the one it holds), so it
            is planned at no less for now, watts (0: no refusal).
        reserved: Not free for placement (a shard is still stopping on it).
    """

    node: str
    index: int
    gpu_type: str
    power_w: float
    sm_clock_mhz: float
    acked_limit_w: float
    pending_limit_w: float | None = None
    locked_max_sm_clock_mhz: int | None = None
    stale: bool = False
    job_id: str | None = None
    shard: int | None = None
    work_rate: float = 0.0
    min_limit_w: float = 0.0
    max_limit_w: float = 0.0
    refused_below_w: float = 0.0
    reserved: bool = False

    @property
    def key(self) -> tuple[str, int]:
        """``(node, index)``, the GPU's identity."""
        return (self.node, self.index)

    @property
    def commanded_limit_w(self) -> float:
        """The limit the GPU will have once every command is applied, watts."""
        return self.pending_limit_w if self.pending_limit_w is not None else self.acked_limit_w

    @property
    def accounted_limit_w(self) -> float:
        """What the budget must count for this GPU now: max of acked and pending, watts."""
        if self.pending_limit_w is None:
            return self.acked_limit_w
        return max(self.acked_limit_w, self.pending_limit_w)


@dataclass(frozen=True)
class LatencyFeedback:
    """What an inference job's replicas measured of its latency SLO (see
    :mod:`scheduler.policies.scaling`).

    Attributes:
        slo_ttft_s: p99 time-to-first-token objective, seconds (0: none).
        slo_tpot_s: p99 time-per-output-token objective, seconds (0: none).
        ttft_p99_s: Measured p99 TTFT of its replicas over the recent window (the worst
            replica's), seconds (0: nothing finished).
        tpot_p99_s: Measured p99 TPOT, likewise, seconds.
        oldest_wait_s: Longest a request now waiting for its first token has waited,
            seconds (what a queue heading over the TTFT SLO shows before any request
            finishes).
        since_scaled_s: Time since its serving replica count last changed, seconds
            (infinite: never).
    """

    slo_ttft_s: float = 0.0
    slo_tpot_s: float = 0.0
    ttft_p99_s: float = 0.0
    tpot_p99_s: float = 0.0
    oldest_wait_s: float = 0.0
    since_scaled_s: float = float("inf")

    def ratio(self) -> float:
        """How far the worst measured figure is from its objective (1: at the SLO; 0: no
        objective or nothing measured). A waiting request counts at its wait so far."""
        worst = 0.0
        if self.slo_ttft_s > 0:
            worst = max(worst, self.ttft_p99_s, self.oldest_wait_s) / self.slo_ttft_s
        if self.slo_tpot_s > 0:
            worst = max(worst, self.tpot_p99_s / self.slo_tpot_s)
        return worst


@dataclass(frozen=True)
class JobState:
    """The controller's view of one job.

    Attributes:
        job_id: Unique id.
        kind: ``"train"`` (synchronous data-parallel, units: samples) or ``"infer"``
            (independent replicas, units: tokens).
        phase: ``"pending"`` jobs are placed by ``decide()``; ``"running"`` ones get power.
        workload: What one shard runs (the power model's key, with the GPU type).
        shards: Number of shards (training) or replicas (inference); placed all or none.
        priority: Weight of the job's throughput; higher is more important (>= 0).
        allowed_gpu_types: Types the job may run on (empty: any).
        preferred_gpu_types: Types to use first when several fit, in order.
        slo_units_per_s: Minimum work rate of the whole job, units/s (0: no SLO).
        floor_w: Lowest power limit any of its GPUs may be capped to, watts (0: none).
        demand_units_per_s: Work the job can use per second (inference arrival rate),
            None when unbounded (training, or a backlog).
        mean_demand_units_per_s: Inference: demand over the whole measuring window, where
            ``demand_units_per_s`` also follows the last seconds' arrivals (a burst); the
            replica count shrinks only below what this needs. None: as ``demand``.
        min_shards: Inference: fewest replicas kept serving (``shards``: no scaling).
        active_shards: Inference: replicas serving now (None: all of them).
        prompt_tokens_per_output: Inference: prompt tokens its load brings per output
            token (prefill work per unit; 0: unknown or none). Planning counts a replica's
            capacity in GPU time: each output token costs its decode time plus this many
            prompt tokens' prefill time (:func:`scheduler.core.powermodel.serving_curve`).
        latency: Inference: its measured latency against its SLO (None: no latency SLO).
    """

    job_id: str
    kind: JobKind
    phase: JobPhase
    workload: Workload
    shards: int = 1
    priority: float = 1.0
    allowed_gpu_types: tuple[str, ...] = ()
    preferred_gpu_types: tuple[str, ...] = ()
    slo_units_per_s: float = 0.0
    floor_w: float = 0.0
    demand_units_per_s: float | None = None
    mean_demand_units_per_s: float | None = None
    min_shards: int | None = None
    active_shards: int | None = None
    prompt_tokens_per_output: float = 0.0
    latency: LatencyFeedback | None = None


@dataclass(frozen=True)
class ObservedState:
    """Everything ``decide()`` looks at.

    Attributes:
        now_s: Time of the snapshot, seconds.
        budget_w: Cluster GPU power budget, watts.
        reserve_w: Headroom kept unallocated, watts.
        gpus: Every known GPU (stale ones included).
        jobs: Pending and running jobs (finished ones may be left out).
        power_model: The learned power model (None: the catalog prior). ``decide()``
            only reads it; the controller feeds it telemetry.
        domains: The power tree with each domain's usable watts now (None: the cluster
            budget alone).
    """

    now_s: float
    budget_w: float
    reserve_w: float
    gpus: tuple[GPUState, ...]
    jobs: tuple[JobState, ...]
    power_model: PowerModel | None = None
    domains: DomainLayout | None = None

    @property
    def usable_budget_w(self) -> float:
        """``budget_w - reserve_w``: what commanded limits may sum to, watts."""
        return self.budget_w - self.reserve_w


@dataclass(frozen=True)
class DecideConfig:
    """Tuning of ``decide()``; the defaults suit the live controller and the simulator.

    Attributes:
        lower_band_frac: Lower a limit only when the target is more than this fraction of
            the GPU's TDP below the commanded limit (hysteresis band 1).
        raise_band_frac: Raise a limit only when the target is more than this fraction of
            the GPU's TDP above it (band 3); in between (band 2) the limit holds.
        limit_grid_steps: Candidate power limits per GPU type the planners consider.
        demand_points: Points of the demand curve decide() returns (0: none; a child
            controller of a controller tree reports it to its parent).
    """

    lower_band_frac: float = 0.01
    raise_band_frac: float = 0.03
    limit_grid_steps: int = 48
    demand_points: int = 0


@dataclass(frozen=True)
class Placement:
    """Start shard ``shard`` of ``job_id`` on GPU ``(node, index)``."""

    job_id: str
    shard: int
    node: str
    index: int


@dataclass(frozen=True)
class SetPowerLimit:
    """Set GPU ``(node, index)``'s power limit to ``power_limit_w`` watts."""

    node: str
    index: int
    power_limit_w: float


@dataclass(frozen=True)
class LockClocks:
    """Lock GPU ``(node, index)``'s SM clock into ``[min_sm_clock_mhz, max_sm_clock_mhz]``."""

    node: str
    index: int
    min_sm_clock_mhz: int
    max_sm_clock_mhz: int


@dataclass(frozen=True)
class ResetClocks:
    """Free GPU ``(node, index)``'s SM clocks."""

    node: str
    index: int


@dataclass(frozen=True)
class LoadWeight:
    """Share of ``job_id``'s requests / micro-batches for the shard on ``(node, index)``."""

    job_id: str
    node: str
    index: int
    weight: float


@dataclass(frozen=True)
class SLOReport:
    """A job whose SLO the budget cannot meet, and why."""

    job_id: str
    reason: str


@dataclass(frozen=True)
class Actions:
    """What ``decide()`` asks the controller to do.

    Attributes:
        placements: Shards to start.
        power_limits: Limit changes, lowerings first (execute in order).
        clock_locks: SM clock locks to apply.
        clock_resets: SM clock locks to remove.
        load_weights: Per-shard load shares, per job summing to 1: every inference job's
            replicas (request routing, in proportion to predicted throughput); a training
            job only when its shards are predicted to differ in speed (otherwise equal
            micro-batch shares).
        unmet_slos: Jobs whose SLO cannot be met under the budget, with the reason.
        unplaceable: Pending jobs no placement can ever hold (too few GPUs of their allowed
            types in the cluster), with the reason.
        active_replicas: Inference jobs whose serving replica count was chosen: (job, count).
        raises_deferred: True when raises were held back until lowerings are acked.
        notes: Human-readable remarks (e.g. an infeasible budget).
        bound_domains: Power domains whose limit binds: the policy wanted more for their
            GPUs than it allows (their limits were fitted under it).
        demand: The controller's demand curve, with stale GPUs' accounted limits in its
            floor (None unless ``DecideConfig.demand_points`` > 0 and the policy values
            watts).
    """

    placements: tuple[Placement, ...] = ()
    power_limits: tuple[SetPowerLimit, ...] = ()
    clock_locks: tuple[LockClocks, ...] = ()
    clock_resets: tuple[ResetClocks, ...] = ()
    load_weights: tuple[LoadWeight, ...] = ()
    unmet_slos: tuple[SLOReport, ...] = ()
    unplaceable: tuple[SLOReport, ...] = ()
    active_replicas: tuple[tuple[str, int], ...] = ()
    raises_deferred: bool = False
    notes: tuple[str, ...] = field(default=())
    bound_domains: tuple[str, ...] = ()
    demand: DemandCurve | None = None
