"""The node agent's logic, with no I/O of its own: the live agent (gRPC, a thread for the
devices) and the simulator (an in-memory channel, virtual time) both run it.

Rules it keeps, whatever the controller does:

* at boot each GPU goes to the lowest of its limit now, its fail-safe limit and the limit
  the controller last commanded (both persisted, :mod:`workers.agent.statefile`); with no
  state at all (a first boot, or a lost state file) to its minimum limit, until the
  controller speaks: the budget may have been cut since the config file was written, and
  an agent that knows nothing cannot know its share of the budget now;
* a controller silent for longer than the fail-safe timeout makes it lower each GPU to its
  fail-safe limit (never raise); any message from the controller ends that;
* before a command raises a limit, the raised value is on disk (else the raise is
  refused); after a batch, the limits in force are written. A write that fails does not
  undo what the GPUs hold: each power-limit ack says the limit the GPU holds
  (``applied_limit_w``) and that it is not persisted, with the limit the state on disk
  lets the GPU boot at; the agent retries the write (:meth:`AgentCore.retry_state`) and
  says so in its telemetry (``state_error``) until it succeeds;
* every command gets an ack, in order; nothing it is sent can crash it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import grpc

from greenllm.devices.base import GPU
from greenllm.errors import DeviceError, GreenllmError
from greenllm.pacing import CPU_BOUND_WAIT_FRACTION
from greenllm.proto.v1 import agent_pb2
from greenllm.shard_state import ShardState
from workers.agent import devices
from workers.agent.statefile import AgentState, AgentStateError, AgentStateStore

log = logging.getLogger(__name__)

#: Slack when comparing limits, watts.
EPS_W = 1e-6
SHARD_ACTIONS = ("start_shard", "stop_shard", "set_load_weights")


class ShardRunner(Protocol):
    """Runs a node's shards (the live shard host, or the simulator's modelled workloads)."""

    def start(self, shard_id: str, gpu_index: int, spec_json: str, generation: int = 0) -> None:
        """Start a shard (raises GreenllmError when it cannot)."""
        ...

    def stop(self, shard_id: str, timeout_s: float | None = 30.0) -> bool:
        """Stop a shard; False when there is no such shard."""
        ...

    def set_load_weights(self, weights: dict[str, float]) -> None:
        """Take new load weights."""
        ...

    def statuses(self) -> Sequence[Any]:
        """Each shard's progress (see :class:`workers.shardhost.ShardStatus`)."""
        ...


def _failure(cid: int, code: grpc.StatusCode, reason: str) -> agent_pb2.CommandAck:
    return devices.failure(cid, code, reason)


def _fits(limits: Sequence[float] | None, n: int) -> bool:
    return limits is not None and len(limits) == n


def lower_to(gpus: Sequence[GPU], bounds_w: Sequence[float]) -> list[str]:
    """Lower each GPU whose limit is above its bound to that bound (never raise one);
    returns the errors (empty when all worked)."""
    errors = []
    for gpu, bound_w in zip(gpus, bounds_w, strict=True):
        try:
            c = gpu.power_limit_constraints()
            target_w = c.clamp(bound_w)
            if gpu.power_limit_w() > target_w + EPS_W:
                gpu.set_power_limit_w(target_w)
        except DeviceError as exc:
            errors.append(f"GPU {gpu.index}: {exc}")
    return errors


class AgentCore:
    """One node's agent logic.

    Args:
        node: The node's name.
        gpus: Its GPUs.
        failsafe_limits_w: Fail-safe limit per GPU until the controller sends others (the
            config's static share), watts.
        failsafe_timeout_s: Seconds of controller silence before the fail-safe.
        state: Where the limits it may be held to are kept.
        shards: What runs shards here (None: shard commands are refused as unimplemented).
        version: Agent version, for the registration.
        message_interval_s: Seconds between its telemetry messages.
    """

    def __init__(
        self,
        node: str,
        gpus: Sequence[GPU],
        failsafe_limits_w: Sequence[float],
        failsafe_timeout_s: float,
        state: AgentStateStore,
        shards: ShardRunner | None = None,
        version: str = "",
        message_interval_s: float = 0.0,
    ) -> None:
        self.node = node
        self.gpus = list(gpus)
        self.failsafe_limits_w = list(failsafe_limits_w)
        self.commanded_limits_w: list[float] | None = None
        self.failsafe_timeout_s = failsafe_timeout_s
        self.state = state
        self.shards = shards
        self.version = version
        self.message_interval_s = message_interval_s
        self.last_contact_s = 0.0
        self.failsafe_active = False
        self.registered = False
        self.commands_applied = 0
        #: The state last written (or read at boot): what a restarted agent would use.
        self.saved = AgentState()
        #: Why the last write failed (None: the state in memory is on disk).
        self.state_error: str | None = None

    # -- boot ----------------------------------------------------------------------------
    def boot(self, now_s: float) -> list[str]:
        """Take back the persisted limits and lower each GPU to the least of its limit now,
        its fail-safe limit and its commanded limit (its minimum limit when nothing is
        persisted), then persist what each holds as its commanded limit; returns the
        errors."""
        saved = self.state.load()
        n = len(self.gpus)
        known = AgentState(
            saved.failsafe_limits_w if _fits(saved.failsafe_limits_w, n) else None,
            saved.commanded_limits_w if _fits(saved.commanded_limits_w, n) else None,
        )
        self.saved = known
        if known.failsafe_limits_w is not None:
            self.failsafe_limits_w = list(known.failsafe_limits_w)
        if known.commanded_limits_w is not None:
            self.commanded_limits_w = list(known.commanded_limits_w)
        self.last_contact_s = now_s
        errors = lower_to(self.gpus, self.boot_bounds_w(known))
        # what each GPU holds now is what it boots at next time: a GPU booted at its
        # minimum (nothing persisted) and never commanded since would otherwise come back
        # from a power cycle at its fail-safe limit, above what the controller counts it at
        try:
            held = [g.power_limit_w() for g in self.gpus]
        except DeviceError:
            return errors
        try:
            self._save(commanded=held)
        except AgentStateError as exc:
            log.error("node %s: cannot write its state at boot (%s)", self.node, exc)
        return errors

    def boot_bounds_w(self, state: AgentState) -> list[float]:
        """The highest limit each GPU holds after a boot with ``state`` on disk, watts: the
        least of its fail-safe and commanded limits; with neither, its minimum limit."""
        bounds = []
        for i, gpu in enumerate(self.gpus):
            known = [
                limits[i]
                for limits in (state.failsafe_limits_w, state.commanded_limits_w)
                if limits is not None
            ]
            if known:
                bounds.append(min(known))
                continue
            try:
                bounds.append(gpu.power_limit_constraints().min_power_limit_w)
            except DeviceError:
                bounds.append(0.0)  # lower_to clamps it to the range the GPU reports
        return bounds

    # -- the stream ----------------------------------------------------------------------
    def registration(self) -> agent_pb2.AgentMessage:
        """The first message of a stream."""
        register = agent_pb2.Register(
            node=self.node,
            gpus=devices.inventory(self.gpus, self.failsafe_limits_w),
            agent_version=self.version,
            failsafe_active=self.failsafe_active,
            telemetry_message_interval_s=self.message_interval_s,
        )
        return agent_pb2.AgentMessage(register=register)

    def on_message(
        self, message: agent_pb2.ControllerMessage, now_s: float
    ) -> agent_pb2.AgentMessage | None:
        """Handle a message from the controller; returns the reply (acks), if any."""
        self.last_contact_s = now_s
        if self.failsafe_active:
            log.warning("node %s: controller is back; obeying it again", self.node)
            self.failsafe_active = False
        kind = message.WhichOneof("body")
        if kind == "registered":
            self.registered = True
            log.info("node %s: registered (session %s)", self.node, message.registered.session_id)
        elif kind == "commands":
            acks = self.apply_batch(message.commands.commands)
            self.commands_applied += len(acks)
            return agent_pb2.AgentMessage(acks=agent_pb2.AckBatch(acks=acks))
        return None

    def stream_ended(self) -> None:
        """The stream to the controller is gone."""
        self.registered = False

    def telemetry(self, samples: agent_pb2.GpuSamples, now_wall_s: float) -> agent_pb2.AgentMessage:
        """A telemetry message with ``samples`` and every shard's progress."""
        shards = shard_samples(self.shards, now_wall_s) if self.shards is not None else []
        log_chunks = getattr(self.shards, "log_chunks", None)  # runners that keep output
        batch = agent_pb2.TelemetryBatch(
            gpus=samples,
            shards=shards,
            failsafe_active=self.failsafe_active,
            logs=log_chunks() if callable(log_chunks) else [],
        )
        if self.state_error is not None:
            batch.state_error = self.state_error
            batch.persisted_limits_w.extend(self.boot_bounds_w(self.saved))
        return agent_pb2.AgentMessage(telemetry=batch)

    # -- persistence ---------------------------------------------------------------------
    def retry_state(self) -> str | None:
        """Write the state that could not be written before (called periodically).

        Returns:
            What happened (for the log) when the write succeeded at last, else None.
        """
        if self.state_error is None:
            return None
        cmd = self.commanded_limits_w
        try:
            self._write(
                AgentState(tuple(self.failsafe_limits_w), tuple(cmd) if cmd is not None else None)
            )
        except AgentStateError:
            return None
        return f"node {self.node}: its state is on disk again"

    # -- fail-safe -----------------------------------------------------------------------
    def check_failsafe(self, now_s: float) -> str | None:
        """After ``failsafe_timeout_s`` of silence, lower every GPU to its fail-safe limit;
        otherwise retry writing a state that could not be written (:meth:`retry_state`).

        Returns:
            What was done (for the log), or None when nothing was.
        """
        silent_s = now_s - self.last_contact_s
        if self.failsafe_active or silent_s <= self.failsafe_timeout_s:
            return self.retry_state()
        errors = lower_to(self.gpus, self.failsafe_limits_w)
        if errors:
            return f"node {self.node}: fail-safe limits not all applied: {'; '.join(errors)}"
        self.failsafe_active = True
        limits = ", ".join(
            f"{g.index}:{w:g} W" for g, w in zip(self.gpus, self.failsafe_limits_w, strict=True)
        )
        return (
            f"node {self.node}: no controller for {silent_s:.1f} s; GPUs at most at their "
            f"fail-safe limits ({limits})"
        )

    # -- commands ------------------------------------------------------------------------
    def apply_batch(self, commands: Sequence[agent_pb2.Command]) -> list[agent_pb2.CommandAck]:
        """Apply a batch in order; one ack per command (see the module docstring)."""
        limits_now = [g.power_limit_w() for g in self.gpus]
        refused: set[int] = set()
        raised = {
            c.set_power_limit.gpu_index: c.set_power_limit.power_limit_w
            for c in commands
            if c.WhichOneof("action") == "set_power_limit"
            and c.set_power_limit.gpu_index < len(self.gpus)
            and c.set_power_limit.power_limit_w > limits_now[c.set_power_limit.gpu_index] + EPS_W
        }
        if raised:
            worst = list(self.commanded_limits_w or limits_now)
            for i, w in raised.items():
                worst[i] = max(worst[i], w)
            try:
                self._save(commanded=worst)
            except AgentStateError as exc:
                log.error("node %s: cannot write its state (%s): raises refused", self.node, exc)
                refused = {
                    c.command_id
                    for c in commands
                    if c.WhichOneof("action") == "set_power_limit"
                    and c.set_power_limit.gpu_index in raised
                }
        acks = []
        for c in commands:
            if c.command_id in refused:
                ack = _failure(
                    c.command_id, grpc.StatusCode.UNAVAILABLE, "the agent cannot write its state"
                )
            else:
                ack = self._apply(c)
            if c.WhichOneof("action") == "set_power_limit":
                self._say_applied(c.set_power_limit.gpu_index, ack)
            acks.append(ack)
        if any(c.WhichOneof("action") == "set_power_limit" for c in commands):
            held = [g.power_limit_w() for g in self.gpus]
            try:
                self._save(commanded=held)
            except AgentStateError as exc:
                log.error(
                    "node %s: cannot write its state (%s): the limits applied hold; "
                    "retrying the write",
                    self.node,
                    exc,
                )
                self.commanded_limits_w = held
                bounds = self.boot_bounds_w(self.saved)
                for c, ack in zip(commands, acks, strict=True):
                    index = c.set_power_limit.gpu_index
                    if c.WhichOneof("action") == "set_power_limit" and index < len(bounds):
                        ack.not_persisted = True
                        ack.persisted_limit_w = bounds[index]
        return acks

    def _say_applied(self, index: int, ack: agent_pb2.CommandAck) -> None:
        """Put the limit GPU ``index`` holds now into its power-limit ack."""
        if index >= len(self.gpus):
            return
        with contextlib.suppress(DeviceError):  # unknown: the controller goes by the ack
            ack.applied_limit_w = self.gpus[index].power_limit_w()

    def _save(
        self, commanded: list[float] | None = None, failsafe: list[float] | None = None
    ) -> None:
        """Write the state with these limits (the others as in memory); memory takes them
        only once they are on disk.

        Raises:
            AgentStateError: It was not written (:meth:`retry_state` tries again).
        """
        fs = failsafe if failsafe is not None else self.failsafe_limits_w
        cmd = commanded if commanded is not None else self.commanded_limits_w
        self._write(AgentState(tuple(fs), tuple(cmd) if cmd is not None else None))
        self.failsafe_limits_w = list(fs)
        self.commanded_limits_w = list(cmd) if cmd is not None else None

    def _write(self, state: AgentState) -> None:
        try:
            self.state.save(state)
        except AgentStateError as exc:
            self.state_error = str(exc)
            raise
        self.saved, self.state_error = state, None

    def _apply(self, command: agent_pb2.Command) -> agent_pb2.CommandAck:
        action = command.WhichOneof("action")
        try:
            if action == "set_failsafe_limits":
                return self._set_failsafe(command)
            if action in SHARD_ACTIONS:
                if self.shards is None:
                    return _failure(
                        command.command_id,
                        grpc.StatusCode.UNIMPLEMENTED,
                        f"{action}: this agent runs no shards",
                    )
                return apply_shard_command(self.shards, self.node, command)
            return devices.apply_command(self.gpus, self.node, command)
        except Exception as exc:  # nothing the controller sends may crash the agent
            log.exception("command %d (%s) crashed", command.command_id, action)
            return _failure(
                command.command_id, grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"
            )

    def _set_failsafe(self, command: agent_pb2.Command) -> agent_pb2.CommandAck:
        limits = list(command.set_failsafe_limits.limits_w)
        cid = command.command_id
        if len(limits) != len(self.gpus):
            reason = f"set_failsafe_limits: {len(limits)} limits for {len(self.gpus)} GPUs"
            return _failure(cid, grpc.StatusCode.INVALID_ARGUMENT, reason)
        for gpu, limit_w in zip(self.gpus, limits, strict=True):
            c = gpu.power_limit_constraints()
            if not c.min_power_limit_w <= limit_w <= c.max_power_limit_w:
                reason = (
                    f"set_failsafe_limits: {limit_w:g} W outside GPU {gpu.index}'s "
                    f"[{c.min_power_limit_w:g}, {c.max_power_limit_w:g}] W"
                )
                return _failure(cid, grpc.StatusCode.OUT_OF_RANGE, reason)
        try:
            self._save(failsafe=limits)
        except AgentStateError as exc:
            return _failure(
                cid, grpc.StatusCode.UNAVAILABLE, f"the agent cannot write its state: {exc}"
            )
        return agent_pb2.CommandAck(command_id=cid, success=True)


def apply_shard_command(
    runner: ShardRunner, node: str, command: agent_pb2.Command
) -> agent_pb2.CommandAck:
    """Carry out a start/stop-shard or load-weights command; never raises."""
    cid = command.command_id
    action = command.WhichOneof("action")
    try:
        if action == "start_shard":
            body = command.start_shard
            start_rank = getattr(runner, "start_rank", None)  # runners that take a rendezvous
            if callable(start_rank):
                start_rank(body)
                return agent_pb2.CommandAck(command_id=cid, success=True)
            if len(body.gpu_indices) != 1:
                raise GreenllmError(f"a shard takes one GPU, not {len(body.gpu_indices)}")
            runner.start(body.shard_id, body.gpu_indices[0], body.spec_json, body.generation)
        elif action == "stop_shard":
            if not runner.stop(command.stop_shard.shard_id, timeout_s=None):
                reason = f"no shard {command.stop_shard.shard_id!r} on node {node}"
                return _failure(cid, grpc.StatusCode.NOT_FOUND, reason)
        else:
            runner.set_load_weights(dict(command.set_load_weights.weights))
    except (GreenllmError, DeviceError) as exc:
        return _failure(cid, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    return agent_pb2.CommandAck(command_id=cid, success=True)


#: The numeric fields of an EngineMetrics message.
_ENGINE_FIGURES = frozenset(
    f.name for f in agent_pb2.EngineMetrics.DESCRIPTOR.fields if f.type == f.TYPE_DOUBLE
)


def shard_samples(runner: ShardRunner, now_s: float) -> list[agent_pb2.ShardSample]:
    """Every shard's cumulative progress, for the telemetry stream."""
    return [_shard_sample(s, now_s) for s in runner.statuses()]


def _phase(state: str) -> agent_pb2.ShardState:
    """``ShardSample.phase`` of a runner's state string (UNSPECIFIED: not one we know)."""
    try:
        return ShardState(state).wire
    except ValueError:
        return agent_pb2.SHARD_STATE_UNSPECIFIED


def _shard_sample(s: Any, now_s: float) -> agent_pb2.ShardSample:
    extra: dict[str, Any] = getattr(s, "extra", None) or {}

    def figure(key: str) -> float:
        value = extra.get(key)
        return float(value) if isinstance(value, int | float) else 0.0

    sample = agent_pb2.ShardSample(
        shard_id=s.shard_id,
        job_id=s.job_id,
        timestamp_s=now_s,
        work_units=s.work_units,
        steps=s.steps,
        requests=s.requests,
        state=str(s.state),
        phase=_phase(s.state),
        error=s.error or "",
        generation=s.generation,
        offered_units=getattr(s, "offered_units", 0.0),
        queued_units=getattr(s, "queued_units", 0.0),
        endpoint=str(extra.get("endpoint") or ""),
        ttft_p50_s=figure("ttft_p50_s"),
        ttft_p99_s=figure("ttft_p99_s"),
        tpot_p50_s=figure("tpot_p50_s"),
        tpot_p99_s=figure("tpot_p99_s"),
        queued_requests=int(figure("queued_requests")),
        rejected_requests=int(figure("rejected_requests")),
        idle_energy_j=figure("idle_energy_j"),
        start_energy_j=figure("start_energy_j"),
        booked_energy_counter_j=figure("booked_energy_counter_j"),
        offered_prompt_tokens=getattr(s, "offered_prompt_tokens", 0.0),
        queued_prompt_tokens=getattr(s, "queued_prompt_tokens", 0.0),
        oldest_wait_s=figure("oldest_wait_s"),
    )
    engine = extra.get("engine_metrics")  # an engine other than greenllm's (vLLM)
    if isinstance(engine, dict):
        sample.engine_metrics.CopyFrom(
            agent_pb2.EngineMetrics(
                engine=str(engine.get("engine") or ""),
                metrics_ok=bool(engine.get("metrics_ok")),
                **{
                    k: float(v)
                    for k, v in engine.items()
                    if k in _ENGINE_FIGURES and isinstance(v, int | float)
                },
            )
        )
    wait = extra.get("gpu_wait_fraction")  # simulated GPUs: share of time it waited (CPU)
    if isinstance(wait, int | float) and 0.0 <= wait <= 1.0:
        sample.gpu_wait_fraction = wait
        sample.cpu_bound = wait > CPU_BOUND_WAIT_FRACTION
    return sample
