"""Cluster state: nodes, telemetry ingestion, and the command/ack bookkeeping.

Everything here runs on the controller's event loop (one thread), so no locks. The
servicers translate :class:`~scheduler.server.errors.BadInput` into a gRPC status.
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np

from greenllm.config import ClusterConfig
from greenllm.devices.catalog import get_spec
from greenllm.errors import ConfigError
from greenllm.proto.v1 import agent_pb2
from scheduler.server.errors import BadInput
from scheduler.server.nodes import (
    GpuReading,
    GpuRecord,
    NodeRecord,
    Session,
    ShardRecord,
)

#: A node is stale after this many of its telemetry message intervals without one.
STALE_MESSAGE_INTERVALS = 3
#: Longest telemetry message interval an agent may announce, seconds.
MAX_MESSAGE_INTERVAL_S = 60.0
#: Columns of ``GpuSamples`` after ``index``, in :class:`GpuReading` order.
COLUMNS = GpuReading._fields
#: Bounds of each column (inclusive); NaN fails every bound. ``power_w`` and
#: ``power_limit_w`` are bounded per GPU by its ``power_cap_w`` instead.
SAMPLE_BOUNDS: dict[str, tuple[float, float]] = {
    "timestamp_s": (0.0, 1e11),
    "energy_j": (0.0, 1e18),
    "sm_clock_mhz": (0.0, 10_000.0),
    "utilization_pct": (0.0, 100.0),
    "temperature_c": (-50.0, 200.0),
    "memory_used_mib": (0.0, 1e7),
}


@dataclass(frozen=True)
class PendingCommand:
    """A command sent and not yet acked.

    Attributes:
        node: Target node.
        session_id: The stream it went out on.
        gpu_index: Target GPU (-1 for shard commands).
        action: The command's oneof name.
        value: Commanded limit (W) or lock upper end (MHz); 0 when not applicable.
    """

    node: str
    session_id: str
    gpu_index: int
    action: str
    value: float


_POWER_ROWS = [COLUMNS.index("power_w"), COLUMNS.index("power_limit_w")]
_LO = np.array([[SAMPLE_BOUNDS.get(c, (0.0, 0.0))[0]] for c in COLUMNS])
_HI = np.array([[SAMPLE_BOUNDS.get(c, (0.0, np.inf))[1]] for c in COLUMNS])


def _columns(node: NodeRecord, cols: agent_pb2.GpuSamples) -> tuple[list[int], np.ndarray]:
    """Check a batch's GPU readings as arrays.

    Returns:
        The GPU index of each reading, and the readings as an array with one row per
        column of :data:`COLUMNS` and one column per reading.

    Raises:
        BadInput: INVALID_ARGUMENT naming the node, GPU, field and value at fault.
    """
    index = list(cols.index)
    columns = [list(getattr(cols, name)) for name in COLUMNS]
    if any(len(c) != len(index) for c in columns):
        lengths = {name: len(c) for name, c in zip(COLUMNS, columns, strict=True)}
        raise BadInput(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"node {node.name}: telemetry columns of unequal length "
            f"({len(index)} indices, {lengths})",
        )
    if max(index) >= len(node.gpus):
        raise BadInput(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"node {node.name}: telemetry for GPU {max(index)}, which it does not have",
        )
    values = np.array(columns)
    caps = node.power_caps_w[index]
    ok = (values >= _LO) & (values <= _HI)
    ok[_POWER_ROWS] &= values[_POWER_ROWS] <= caps
    if not ok.all():
        col, row = np.argwhere(~ok)[0]
        hi = caps[row] if col in _POWER_ROWS else _HI[col, 0]
        raise BadInput(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"node {node.name} GPU {index[row]}: {COLUMNS[col]} {float(values[col, row])!r} "
            f"outside [{_LO[col, 0]:g}, {hi:g}]",
        )
    return index, values


class ClusterState:
    """The controller's picture of the cluster.

    Args:
        config: The cluster config.
        stale_after_s: A node whose telemetry is older than this is stale (longer for an
            agent that announces a longer telemetry message interval).
        clock: Monotonic clock, seconds.
    """

    def __init__(
        self,
        config: ClusterConfig,
        stale_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.budget_w = config.budget.budget_w
        self.reserve_w = config.budget.reserve_w
        self.policy_name = config.policy
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.nodes = {n.name: NodeRecord(n.name, n.gpu_types()) for n in config.nodes}
        #: Fail-safe limit per configured GPU type, watts.
        self.failsafe_limits_w = {
            t: config.failsafe_limit_w(t) for t in {t for _, _, t in config.gpu_types()}
        }
        self.pending: dict[int, PendingCommand] = {}
        #: GPU samples ingested since start.
        self.samples_ingested = 0
        self._command_ids = itertools.count(1)

    # -- sessions ------------------------------------------------------------------------
    def register(self, msg: agent_pb2.Register) -> Session:
        """Accept an agent's registration; its GPUs' records start afresh.

        Raises:
            BadInput: NOT_FOUND (unknown node), ALREADY_EXISTS (node has a live stream),
                INVALID_ARGUMENT (malformed inventory), FAILED_PRECONDITION (inventory
                disagrees with the config).
        """
        node = self.nodes.get(msg.node)
        if node is None:
            raise BadInput(
                grpc.StatusCode.NOT_FOUND,
                f"node {msg.node!r} is not in the cluster config ({', '.join(self.nodes)})",
            )
        if node.session is not None:
            raise BadInput(
                grpc.StatusCode.ALREADY_EXISTS,
                f"node {node.name} is already connected (session {node.session.session_id})",
            )
        gpus = self._inventory(node, msg)
        interval_s = msg.telemetry_message_interval_s
        if not (math.isfinite(interval_s) and 0 <= interval_s <= MAX_MESSAGE_INTERVAL_S):
            raise BadInput(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"node {node.name}: telemetry_message_interval_s {interval_s!r} outside "
                f"[0, {MAX_MESSAGE_INTERVAL_S:g}]",
            )
        for cid in [c for c, p in self.pending.items() if p.node == node.name]:
            del self.pending[cid]
        node.gpus = gpus
        node.power_caps_w = np.array([g.power_cap_w for g in gpus])
        node.stale_after_s = max(self.stale_after_s, STALE_MESSAGE_INTERVALS * interval_s)
        node.session = Session(uuid.uuid4().hex, node.name)
        node.last_telemetry_s = None
        node.failsafe_active = msg.failsafe_active
        node.shards.clear()
        return node.session

    def _inventory(self, node: NodeRecord, msg: agent_pb2.Register) -> list[GpuRecord]:
        infos = sorted(msg.gpus, key=lambda g: g.index)
        if [g.index for g in infos] != list(range(len(infos))) or not infos:
            raise BadInput(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"node {node.name}: GPU indices must be 0..n-1, got {[g.index for g in msg.gpus]}",
            )
        types = [g.type for g in infos]
        if node.config_gpu_types and types != node.config_gpu_types:
            raise BadInput(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"node {node.name}: reported GPUs {types} differ from the config's "
                f"{node.config_gpu_types}",
            )
        records = []
        for g in infos:
            try:
                spec = get_spec(g.type)
            except ConfigError as exc:
                raise BadInput(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
            if not 0 < g.min_power_limit_w <= g.power_limit_w <= g.max_power_limit_w < 1e5:
                raise BadInput(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"node {node.name} GPU {g.index}: power limit {g.power_limit_w!r} W outside "
                    f"its range [{g.min_power_limit_w!r}, {g.max_power_limit_w!r}] W",
                )
            records.append(
                GpuRecord(
                    index=g.index,
                    gpu_type=spec.name,
                    uuid=g.uuid,
                    min_power_limit_w=g.min_power_limit_w,
                    max_power_limit_w=g.max_power_limit_w,
                    acked_limit_w=g.power_limit_w,
                    failsafe_w=g.failsafe_limit_w or self.failsafe_limit_w(spec.name),
                )
            )
        return records

    def disconnect(self, session: Session) -> None:
        """Forget a stream that ended; the node's records stay (it goes stale)."""
        node = self.nodes[session.node]
        if node.session is session:
            node.session = None

    def live_sessions(self) -> list[Session]:
        """Streams now open."""
        return [n.session for n in self.nodes.values() if n.session is not None]

    def failsafe_target_w(self, gpu_type: str) -> float:
        """The fail-safe limit a GPU of ``gpu_type`` should hold under the budget now, W."""
        return self.config.failsafe_limit_w(gpu_type, self.budget_w - self.reserve_w)

    def failsafe_limit_w(self, gpu_type: str) -> float:
        """The fail-safe limit an agent starts with on a GPU of ``gpu_type`` (the config's
        budget), watts."""
        limit_w = self.failsafe_limits_w.get(gpu_type)
        if limit_w is None:
            limit_w = self.failsafe_limits_w[gpu_type] = self.config.failsafe_limit_w(gpu_type)
        return limit_w

    def is_stale(self, node: NodeRecord, now_s: float) -> bool:
        """No stream, or no telemetry for longer than the node's ``stale_after_s``."""
        if node.session is None:
            return True
        last = node.last_telemetry_s
        return last is None or now_s - last > node.stale_after_s

    # -- telemetry -----------------------------------------------------------------------
    def ingest(self, session: Session, batch: agent_pb2.TelemetryBatch) -> None:
        """Take in a telemetry batch; all of it or, on bad input, none of it.

        Raises:
            BadInput: INVALID_ARGUMENT for an unknown GPU index or an implausible value.
        """
        node = self.nodes[session.node]
        cols = batch.gpus
        readings = 0
        if len(cols.index):
            index, values = _columns(node, cols)
            readings = len(index)
            last_row = dict(zip(index, range(readings), strict=True))
            rows = values.T.tolist()
            for i, row in last_row.items():
                gpu = node.gpus[i]
                reading = gpu.latest = GpuReading._make(rows[row])
                gpu.energy_window.append((reading.timestamp_s, reading.energy_j))
                if not gpu.pending_limits_w:
                    gpu.acked_limit_w = reading.power_limit_w
        for sh in batch.shards:
            record = node.shards.get(sh.shard_id)
            if record is None or record.job_id != sh.job_id:
                record = node.shards[sh.shard_id] = ShardRecord(sh.shard_id, sh.job_id, sh)
            record.latest = sh
            record.work_window.append((sh.timestamp_s, sh.work_units))
        node.last_telemetry_s = self.clock()
        node.failsafe_active = batch.failsafe_active
        self.samples_ingested += readings

    # -- commands ------------------------------------------------------------------------
    def send(self, node_name: str, command: agent_pb2.Command) -> int | None:
        """Add ``command`` to the node's next batch and record it as pending; :meth:`flush`
        sends the batches.

        Returns:
            Its command id, or None when the node has no live stream (nothing sent).
        """
        node = self.nodes[node_name]
        if node.session is None:
            return None
        cid = next(self._command_ids)
        command.command_id = cid
        action = command.WhichOneof("action") or ""
        body = getattr(command, action)
        index, value = -1, 0.0
        if action == "set_power_limit":
            index, value = body.gpu_index, body.power_limit_w
            node.gpus[index].pending_limits_w[cid] = value
        elif action == "lock_sm_clocks":
            index, value = body.gpu_index, body.max_sm_clock_mhz
        elif action == "reset_sm_clocks":
            index = body.gpu_index
        elif action == "set_failsafe_limits":
            for gpu, limit_w in zip(node.gpus, body.limits_w, strict=True):
                gpu.pending_failsafe_w[cid] = limit_w
        self.pending[cid] = PendingCommand(node_name, node.session.session_id, index, action, value)
        node.session.unsent.append(command)
        return cid

    def flush(self) -> None:
        """Send each node's batch of commands (one message per node, in order)."""
        for node in self.nodes.values():
            session = node.session
            if session is not None and session.unsent:
                batch = agent_pb2.CommandBatch(commands=session.unsent)
                session.outbox.put_nowait(agent_pb2.ControllerMessage(commands=batch))
                session.unsent = []

    def on_ack(self, session: Session, ack: agent_pb2.CommandAck) -> PendingCommand:
        """Apply an ack to the bookkeeping.

        Raises:
            BadInput: INVALID_ARGUMENT when no command with that id went to this stream.
        """
        cmd = self.pending.get(ack.command_id)
        if cmd is None or cmd.session_id != session.session_id:
            raise BadInput(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"node {session.node}: ack for unknown command {ack.command_id}",
            )
        del self.pending[ack.command_id]
        node = self.nodes[cmd.node]
        if cmd.action == "set_failsafe_limits":
            for gpu in node.gpus:
                limit_w = gpu.pending_failsafe_w.pop(ack.command_id, None)
                if ack.success and limit_w is not None:
                    gpu.failsafe_w = limit_w
            return cmd
        if cmd.gpu_index < 0:
            return cmd
        gpu = node.gpus[cmd.gpu_index]
        if cmd.action == "set_power_limit":
            gpu.pending_limits_w.pop(ack.command_id, None)
            if ack.success:
                gpu.acked_limit_w = cmd.value
        elif ack.success and cmd.action == "lock_sm_clocks":
            gpu.locked_max_sm_clock_mhz = int(cmd.value)
        elif ack.success and cmd.action == "reset_sm_clocks":
            gpu.locked_max_sm_clock_mhz = None
        return cmd
