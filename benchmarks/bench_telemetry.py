"""Control-plane throughput: telemetry one controller ingests, and SetBudget-to-ack latency.

The controller runs as ``greenllm controller`` in its own process (auth on, metrics off);
the agents are lightweight in-process grpc.aio stream clients in this process, so the
figures are the controller's, as far as one client process can drive it.

1. Ingest: 64 nodes x 8 GPUs stream telemetry as fast as they can, with 1 GPU sample per
   message (unbatched), 8 (one tick per message, ``greenllm agent --batch-ticks 1``), 40
   (five ticks: the agent's default with the shipped cluster.yaml, one control period's
   worth) and 80 (``--batch-ticks 10``). The rate is the
   controller's own count of ingested samples (``ClusterStatus.telemetry_samples``) over a
   timed window; the controller's CPU use over the window tells whether the controller or
   the (single) client process was the limit. Goal: 250,000 samples/s.
2. Budget latency: N agents (8 H100 each, every GPU busy under the uniform policy) at
   their maximum limits; SetBudget cuts the budget to 60 %, and later restores it. Time
   from the SetBudget call to the last agent's ack of its last power-limit command.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import grpc
import yaml

from greenllm.proto.v1 import agent_pb2, agent_pb2_grpc, cluster_pb2, cluster_pb2_grpc
from greenllm.rpc.auth import bearer_metadata, read_tokens

GPUS_PER_NODE = 8
GPU_TYPE = "H100-SXM"
MAX_LIMIT_W = 700.0
INGEST_NODES = 64
INGEST_WINDOW_S = 5.0
AGENTS_PER_CHANNEL = 25
GOAL_SAMPLES_PER_S = 250_000
#: Seconds without further acks after which a budget change counts as done.
QUIET_S = 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ControllerProcess:
    """``greenllm controller`` for a synthetic cluster of ``nodes`` x 8 H100."""

    def __init__(self, workdir: Path, nodes: int, telemetry_interval_s: float) -> None:
        self.address = f"127.0.0.1:{_free_port()}"
        self.state_dir = workdir / "state"
        config = {
            "name": "bench",
            "nodes": [
                {"name": f"n{i}", "gpus": [{"type": GPU_TYPE, "count": GPUS_PER_NODE}]}
                for i in range(nodes)
            ],
            "budget": {"budget_w": nodes * GPUS_PER_NODE * MAX_LIMIT_W + 100, "reserve_w": 100},
            "policy": "uniform",
            "control_period_s": 0.5,
            "telemetry_interval_s": telemetry_interval_s,
            "failsafe": {"timeout_s": 30},
            "state_dir": str(self.state_dir),
            "controller": {"address": self.address, "metrics_port": 0},
        }
        path = workdir / "cluster.yaml"
        path.write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "greenllm.cli.main", "controller", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "controller.log").open("wb"),
        )

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not (self.state_dir / "tokens").exists() or not await self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the controller did not start")
            await asyncio.sleep(0.1)
        tokens = read_tokens(self.state_dir)
        self.agent_md = bearer_metadata(tokens.agent)
        self.operator_md = bearer_metadata(tokens.operator)

    async def _answers(self) -> bool:
        tokens = read_tokens(self.state_dir)
        async with grpc.aio.insecure_channel(self.address) as ch:
            try:
                await cluster_pb2_grpc.ClusterStub(ch).GetStatus(
                    cluster_pb2.GetStatusRequest(),
                    timeout=1,
                    metadata=bearer_metadata(tokens.operator),
                )
            except grpc.RpcError:
                return False
        return True

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _register(node: str) -> agent_pb2.AgentMessage:
    gpus = [
        agent_pb2.GpuInfo(
            index=i,
            type=GPU_TYPE,
            uuid=f"bench-{node}-{i}",
            min_power_limit_w=200,
            max_power_limit_w=MAX_LIMIT_W,
            default_power_limit_w=MAX_LIMIT_W,
            power_limit_w=MAX_LIMIT_W,
            min_sm_clock_mhz=210,
            max_sm_clock_mhz=1980,
            memory_total_mib=81559,
        )
        for i in range(GPUS_PER_NODE)
    ]
    return agent_pb2.AgentMessage(register=agent_pb2.Register(node=node, gpus=gpus))


def _telemetry(
    limits_w: Sequence[float], ticks: int = 1, gpus: int = GPUS_PER_NODE
) -> agent_pb2.AgentMessage:
    """``ticks`` readings of ``gpus`` GPUs in one message, column-wise, oldest first."""
    now_s = time.time()
    rows = [(t, i) for t in range(ticks) for i in range(gpus)]
    samples = agent_pb2.GpuSamples(
        index=[i for _, i in rows],
        timestamp_s=[now_s + t for t, _ in rows],
        power_w=[0.8 * limits_w[i] for _, i in rows],
        energy_j=[1000.0 + t for t, _ in rows],
        power_limit_w=[limits_w[i] for _, i in rows],
        sm_clock_mhz=[1500.0] * len(rows),
        utilization_pct=[100.0] * len(rows),
        temperature_c=[60.0] * len(rows),
        memory_used_mib=[20000.0] * len(rows),
    )
    return agent_pb2.AgentMessage(telemetry=agent_pb2.TelemetryBatch(gpus=samples))


class LightAgent:
    """A stream client that registers, sends telemetry and acks every command at once."""

    def __init__(
        self, node: str, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]
    ) -> None:
        self.node = node
        self.limits_w = [MAX_LIMIT_W] * GPUS_PER_NODE
        self.limit_acks: list[float] = []  # monotonic time of each power-limit ack
        self._outbox: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue()
        self._call = agent_pb2_grpc.AgentStub(channel).Connect(self._requests(), metadata=metadata)
        self.registered = asyncio.Event()

    async def _requests(self) -> AsyncIterator[agent_pb2.AgentMessage]:
        yield _register(self.node)
        while True:
            yield await self._outbox.get()

    async def run(self, telemetry_interval_s: float) -> None:
        reader = asyncio.create_task(self._read())
        try:
            while True:
                self._outbox.put_nowait(_telemetry(self.limits_w))
                await asyncio.sleep(telemetry_interval_s)
        finally:
            reader.cancel()
            self._call.cancel()

    async def _read(self) -> None:
        async for msg in self._call:
            if msg.WhichOneof("body") == "registered":
                self.registered.set()
            elif msg.WhichOneof("body") == "commands":
                acks = []
                for cmd in msg.commands.commands:
                    if cmd.WhichOneof("action") == "set_power_limit":
                        body = cmd.set_power_limit
                        self.limits_w[body.gpu_index] = body.power_limit_w
                        self.limit_acks.append(time.monotonic())
                    acks.append(agent_pb2.CommandAck(command_id=cmd.command_id, success=True))
                batch = agent_pb2.AckBatch(acks=acks)
                self._outbox.put_nowait(agent_pb2.AgentMessage(acks=batch))


async def _ingest_rate(ctl: ControllerProcess, samples_per_message: int) -> float:
    ticks, gpus = (
        (samples_per_message // GPUS_PER_NODE, GPUS_PER_NODE)
        if samples_per_message >= GPUS_PER_NODE
        else (1, samples_per_message)
    )
    channels = [grpc.aio.insecure_channel(ctl.address) for _ in range(4)]
    stop = asyncio.Event()

    async def stream(node: str, channel: grpc.aio.Channel) -> None:
        call = agent_pb2_grpc.AgentStub(channel).Connect(metadata=ctl.agent_md)
        await call.write(_register(node))
        drain = asyncio.create_task(_drain(call))
        message = _telemetry([MAX_LIMIT_W] * GPUS_PER_NODE, ticks, gpus)
        try:
            while not stop.is_set():
                await call.write(message)
        finally:
            drain.cancel()
            call.cancel()

    tasks = [
        asyncio.create_task(stream(f"n{i}", channels[i % len(channels)]))
        for i in range(INGEST_NODES)
    ]
    status = cluster_pb2_grpc.ClusterStub(channels[0])
    await asyncio.sleep(1.0)  # warm up
    first = await status.GetStatus(
        cluster_pb2.GetStatusRequest(), metadata=ctl.operator_md, timeout=10
    )
    t0 = time.monotonic()
    await asyncio.sleep(INGEST_WINDOW_S)
    last = await status.GetStatus(
        cluster_pb2.GetStatusRequest(), metadata=ctl.operator_md, timeout=10
    )
    elapsed_s = time.monotonic() - t0
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        await ch.close(None)
    return (last.telemetry_samples - first.telemetry_samples) / elapsed_s


async def _drain(call: AsyncIterator[agent_pb2.ControllerMessage]) -> None:
    async for _ in call:
        pass


async def _budget_latency(
    ctl: ControllerProcess, n_agents: int, telemetry_interval_s: float
) -> tuple[float, float]:
    channels = [
        grpc.aio.insecure_channel(ctl.address)
        for _ in range(max(1, n_agents // AGENTS_PER_CHANNEL))
    ]
    agents = [
        LightAgent(f"n{i}", channels[i % len(channels)], ctl.agent_md) for i in range(n_agents)
    ]
    tasks = [asyncio.create_task(a.run(telemetry_interval_s)) for a in agents]
    cluster = cluster_pb2_grpc.ClusterStub(channels[0])
    md = ctl.operator_md
    try:
        await asyncio.wait_for(asyncio.gather(*(a.registered.wait() for a in agents)), 60)
        total = n_agents * GPUS_PER_NODE
        for start in range(0, total, 1024):
            spec = {
                "name": f"serve{start}",
                "kind": "infer",
                "shards": min(1024, total - start),
                "gpu_types": [GPU_TYPE],
            }
            request = cluster_pb2.SubmitJobRequest(spec_json=json.dumps(spec))
            await cluster.SubmitJob(request, metadata=md, timeout=30)
        await _until(lambda: _all_placed(cluster, ctl), 60)
        full_w = total * MAX_LIMIT_W + 100
        results = []
        for budget_w in (0.6 * full_w, full_w):
            before = [len(a.limit_acks) for a in agents]
            t0 = time.monotonic()
            budget = cluster_pb2.SetBudgetRequest(budget_w=budget_w)
            await cluster.SetBudget(budget, metadata=md, timeout=30)

            def every_gpu_acked(before: list[int] = before) -> bool:
                pairs = zip(agents, before, strict=True)
                return all(len(a.limit_acks) - n >= GPUS_PER_NODE for a, n in pairs)

            await _until_true(every_gpu_acked, 60)
            await asyncio.sleep(QUIET_S)  # any later adjustment counts too
            results.append(max(a.limit_acks[-1] for a in agents) - t0)
        return results[0], results[1]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ch in channels:
            await ch.close(None)


async def _all_placed(cluster: cluster_pb2_grpc.ClusterStub, ctl: ControllerProcess) -> bool:
    jobs = await cluster.ListJobs(
        cluster_pb2.ListJobsRequest(), metadata=ctl.operator_md, timeout=30
    )
    return all(j.state == "placed" for j in jobs.jobs)


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(0.05)


async def _until_true(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(0.001)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run() -> None:
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    rates: dict[int, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ctl = ControllerProcess(Path(tmp), INGEST_NODES, telemetry_interval_s=0.1)
        try:
            await ctl.wait_ready()
            for per_message in (1, GPUS_PER_NODE, 5 * GPUS_PER_NODE, 10 * GPUS_PER_NODE):
                cpu0_s, t0 = _cpu_s(ctl.proc.pid), time.monotonic()
                rate = await _ingest_rate(ctl, per_message)
                cpu_share = (_cpu_s(ctl.proc.pid) - cpu0_s) / (time.monotonic() - t0)
                rates[per_message] = (rate, cpu_share)
        finally:
            ctl.stop()
    base = rates[1][0]
    print(f"telemetry ingest, one controller, {INGEST_NODES} streams x {GPUS_PER_NODE} GPUs:")
    for per_message, (rate, cpu_share) in rates.items():
        print(
            f"  {per_message:>3} samples/message: {rate:>9,.0f} GPU samples/s = "
            f"{rate / base:5.1f}x unbatched, {rate / GOAL_SAMPLES_PER_S:4.2f}x the "
            f"{GOAL_SAMPLES_PER_S:,}/s goal; controller busy {cpu_share:.2f} CPU = "
            f"{rate / max(cpu_share, 1e-9):,.0f} samples per controller CPU-second"
        )

    print(f"SetBudget -> last agent's ack ({GPUS_PER_NODE} GPUs per agent, uniform policy):")
    for n_agents in (10, 100, 1000):
        with tempfile.TemporaryDirectory() as tmp:
            interval_s = 2.0
            ctl = ControllerProcess(Path(tmp), n_agents, telemetry_interval_s=interval_s)
            try:
                await ctl.wait_ready()
                cut_s, raise_s = await _budget_latency(ctl, n_agents, interval_s)
            finally:
                ctl.stop()
        print(
            f"  {n_agents:>5} agents: cut to 60 % {cut_s * 1000:7.1f} ms, "
            f"restore {raise_s * 1000:7.1f} ms"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


def main() -> None:
    """Print the ingest rates (batched vs unbatched) and the budget-change latencies."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    asyncio.run(_run())


if __name__ == "__main__":
    main()
