"""Wire contract: field numbers, types of the oneofs, and RPC shapes must never change."""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor

from greenllm.proto.v1 import agent_pb2, cluster_pb2

FIELD_NUMBERS: dict[str, dict[str, int]] = {
    "AgentMessage": {"register": 1, "telemetry": 2, "acks": 3},
    "ControllerMessage": {"registered": 1, "commands": 2, "heartbeat": 3},
    "CommandBatch": {"commands": 1},
    "AckBatch": {"acks": 1},
    "GpuInfo": {
        "index": 1,
        "type": 2,
        "uuid": 3,
        "min_power_limit_w": 4,
        "max_power_limit_w": 5,
        "default_power_limit_w": 6,
        "power_limit_w": 7,
        "min_sm_clock_mhz": 8,
        "max_sm_clock_mhz": 9,
        "memory_total_mib": 10,
        "failsafe_limit_w": 11,
    },
    "Register": {
        "node": 1,
        "gpus": 2,
        "agent_version": 3,
        "failsafe_active": 4,
        "telemetry_message_interval_s": 5,
        "address": 6,
    },
    "Registered": {"session_id": 1, "control_period_s": 2, "telemetry_interval_s": 3},
    "GpuSamples": {
        "index": 1,
        "timestamp_s": 2,
        "power_w": 3,
        "energy_j": 4,
        "power_limit_w": 5,
        "sm_clock_mhz": 6,
        "utilization_pct": 7,
        "temperature_c": 8,
        "memory_used_mib": 9,
    },
    "ShardSample": {
        "shard_id": 1,
        "job_id": 2,
        "timestamp_s": 3,
        "work_units": 4,
        "steps": 5,
        "requests": 6,
        "state": 7,
        "error": 8,
        "generation": 9,
        "offered_units": 10,
        "queued_units": 11,
        "endpoint": 12,
        "ttft_p50_s": 13,
        "ttft_p99_s": 14,
        "tpot_p50_s": 15,
        "tpot_p99_s": 16,
        "queued_requests": 17,
        "rejected_requests": 18,
        "idle_energy_j": 19,
        "gpu_wait_fraction": 20,
        "cpu_bound": 21,
        "start_energy_j": 22,
        "booked_energy_counter_j": 23,
        "offered_prompt_tokens": 24,
        "queued_prompt_tokens": 25,
        "oldest_wait_s": 26,
        "engine_metrics": 40,
    },
    "EngineMetrics": {
        "engine": 1,
        "requests_running": 2,
        "requests_waiting": 3,
        "kv_cache_usage": 4,
        "prompt_tokens": 5,
        "generation_tokens": 6,
        "requests_succeeded": 7,
        "proxy_prefill_tokens": 8,
        "proxy_decode_tokens": 9,
        "metrics_ok": 10,
    },
    "TelemetryBatch": {
        "gpus": 1,
        "shards": 2,
        "failsafe_active": 3,
        "logs": 4,
        "state_error": 5,
        "persisted_limits_w": 6,
    },
    "LogChunk": {"shard_id": 1, "generation": 2, "offset": 3, "data": 4},
    "SetPowerLimit": {"gpu_index": 1, "power_limit_w": 2},
    "LockSmClocks": {"gpu_index": 1, "min_sm_clock_mhz": 2, "max_sm_clock_mhz": 3},
    "ResetSmClocks": {"gpu_index": 1},
    "StartShard": {
        "shard_id": 1,
        "job_id": 2,
        "gpu_indices": 3,
        "spec_json": 4,
        "generation": 5,
        "master_addr": 6,
        "master_port": 7,
        "world_size": 8,
        "rank": 9,
        "local_rank": 10,
        "local_world_size": 11,
        "gpu_uuid": 12,
    },
    "StopShard": {"shard_id": 1},
    "SetFailsafeLimits": {"limits_w": 1},
    "SetLoadWeights": {"weights": 1},
    "Command": {
        "command_id": 1,
        "set_power_limit": 2,
        "lock_sm_clocks": 3,
        "reset_sm_clocks": 4,
        "start_shard": 5,
        "stop_shard": 6,
        "set_load_weights": 7,
        "set_failsafe_limits": 8,
    },
    "CommandAck": {
        "command_id": 1,
        "success": 2,
        "reason": 3,
        "code": 4,
        "applied_limit_w": 5,
        "not_persisted": 6,
        "persisted_limit_w": 7,
    },
    "Heartbeat": {"timestamp_s": 1},
    "JobSpec": {
        "name": 1,
        "kind": 2,
        "model": 3,
        "priority": 4,
        "shards": 5,
        "gpu_types": 6,
        "min_throughput": 7,
        "deadline_s": 8,
        "spec_json": 9,
    },
    "Job": {
        "id": 1,
        "spec": 2,
        "state": 3,
        "throughput": 4,
        "energy_j": 5,
        "work_units": 6,
        "submitted_at_s": 7,
        "steps": 8,
        "restarts": 9,
        "phase": 10,
        "reason": 11,
        "ended_at_s": 12,
        "endpoint": 13,
        "replicas": 14,
        "ttft_p99_s": 15,
        "tpot_p99_s": 16,
        "queued_requests": 17,
        "rejected_requests": 18,
        "idle_energy_j": 19,
        "gpu_wait_fraction": 20,
        "cpu_bound": 21,
    },
    "Replica": {
        "shard_id": 1,
        "node": 2,
        "gpu_index": 3,
        "endpoint": 4,
        "load_weight": 5,
        "state": 6,
        "engine_metrics": 7,
    },
    "SubmitJobRequest": {"spec_json": 1},
    "SubmitJobResponse": {"job": 1},
    "GetJobEventsRequest": {"job_id": 1, "limit": 2},
    "JobEvent": {
        "timestamp_s": 1,
        "kind": 2,
        "message": 3,
        "entity": 4,
        "key": 5,
        "old": 6,
    },
    "GetJobEventsResponse": {"events": 1},
    "CancelJobRequest": {"job_id": 1},
    "CancelJobResponse": {"job": 1},
    "ListJobsRequest": {"page_size": 1, "page_token": 2},
    "ListJobsResponse": {"jobs": 1, "next_page_token": 2, "total": 3},
    "GetJobRequest": {"job_id": 1},
    "GetJobLogsRequest": {"job_id": 1, "rank": 2, "offset": 3, "max_bytes": 4},
    "GetJobLogsResponse": {"data": 1, "next_offset": 2, "size": 3, "generation": 4},
    "GetStatusRequest": {},
    "GpuStatus": {
        "index": 1,
        "type": 2,
        "power_limit_w": 3,
        "power_w": 4,
        "sm_clock_mhz": 5,
        "utilization_pct": 6,
        "temperature_c": 7,
        "memory_used_mib": 8,
        "energy_j": 9,
        "commanded_power_limit_w": 10,
        "pending_power_limit_w": 11,
        "planned_power_limit_w": 12,
        "above_plan_w": 13,
        "above_plan_reason": 14,
    },
    "NodeStatus": {
        "name": 1,
        "connected": 2,
        "stale": 3,
        "failsafe_active": 4,
        "gpus": 5,
        "telemetry_age_s": 6,
        "phase": 7,
        "down_reason": 8,
        "idle_energy_j": 20,
        "releasable": 21,
        "agent_state_error": 9,
        "energy_samples_rejected": 10,
    },
    "ClusterStatus": {
        "budget_w": 1,
        "reserve_w": 2,
        "power_w": 3,
        "accounted_power_limit_w": 4,
        "policy": 5,
        "nodes": 6,
        "jobs": 7,
        "timestamp_s": 8,
        "telemetry_samples": 9,
        "jobs_total": 10,
        "state_writable": 11,
        "state_error": 12,
        "refused_lowerings": 13,
        "control_step_p50_s": 14,
        "control_step_p99_s": 15,
        "jobs_by_phase": 16,
        "jobs_truncated": 17,
        "jobs_cap": 18,
        "shortfall_w": 19,
        "jobs_waiting": 20,
        "max_waiting_jobs": 21,
        "domains": 22,
    },
    "SetBudgetRequest": {"budget_w": 1, "reserve_w": 2, "domain": 3},
    "DomainStatus": {
        "name": 1,
        "parent": 2,
        "limit_w": 3,
        "reserve_w": 4,
        "accounted_power_limit_w": 5,
        "power_w": 6,
        "bound": 7,
        "gpus": 8,
    },
    "SetBudgetResponse": {
        "budget_w": 1,
        "reserve_w": 2,
        "shortfall_w": 3,
        "shortfall_reason": 4,
        "domain": 5,
    },
    "SetPolicyRequest": {"name": 1},
    "SetPolicyResponse": {"name": 1},
    "WatchStatusRequest": {"interval_s": 1},
    "NodeDownRequest": {"node": 1, "reason": 2},
    "NodeDownResponse": {"node": 1, "changed": 2, "phase": 3},
}

# method -> (request type, response type, client streaming, server streaming)
METHODS: dict[str, tuple[str, str, bool, bool]] = {
    "Agent.Connect": ("AgentMessage", "ControllerMessage", True, True),
    "Cluster.SubmitJob": ("SubmitJobRequest", "SubmitJobResponse", False, False),
    "Cluster.CancelJob": ("CancelJobRequest", "CancelJobResponse", False, False),
    "Cluster.ListJobs": ("ListJobsRequest", "ListJobsResponse", False, False),
    "Cluster.GetStatus": ("GetStatusRequest", "ClusterStatus", False, False),
    "Cluster.SetBudget": ("SetBudgetRequest", "SetBudgetResponse", False, False),
    "Cluster.SetPolicy": ("SetPolicyRequest", "SetPolicyResponse", False, False),
    "Cluster.WatchStatus": ("WatchStatusRequest", "ClusterStatus", False, True),
    "Cluster.GetJobEvents": ("GetJobEventsRequest", "GetJobEventsResponse", False, False),
    "Cluster.GetJob": ("GetJobRequest", "Job", False, False),
    "Cluster.GetJobLogs": ("GetJobLogsRequest", "GetJobLogsResponse", False, False),
    "Cluster.NodeDown": ("NodeDownRequest", "NodeDownResponse", False, False),
}


def _messages() -> dict[str, Descriptor]:
    found: dict[str, Descriptor] = {}
    for module in (agent_pb2, cluster_pb2):
        assert module.DESCRIPTOR.package == "greenllm.v1"
        found.update(module.DESCRIPTOR.message_types_by_name)
    return found


def test_every_message_is_pinned() -> None:
    assert set(_messages()) == set(FIELD_NUMBERS)


def test_field_numbers_are_pinned() -> None:
    for name, descriptor in _messages().items():
        actual = {f.name: f.number for f in descriptor.fields}
        assert actual == FIELD_NUMBERS[name], name


def test_rpc_shapes_are_pinned() -> None:
    actual = {}
    for module in (agent_pb2, cluster_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                actual[f"{service.name}.{m.name}"] = (
                    m.input_type.name,
                    m.output_type.name,
                    m.client_streaming,
                    m.server_streaming,
                )
    assert actual == METHODS


def test_command_round_trips() -> None:
    cmd = agent_pb2.Command(
        command_id=7, set_power_limit=agent_pb2.SetPowerLimit(gpu_index=2, power_limit_w=350.5)
    )
    back = agent_pb2.Command.FromString(cmd.SerializeToString())
    assert back.WhichOneof("action") == "set_power_limit"
    assert back.set_power_limit.power_limit_w == 350.5
