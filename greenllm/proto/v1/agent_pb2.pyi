from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ShardState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHARD_STATE_UNSPECIFIED: _ClassVar[ShardState]
    SHARD_STATE_RUNNING: _ClassVar[ShardState]
    SHARD_STATE_DONE: _ClassVar[ShardState]
    SHARD_STATE_STOPPED: _ClassVar[ShardState]
    SHARD_STATE_FAILED: _ClassVar[ShardState]
SHARD_STATE_UNSPECIFIED: ShardState
SHARD_STATE_RUNNING: ShardState
SHARD_STATE_DONE: ShardState
SHARD_STATE_STOPPED: ShardState
SHARD_STATE_FAILED: ShardState

class AgentMessage(_message.Message):
    __slots__ = ("register", "telemetry", "acks")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    register: Register
    telemetry: TelemetryBatch
    acks: AckBatch
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., telemetry: _Optional[_Union[TelemetryBatch, _Mapping]] = ..., acks: _Optional[_Union[AckBatch, _Mapping]] = ...) -> None: ...

class ControllerMessage(_message.Message):
    __slots__ = ("registered", "commands", "heartbeat")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    registered: Registered
    commands: CommandBatch
    heartbeat: Heartbeat
    def __init__(self, registered: _Optional[_Union[Registered, _Mapping]] = ..., commands: _Optional[_Union[CommandBatch, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class GpuInfo(_message.Message):
    __slots__ = ("index", "type", "uuid", "min_power_limit_w", "max_power_limit_w", "default_power_limit_w", "power_limit_w", "min_sm_clock_mhz", "max_sm_clock_mhz", "memory_total_mib", "failsafe_limit_w")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    MIN_POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    MAX_POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    MIN_SM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    MAX_SM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_MIB_FIELD_NUMBER: _ClassVar[int]
    FAILSAFE_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    index: int
    type: str
    uuid: str
    min_power_limit_w: float
    max_power_limit_w: float
    default_power_limit_w: float
    power_limit_w: float
    min_sm_clock_mhz: int
    max_sm_clock_mhz: int
    memory_total_mib: float
    failsafe_limit_w: float
    def __init__(self, index: _Optional[int] = ..., type: _Optional[str] = ..., uuid: _Optional[str] = ..., min_power_limit_w: _Optional[float] = ..., max_power_limit_w: _Optional[float] = ..., default_power_limit_w: _Optional[float] = ..., power_limit_w: _Optional[float] = ..., min_sm_clock_mhz: _Optional[int] = ..., max_sm_clock_mhz: _Optional[int] = ..., memory_total_mib: _Optional[float] = ..., failsafe_limit_w: _Optional[float] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("node", "gpus", "agent_version", "failsafe_active", "telemetry_message_interval_s", "address")
    NODE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    FAILSAFE_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_MESSAGE_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node: str
    gpus: _containers.RepeatedCompositeFieldContainer[GpuInfo]
    agent_version: str
    failsafe_active: bool
    telemetry_message_interval_s: float
    address: str
    def __init__(self, node: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[GpuInfo, _Mapping]]] = ..., agent_version: _Optional[str] = ..., failsafe_active: _Optional[bool] = ..., telemetry_message_interval_s: _Optional[float] = ..., address: _Optional[str] = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("session_id", "control_period_s", "telemetry_interval_s")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONTROL_PERIOD_S_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    control_period_s: float
    telemetry_interval_s: float
    def __init__(self, session_id: _Optional[str] = ..., control_period_s: _Optional[float] = ..., telemetry_interval_s: _Optional[float] = ...) -> None: ...

class GpuSamples(_message.Message):
    __slots__ = ("index", "timestamp_s", "power_w", "energy_j", "power_limit_w", "sm_clock_mhz", "utilization_pct", "temperature_c", "memory_used_mib")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_S_FIELD_NUMBER: _ClassVar[int]
    POWER_W_FIELD_NUMBER: _ClassVar[int]
    ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    SM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PCT_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_MIB_FIELD_NUMBER: _ClassVar[int]
    index: _containers.RepeatedScalarFieldContainer[int]
    timestamp_s: _containers.RepeatedScalarFieldContainer[float]
    power_w: _containers.RepeatedScalarFieldContainer[float]
    energy_j: _containers.RepeatedScalarFieldContainer[float]
    power_limit_w: _containers.RepeatedScalarFieldContainer[float]
    sm_clock_mhz: _containers.RepeatedScalarFieldContainer[float]
    utilization_pct: _containers.RepeatedScalarFieldContainer[float]
    temperature_c: _containers.RepeatedScalarFieldContainer[float]
    memory_used_mib: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, index: _Optional[_Iterable[int]] = ..., timestamp_s: _Optional[_Iterable[float]] = ..., power_w: _Optional[_Iterable[float]] = ..., energy_j: _Optional[_Iterable[float]] = ..., power_limit_w: _Optional[_Iterable[float]] = ..., sm_clock_mhz: _Optional[_Iterable[float]] = ..., utilization_pct: _Optional[_Iterable[float]] = ..., temperature_c: _Optional[_Iterable[float]] = ..., memory_used_mib: _Optional[_Iterable[float]] = ...) -> None: ...

class ShardSample(_message.Message):
    __slots__ = ("shard_id", "job_id", "timestamp_s", "work_units", "steps", "requests", "state", "error", "generation", "offered_units", "queued_units", "endpoint", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "queued_requests", "rejected_requests", "idle_energy_j", "gpu_wait_fraction", "cpu_bound", "start_energy_j", "booked_energy_counter_j", "offered_prompt_tokens", "queued_prompt_tokens", "oldest_wait_s", "engine_metrics", "phase")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_S_FIELD_NUMBER: _ClassVar[int]
    WORK_UNITS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    OFFERED_UNITS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_UNITS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    TTFT_P50_S_FIELD_NUMBER: _ClassVar[int]
    TTFT_P99_S_FIELD_NUMBER: _ClassVar[int]
    TPOT_P50_S_FIELD_NUMBER: _ClassVar[int]
    TPOT_P99_S_FIELD_NUMBER: _ClassVar[int]
    QUEUED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    IDLE_ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    GPU_WAIT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CPU_BOUND_FIELD_NUMBER: _ClassVar[int]
    START_ENERGY_J_FIELD_NUMBER: _ClassVar[int]
    BOOKED_ENERGY_COUNTER_J_FIELD_NUMBER: _ClassVar[int]
    OFFERED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    QUEUED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OLDEST_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    ENGINE_METRICS_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    job_id: str
    timestamp_s: float
    work_units: float
    steps: int
    requests: int
    state: str
    error: str
    generation: int
    offered_units: float
    queued_units: float
    endpoint: str
    ttft_p50_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p99_s: float
    queued_requests: int
    rejected_requests: int
    idle_energy_j: float
    gpu_wait_fraction: float
    cpu_bound: bool
    start_energy_j: float
    booked_energy_counter_j: float
    offered_prompt_tokens: float
    queued_prompt_tokens: float
    oldest_wait_s: float
    engine_metrics: EngineMetrics
    phase: ShardState
    def __init__(self, shard_id: _Optional[str] = ..., job_id: _Optional[str] = ..., timestamp_s: _Optional[float] = ..., work_units: _Optional[float] = ..., steps: _Optional[int] = ..., requests: _Optional[int] = ..., state: _Optional[str] = ..., error: _Optional[str] = ..., generation: _Optional[int] = ..., offered_units: _Optional[float] = ..., queued_units: _Optional[float] = ..., endpoint: _Optional[str] = ..., ttft_p50_s: _Optional[float] = ..., ttft_p99_s: _Optional[float] = ..., tpot_p50_s: _Optional[float] = ..., tpot_p99_s: _Optional[float] = ..., queued_requests: _Optional[int] = ..., rejected_requests: _Optional[int] = ..., idle_energy_j: _Optional[float] = ..., gpu_wait_fraction: _Optional[float] = ..., cpu_bound: _Optional[bool] = ..., start_energy_j: _Optional[float] = ..., booked_energy_counter_j: _Optional[float] = ..., offered_prompt_tokens: _Optional[float] = ..., queued_prompt_tokens: _Optional[float] = ..., oldest_wait_s: _Optional[float] = ..., engine_metrics: _Optional[_Union[EngineMetrics, _Mapping]] = ..., phase: _Optional[_Union[ShardState, str]] = ...) -> None: ...

class EngineMetrics(_message.Message):
    __slots__ = ("engine", "requests_running", "requests_waiting", "kv_cache_usage", "prompt_tokens", "generation_tokens", "requests_succeeded", "proxy_prefill_tokens", "proxy_decode_tokens", "metrics_ok")
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_WAITING_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_USAGE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    PROXY_PREFILL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROXY_DECODE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    METRICS_OK_FIELD_NUMBER: _ClassVar[int]
    engine: str
    requests_running: float
    requests_waiting: float
    kv_cache_usage: float
    prompt_tokens: float
    generation_tokens: float
    requests_succeeded: float
    proxy_prefill_tokens: float
    proxy_decode_tokens: float
    metrics_ok: bool
    def __init__(self, engine: _Optional[str] = ..., requests_running: _Optional[float] = ..., requests_waiting: _Optional[float] = ..., kv_cache_usage: _Optional[float] = ..., prompt_tokens: _Optional[float] = ..., generation_tokens: _Optional[float] = ..., requests_succeeded: _Optional[float] = ..., proxy_prefill_tokens: _Optional[float] = ..., proxy_decode_tokens: _Optional[float] = ..., metrics_ok: _Optional[bool] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("shard_id", "generation", "offset", "data")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    generation: int
    offset: int
    data: bytes
    def __init__(self, shard_id: _Optional[str] = ..., generation: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class TelemetryBatch(_message.Message):
    __slots__ = ("gpus", "shards", "failsafe_active", "logs", "state_error", "persisted_limits_w")
    GPUS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    FAILSAFE_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    STATE_ERROR_FIELD_NUMBER: _ClassVar[int]
    PERSISTED_LIMITS_W_FIELD_NUMBER: _ClassVar[int]
    gpus: GpuSamples
    shards: _containers.RepeatedCompositeFieldContainer[ShardSample]
    failsafe_active: bool
    logs: _containers.RepeatedCompositeFieldContainer[LogChunk]
    state_error: str
    persisted_limits_w: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, gpus: _Optional[_Union[GpuSamples, _Mapping]] = ..., shards: _Optional[_Iterable[_Union[ShardSample, _Mapping]]] = ..., failsafe_active: _Optional[bool] = ..., logs: _Optional[_Iterable[_Union[LogChunk, _Mapping]]] = ..., state_error: _Optional[str] = ..., persisted_limits_w: _Optional[_Iterable[float]] = ...) -> None: ...

class SetPowerLimit(_message.Message):
    __slots__ = ("gpu_index", "power_limit_w")
    GPU_INDEX_FIELD_NUMBER: _ClassVar[int]
    POWER_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    gpu_index: int
    power_limit_w: float
    def __init__(self, gpu_index: _Optional[int] = ..., power_limit_w: _Optional[float] = ...) -> None: ...

class LockSmClocks(_message.Message):
    __slots__ = ("gpu_index", "min_sm_clock_mhz", "max_sm_clock_mhz")
    GPU_INDEX_FIELD_NUMBER: _ClassVar[int]
    MIN_SM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    MAX_SM_CLOCK_MHZ_FIELD_NUMBER: _ClassVar[int]
    gpu_index: int
    min_sm_clock_mhz: int
    max_sm_clock_mhz: int
    def __init__(self, gpu_index: _Optional[int] = ..., min_sm_clock_mhz: _Optional[int] = ..., max_sm_clock_mhz: _Optional[int] = ...) -> None: ...

class ResetSmClocks(_message.Message):
    __slots__ = ("gpu_index",)
    GPU_INDEX_FIELD_NUMBER: _ClassVar[int]
    gpu_index: int
    def __init__(self, gpu_index: _Optional[int] = ...) -> None: ...

class StartShard(_message.Message):
    __slots__ = ("shard_id", "job_id", "gpu_indices", "spec_json", "generation", "master_addr", "master_port", "world_size", "rank", "local_rank", "local_world_size", "gpu_uuid")
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_INDICES_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    MASTER_ADDR_FIELD_NUMBER: _ClassVar[int]
    MASTER_PORT_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    LOCAL_RANK_FIELD_NUMBER: _ClassVar[int]
    LOCAL_WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    GPU_UUID_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    job_id: str
    gpu_indices: _containers.RepeatedScalarFieldContainer[int]
    spec_json: str
    generation: int
    master_addr: str
    master_port: int
    world_size: int
    rank: int
    local_rank: int
    local_world_size: int
    gpu_uuid: str
    def __init__(self, shard_id: _Optional[str] = ..., job_id: _Optional[str] = ..., gpu_indices: _Optional[_Iterable[int]] = ..., spec_json: _Optional[str] = ..., generation: _Optional[int] = ..., master_addr: _Optional[str] = ..., master_port: _Optional[int] = ..., world_size: _Optional[int] = ..., rank: _Optional[int] = ..., local_rank: _Optional[int] = ..., local_world_size: _Optional[int] = ..., gpu_uuid: _Optional[str] = ...) -> None: ...

class SetFailsafeLimits(_message.Message):
    __slots__ = ("limits_w",)
    LIMITS_W_FIELD_NUMBER: _ClassVar[int]
    limits_w: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, limits_w: _Optional[_Iterable[float]] = ...) -> None: ...

class StopShard(_message.Message):
    __slots__ = ("shard_id",)
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    shard_id: str
    def __init__(self, shard_id: _Optional[str] = ...) -> None: ...

class SetLoadWeights(_message.Message):
    __slots__ = ("weights",)
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.ScalarMap[str, float]
    def __init__(self, weights: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("command_id", "set_power_limit", "lock_sm_clocks", "reset_sm_clocks", "start_shard", "stop_shard", "set_load_weights", "set_failsafe_limits")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    SET_POWER_LIMIT_FIELD_NUMBER: _ClassVar[int]
    LOCK_SM_CLOCKS_FIELD_NUMBER: _ClassVar[int]
    RESET_SM_CLOCKS_FIELD_NUMBER: _ClassVar[int]
    START_SHARD_FIELD_NUMBER: _ClassVar[int]
    STOP_SHARD_FIELD_NUMBER: _ClassVar[int]
    SET_LOAD_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    SET_FAILSAFE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    command_id: int
    set_power_limit: SetPowerLimit
    lock_sm_clocks: LockSmClocks
    reset_sm_clocks: ResetSmClocks
    start_shard: StartShard
    stop_shard: StopShard
    set_load_weights: SetLoadWeights
    set_failsafe_limits: SetFailsafeLimits
    def __init__(self, command_id: _Optional[int] = ..., set_power_limit: _Optional[_Union[SetPowerLimit, _Mapping]] = ..., lock_sm_clocks: _Optional[_Union[LockSmClocks, _Mapping]] = ..., reset_sm_clocks: _Optional[_Union[ResetSmClocks, _Mapping]] = ..., start_shard: _Optional[_Union[StartShard, _Mapping]] = ..., stop_shard: _Optional[_Union[StopShard, _Mapping]] = ..., set_load_weights: _Optional[_Union[SetLoadWeights, _Mapping]] = ..., set_failsafe_limits: _Optional[_Union[SetFailsafeLimits, _Mapping]] = ...) -> None: ...

class CommandAck(_message.Message):
    __slots__ = ("command_id", "success", "reason", "code", "applied_limit_w", "not_persisted", "persisted_limit_w")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    NOT_PERSISTED_FIELD_NUMBER: _ClassVar[int]
    PERSISTED_LIMIT_W_FIELD_NUMBER: _ClassVar[int]
    command_id: int
    success: bool
    reason: str
    code: int
    applied_limit_w: float
    not_persisted: bool
    persisted_limit_w: float
    def __init__(self, command_id: _Optional[int] = ..., success: _Optional[bool] = ..., reason: _Optional[str] = ..., code: _Optional[int] = ..., applied_limit_w: _Optional[float] = ..., not_persisted: _Optional[bool] = ..., persisted_limit_w: _Optional[float] = ...) -> None: ...

class CommandBatch(_message.Message):
    __slots__ = ("commands",)
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    commands: _containers.RepeatedCompositeFieldContainer[Command]
    def __init__(self, commands: _Optional[_Iterable[_Union[Command, _Mapping]]] = ...) -> None: ...

class AckBatch(_message.Message):
    __slots__ = ("acks",)
    ACKS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[CommandAck]
    def __init__(self, acks: _Optional[_Iterable[_Union[CommandAck, _Mapping]]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("timestamp_s",)
    TIMESTAMP_S_FIELD_NUMBER: _ClassVar[int]
    timestamp_s: float
    def __init__(self, timestamp_s: _Optional[float] = ...) -> None: ...
