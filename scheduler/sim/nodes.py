"""Simulated nodes: simulated GPUs, the real agent logic, and a stream to the controller.

Each node runs the node agent's own code (:class:`workers.agent.core.AgentCore`, reached
through the ``greenllm.runtime`` entry point ``embedded-agent``) on the virtual clock: it
boots at its persisted limits, applies and acks commands, falls back to its fail-safe
limits when the controller goes silent, and reconnects with backoff. Its shards are the
world's (:class:`SimShards`).
"""

from __future__ import annotations

import random
from importlib.metadata import entry_points
from typing import Any

from greenllm.devices.catalog import get_spec
from greenllm.devices.simulated import SimulatedGPU
from greenllm.errors import DevicePermissionError, GreenllmError
from greenllm.rpc.reconnect import Reconnect, TelemetryBatch
from scheduler.sim.transport import Channel
from scheduler.sim.world import ShardModel, World


def embedded_agents() -> Any:
    """The agent factory of the ``greenllm.runtime`` entry point ``embedded-agent``."""
    for ep in entry_points(group="greenllm.runtime"):
        if ep.name == "embedded-agent":
            return ep.load()
    raise GreenllmError(
        "no embedded agent is installed (entry point greenllm.runtime:embedded-agent)"
    )


class VirtualClock:
    """A settable clock (each simulated GPU has one, so its integrals are exact)."""

    def __init__(self, t_s: float = 0.0) -> None:
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s


class SimGPU(SimulatedGPU):
    """A simulated GPU that can be made to refuse lowerings below ``refuse_below_w`` (as a
    GPU whose real minimum is above the catalog's, or without the privilege, does)."""

    refuse_below_w = 0.0

    def set_power_limit_w(self, power_limit_w: float) -> None:
        if power_limit_w < self.refuse_below_w and power_limit_w < self.power_limit_w():
            raise DevicePermissionError(
                f"{self.gpu_type} GPU {self.index}: lowering to {power_limit_w:g} W refused "
                f"(it holds no less than {self.refuse_below_w:g} W)"
            )
        super().set_power_limit_w(power_limit_w)


class SimShards:
    """A node's shard runner: the world runs what the agent starts."""

    def __init__(self, world: World, node: str) -> None:
        self.world = world
        self.node = node

    def start(self, shard_id: str, gpu_index: int, spec_json: str, generation: int = 0) -> None:
        """See :class:`workers.agent.core.ShardRunner`."""
        self.world.start(self.node, gpu_index, shard_id, generation, spec_json)

    def stop(self, shard_id: str, timeout_s: float | None = 30.0) -> bool:
        """See :class:`workers.agent.core.ShardRunner`."""
        return self.world.stop(self.node, shard_id)

    def set_load_weights(self, weights: dict[str, float]) -> None:
        """See :class:`workers.agent.core.ShardRunner`."""
        self.world.set_load_weights(weights)

    def statuses(self) -> list[ShardModel]:
        """See :class:`workers.agent.core.ShardRunner`."""
        return self.world.statuses(self.node)


class SimNode:
    """One simulated node.

    Args:
        name: Node name.
        gpu_types: Its GPUs' types, in index order.
        world: The world its shards run in.
        factory: The embedded-agent factory.
        failsafe_limits_w: Fail-safe limit per GPU until the controller sends others, watts.
        failsafe_timeout_s: The agents' fail-safe timeout, seconds.
        message_interval_s: Seconds between its telemetry messages.
        telemetry_ticks: Steps of samples sent per telemetry message.
        power_noise_frac: Noise of power readings, a fraction of TDP.
        seed: Seed of its GPUs' sensor noise.
    """

    def __init__(
        self,
        name: str,
        gpu_types: list[str],
        world: World,
        factory: Any,
        failsafe_limits_w: list[float],
        failsafe_timeout_s: float,
        message_interval_s: float,
        power_noise_frac: float,
        seed: int,
        telemetry_ticks: int = 1,
    ) -> None:
        self.name = name
        self.factory = factory
        self.gpu_types = gpu_types
        self._noise_frac = power_noise_frac
        self._seed = seed
        self.clocks: list[VirtualClock] = []
        self.gpus: list[SimGPU] = []
        self._power_on(0.0)
        self.shards = SimShards(world, name)
        self.state = factory.new_state()
        self._failsafe_w = failsafe_limits_w
        self._timeout_s = failsafe_timeout_s
        self._interval_s = message_interval_s
        self.agent: Any = None
        self.up = True
        self.partitioned = False
        self.channel: Channel | None = None
        self.connect_at_s = 0.0
        #: The live agent's reconnect policy, its jitter drawn from the node's seed.
        self._rng = random.Random(seed)
        self.reconnect = Reconnect(rng=self._rng)
        #: The live agent's telemetry batching: a message every ``telemetry_ticks`` steps.
        self.telemetry = TelemetryBatch(telemetry_ticks)

    def _power_on(self, t_s: float) -> None:
        """Fresh GPUs (their counters at 0, their limits at the default), as after a boot."""
        self.clocks = [VirtualClock(t_s) for _ in self.gpu_types]
        self.gpus = [
            SimGPU(
                t,
                i,
                self.name,
                clock=c,
                seed=self._seed * 1000 + i,
                power_noise_w=self._noise_frac * get_spec(t).tdp_w,
            )
            for i, (t, c) in enumerate(zip(self.gpu_types, self.clocks, strict=True))
        ]

    def set_time(self, t_s: float) -> None:
        """Move its GPUs' clocks to ``t_s`` (integrating what they ran until then)."""
        for c in self.clocks:
            c.t_s = t_s

    def boot(self, t_s: float) -> None:
        """Start (or restart) its agent: it lowers each GPU to its persisted bounds."""
        self.set_time(t_s)
        self.agent = self.factory.agent(
            self.name,
            self.gpus,
            self._failsafe_w,
            self._timeout_s,
            self.state,
            self.shards,
            self._interval_s,
        )
        self.agent.boot(t_s)
        self.drop_stream(t_s)
        self.reconnect = Reconnect(rng=self._rng)  # a new agent process: first delay again
        self.connect_at_s = t_s

    def crash(self, t_s: float) -> None:
        """The node goes down: GPUs off, agent and stream gone."""
        self.set_time(t_s)
        self.up = False
        self.agent = None
        self.drop_stream(t_s)
        for g in self.gpus:
            g.set_workload(None)

    def agent_crash(self, t_s: float) -> None:
        """Its agent process dies: stream gone, nobody applies the fail-safe; its GPUs stay
        up at the limits they hold (NVML limits outlive the process)."""
        self.set_time(t_s)
        self.drop_stream(t_s)
        self.agent = None

    def reboot(self, t_s: float) -> None:
        """The node comes back: its GPUs at their default limits, then its agent boots."""
        self.up = True
        self._power_on(t_s)
        self.boot(t_s)

    def drop_stream(self, t_s: float) -> None:
        """Its stream is gone (the agent reconnects after a backoff)."""
        if self.channel is not None:
            self.channel.cut()
            self.channel = None
        if self.agent is not None:
            self.agent.stream_ended()
        self.connect_at_s = t_s + self.reconnect.lost()

    def real_limits_w(self) -> float:
        """Sum of the limits its GPUs really hold (0 while down), watts."""
        return sum(g.power_limit_w() for g in self.gpus) if self.up else 0.0
