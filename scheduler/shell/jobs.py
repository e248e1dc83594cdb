"""The job table: jobs with their lifecycle phase, shards, and energy/work ledger.

Active jobs and the most recently ended ones live in memory; every job lives in the store
(``ListJobs`` pages through it), so memory and status stay bounded however many jobs
were ever submitted.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import grpc

from greenllm.devices.catalog import CATALOG, find_spec
from greenllm.errors import ConfigError
from greenllm.jobspec import JobSpec, parse_job_spec
from greenllm.pacing import CPU_BOUND_WAIT_FRACTION
from scheduler.core.lifecycle import JobPhase, ShardPhase
from scheduler.core.reconcile import shard_id
from scheduler.core.types import GPUState
from scheduler.shell.errors import BadInput
from scheduler.shell.nodes import ENERGY_MARGIN, ENERGY_SLACK_S, NodeRecord
from scheduler.shell.ports import StoredJob, StoredShard

log = logging.getLogger(__name__)

_PENDING = JobPhase.PENDING
_ACTIVE = frozenset(p for p in JobPhase if p.active)

#: Largest job spec accepted, bytes of JSON.
MAX_SPEC_BYTES = 64 * 1024
#: Ended jobs kept in memory (and shown by status), newest.
RECENT_ENDED = 50


@dataclass
class ShardRecord:
    """One shard of a job's current (or a stopping earlier) generation.

    Attributes:
        job_id: Its job.
        rank: Rank (training) or replica number (inference).
        generation: The generation it was started for.
        node: Its node.
        index: Its GPU on that node.
        phase: Its phase.
        since_s: When it entered the phase, seconds.
        ack: Outcome of its StartShard: None (none yet), "" (applied) or the refusal.
        start_command: Id of its StartShard command (None: not sent).
    """

    job_id: str
    rank: int
    generation: int
    node: str
    index: int
    phase: ShardPhase
    since_s: float
    ack: str | None = None
    start_command: int | None = None
    #: The agents' id of this shard.
    shard_id: str = field(init=False)

    def __post_init__(self) -> None:
        self.shard_id = shard_id(self.job_id, self.rank)

    @property
    def key(self) -> tuple[str, int, int]:
        """``(job_id, generation, rank)``."""
        return (self.job_id, self.generation, self.rank)


@dataclass
class JobRecord:
    """One submitted job.

    Attributes:
        job_id: Controller-assigned id.
        spec: The validated spec.
        spec_json: The spec as submitted.
        seq: Submission order.
        submitted_at_s: Unix time of submission.
        submitted_s: Submission on the controller's clock (deadlines count from it), s.
        phase: Its lifecycle phase.
        phase_since_s: When it entered the phase, seconds.
        reason: Why it entered the phase.
        generation: Placements so far minus one (each placement starts a new generation).
        restarts: Times it was placed again.
        shards: Its current generation's shards, by rank.
        energy_start_j: ``(node, GPU index)`` -> that GPU's energy counter at placement.
        carried: ``(energy_j, work_units)`` of earlier generations.
        final: ``(energy_j, work_units)`` frozen when it ended (None while active).
        ended_at_s: Unix time it ended (0 while active).
        active_replicas: Inference: replicas the policy keeps serving (None: all).
        replicas_since_s: When ``active_replicas`` last changed, seconds (-inf: never).
        parked_since_j: Inference: ``(node, GPU index)`` of each drained (parked) replica
            -> its GPU's energy counter when it was drained, joules. A parked GPU is back
            with the cluster: what it draws is not the job's (see :func:`park`).
        parked_j: Energy of the parked periods that ended, joules (taken off the job's
            books when each ended; kept to close its idle figure).
        cpu_bound: Its simulated GPUs were last seen waiting for the CPU (see
            :func:`wait_fraction`); a change is an event.
        energy_peak_j: The most energy it was measured at, joules: its energy never goes
            down (a GPU's counter that went back, a shard placed again).
    """

    job_id: str
    spec: JobSpec
    spec_json: str
    seq: int
    submitted_at_s: float
    submitted_s: float
    phase: JobPhase = JobPhase.PENDING
    phase_since_s: float = 0.0
    reason: str = "submitted"
    generation: int = 0
    restarts: int = 0
    shards: dict[int, ShardRecord] = field(default_factory=dict)
    energy_start_j: dict[tuple[str, int], float | None] = field(default_factory=dict)
    carried: tuple[float, float] = (0.0, 0.0)
    final: tuple[float, float] | None = None
    ended_at_s: float = 0.0
    active_replicas: int | None = None
    replicas_since_s: float = float("-inf")
    parked_since_j: dict[tuple[str, int], float] = field(default_factory=dict)
    parked_j: float = 0.0
    cpu_bound: bool = False
    energy_peak_j: float = 0.0

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if name == "phase":
            table = self.__dict__.get("_table")
            if table is not None:
                table.moved(self)

    #: ``(allowed GPU types, shards)``: what placing it takes.
    shape: tuple[tuple[str, ...], int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.shape = (tuple(self.spec.gpu_types), self.spec.shards)

    def parked_now_j(self, nodes: dict[str, NodeRecord]) -> float:
        """Energy its parked GPUs drew since they were parked, up to their newest
        readings, joules."""
        total = 0.0
        for (node, index), since_j in self.parked_since_j.items():
            gpus = nodes[node].gpus if node in nodes else []
            latest_j = gpus[index].energy_j() if index < len(gpus) else None
            if latest_j is not None and latest_j >= since_j:
                total += latest_j - since_j
        return total


def park(job: JobRecord, nodes: dict[str, NodeRecord], gpu: tuple[str, int], parked: bool) -> None:
    """A replica of ``job`` on ``gpu`` was drained (``parked``) or serves again: from its
    drain to its return its GPU is the cluster's, not the job's: the energy it drew then is
    taken off the job's books (its ``carried`` energy, persisted) when it returns, and
    until then :func:`measure_job` leaves it out."""
    node, index = gpu
    gpus = nodes[node].gpus if node in nodes else []
    counter_j = gpus[index].energy_j() if index < len(gpus) else None
    if job.energy_start_j.get(gpu) is None:
        return  # not booked from a counter yet: nothing to take off
    if parked and gpu not in job.parked_since_j and counter_j is not None:
        job.parked_since_j[gpu] = counter_j
    elif not parked and gpu in job.parked_since_j:
        since_j = job.parked_since_j.pop(gpu)
        if counter_j is not None and counter_j >= since_j:
            job.parked_j += counter_j - since_j
            energy_j, work = job.carried
            job.carried = (energy_j - (counter_j - since_j), work)


@dataclass(frozen=True)
class JobMeasure:
    """What telemetry says about a job.

    Attributes:
        throughput: Units of work per second, summed over its shards (None: its shards
            report no work, e.g. a script that never calls ``greenllm.job.report``).
        work_units: Units of work done, summed over its generations.
        energy_j: Energy its GPUs used while it held them, joules.
        steps: Training steps done (the furthest shard's count).
        offered_rate: Inference: units of work asked per second (arrivals).
        queued_units: Inference: units of work waiting now.
        demand_known: Its shards report what is asked of them (inference replicas that
            measure their arrivals).
        gpu_wait_fraction: Simulated GPUs only: share of the recent time its simulated GPUs
            waited for the CPU, 0 to 1 (see :func:`wait_fraction`; None: not measured).
        offered_prompt_rate: Inference: prompt tokens asked per second.
        recent_offered_rate: Inference: units asked per second over the last seconds
            (:data:`~scheduler.shell.nodes.BURST_SPAN_S`).
        recent_prompt_rate: Inference: prompt tokens asked per second, likewise.
        queued_prompt_tokens: Inference: prompt tokens waiting to be prefilled now.
        ttft_p99_s: Inference: the worst replica's recent p99 time to first token, s.
        tpot_p99_s: Inference: the worst replica's recent p99 time per output token, s.
        oldest_wait_s: Inference: longest wait of a request without its first token, s.
    """

    throughput: float | None
    work_units: float
    energy_j: float
    steps: int = 0
    offered_rate: float = 0.0
    queued_units: float = 0.0
    demand_known: bool = False
    gpu_wait_fraction: float | None = None
    offered_prompt_rate: float = 0.0
    recent_offered_rate: float = 0.0
    recent_prompt_rate: float = 0.0
    queued_prompt_tokens: float = 0.0
    ttft_p99_s: float = 0.0
    tpot_p99_s: float = 0.0
    oldest_wait_s: float = 0.0

    @property
    def cpu_bound(self) -> bool:
        """The CPU, not the simulated GPUs, sets its rate (waits above 10% of the time)."""
        wait = self.gpu_wait_fraction
        return wait is not None and wait > CPU_BOUND_WAIT_FRACTION


def measure_job(nodes: dict[str, NodeRecord], job: JobRecord) -> JobMeasure:
    """Throughput and work from its shards' reports, energy from its GPUs' counters; an
    ended job's frozen ledger."""
    if job.final is not None:
        return JobMeasure(None, job.final[1], job.final[0])
    energy, work = job.carried
    rate, offered, queued, steps, reporting, known = 0.0, 0.0, 0.0, 0, False, False
    prompt, queued_prompt, ttft, tpot, oldest = 0.0, 0.0, 0.0, 0.0, 0.0
    recent, recent_prompt = 0.0, 0.0
    for shard in job.shards.values():
        node = nodes[shard.node]
        report = node.shards.get(shard.shard_id)
        if report is not None and report.latest.generation == job.generation:
            reporting = True
            rate += report.work_rate()
            work += report.latest.work_units
            steps = max(steps, report.latest.steps)
            offered += report.offered_rate()
            queued += report.latest.queued_units
            known = known or report.latest.offered_units > 0
            prompt += report.offered_prompt_rate()
            burst, burst_prompt = report.recent_offered_rates()
            recent += burst
            recent_prompt += burst_prompt
            queued_prompt += report.latest.queued_prompt_tokens
            ttft = max(ttft, report.latest.ttft_p99_s)
            tpot = max(tpot, report.latest.tpot_p99_s)
            oldest = max(oldest, report.latest.oldest_wait_s)
        if shard.index < len(node.gpus):
            gpu = node.gpus[shard.index]
            start_j = job.energy_start_j.get((shard.node, shard.index))
            latest_j = gpu.energy_j()
            if start_j is not None and latest_j is not None and latest_j >= start_j:
                # never more than the GPU could draw since the job was submitted (both on
                # the controller's clock: an agent's skewed clock does not move the bound)
                held_s = max(0.0, gpu.read_at_s - job.submitted_s)
                most_j = gpu.max_power_limit_w * (ENERGY_MARGIN * held_s + ENERGY_SLACK_S)
                energy += min(latest_j - start_j, most_j)
    energy -= job.parked_now_j(nodes)  # a drained replica's GPU is the cluster's
    job.energy_peak_j = energy = max(energy, job.energy_peak_j)  # a job's energy never drops
    return JobMeasure(
        throughput=rate if reporting else None,
        work_units=work,
        energy_j=energy,
        steps=steps,
        offered_rate=offered,
        queued_units=queued,
        demand_known=known,
        gpu_wait_fraction=wait_fraction(nodes, job),
        offered_prompt_rate=prompt,
        recent_offered_rate=recent,
        recent_prompt_rate=recent_prompt,
        queued_prompt_tokens=queued_prompt,
        ttft_p99_s=ttft,
        tpot_p99_s=tpot,
        oldest_wait_s=oldest,
    )


def fill_energy_bases(nodes: dict[str, NodeRecord], job: JobRecord) -> None:
    """Give the job's GPUs that had no energy reading when it was placed (a node that had
    just registered, e.g. after a controller restart) their first reading since as the
    counter its energy is measured from. Without it, such a GPU's energy was never booked:
    a job placed again after a restart finished with ``energy_j`` 0."""
    for (node_name, index), start_j in job.energy_start_j.items():
        if start_j is not None:
            continue
        node = nodes.get(node_name)
        if node is None or index >= len(node.gpus) or not node.gpus[index].energy_window:
            continue
        # every reading in the window came after the placement: there was none at it
        job.energy_start_j[(node_name, index)] = node.gpus[index].energy_window[0][1]


def wait_fraction(nodes: dict[str, NodeRecord], job: JobRecord) -> float | None:
    """Share of the recent time the job's simulated GPUs waited for the CPU, from its current
    shards' reports (None: none reports one, e.g. real GPUs).

    Training: the rank that waited least. Ranks meet at every gradient exchange, so all but
    the pace-setting rank wait for it whatever sets the pace; only when even that one waits
    does the CPU hold the job back. Inference: the replica that waited most (replicas run
    apart, so any one held back by the CPU makes the job's figures the CPU's).
    """
    waits = []
    for shard in job.shards.values():
        report = nodes[shard.node].shards.get(shard.shard_id)
        if report is None or report.latest.generation != job.generation:
            continue
        if report.latest.HasField("gpu_wait_fraction"):
            waits.append(report.latest.gpu_wait_fraction)
    if not waits or job.final is not None:
        return None
    return min(waits) if job.spec.kind == "train" else max(waits)


_NEVER, _FITS, _WAITS = 0, 1, 2


def placeable(waiting: list[JobRecord], gpus: tuple[GPUState, ...]) -> list[JobRecord]:
    """The waiting jobs ``decide()`` is shown this step: those that could be placed now,
    and those that never can be (so it reports them); in submission order.

    A job fits when its allowed types have as many free GPUs as it has shards (free as
    placement counts them: not busy, reserved or stale). Each placed job takes at least one
    GPU, so of those that fit only the first ``free GPUs`` in placement order (priority,
    then submission) are shown: the step's cost follows the free GPUs, not the queue. One
    that fits only with GPUs an earlier one takes waits a step more.

    Args:
        waiting: Pending jobs with no shards, in submission order.
        gpus: Every GPU as accounted this step.
    """
    if not waiting:
        return []
    counts = Counter(g.gpu_type for g in gpus)
    free = Counter(g.gpu_type for g in gpus if g.job_id is None and not g.stale and not g.reserved)
    n_free = sum(free.values())
    verdicts: dict[tuple[tuple[str, ...], int], int] = {}  # shape -> NEVER, FITS or WAITS
    never, fits = [], []
    for pos, job in enumerate(waiting):
        shape = job.shape
        verdict = verdicts.get(shape)
        if verdict is None:
            allowed = shape[0] or tuple(counts)
            if sum(counts.get(t, 0) for t in allowed) < shape[1]:
                verdict = _NEVER
            elif sum(free.get(t, 0) for t in allowed) >= shape[1]:
                verdict = _FITS
            else:
                verdict = _WAITS
            verdicts[shape] = verdict
        if verdict == _NEVER:
            never.append(pos)
        elif verdict == _FITS and n_free > 0:
            fits.append((-job.spec.priority, pos))
    shown = never + [pos for _, pos in heapq.nsmallest(n_free, fits)]
    return [waiting[pos] for pos in sorted(shown)]


def parse_submission(spec_json: str) -> JobSpec:
    """Validate a submitted spec (JSON).

    Raises:
        BadInput: INVALID_ARGUMENT naming the field that is wrong (or the size, or depth).
    """
    if len(spec_json.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise BadInput(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"job spec: larger than {MAX_SPEC_BYTES // 1024} KiB",
        )
    try:
        data = json.loads(spec_json)
    except RecursionError:
        raise BadInput(grpc.StatusCode.INVALID_ARGUMENT, "job spec: nested too deeply") from None
    except ValueError as exc:
        raise BadInput(grpc.StatusCode.INVALID_ARGUMENT, f"job spec: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(grpc.StatusCode.INVALID_ARGUMENT, "job spec: expected a mapping")
    try:
        return parse_job_spec(data, "job spec")
    except RecursionError:
        raise BadInput(grpc.StatusCode.INVALID_ARGUMENT, "job spec: nested too deeply") from None
    except ConfigError as exc:
        raise BadInput(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None


class JobTable:
    """Active jobs and the most recently ended ones, in submission order.

    The jobs waiting for GPUs are indexed apart from those that hold GPUs (a job's phase
    change moves it, see :meth:`JobRecord.__setattr__`), so a control step walks the jobs
    that hold GPUs and only as many waiting ones as could be placed: its cost does not
    grow with the queue.
    """

    def __init__(self) -> None:
        self.jobs: OrderedDict[str, JobRecord] = OrderedDict()
        self.last_seq = 0
        self._pending: dict[str, JobRecord] = {}
        self._pending_in_order = True
        self._held: dict[str, JobRecord] = {}

    @property
    def waiting(self) -> int:
        """Jobs waiting for GPUs (pending)."""
        return len(self._pending)

    def add(self, spec: JobSpec, spec_json: str, wall_s: float, now_s: float) -> JobRecord:
        """A new job, with the next id."""
        self.last_seq += 1
        job_id = f"{spec.name}-{self.last_seq}"
        job = JobRecord(job_id, spec, spec_json, self.last_seq, wall_s, now_s, phase_since_s=now_s)
        self.put(job)
        return job

    def put(self, job: JobRecord) -> None:
        """Keep ``job`` (a new one, or one read back at start)."""
        self.jobs[job.job_id] = job
        job.__dict__["_table"] = self
        self.moved(job)

    def forget(self, job_id: str) -> None:
        """Take a job out (a submission whose write failed)."""
        self.jobs.pop(job_id, None)
        self._pending.pop(job_id, None)
        self._held.pop(job_id, None)

    def moved(self, job: JobRecord) -> None:
        """Index ``job`` by its phase (called when its phase changes)."""
        self._pending.pop(job.job_id, None)
        self._held.pop(job.job_id, None)
        if job.job_id not in self.jobs:
            return
        if job.phase is _PENDING:
            if self._pending and job.seq < next(reversed(self._pending.values())).seq:
                self._pending_in_order = False  # placed again after a restart
            self._pending[job.job_id] = job
        elif job.phase in _ACTIVE:
            self._held[job.job_id] = job

    def active(self) -> list[JobRecord]:
        """Jobs pending, placed or running."""
        return [j for j in self.jobs.values() if j.phase in _ACTIVE]

    def busy(self) -> list[JobRecord]:
        """The placed and running jobs, in submission order. A pending job holds no shard:
        placing it makes it PLACED before its shards are recorded, and a restart retires
        its shards before it waits again."""
        return sorted(self._held.values(), key=lambda j: j.seq)

    def queue(self) -> list[JobRecord]:
        """Jobs waiting for GPUs, in submission order."""
        if not self._pending_in_order:
            self._pending = dict(sorted(self._pending.items(), key=lambda kv: kv[1].seq))
            self._pending_in_order = True
        return list(self._pending.values())

    def trim(self) -> None:
        """Drop ended jobs beyond the newest :data:`RECENT_ENDED` from memory."""
        if len(self.jobs) - len(self._pending) - len(self._held) <= RECENT_ENDED:
            return
        ended = [j.job_id for j in self.jobs.values() if j.phase not in _ACTIVE]
        for job_id in ended[: max(0, len(ended) - RECENT_ENDED)]:
            del self.jobs[job_id]


def stored_job(job: JobRecord, measure: JobMeasure) -> StoredJob:
    """A job as the store keeps it."""
    return StoredJob(
        job_id=job.job_id,
        seq=job.seq,
        spec_json=job.spec_json,
        phase=str(job.phase),
        reason=job.reason,
        submitted_at_s=job.submitted_at_s,
        generation=job.generation,
        restarts=job.restarts,
        shards=tuple(
            StoredShard(s.rank, s.generation, s.node, s.index, str(s.phase))
            for s in job.shards.values()
        ),
        energy_j=measure.energy_j,
        work_units=measure.work_units,
        carried=job.carried,
        energy_start_j=dict(job.energy_start_j),
        final=job.final is not None,
        ended_at_s=job.ended_at_s,
    )


def restored_job(stored: StoredJob, now_s: float, wall_s: float) -> JobRecord:
    """A job read back at start (phase timers restart now; its deadline keeps its wall time).

    Raises:
        ConfigError: Its stored spec no longer validates.
    """
    spec = parse_job_spec(json.loads(stored.spec_json), f"stored job {stored.job_id}")
    job = JobRecord(
        job_id=stored.job_id,
        spec=spec,
        spec_json=stored.spec_json,
        seq=stored.seq,
        submitted_at_s=stored.submitted_at_s,
        submitted_s=now_s - max(0.0, wall_s - stored.submitted_at_s),
        phase=JobPhase(stored.phase),
        phase_since_s=now_s,
        reason=stored.reason,
        generation=stored.generation,
        restarts=stored.restarts,
        energy_start_j=dict(stored.energy_start_j),
        carried=stored.carried,
        ended_at_s=stored.ended_at_s,
    )
    for s in stored.shards:
        job.shards[s.rank] = ShardRecord(
            job.job_id, s.rank, s.generation, s.node, s.index, ShardPhase(s.phase), now_s, ack=""
        )
    end_s = stored.ended_at_s or wall_s
    energy_j = checked_energy_j(job, stored.energy_j, end_s, "energy")
    job.carried = (
        checked_energy_j(job, stored.carried[0], end_s, "carried energy"),
        job.carried[1],
    )
    if stored.final or not job.phase.active:
        job.final = (energy_j, stored.work_units)
        job.shards.clear()
    return job


#: Jobs whose stored energy was found impossible (logged once each).
_BOOKS_LOGGED: set[str] = set()


def most_energy_j(spec: JobSpec, held_s: float) -> float:
    """The most energy a job could have drawn in ``held_s`` seconds, joules: each of its
    shards on a GPU with the highest limit in the catalog (or of a GPU type it names), at
    :data:`~scheduler.shell.nodes.ENERGY_MARGIN` times that limit."""
    named = [find_spec(t) for t in spec.gpu_types]
    max_w = max(s.max_power_limit_w for s in [*CATALOG.values(), *named] if s is not None)
    return spec.shards * max_w * (ENERGY_MARGIN * max(0.0, held_s) + ENERGY_SLACK_S)


def checked_energy_j(job: JobRecord, energy_j: float, end_s: float, what: str) -> float:
    """A stored energy figure, checked on load: finite, non-negative and no more than the
    job could have drawn from its submission to ``end_s`` (:func:`most_energy_j`). An
    impossible figure is not carried forward: it reads as 0 and is logged (once per job).
    """
    most_j = most_energy_j(job.spec, end_s - job.submitted_at_s)
    if math.isfinite(energy_j) and 0.0 <= energy_j <= most_j:
        return energy_j
    if job.job_id not in _BOOKS_LOGGED:
        _BOOKS_LOGGED.add(job.job_id)
        log.warning(
            "job %s: stored %s %r J is impossible (%d shards over %.0f s draw at most %.6g J): "
            "not carried forward, read as 0 J",
            job.job_id,
            what,
            energy_j,
            job.spec.shards,
            max(0.0, end_s - job.submitted_at_s),
            most_j,
        )
    return 0.0
