"""What an agent says is checked before it is believed: the type of each GPU it reports,
and every column of its telemetry (finite, within bounds, a power limit inside its GPU's
reported range). A failed check is a :class:`~scheduler.shell.errors.BadInput` naming the
node, GPU, field and value.
"""

from __future__ import annotations

import math

import grpc
import numpy as np

from greenllm.devices.catalog import find_spec, register_reported_spec, spec_for_inventory
from greenllm.proto.v1 import agent_pb2
from scheduler.shell.errors import BadInput
from scheduler.shell.nodes import GpuReading, NodeRecord

#: Columns of ``GpuSamples`` after ``index``, in :class:`GpuReading` order.
COLUMNS = GpuReading._fields
#: A reading the agent could not take (greenllm.devices.base.UNAVAILABLE).
UNAVAILABLE = -1.0
#: Bounds of each column (inclusive); NaN fails every bound. -1 is "unavailable" where a
#: field may be. Power and power limit are bounded per GPU too (its absurd-power cap, its
#: reported limit range).
SAMPLE_BOUNDS: dict[str, tuple[float, float]] = {
    "timestamp_s": (0.0, 1e11),
    "power_w": (UNAVAILABLE, math.inf),
    "power_limit_w": (UNAVAILABLE, math.inf),
    "energy_j": (0.0, 1e18),
    "sm_clock_mhz": (UNAVAILABLE, 10_000.0),
    "utilization_pct": (-1.0, 100.0),
    "temperature_c": (-50.0, 200.0),
    "memory_used_mib": (-1.0, 1e7),
}
_POWER = COLUMNS.index("power_w")
_LIMIT = COLUMNS.index("power_limit_w")
_LO = np.array([[SAMPLE_BOUNDS[c][0]] for c in COLUMNS])
_HI = np.array([[SAMPLE_BOUNDS[c][1]] for c in COLUMNS])


def reject(
    node: str, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT
) -> BadInput:
    """The error that ends a node's stream: ``node NAME: message`` with ``code``."""
    return BadInput(code, f"node {node}: {message}")


def planned_gpu_type(node: str, g: agent_pb2.GpuInfo) -> str:
    """The type a reported GPU is planned as: its catalog type, or, for a type the catalog
    does not know, one whose prior is scaled from what it reported (registered for the
    planner).

    Raises:
        BadInput: INVALID_ARGUMENT when an unknown type's report cannot make a prior.
    """
    spec = find_spec(g.type)
    if spec is not None:
        return spec.name
    if not g.type or len(g.type) > 128:
        raise reject(node, f"GPU {g.index}: type {g.type[:40]!r} is empty or too long")
    try:
        spec = spec_for_inventory(
            g.type,
            g.min_power_limit_w,
            g.max_power_limit_w,
            g.default_power_limit_w or g.max_power_limit_w,
            [c for c in (g.min_sm_clock_mhz, g.max_sm_clock_mhz) if c > 0],
            g.memory_total_mib,
        )
    except ValueError as exc:
        raise reject(node, f"GPU {g.index} ({g.type}): {exc}") from None
    register_reported_spec(spec)
    return spec.name


def finite(*values: float) -> bool:
    """Whether every value is finite (no NaN, no infinity)."""
    return all(math.isfinite(v) for v in values)


def check_columns(node: NodeRecord, cols: agent_pb2.GpuSamples) -> tuple[list[int], np.ndarray]:
    """The newest reading of each GPU in a batch, checked, as an array (one row per column,
    one column per GPU). Older ticks of the batch are not kept, so they are not read.

    Returns:
        The GPU index of each column, and the array.

    Raises:
        BadInput: INVALID_ARGUMENT naming the node, GPU, field and value at fault.
    """
    index = list(cols.index)
    sizes = [len(getattr(cols, name)) for name in COLUMNS]
    if any(n != len(index) for n in sizes):
        lengths = dict(zip(COLUMNS, sizes, strict=True))
        raise reject(
            node.name, f"telemetry columns of unequal length ({len(index)} indices, {lengths})"
        )
    if max(index) >= len(node.gpus):
        raise reject(node.name, f"telemetry for GPU {max(index)}, which it does not have")
    last = {i: pos for pos, i in enumerate(index)}  # the newest row of each GPU wins
    gpus, rows = list(last), list(last.values())
    values = np.array([[col[r] for r in rows] for col in (getattr(cols, n) for n in COLUMNS)])
    lo = np.repeat(_LO, len(rows), axis=1)
    hi = np.repeat(_HI, len(rows), axis=1)
    records = [node.gpus[i] for i in gpus]
    hi[_POWER] = [g.power_cap_w for g in records]
    lo[_LIMIT] = [g.min_power_limit_w - 1e-3 for g in records]
    hi[_LIMIT] = [g.max_power_limit_w + 1e-3 for g in records]
    ok = (values >= lo) & (values <= hi)
    ok[_LIMIT] |= values[_LIMIT] == UNAVAILABLE
    if not ok.all():
        col, row = np.argwhere(~ok)[0]
        raise reject(
            node.name,
            f"GPU {gpus[row]}: {COLUMNS[col]} {float(values[col, row])!r} outside "
            f"[{lo[col, row]:g}, {hi[col, row]:g}]",
        )
    return gpus, values
