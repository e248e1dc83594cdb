"""The agent's side of shard commands: carry them out on the node's shard host, and report
the shards' progress in telemetry."""

from __future__ import annotations

import grpc

from greenllm.errors import GreenllmError
from greenllm.proto.v1 import agent_pb2
from workers.shardhost import ShardHost

SHARD_ACTIONS = ("start_shard", "stop_shard", "set_load_weights")


def apply_shard_command(host: ShardHost, command: agent_pb2.Command) -> agent_pb2.CommandAck:
    """Carry out a start/stop-shard or load-weights command; never raises.

    Args:
        host: The node's shard host.
        command: A command whose action is one of :data:`SHARD_ACTIONS`.

    Returns:
        Its ack.
    """
    cid = command.command_id
    action = command.WhichOneof("action")
    try:
        if action == "start_shard":
            body = command.start_shard
            if len(body.gpu_indices) != 1:
                raise GreenllmError(f"a shard takes one GPU, not {len(body.gpu_indices)}")
            host.start(body.shard_id, body.gpu_indices[0], body.spec_json, body.generation)
        elif action == "stop_shard":
            if not host.stop(command.stop_shard.shard_id, timeout_s=None):
                code = grpc.StatusCode.NOT_FOUND.value[0]
                reason = f"no shard {command.stop_shard.shard_id!r} on node {host.node}"
                return agent_pb2.CommandAck(command_id=cid, success=False, reason=reason, code=code)
        else:
            host.set_load_weights(dict(command.set_load_weights.weights))
    except GreenllmError as exc:
        code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
        return agent_pb2.CommandAck(command_id=cid, success=False, reason=str(exc), code=code)
    return agent_pb2.CommandAck(command_id=cid, success=True)


def shard_samples(host: ShardHost, now_s: float) -> list[agent_pb2.ShardSample]:
    """Every shard's cumulative progress, for the telemetry stream."""
    return [
        agent_pb2.ShardSample(
            shard_id=s.shard_id,
            job_id=s.job_id,
            timestamp_s=now_s,
            work_units=s.work_units,
            steps=s.steps,
            requests=s.requests,
            state=s.state,
            error=s.error or "",
            generation=s.generation,
        )
        for s in host.statuses()
    ]
