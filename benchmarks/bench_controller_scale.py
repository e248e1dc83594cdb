"""The controller at scale: one ``greenllm controller`` and N simulated agents on loopback.

Each agent (a light grpc.aio stream client) has 8 H100s, samples them at 10 Hz and sends
one control period's worth (5 ticks, 40 GPU samples) every 0.5 s, as the real agent does by
default; it acks every command at once. The agents are spread over several emulator
processes (``GREENLLM_SCALE_EMULATORS``, default one per CPU, at least 2), each with its own
channels and event loop, so the emulation is not one Python thread; the figures say whether
the emulators kept up (sent the telemetry they were meant to). Every GPU is busy (inference
jobs cover the cluster), so each control step plans every GPU. For 100, 1,000 and 3,000
agents the benchmark prints:

* the control step's wall time, p50 and p99 (the controller's own figures, in status),
  as a share of the 0.5 s period (goal at 1,000 agents: p99 < 0.25 s);
* ``GetStatus`` latency seen by a client, p50 and p99 (goal: < 0.2 s);
* SetBudget (a cut to 60 %) to the last agent's ack of its last power-limit command
  (goal: < 1 s);
* the controller's CPU use, and whether the emulators kept up with the telemetry they
  were meant to send (when they did not, the emulation is what saturated: on a machine
  with few cores the controller and the emulators share them).

``GREENLLM_SCALE_AGENTS=100,1000 python -m benchmarks controller_scale`` runs other sizes.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import queue
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np

from benchmarks.bench_telemetry import (
    GPU_TYPE,
    GPUS_PER_NODE,
    MAX_LIMIT_W,
    ControllerProcess,
    LightAgent,
    _cpu_s,
    _register,
    _telemetry,
    _until_true,
)
from greenllm.proto.v1 import agent_pb2, cluster_pb2, cluster_pb2_grpc

PERIOD_S = 0.5
TICKS = 5
SIZES = (100, 1000, 3000)
AGENTS_PER_CHANNEL = 50
MEASURE_S = 20.0
#: Seconds after placement before measuring (the status keeps the last 40 steps: 20 s).
WARMUP_S = 10.0
GOALS = {"step_p99_s": 0.25, "status_s": 0.2, "cut_s": 1.0}


class BatchedAgent(LightAgent):
    """A light agent sending 5 ticks of its 8 GPUs every control period."""

    sent = 0

    async def _requests(self) -> AsyncIterator[agent_pb2.AgentMessage]:
        register = _register(self.node)
        register.register.telemetry_message_interval_s = PERIOD_S
        yield register
        while True:
            yield await self._outbox.get()

    async def _read(self) -> None:
        """Ack every command; run (report) the shards it is told to start."""
        self.shards: dict[str, tuple[str, int]] = {}
        async for msg in self._call:
            if msg.WhichOneof("body") == "registered":
                self.registered.set()
            elif msg.WhichOneof("body") == "commands":
                acks = []
                for cmd in msg.commands.commands:
                    action = cmd.WhichOneof("action")
                    if action == "set_power_limit":
                        body = cmd.set_power_limit
                        self.limits_w[body.gpu_index] = body.power_limit_w
                        self.limit_acks.append(time.time())  # wall: compared across processes
                    elif action == "start_shard":
                        st = cmd.start_shard
                        self.shards[st.shard_id] = (st.job_id, st.generation)
                    elif action == "stop_shard":
                        self.shards.pop(cmd.stop_shard.shard_id, None)
                    acks.append(agent_pb2.CommandAck(command_id=cmd.command_id, success=True))
                self._outbox.put_nowait(agent_pb2.AgentMessage(acks=agent_pb2.AckBatch(acks=acks)))

    def _message(self) -> agent_pb2.AgentMessage:
        msg = _telemetry(self.limits_w, TICKS)
        now_s = time.time()
        for sid, (job_id, generation) in getattr(self, "shards", {}).items():
            msg.telemetry.shards.add(
                shard_id=sid,
                job_id=job_id,
                timestamp_s=now_s,
                work_units=100.0 * now_s,
                state="running",
                generation=generation,
            )
        return msg

    async def run(self, telemetry_interval_s: float) -> None:
        reader = asyncio.create_task(self._read())
        next_s = time.monotonic()
        try:
            while True:
                self._outbox.put_nowait(self._message())
                BatchedAgent.sent += 1
                next_s += telemetry_interval_s
                await asyncio.sleep(max(0.0, next_s - time.monotonic()))
        finally:
            reader.cancel()
            self._call.cancel()


async def _status_latency(stub: cluster_pb2_grpc.ClusterStub, md: tuple, n: int) -> list[float]:  # type: ignore[type-arg]
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await stub.GetStatus(cluster_pb2.GetStatusRequest(), metadata=md, timeout=30)
        out.append(time.perf_counter() - t0)
        await asyncio.sleep(0.5)
    return out


async def _one_size(n_agents: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        ctl = ControllerProcess(Path(tmp), n_agents, telemetry_interval_s=PERIOD_S / TICKS)
        try:
            await ctl.wait_ready(60)
            return await _measure(ctl, n_agents)
        finally:
            ctl.stop()


def _emulator(
    address: str,
    metadata: tuple[tuple[str, str], ...],
    names: list[str],
    orders: mp.Queue,
    answers: mp.Queue,
) -> None:
    """One emulator process: ``names``' agents, until told to stop."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    asyncio.run(_emulate(address, metadata, names, orders, answers))


async def _emulate(
    address: str,
    metadata: tuple[tuple[str, str], ...],
    names: list[str],
    orders: mp.Queue,
    answers: mp.Queue,
) -> None:
    channels = [
        grpc.aio.insecure_channel(address) for _ in range(max(1, len(names) // AGENTS_PER_CHANNEL))
    ]
    agents = [BatchedAgent(n, channels[i % len(channels)], metadata) for i, n in enumerate(names)]
    tasks = [asyncio.create_task(a.run(PERIOD_S)) for a in agents]
    loop = asyncio.get_running_loop()
    marks: list[int] = []
    try:
        await asyncio.wait_for(asyncio.gather(*(a.registered.wait() for a in agents)), 180)
        answers.put(("registered", len(agents)))
        while True:
            order = await loop.run_in_executor(None, orders.get)
            if order == "stop":
                return
            if order == "sent":
                answers.put(("sent", BatchedAgent.sent))
            elif order == "mark":
                marks = [len(a.limit_acks) for a in agents]
                answers.put(("marked", 0))
            elif order == "cut":

                def every_gpu_acked(marks: list[int] = marks) -> bool:
                    return all(
                        len(a.limit_acks) - m >= GPUS_PER_NODE
                        for a, m in zip(agents, marks, strict=True)
                    )

                await _until_true(every_gpu_acked, 60)
                answers.put(("cut", max(a.limit_acks[-1] for a in agents)))
    except TimeoutError:
        answers.put(("timeout", sum(a.registered.is_set() for a in agents)))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ch in channels:
            await ch.close(None)


class Emulators:
    """The agents spread over ``processes`` emulator processes."""

    def __init__(self, ctl: ControllerProcess, n_agents: int, processes: int) -> None:
        spawn = mp.get_context("spawn")
        names = [f"n{i}" for i in range(n_agents)]
        self.answers: mp.Queue = spawn.Queue()
        self.orders = [spawn.Queue() for _ in range(processes)]
        self.procs = [
            spawn.Process(
                target=_emulator,
                args=(ctl.address, ctl.agent_md, names[k::processes], self.orders[k], self.answers),
                daemon=True,
            )
            for k in range(processes)
        ]
        for proc in self.procs:
            proc.start()

    async def ask(self, order: str, kind: str, timeout_s: float) -> list[float]:
        """Send ``order`` to every emulator; their answers of ``kind``."""
        for q in self.orders:
            q.put(order)
        return await self.gather(kind, timeout_s)

    async def gather(self, kind: str, timeout_s: float) -> list[float]:
        """One answer of ``kind`` from every emulator (TimeoutError: one timed out)."""
        loop = asyncio.get_running_loop()
        out: list[float] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < len(self.procs):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"emulators did not answer {kind!r}")
            try:
                got, value = await loop.run_in_executor(None, self.answers.get, True, left)
            except queue.Empty:
                continue
            if got == "timeout":
                raise TimeoutError(f"an emulator timed out ({value} of its agents registered)")
            if got == kind:
                out.append(value)
        return out

    def stop(self) -> None:
        for q in self.orders:
            q.put("stop")
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


async def _measure(ctl: ControllerProcess, n_agents: int) -> dict[str, float]:
    processes = int(os.environ.get("GREENLLM_SCALE_EMULATORS", "0")) or max(2, os.cpu_count() or 2)
    emulators = Emulators(ctl, n_agents, min(processes, n_agents))
    channel = grpc.aio.insecure_channel(ctl.address)
    stub = cluster_pb2_grpc.ClusterStub(channel)
    md = ctl.operator_md
    out: dict[str, float] = {"agents": n_agents, "emulators": len(emulators.procs)}
    try:
        t0 = time.monotonic()
        out["registered"] = sum(await emulators.gather("registered", 240))
        out["register_s"] = time.monotonic() - t0
        total = n_agents * GPUS_PER_NODE
        for start in range(0, total, 1024):
            spec = {
                "name": f"serve{start}",
                "kind": "infer",
                "shards": min(1024, total - start),
                "gpu_types": [GPU_TYPE],
            }
            await stub.SubmitJob(
                cluster_pb2.SubmitJobRequest(spec_json=json.dumps(spec)), metadata=md, timeout=60
            )
        await asyncio.sleep(WARMUP_S)  # placements go out, limits settle
        sent0 = sum(await emulators.ask("sent", "sent", 30))
        cpu0_s, w0 = _cpu_s(ctl.proc.pid), time.monotonic()
        latencies = await _status_latency(stub, md, int(MEASURE_S / 0.5 / 2))
        status = await stub.GetStatus(cluster_pb2.GetStatusRequest(), metadata=md, timeout=30)
        elapsed_s = time.monotonic() - w0
        sent1 = sum(await emulators.ask("sent", "sent", 30))
        out["controller_cpu"] = (_cpu_s(ctl.proc.pid) - cpu0_s) / elapsed_s
        out["client_kept_up"] = (sent1 - sent0) / elapsed_s / (n_agents / PERIOD_S)
        out["step_p50_s"], out["step_p99_s"] = status.control_step_p50_s, status.control_step_p99_s
        out["status_p50_s"] = float(np.percentile(latencies, 50))
        out["status_p99_s"] = float(np.percentile(latencies, 99))
        out["status_bytes"] = status.ByteSize()
        await emulators.ask("mark", "marked", 30)
        full_w = total * MAX_LIMIT_W + 100
        t0_wall = time.time()
        await stub.SetBudget(
            cluster_pb2.SetBudgetRequest(budget_w=0.6 * full_w), metadata=md, timeout=30
        )
        out["cut_s"] = max(await emulators.ask("cut", "cut", 90)) - t0_wall
    except TimeoutError as exc:
        out["saturated"] = 1.0
        out["why"] = str(exc)  # type: ignore[assignment]
        log = (Path(ctl.state_dir).parent / "controller.log").read_text().splitlines()
        interesting = [line for line in log if "lost" not in line and "stale" not in line]
        print("        controller log:", *interesting[:15], *log[-3:], sep="\n          ")
    finally:
        emulators.stop()
        await channel.close(None)
    return out


def _print(r: dict[str, float]) -> None:
    n = int(r["agents"])
    if r.get("saturated"):
        print(f"  {n:>5} agents: SATURATED ({r['why']})")
        return
    gpus = n * GPUS_PER_NODE
    rate = gpus * TICKS / PERIOD_S
    took = r["register_s"]
    print(
        f"  {n:>5} agents ({gpus} GPUs, {rate:,.0f} samples/s) in {int(r['emulators'])} "
        f"emulator processes, registered in {took:.1f} s"
    )
    p50, p99 = r["step_p50_s"], r["step_p99_s"]
    print(
        f"        control step p50 {p50 * 1e3:6.1f} ms, p99 {p99 * 1e3:6.1f} ms = "
        f"{p99 / PERIOD_S:.2f} of the period ({p99 / GOALS['step_p99_s']:.2f}x the goal)"
    )
    s50, s99 = r["status_p50_s"], r["status_p99_s"]
    print(
        f"        status p50 {s50 * 1e3:6.1f} ms, p99 {s99 * 1e3:6.1f} ms "
        f"({s99 / GOALS['status_s']:.2f}x the goal; {r['status_bytes'] / 1024:,.0f} KiB)"
    )
    cut = r["cut_s"]
    print(
        f"        budget cut acked by every agent in {cut * 1e3:6.0f} ms "
        f"({cut / GOALS['cut_s']:.2f}x the goal)"
    )
    print(
        f"        controller busy {r['controller_cpu']:.2f} CPU; the emulators sent "
        f"{r['client_kept_up']:.0%} of the telemetry they were meant to"
        + (
            ""
            if r["client_kept_up"] >= 0.95
            else " (the emulation saturated: figures above are low)"
        )
    )


def main() -> None:
    """Print the scale figures for each size (``GREENLLM_SCALE_AGENTS=100,1000`` picks sizes)."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    wanted = os.environ.get("GREENLLM_SCALE_AGENTS", "")
    sizes = [int(a) for a in wanted.split(",") if a.strip().isdigit()] or list(SIZES)
    load = os.getloadavg()[0]
    print(f"load average before: {load:.1f} on {os.cpu_count()} CPUs; period {PERIOD_S} s")
    for n in sizes:
        _print(asyncio.run(_one_size(n)))
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
