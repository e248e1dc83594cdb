"""The command/ack ledger: registrations, telemetry, commands in flight and their acks.

Everything an agent says is checked here before it is believed: an inventory must be
well formed and agree with the config, every telemetry value must be finite and plausible
(a power limit inside its GPU's reported range), and an ack must answer a command sent on
the same stream. A rejected message ends its stream with a precise status
(:class:`~scheduler.shell.errors.BadInput`); what was already believed stays.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import grpc

from greenllm.proto.v1 import agent_pb2
from greenllm.shard_state import ShardState
from scheduler.shell.agent_checks import (
    check_columns,
    finite,
    planned_gpu_type,
    reject,
)
from scheduler.shell.errors import BadInput
from scheduler.shell.nodes import COUNTER_BACK, GpuReading, GpuRecord, NodeRecord, ShardReport
from scheduler.shell.ports import Session

log = logging.getLogger(__name__)

#: A node is stale after this many of its telemetry message intervals without one.
STALE_MESSAGE_INTERVALS = 3
#: Longest telemetry message interval an agent may announce, seconds.
MAX_MESSAGE_INTERVAL_S = 60.0
#: Slack when comparing limits, watts.
EPS_W = 1e-6
#: The shard states an agent may report (ShardSample.state).
SHARD_STATES = frozenset(ShardState)


@dataclass(frozen=True)
class PendingCommand:
    """A command sent and not yet acked.

    Attributes:
        node: Target node.
        session_id: The stream it went out on.
        gpu_index: Target GPU (-1 for node-wide commands).
        action: The command's oneof name.
        value: Commanded limit (W) or lock upper end (MHz); 0 when not applicable.
        sent_s: When it was sent, seconds.
        body: The command (shard commands are answered by their ack).
    """

    node: str
    session_id: str
    gpu_index: int
    action: str
    value: float
    sent_s: float
    body: agent_pb2.Command


@dataclass(frozen=True)
class AckResult:
    """What an ack changed.

    Attributes:
        command: The command it answers.
        refused_lowering: A power-limit lowering the GPU did not apply.
    """

    command: PendingCommand
    refused_lowering: bool


class Ledger:
    """Nodes, their GPUs and the commands in flight to them (one event loop, no locks).

    Args:
        nodes: The configured nodes.
    """

    def __init__(self, nodes: dict[str, NodeRecord]) -> None:
        self.nodes = nodes
        self.pending: dict[int, PendingCommand] = {}
        #: GPU samples ingested since start.
        self.samples_ingested = 0
        self._ids = itertools.count(1)
        self._energy_logged: set[tuple[str, int, str]] = set()

    # -- registration ------------------------------------------------------------------
    def inventory(self, node: NodeRecord, msg: agent_pb2.Register) -> list[GpuRecord]:
        """Check a registration's GPUs and build their records (nothing is changed).

        Raises:
            BadInput: INVALID_ARGUMENT (malformed), FAILED_PRECONDITION (disagrees with the
                config or names an unknown GPU type).
        """
        infos = sorted(msg.gpus, key=lambda g: g.index)
        if not infos or [g.index for g in infos] != list(range(len(infos))):
            raise reject(
                node.name, f"GPU indices must be 0..n-1, got {[g.index for g in msg.gpus]}"
            )
        types = [g.type for g in infos]
        if node.config_gpu_types and types != node.config_gpu_types:
            raise reject(
                node.name,
                f"reported GPUs {types} differ from the config's {node.config_gpu_types}",
                grpc.StatusCode.FAILED_PRECONDITION,
            )
        records = []
        for g in infos:
            lo, hi, now_w, fs_w = (
                g.min_power_limit_w,
                g.max_power_limit_w,
                g.power_limit_w,
                g.failsafe_limit_w,
            )
            if not (finite(lo, hi, now_w, fs_w) and 0 < lo <= now_w <= hi < 1e5):
                raise reject(
                    node.name,
                    f"GPU {g.index}: power limit {now_w!r} W outside its range [{lo!r}, {hi!r}] W",
                )
            if fs_w != 0 and not lo <= fs_w <= hi:
                raise reject(
                    node.name,
                    f"GPU {g.index}: fail-safe limit {fs_w!r} W outside its range "
                    f"[{lo!r}, {hi!r}] W",
                )
            records.append(
                GpuRecord(
                    index=g.index,
                    gpu_type=planned_gpu_type(node.name, g),
                    uuid=g.uuid,
                    min_power_limit_w=lo,
                    max_power_limit_w=hi,
                    acked_limit_w=now_w,
                    failsafe_w=fs_w or now_w,
                )
            )
        return records

    def register(
        self,
        msg: agent_pb2.Register,
        session: Session,
        stale_after_s: float,
        now_s: float,
        peer_address: str = "",
        contact_s: float | None = None,
    ) -> tuple[NodeRecord, list[str]]:
        """Accept an agent's registration; its GPUs' records start afresh from what it reports.

        Returns:
            The node, and remarks for the event log (limits above what was commanded).

        Raises:
            BadInput: NOT_FOUND (unknown node), ALREADY_EXISTS (it has a live stream),
                INVALID_ARGUMENT or FAILED_PRECONDITION (bad inventory or interval).
        """
        node = self.nodes.get(msg.node)
        if node is None:
            known = ", ".join(list(self.nodes)[:20])
            raise BadInput(
                grpc.StatusCode.NOT_FOUND,
                f"node {msg.node[:100]!r} is not in the cluster config ({known})",
            )
        if node.session is not None:
            raise BadInput(
                grpc.StatusCode.ALREADY_EXISTS,
                f"node {node.name} is already connected (session {node.session.session_id})",
            )
        gpus = self.inventory(node, msg)
        interval_s = msg.telemetry_message_interval_s
        if not (math.isfinite(interval_s) and 0 <= interval_s <= MAX_MESSAGE_INTERVAL_S):
            raise reject(
                node.name,
                f"telemetry_message_interval_s {interval_s!r} outside "
                f"[0, {MAX_MESSAGE_INTERVAL_S:g}]",
            )
        remarks = []
        if len(node.gpus) == len(gpus):
            for old, new in zip(node.gpus, gpus, strict=True):
                # the booked energy counter goes on: a counter that restarted is a new base
                new.energy_offset_j, new.energy_base = old.energy_offset_j, old.energy_base
                new.energy_window, new.read_at_s = old.energy_window, old.read_at_s
                if new.acked_limit_w > old.worst_limit_w() + EPS_W:
                    remarks.append(
                        f"node {node.name} GPU {new.index} holds {new.acked_limit_w:g} W, above "
                        f"the {old.worst_limit_w():g} W it was commanded: accounted at what it "
                        "holds"
                    )
        for cid in [c for c, p in self.pending.items() if p.node == node.name]:
            del self.pending[cid]
        for g in gpus:
            g.limit_since = (g.acked_limit_w, now_s)
        node.gpus = gpus
        node.registered = True
        node.session = session
        node.stale_after_s = max(stale_after_s, STALE_MESSAGE_INTERVALS * interval_s)
        node.last_telemetry_s = None
        node.contact_s = now_s if contact_s is None else contact_s
        node.failsafe_active = msg.failsafe_active
        node.address = msg.address[:255] or peer_address
        node.shards.clear()
        return node, remarks

    def disconnect(self, session: Session) -> bool:
        """Forget a stream that ended (its node goes stale); False if it was not current.

        Its unacked limit commands stay counted (one may have landed just before the stream
        ended) until the node registers again and reports what it holds."""
        node = self.nodes.get(session.node)
        if node is None or node.session is not session:
            return False
        node.session = None
        for cid in [c for c, p in self.pending.items() if p.session_id == session.session_id]:
            del self.pending[cid]
        return True

    # -- telemetry ---------------------------------------------------------------------
    def ingest(
        self,
        session: Session,
        batch: agent_pb2.TelemetryBatch,
        now_s: float,
        contact_s: float | None = None,
    ) -> None:
        """Take in a telemetry batch: all of it, or on bad input none of it.

        ``contact_s`` is when the node counts as last heard from (default ``now_s``): the
        controller's listening time, which stands still while a control step runs.

        Raises:
            BadInput: INVALID_ARGUMENT for an unknown GPU index or an implausible value.
        """
        node = self.nodes[session.node]
        cols = batch.gpus
        readings = 0
        if len(cols.index):
            gpu_indices, values = check_columns(node, cols)
            readings = len(cols.index)
            for i, row in zip(gpu_indices, values.T.tolist(), strict=True):
                gpu = node.gpus[i]
                reading = gpu.latest = GpuReading._make(row)
                gpu.read_at_s = now_s
                rejected = gpu.book_energy(reading.timestamp_s, reading.energy_j)
                if rejected is not None:
                    self._energy_rejected(node, gpu, rejected, reading)
                limit_w = reading.power_limit_w
                if not gpu.pending_limits_w and limit_w >= 0 and limit_w != gpu.acked_limit_w:
                    gpu.acked_limit_w = reading.power_limit_w
                    gpu.limit_since = (reading.power_limit_w, now_s)
                if gpu.refused_w is not None and 0 <= limit_w < gpu.refused_w - EPS_W:
                    gpu.floor_w = gpu.refused_w = None  # it holds less than it refused: try
        for sh in batch.shards:
            if not (
                finite(sh.work_units, sh.offered_units, sh.queued_units, sh.timestamp_s)
                and sh.work_units >= 0
                and sh.offered_units >= 0
                and sh.queued_units >= 0
                and 0.0 <= sh.gpu_wait_fraction <= 1.0
            ):
                raise reject(node.name, f"shard {sh.shard_id[:100]!r}: implausible progress")
            if sh.state and sh.state not in SHARD_STATES:
                raise reject(
                    node.name, f"shard {sh.shard_id[:100]!r}: unknown state {sh.state[:40]!r}"
                )
            report = node.shards.get(sh.shard_id)
            if report is None or report.latest.generation != sh.generation:
                report = node.shards[sh.shard_id] = ShardReport(sh)
            report.add(sh)
        self._state_error(node, batch)
        node.last_telemetry_s = now_s
        node.contact_s = now_s if contact_s is None else contact_s
        node.failsafe_active = batch.failsafe_active
        self.samples_ingested += readings

    def _energy_rejected(
        self, node: NodeRecord, gpu: GpuRecord, kind: str, reading: GpuReading
    ) -> None:
        """Count a reading not booked; log the first of each kind per GPU."""
        node.energy_rejected[kind] = node.energy_rejected.get(kind, 0) + 1
        key = (node.name, gpu.index, kind)
        if key in self._energy_logged:
            return
        self._energy_logged.add(key)
        what = (
            "its energy counter went back"
            if kind == COUNTER_BACK
            else "its energy counter jumped by more than it can draw"
        )
        log.warning(
            "node %s GPU %d: %s (reading %.6g J): a new base, nothing booked for the interval "
            "(counted in energy_samples_rejected{kind=%s}; logged once per GPU and kind)",
            node.name,
            gpu.index,
            what,
            reading.energy_j,
            kind,
        )

    @staticmethod
    def _state_error(node: NodeRecord, batch: agent_pb2.TelemetryBatch) -> None:
        """Take the agent's word on its state file: while it cannot write it, each GPU
        counts (when the node is not LIVE) at the limit the state on disk boots it at."""
        node.agent_state_error = batch.state_error[:500]
        bounds = list(batch.persisted_limits_w)
        for i, gpu in enumerate(node.gpus):
            if not batch.state_error:
                gpu.boot_limit_w = None
            elif i < len(bounds) and finite(bounds[i]) and 0 < bounds[i] <= gpu.max_power_limit_w:
                gpu.boot_limit_w = bounds[i]
            else:
                gpu.boot_limit_w = gpu.max_power_limit_w

    # -- commands ----------------------------------------------------------------------
    def send(self, node_name: str, command: agent_pb2.Command, now_s: float) -> int | None:
        """Record ``command`` as pending and queue it on the node's stream.

        Returns:
            Its command id, or None when the node has no live stream (nothing sent).
        """
        node = self.nodes[node_name]
        session = node.session
        if session is None:
            return None
        cid = next(self._ids)
        command.command_id = cid
        action = command.WhichOneof("action") or ""
        body = getattr(command, action)
        index, value = -1, 0.0
        if action == "set_power_limit":
            index, value = body.gpu_index, body.power_limit_w
            node.gpus[index].pending_limits_w[cid] = value
            node.gpus[index].asked_w = value
        elif action == "lock_sm_clocks":
            index, value = body.gpu_index, body.max_sm_clock_mhz
        elif action == "reset_sm_clocks":
            index = body.gpu_index
        elif action == "set_failsafe_limits":
            for gpu, limit_w in zip(node.gpus, body.limits_w, strict=True):
                gpu.pending_failsafe_w[cid] = limit_w
        self.pending[cid] = PendingCommand(
            node_name, session.session_id, index, action, value, now_s, command
        )
        return cid

    def on_ack(self, session: Session, ack: agent_pb2.CommandAck) -> AckResult:
        """Apply an ack to the bookkeeping.

        Raises:
            BadInput: INVALID_ARGUMENT when no command with that id went to this stream.
        """
        cmd = self.pending.get(ack.command_id)
        if cmd is None or cmd.session_id != session.session_id:
            raise reject(session.node, f"ack for unknown command {ack.command_id}")
        self._drop(ack.command_id)
        node = self.nodes[cmd.node]
        refused = False
        if cmd.action == "set_failsafe_limits" and ack.success:
            for gpu, limit_w in zip(node.gpus, cmd.body.set_failsafe_limits.limits_w, strict=True):
                gpu.failsafe_w = limit_w
        elif cmd.action == "set_power_limit":
            gpu = node.gpus[cmd.gpu_index]
            applied_w = ack.applied_limit_w if ack.HasField("applied_limit_w") else None
            if applied_w is not None:
                # unreadable: go by the ack; below its range (an enforced cap): counted at
                # its minimum, never at less than it may hold
                applied_w = (
                    min(max(applied_w, gpu.min_power_limit_w), gpu.max_power_limit_w)
                    if math.isfinite(applied_w) and applied_w > 0
                    else None
                )
            if applied_w is not None:  # what it holds, whatever the ack says
                refused = not ack.success and cmd.value < applied_w - EPS_W
                gpu.acked_limit_w = applied_w
            elif ack.success:
                gpu.acked_limit_w = cmd.value
            else:
                refused = cmd.value < gpu.acked_limit_w - EPS_W
            if gpu.refused_w is not None and gpu.acked_limit_w < gpu.refused_w - EPS_W:
                gpu.floor_w = gpu.refused_w = None
            if ack.not_persisted:
                boot_w = ack.persisted_limit_w
                gpu.boot_limit_w = (
                    boot_w
                    if math.isfinite(boot_w) and 0 < boot_w <= gpu.max_power_limit_w
                    else gpu.max_power_limit_w
                )
        elif ack.success and cmd.action == "lock_sm_clocks":
            node.gpus[cmd.gpu_index].locked_max_sm_clock_mhz = int(cmd.value)
        elif ack.success and cmd.action == "reset_sm_clocks":
            node.gpus[cmd.gpu_index].locked_max_sm_clock_mhz = None
        return AckResult(cmd, refused)

    def overdue(self, now_s: float, timeout_s: float) -> set[str]:
        """Nodes with a command unacked for longer than ``timeout_s``."""
        return {p.node for p in self.pending.values() if now_s - p.sent_s > timeout_s}

    def power_commands_pending(self) -> bool:
        """Whether any power-limit command awaits its ack."""
        return any(p.action == "set_power_limit" for p in self.pending.values())

    def _drop(self, cid: int) -> None:
        cmd = self.pending.pop(cid)
        node = self.nodes[cmd.node]
        if cmd.action == "set_power_limit" and cmd.gpu_index < len(node.gpus):
            node.gpus[cmd.gpu_index].pending_limits_w.pop(cid, None)
        elif cmd.action == "set_failsafe_limits":
            for gpu in node.gpus:
                gpu.pending_failsafe_w.pop(cid, None)
