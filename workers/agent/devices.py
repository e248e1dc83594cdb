"""What the agent does to its GPUs: inventory, sampling and commands (blocking calls).

These run on the agent's single device thread, so each GPU sees one caller at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import grpc

from greenllm.config import ClusterConfig
from greenllm.devices.base import GPU, UNAVAILABLE, GPUSample
from greenllm.devices.catalog import find_spec, register_reported_spec, spec_from_reported
from greenllm.errors import (
    DeviceError,
    DeviceNotSupportedError,
    DevicePermissionError,
    OutOfRangeError,
)
from greenllm.proto.v1 import agent_pb2

log = logging.getLogger(__name__)


def _or(read: Callable[[], float], fallback: float, what: str, gpu: GPU) -> float:
    """``read()``, or ``fallback`` (logged) when the GPU cannot give it now."""
    try:
        return read()
    except DeviceError as exc:
        log.warning("GPU %d: %s unavailable for the inventory: %s", gpu.index, what, exc)
        return fallback


def failsafe_limit_w(config: ClusterConfig, gpu: GPU, node: str | None = None) -> float:
    """The fail-safe limit this GPU holds without a controller, watts: its share of the
    config's usable budget (:meth:`ClusterConfig.failsafe_limit_w`), within the range it
    reports. A type the catalog does not know is first made known from what it reports
    (:func:`~greenllm.devices.catalog.spec_from_reported`), so an agent on a new GPU model
    starts instead of failing. ``node``: the agent's node, whose power domains bound the
    share too.

    Raises:
        DeviceError: Its power-limit range cannot be read.
    """
    c = gpu.power_limit_constraints()
    if find_spec(gpu.gpu_type) is None:
        try:
            clocks = gpu.supported_sm_clocks_mhz()
        except DeviceError:
            clocks = []
        register_reported_spec(
            spec_from_reported(
                gpu.gpu_type,
                c.min_power_limit_w,
                c.max_power_limit_w,
                c.default_power_limit_w,
                clocks,
                _or(gpu.memory_total_mib, 0.0, "memory size", gpu),
            )
        )
    share_w = config.failsafe_limit_w(gpu.gpu_type, node=node)
    return min(c.max_power_limit_w, max(c.min_power_limit_w, share_w))


def inventory(
    gpus: Sequence[GPU], failsafe_limits_w: Sequence[float] | None = None
) -> list[agent_pb2.GpuInfo]:
    """Describe each GPU for the registration, with the fail-safe limit held for it (0 when
    not given: the controller then assumes the config's share).

    The power-limit range is what the GPU reports (the controller plans within it); a GPU
    whose range cannot be read fails the registration (it cannot be planned). Its UUID is
    what a shard's ``CUDA_VISIBLE_DEVICES`` names. The current limit falls back to the
    default, memory to 0 and the clock range to 0-0 (clocks not lockable) when unreadable.

    Raises:
        DeviceError: A GPU's power-limit range cannot be read.
    """
    infos = []
    limits = failsafe_limits_w if failsafe_limits_w is not None else [0.0] * len(gpus)
    for gpu, failsafe_w in zip(gpus, limits, strict=True):
        c = gpu.power_limit_constraints()
        try:
            clocks = gpu.supported_sm_clocks_mhz()
        except DeviceError as exc:
            log.warning("GPU %d: supported clocks unavailable: %s", gpu.index, exc)
            clocks = []
        infos.append(
            agent_pb2.GpuInfo(
                index=gpu.index,
                type=gpu.gpu_type,
                uuid=gpu.uuid,
                min_power_limit_w=c.min_power_limit_w,
                max_power_limit_w=c.max_power_limit_w,
                default_power_limit_w=c.default_power_limit_w,
                power_limit_w=_or(gpu.power_limit_w, c.default_power_limit_w, "limit", gpu),
                min_sm_clock_mhz=clocks[0] if clocks else 0,
                max_sm_clock_mhz=clocks[-1] if clocks else 0,
                memory_total_mib=_or(gpu.memory_total_mib, 0.0, "memory size", gpu),
                failsafe_limit_w=failsafe_w,
            )
        )
    return infos


def _read(gpu: GPU) -> GPUSample:
    """One GPU's sample; never raises: a backend bug reads as every field unavailable."""
    try:
        return gpu.sample()
    except Exception:  # GPU.sample() absorbs DeviceErrors; anything else is a bug
        log.exception("GPU %d: sampling failed", gpu.index)
        return GPUSample(
            timestamp_s=0.0,
            power_w=UNAVAILABLE,
            energy_j=gpu.last_energy_j,
            power_limit_w=UNAVAILABLE,
            sm_clock_mhz=UNAVAILABLE,
            utilization_pct=UNAVAILABLE,
            temperature_c=UNAVAILABLE,
            memory_used_mib=UNAVAILABLE,
            unavailable=("all",),
        )


def sample(gpus: Sequence[GPU], now_s: float | None = None) -> agent_pb2.GpuSamples:
    """Read every GPU once, column-wise; timestamps are ``now_s`` (default: Unix wall-clock
    seconds; the simulator gives its virtual time, the clock its GPUs run on).

    Never raises for a device error: a field a GPU cannot give is
    :data:`~greenllm.devices.base.UNAVAILABLE` (-1), and the energy counter repeats its last
    good value, so the telemetry loop keeps running.
    """
    now_s = time.time() if now_s is None else now_s
    readings = [_read(gpu) for gpu in gpus]
    return agent_pb2.GpuSamples(
        index=[gpu.index for gpu in gpus],
        timestamp_s=[now_s] * len(gpus),
        power_w=[r.power_w for r in readings],
        energy_j=[r.energy_j for r in readings],
        power_limit_w=[r.power_limit_w for r in readings],
        sm_clock_mhz=[r.sm_clock_mhz for r in readings],
        utilization_pct=[r.utilization_pct for r in readings],
        temperature_c=[r.temperature_c for r in readings],
        memory_used_mib=[r.memory_used_mib for r in readings],
    )


def failure(command_id: int, code: grpc.StatusCode, reason: str) -> agent_pb2.CommandAck:
    return agent_pb2.CommandAck(
        command_id=command_id, success=False, reason=reason, code=code.value[0]
    )


def _status_of(exc: DeviceError) -> grpc.StatusCode:
    if isinstance(exc, OutOfRangeError):
        return grpc.StatusCode.OUT_OF_RANGE
    if isinstance(exc, DevicePermissionError):
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(exc, DeviceNotSupportedError):
        return grpc.StatusCode.UNIMPLEMENTED
    return grpc.StatusCode.INTERNAL


def apply_command(
    gpus: Sequence[GPU], node: str, command: agent_pb2.Command
) -> agent_pb2.CommandAck:
    """Carry out one command; never raises: failures come back as an unsuccessful ack."""
    cid = command.command_id
    action = command.WhichOneof("action")
    if action in ("start_shard", "stop_shard", "set_load_weights"):
        return failure(
            cid, grpc.StatusCode.UNIMPLEMENTED, f"{action}: this agent runs no shard runners"
        )
    if action is None:
        return failure(cid, grpc.StatusCode.INVALID_ARGUMENT, "command without an action")
    body = getattr(command, action)
    by_index = {g.index: g for g in gpus}
    gpu = by_index.get(body.gpu_index)
    if gpu is None:
        return failure(
            cid,
            grpc.StatusCode.NOT_FOUND,
            f"{action}: node {node} has no GPU {body.gpu_index} "
            f"(GPUs: {', '.join(str(i) for i in sorted(by_index))})",
        )
    try:
        if action == "set_power_limit":
            gpu.set_power_limit_w(body.power_limit_w)
        elif action == "lock_sm_clocks":
            gpu.lock_sm_clocks_mhz(body.min_sm_clock_mhz, body.max_sm_clock_mhz)
        else:
            gpu.reset_sm_clocks()
    except DeviceError as exc:
        log.warning("command %d (%s) failed: %s", cid, action, exc)
        return failure(cid, _status_of(exc), str(exc))
    except Exception as exc:  # a device backend bug must not kill the agent
        log.exception("command %d (%s) crashed", cid, action)
        return failure(cid, grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    return agent_pb2.CommandAck(command_id=cid, success=True)


def set_failsafe_limits(gpus: Sequence[GPU], limits_w: Sequence[float]) -> list[str]:
    """Set each GPU to its fail-safe limit, lowerings first, so the node's limits never sum
    above the larger of their old and new sums; returns the errors (empty when all worked)."""
    errors = []
    pairs = list(zip(gpus, limits_w, strict=True))
    # A GPU whose limit cannot be read counts as at its maximum: its change goes first.
    now_w = {
        id(g): _or(g.power_limit_w, g.power_limit_constraints().max_power_limit_w, "limit", g)
        for g, _ in pairs
    }
    pairs.sort(key=lambda p: p[1] - now_w[id(p[0])])
    for gpu, limit_w in pairs:
        try:
            gpu.set_power_limit_w(limit_w)
        except DeviceError as exc:
            errors.append(f"GPU {gpu.index}: {exc}")
    return errors
