"""Loopback fixtures for the control plane: configs with free ports, an in-process
controller, a controller subprocess (for kill -9), and the three simulated agents.

Every server listens on 127.0.0.1 on a port picked free at run time; every fixture stops
what it started.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from greenllm.config import ClusterConfig, load_cluster_config
from greenllm.devices.discovery import simulated_gpus
from greenllm.proto.v1 import agent_pb2, agent_pb2_grpc
from greenllm.rpc.auth import bearer_metadata, read_tokens
from scheduler.server.app import Controller
from workers.agent import devices
from workers.agent.agent import Backoff, NodeAgent
from workers.shardhost import ShardStatus

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")

#: Short intervals so the tests take seconds.
FAST = {
    "telemetry_interval_s": 0.05,
    "control_period_s": 0.1,
    "failsafe": {"timeout_s": 1.5},
}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``predicate`` every 10 ms; returns the seconds it took, fails after ``timeout_s``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def write_config(tmp_path: Path, **overrides: Any) -> Path:
    """The shipped cluster.yaml with free ports, a private state_dir, fast intervals."""
    data = yaml.safe_load((REPO / "cluster.yaml").read_text())
    data.update(FAST)
    data["state_dir"] = str(tmp_path / "state")
    data["controller"] = {"address": f"127.0.0.1:{free_port()}", "metrics_port": free_port()}
    data.update(overrides)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class LoopThread:
    """An asyncio event loop on a daemon thread, to run servers and agents beside a test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Start ``coro`` as a task on the loop."""

        async def create() -> asyncio.Task[None]:
            return asyncio.create_task(coro)

        return self.run(create())

    def cancel(self, task: asyncio.Task[None]) -> None:
        """Cancel a task and wait until it is done."""

        async def stop() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        self.run(stop())

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@pytest.fixture
def wait() -> Callable[[Callable[[], bool], float, str], float]:
    """:func:`wait_for`, for tests."""
    return wait_for


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.close()


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Path]:
    """:func:`write_config` into this test's tmp_path."""
    return lambda **overrides: write_config(tmp_path, **overrides)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def config(config_path: Path) -> ClusterConfig:
    return load_cluster_config(config_path)


@pytest.fixture
def controller(config: ClusterConfig, loop_thread: LoopThread) -> Iterator[Controller]:
    """An in-process controller on the config's address (its tokens in state_dir)."""
    ctl = Controller(config)
    loop_thread.run(ctl.start())
    try:
        yield ctl
    finally:
        loop_thread.run(ctl.stop(0))


class StubShards:
    """A shard runner that runs nothing: every shard it is given reports running, no work."""

    def __init__(self) -> None:
        self.running: dict[str, ShardStatus] = {}

    def start(self, shard_id: str, gpu_index: int, spec_json: str, generation: int = 0) -> None:
        job_id = shard_id.rpartition("-")[0]
        self.running[shard_id] = ShardStatus(shard_id, job_id, generation=generation)

    def stop(self, shard_id: str, timeout_s: float | None = 30.0) -> bool:
        return self.running.pop(shard_id, None) is not None

    def set_load_weights(self, weights: dict[str, float]) -> None:
        pass

    def statuses(self) -> list[ShardStatus]:
        return list(self.running.values())


class Fleet:
    """The config's node agents running on one event-loop thread (their shards are stubs)."""

    def __init__(self, config: ClusterConfig, loop_thread: LoopThread) -> None:
        self.loop_thread = loop_thread
        backoff = Backoff(initial_s=0.05, max_s=0.3)
        self.agents = [
            NodeAgent(config, n.name, backoff=backoff, shard_runner=StubShards())
            for n in config.nodes
        ]
        self.tasks = [loop_thread.spawn(a.run()) for a in self.agents]

    def limits_w(self) -> list[float]:
        """Every GPU's power limit in force, in config order, watts."""
        return [g.power_limit_w() for a in self.agents for g in a.gpus]

    def stop(self) -> None:
        for task in self.tasks:
            self.loop_thread.cancel(task)


@pytest.fixture
def fleet(config: ClusterConfig, loop_thread: LoopThread) -> Iterator[Fleet]:
    f = Fleet(config, loop_thread)
    try:
        yield f
    finally:
        f.stop()


class ControllerProcess:
    """``greenllm controller`` as a subprocess (so a test can kill -9 it)."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.config = load_cluster_config(config_path)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = config_path.parent / "controller.log"

    def start(self, timeout_s: float = 20.0) -> None:
        """Start it and wait until its health check answers SERVING."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "greenllm.cli.main", "controller"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*argv, "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_for(self.serving, timeout_s, "the controller to serve")

    def serving(self) -> bool:
        """True when its health check answers SERVING."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"controller exited: {self.log_path.read_text()[-2000:]}")
        try:
            token = read_tokens(self.config.state_dir).operator
        except Exception:
            return False
        with grpc.insecure_channel(self.config.controller.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(), timeout=1, metadata=bearer_metadata(token)
                )
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def kill9(self) -> None:
        """SIGKILL it and reap it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM it (SIGKILL if it lingers)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def controller_process(config_path: Path) -> Iterator[ControllerProcess]:
    cp = ControllerProcess(config_path)
    try:
        yield cp
    finally:
        cp.stop()


class RawAgent:
    """A hand-driven agent stream (blocking gRPC), to send exactly what a test wants."""

    def __init__(self, address: str, token: str | None) -> None:
        self._requests: queue.Queue[agent_pb2.AgentMessage | None] = queue.Queue()
        self.channel = grpc.insecure_channel(address)
        self.call = agent_pb2_grpc.AgentStub(self.channel).Connect(
            iter(self._requests.get, None), metadata=bearer_metadata(token)
        )

    def send(self, **body: Any) -> None:
        """Send one AgentMessage built from ``body`` (register=..., telemetry=..., acks=...)."""
        self._requests.put(agent_pb2.AgentMessage(**body))

    def receive(self) -> agent_pb2.ControllerMessage:
        """The next message from the controller."""
        return next(self.call)

    def final_code(self) -> grpc.StatusCode:
        """Drain the stream and return its status code."""
        try:
            for _ in self.call:
                pass
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    def close(self) -> None:
        self._requests.put(None)
        self.call.cancel()
        self.channel.close()


def register_message(config: ClusterConfig, node: str) -> agent_pb2.Register:
    """What the agent of ``node`` registers with (its simulated inventory)."""
    gpus = simulated_gpus(config.node(node))
    return agent_pb2.Register(node=node, gpus=devices.inventory(gpus))


def telemetry_message(
    config: ClusterConfig, node: str, gpu: int = 0, **overrides: float
) -> agent_pb2.TelemetryBatch:
    """One tick of ``node``'s simulated telemetry; ``overrides`` replace fields of ``gpu``."""
    samples = devices.sample(simulated_gpus(config.node(node)))
    for field, value in overrides.items():
        getattr(samples, field)[gpu] = value
    return agent_pb2.TelemetryBatch(gpus=samples)


@pytest.fixture
def messages(config: ClusterConfig) -> Any:
    """Builders of registration and telemetry messages for ``config``'s nodes."""

    class Builders:
        @staticmethod
        def register(node: str) -> agent_pb2.Register:
            return register_message(config, node)

        @staticmethod
        def telemetry(node: str, gpu: int = 0, **overrides: float) -> agent_pb2.TelemetryBatch:
            return telemetry_message(config, node, gpu, **overrides)

    return Builders


@pytest.fixture
def raw_agents(controller: Controller) -> Iterator[Callable[[str | None], RawAgent]]:
    """Opens raw agent streams to the in-process controller (agent token by default)."""
    opened: list[RawAgent] = []
    agent_token = read_tokens(controller.config.state_dir).agent

    def open_stream(token: str | None = agent_token) -> RawAgent:
        raw = RawAgent(f"127.0.0.1:{controller.port}", token)
        opened.append(raw)
        return raw

    try:
        yield open_stream
    finally:
        for raw in opened:
            raw.close()
