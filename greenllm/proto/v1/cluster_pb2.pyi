from greenllm.proto.v1 import agent_pb2 as _agent_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_PHASE_UNSPECIFIED: _ClassVar[JobPhase]
    JOB_PHASE_PENDING: _ClassVar[JobPhase]
    JOB_PHASE_PLACED: _ClassVar[JobPhase]
    JOB_PHASE_RUNNING: _ClassVar[JobPhase]
    JOB_PHASE_DONE: _ClassVar[JobPhase]
    JOB_PHASE_FAILED: _ClassVar[JobPhase]
    JOB_PHASE_CANCELLED: _ClassVar[JobPhase]

class NodePhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_PHASE_UNSPECIFIED: _ClassVar[NodePhase]
    NODE_PHASE_UNKNOWN: _ClassVar[NodePhase]
    NODE_PHASE_LIVE: _ClassVar[NodePhase]
    NODE_PHASE_STALE: _ClassVar[NodePhase]
    NODE_PHASE_LOST: _ClassVar[NodePhase]
JOB_PHASE_UNSPECIFIED: JobPhase
JOB_PHASE_PENDING: JobPhase
JOB_PHASE_PLACED: JobPhase
JOB_PHASE_RUNNING: JobPhase
JOB_PHASE_DONE: JobPhase
JOB_PHASE_FAILED: JobPhase
JOB_PHASE_CANCELLED: JobPhase
NODE_PHASE_UNSPECIFIED: NodePhase
NODE_PHASE_UNKNOWN: NodePhase
NODE_PHASE_LIVE: NodePhase
NODE_PHASE_STALE: NodePhase
NODE_PHASE_LOST: NodePhase

class JobSpec(_message.Message):
    __slots__ = ("name", "kind", "model", "priority", "shards", "gpu_types", "min_throughput", "deadline_s", "spec_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPES_FIELD_NUMBER: _ClassVar[int]
    MIN_THROUGHPUT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    model: str
    priority: int
    shards: int
    gpu_types: _containers.RepeatedScalarFieldContainer[str]
    min_throughput: float
    deadline_s: float
    spec_json: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., model: _Optional[str] = ..., priority: _Optional[int] = ..., shards: _Optional[int] = ..., gpu_types: _Optional[_Iterable[str]] = ..., min_throughput: _Optional[float] = ..., deadline_s: _Optional[float] = ..., spec_json: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "spec", "state", "throughput", "energy_j", "work_units", "submitted_at_s", "steps", "restarts", "phase", "reason", "ended_at_s", "endpoint", "replicas", "ttft_p99_s", "tpot_p99_s", "queued_requests", "rejected_requests", "idle_energy_j", "gpu_wait_fraction", "cpu_bound")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_FIELD_NUMBER: _ClassVar[int]
    ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    WORK_UNITS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_S_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_S_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    TTFT_P99_S_FIELD_NUMBER: _ClassVar[int]
    TPOT_P99_S_FIELD_NUMBER: _ClassVar[int]
    QUEUED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    IDLE_ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    GPU_WAIT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CPU_BOUND_FIELD_NUMBER: _ClassVar[int]
    id: str
    spec: JobSpec
    state: str
    throughput: float
    energy_j: float
    work_units: float
    submitted_at_s: float
    steps: int
    restarts: int
    phase: JobPhase
    reason: str
    ended_at_s: float
    endpoint: str
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    ttft_p99_s: float
    tpot_p99_s: float
    queued_requests: int
    rejected_requests: int
    idle_energy_j: float
    gpu_wait_fraction: float
    cpu_bound: bool
    def __init__(self, id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[str] = ..., throughput: _Optional[float] = ..., energy_j: _Optional[float] = ..., work_units: _Optional[float] = ..., submitted_at_s: _Optional[float] = ..., steps: _Optional[int] = ..., restarts: _Optional[int] = ..., phase: _Optional[_Union[JobPhase, str]] = ..., reason: _Optional[str] = ..., ended_at_s: _Optional[float] = ..., endpoint: _Optional[str] = ..., replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ..., ttft_p99_s: _Optional[float] = ..., tpot_p99_s: _Optional[float] = ..., queued_requests: _Optional[int] = ..., rejected_requests: _Optional[int] = ..., idle_energy_j: _Optional[float] = ..., gpu_wait_fraction: _Optional[float] = ..., cpu_bound: _Optional[bool] = ...) -> None: ...

class Replica(_message.Message):
    __slots__ = ("shard_id", "node", "gpu_index", "endpoint", "load_weight", "state", "engine_metrics")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    GPU_INDEX_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    LOAD_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_METRICS_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    node: str
    gpu_index: int
    endpoint: str
    load_weight: float
    state: str
    engine_metrics: _agent_pb2.EngineMetrics
    def __init__(self, shard_id: _Optional[str] = ..., node: _Optional[str] = ..., gpu_index: _Optional[int] = ..., endpoint: _Optional[str] = ..., load_weight: _Optional[float] = ..., state: _Optional[str] = ..., engine_metrics: _Optional[_Union[_agent_pb2.EngineMetrics, _Mapping]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec_json",)
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    spec_json: str
    def __init__(self, spec_json: _Optional[str] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token", "total")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    total: int
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobLogsRequest(_message.Message):
    __slots__ = ("job_id", "rank", "offset", "max_bytes")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    rank: int
    offset: int
    max_bytes: int
    def __init__(self, job_id: _Optional[str] = ..., rank: _Optional[int] = ..., offset: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class GetJobLogsResponse(_message.Message):
    __slots__ = ("data", "next_offset", "size", "generation")
    DATA_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    next_offset: int
    size: int
    generation: int
    def __init__(self, data: _Optional[bytes] = ..., next_offset: _Optional[int] = ..., size: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GpuStatus(_message.Message):
    __slots__ = ("index", "type", "power_limit_w", "power_w", "sm_clock_mhz", "utilization_pct", "temperature_c", "memory_used_mib", "energy_j", "commanded_power_limit_w", "pending_power_limit_w", "planned_power_limit_w", "above_plan_w", "above_plan_reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    POWER_W_FIELD_NUMBER: _ClassVar[int]
    SM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PCT_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_MIB_FIELD_NUMBER: _ClassVar[int]
    ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    COMMANDED_POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    PENDING_POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    PLANNED_POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    ABOVE_PLAN_W_FIELD_NUMBER: _ClassVar[int]
    ABOVE_PLAN_REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    type: str
    power_limit_w: float
    power_w: float
    sm_clock_mhz: float
    utilization_pct: float
    temperature_c: float
    memory_used_mib: float
    energy_j: float
    commanded_power_limit_w: float
    pending_power_limit_w: float
    planned_power_limit_w: float
    above_plan_w: float
    above_plan_reason: str
    def __init__(self, index: _Optional[int] = ..., type: _Optional[str] = ..., power_limit_w: _Optional[float] = ..., power_w: _Optional[float] = ..., sm_clock_mhz: _Optional[float] = ..., utilization_pct: _Optional[float] = ..., temperature_c: _Optional[float] = ..., memory_used_mib: _Optional[float] = ..., energy_j: _Optional[float] = ..., commanded_power_limit_w: _Optional[float] = ..., pending_power_limit_w: _Optional[float] = ..., planned_power_limit_w: _Optional[float] = ..., above_plan_w: _Optional[float] = ..., above_plan_reason: _Optional[str] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("name", "connected", "stale", "failsafe_active", "gpus", "telemetry_age_s", "phase", "down_reason", "idle_energy_j", "releasable", "agent_state_error", "energy_samples_rejected")
    class EnergySamplesRejectedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    FAILSAFE_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_AGE_S_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DOWN_REASON_FIELD_NUMBER: _ClassVar[int]
    IDLE_ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    RELEASABLE_FIELD_NUMBER: _ClassVar[int]
    AGENT_STATE_ERROR_FIELD_NUMBER: _ClassVar[int]
    ENERGY_SAMPLES_REJECTED_FIELD_NUMBER: _ClassVar[int]
    name: str
    connected: bool
    stale: bool
    failsafe_active: bool
    gpus: _containers.RepeatedCompositeFieldContainer[GpuStatus]
    telemetry_age_s: float
    phase: NodePhase
    down_reason: str
    idle_energy_j: float
    releasable: bool
    agent_state_error: str
    energy_samples_rejected: _containers.ScalarMap[str, int]
    def __init__(self, name: _Optional[str] = ..., connected: _Optional[bool] = ..., stale: _Optional[bool] = ..., failsafe_active: _Optional[bool] = ..., gpus: _Optional[_Iterable[_Union[GpuStatus, _Mapping]]] = ..., telemetry_age_s: _Optional[float] = ..., phase: _Optional[_Union[NodePhase, str]] = ..., down_reason: _Optional[str] = ..., idle_energy_j: _Optional[float] = ..., releasable: _Optional[bool] = ..., agent_state_error: _Optional[str] = ..., energy_samples_rejected: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = ("budget_w", "reserve_w", "power_w", "accounted_power_limit_w", "policy", "nodes", "jobs", "timestamp_s", "telemetry_samples", "jobs_total", "state_writable", "state_error", "refused_lowerings", "control_step_p50_s", "control_step_p99_s", "jobs_by_phase", "jobs_truncated", "jobs_cap", "shortfall_w", "jobs_waiting", "max_waiting_jobs", "domains")
    class JobsByPhaseEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    BUDGET_W_FIELD_NUMBER: _ClassVar[int]
    RESERVE_W_FIELD_NUMBER: _ClassVar[int]
    POWER_W_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTED_POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_S_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    JOBS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    STATE_WRITABLE_FIELD_NUMBER: _ClassVar[int]
    STATE_ERROR_FIELD_NUMBER: _ClassVar[int]
    REFUSED_LOWERINGS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_STEP_P50_S_FIELD_NUMBER: _ClassVar[int]
    CONTROL_STEP_P99_S_FIELD_NUMBER: _ClassVar[int]
    JOBS_BY_PHASE_FIELD_NUMBER: _ClassVar[int]
    JOBS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    JOBS_CAP_FIELD_NUMBER: _ClassVar[int]
    SHORTFALL_W_FIELD_NUMBER: _ClassVar[int]
    JOBS_WAITING_FIELD_NUMBER: _ClassVar[int]
    MAX_WAITING_JOBS_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    budget_w: float
    reserve_w: float
    power_w: float
    accounted_power_limit_w: float
    policy: str
    nodes: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    timestamp_s: float
    telemetry_samples: int
    jobs_total: int
    state_writable: bool
    state_error: str
    refused_lowerings: int
    control_step_p50_s: float
    control_step_p99_s: float
    jobs_by_phase: _containers.ScalarMap[str, int]
    jobs_truncated: bool
    jobs_cap: int
    shortfall_w: float
    jobs_waiting: int
    max_waiting_jobs: int
    domains: _containers.RepeatedCompositeFieldContainer[DomainStatus]
    def __init__(self, budget_w: _Optional[float] = ..., reserve_w: _Optional[float] = ..., power_w: _Optional[float] = ..., accounted_power_limit_w: _Optional[float] = ..., policy: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ..., jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., timestamp_s: _Optional[float] = ..., telemetry_samples: _Optional[int] = ..., jobs_total: _Optional[int] = ..., state_writable: _Optional[bool] = ..., state_error: _Optional[str] = ..., refused_lowerings: _Optional[int] = ..., control_step_p50_s: _Optional[float] = ..., control_step_p99_s: _Optional[float] = ..., jobs_by_phase: _Optional[_Mapping[str, int]] = ..., jobs_truncated: _Optional[bool] = ..., jobs_cap: _Optional[int] = ..., shortfall_w: _Optional[float] = ..., jobs_waiting: _Optional[int] = ..., max_waiting_jobs: _Optional[int] = ..., domains: _Optional[_Iterable[_Union[DomainStatus, _Mapping]]] = ...) -> None: ...

class DomainStatus(_message.Message):
    __slots__ = ("name", "parent", "limit_w", "reserve_w", "accounted_power_limit_w", "power_w", "bound", "gpus")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    RESERVE_W_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTED_POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    POWER_W_FIELD_NUMBER: _ClassVar[int]
    BOUND_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    name: str
    parent: str
    limit_w: float
    reserve_w: float
    accounted_power_limit_w: float
    power_w: float
    bound: bool
    gpus: int
    def __init__(self, name: _Optional[str] = ..., parent: _Optional[str] = ..., limit_w: _Optional[float] = ..., reserve_w: _Optional[float] = ..., accounted_power_limit_w: _Optional[float] = ..., power_w: _Optional[float] = ..., bound: _Optional[bool] = ..., gpus: _Optional[int] = ...) -> None: ...

class SetBudgetRequest(_message.Message):
    __slots__ = ("budget_w", "reserve_w", "domain")
    BUDGET_W_FIELD_NUMBER: _ClassVar[int]
    RESERVE_W_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    budget_w: float
    reserve_w: float
    domain: str
    def __init__(self, budget_w: _Optional[float] = ..., reserve_w: _Optional[float] = ..., domain: _Optional[str] = ...) -> None: ...

class SetBudgetResponse(_message.Message):
    __slots__ = ("budget_w", "reserve_w", "shortfall_w", "shortfall_reason", "domain")
    BUDGET_W_FIELD_NUMBER: _ClassVar[int]
    RESERVE_W_FIELD_NUMBER: _ClassVar[int]
    SHORTFALL_W_FIELD_NUMBER: _ClassVar[int]
    SHORTFALL_REASON_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    budget_w: float
    reserve_w: float
    shortfall_w: float
    shortfall_reason: str
    domain: str
    def __init__(self, budget_w: _Optional[float] = ..., reserve_w: _Optional[float] = ..., shortfall_w: _Optional[float] = ..., shortfall_reason: _Optional[str] = ..., domain: _Optional[str] = ...) -> None: ...

class SetPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class SetPolicyResponse(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class WatchStatusRequest(_message.Message):
    __slots__ = ("interval_s",)
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    interval_s: float
    def __init__(self, interval_s: _Optional[float] = ...) -> None: ...

class GetJobEventsRequest(_message.Message):
    __slots__ = ("job_id", "limit")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    limit: int
    def __init__(self, job_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("timestamp_s", "kind", "message", "entity", "key", "old")
    TIMESTAMP_S_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    OLD_FIELD_NUMBER: _ClassVar[int]
    timestamp_s: float
    kind: str
    message: str
    entity: str
    key: str
    old: str
    def __init__(self, timestamp_s: _Optional[float] = ..., kind: _Optional[str] = ..., message: _Optional[str] = ..., entity: _Optional[str] = ..., key: _Optional[str] = ..., old: _Optional[str] = ...) -> None: ...

class GetJobEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[JobEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[JobEvent, _Mapping]]] = ...) -> None: ...

class NodeDownRequest(_message.Message):
    __slots__ = ("node", "reason")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node: str
    reason: str
    def __init__(self, node: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class NodeDownResponse(_message.Message):
    __slots__ = ("node", "changed", "phase")
    NODE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    node: str
    changed: bool
    phase: NodePhase
    def __init__(self, node: _Optional[str] = ..., changed: _Optional[bool] = ..., phase: _Optional[_Union[NodePhase, str]] = ...) -> None: ...
