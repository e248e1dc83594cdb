"""CPU shards paced by simulated GPUs: what power limits, GPU types and rebalancing do.

1. Pacing: a 1-rank training shard (tiny, 8x128) and an inference replica (tiny, batch 8)
   paced as H100, H100 capped, A100, L4. Reported: paced rate / the same run's unpaced CPU
   rate, against the physical model's throughput ratio (they should agree).
2. Micro-batch shares: 2 ranks paced as H100 and A100; samples/s with equal shares, then
   after each rank's weight follows its measured rate (every 4 steps).
3. Routing: one Poisson load over replicas paced as H100 and L4, routed uniformly vs in
   proportion to throughput: p99 latency and wall time.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import Future
from pathlib import Path

import torch

from greenllm.devices.physics import Workload
from greenllm.devices.simulated import SimulatedGPU
from greenllm.jobspec import InferSection, JobSpec, TrainSection
from greenllm.workloads import BUILTINS, build_untrained
from workers.shards.infer import Completion, InferenceReplica, percentile
from workers.shards.loadgen import Arrival, play, poisson_arrivals
from workers.shards.pacing import reference_throughput
from workers.shards.router import Router
from workers.shards.train import TrainShard

TRAIN = JobSpec(
    name="t",
    kind="train",
    model="tiny",
    train=TrainSection(batch_size=8, seq_len=128, steps=12, checkpoint_interval_steps=1000),
)
INFER = JobSpec(name="i", kind="infer", model="tiny", infer=InferSection(batch_size=8))
SETTINGS = [("H100", "H100-SXM", None), ("H100@300W", "H100-SXM", 300.0)]
SETTINGS += [("A100", "A100-SXM4", None), ("L4", "L4", None)]

RANK = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from greenllm.devices.simulated import SimulatedGPU
    from greenllm.jobspec import JobSpec, TrainSection
    from workers.shards.train import TrainShard
    rank, init, ckpt = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    spec = JobSpec(name="t", kind="train", model="tiny", shards=2,
                   train=TrainSection(batch_size=8, seq_len=128, steps=24,
                                      checkpoint_interval_steps=1000))
    gpu = SimulatedGPU(["H100-SXM", "A100-SXM4"][rank])
    gpu.set_workload(spec.workload())
    rates = []
    def report(p):
        rates.append(p.local_rate_per_s)
        print(json.dumps(p.__dict__), flush=True)
        if p.step >= 8 and p.step % 4 == 0:
            shard.set_load_weight(sum(rates[-3:]) / 3)
    shard = TrainShard(spec, rank, 2, init, Path(ckpt), sim_throughput=gpu.throughput,
                       progress=report)
    shard.run()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gpu(gpu_type: str, workload: Workload, limit_w: float | None) -> SimulatedGPU:
    gpu = SimulatedGPU(gpu_type)
    gpu.set_workload(workload)
    if limit_w is not None:
        gpu.set_power_limit_w(limit_w)
    return gpu


def _train_ratio(gpu: SimulatedGPU) -> float:
    shard = TrainShard(
        TRAIN,
        0,
        1,
        f"tcp://127.0.0.1:{_free_port()}",
        Path(tempfile.mkdtemp()),
        sim_throughput=gpu.throughput,
    )
    shard.run()
    assert shard.pacer is not None
    return shard.pacer.paced_rate_per_s() / shard.pacer.cpu_capacity_per_s()


def _infer_ratio(model: torch.nn.Module, gpu: SimulatedGPU) -> float:
    replica = InferenceReplica(
        model,
        256,
        8,
        sim_throughput=gpu.throughput,
        reference_throughput_per_s=reference_throughput(INFER.workload()),
        device="cpu",
    )
    replica.start()
    for future in [replica.submit([65 + i % 20] * 32, 32) for i in range(32)]:
        future.result()
    replica.stop()
    assert replica.pacer is not None
    return replica.pacer.paced_rate_per_s() / replica.pacer.cpu_capacity_per_s()


def _pacing(model: torch.nn.Module) -> None:
    print(f"{'setting':12s} {'train':>8s} {'model':>8s} {'infer':>8s} {'model':>8s}")
    for name, gpu_type, limit_w in SETTINGS:
        train_gpu = _gpu(gpu_type, TRAIN.workload(), limit_w)
        infer_gpu = _gpu(gpu_type, INFER.workload(), limit_w)
        train = _train_ratio(train_gpu)
        infer = _infer_ratio(model, infer_gpu)
        train_model = train_gpu.throughput() / reference_throughput(TRAIN.workload())
        infer_model = infer_gpu.throughput() / reference_throughput(INFER.workload())
        print(f"{name:12s} {train:8.4f} {train_model:8.4f} {infer:8.4f} {infer_model:8.4f}")


def _shares() -> None:
    folder = tempfile.mkdtemp()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK, str(r), f"file://{folder}/rdzv", f"{folder}/ckpt"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    outs = [
        [json.loads(line) for line in p.communicate(timeout=600)[0].splitlines()] for p in procs
    ]
    rates = []
    for phase, part in (("equal shares", slice(2, 8)), ("rate-weighted", slice(18, 24))):
        step_s = sum(p["step_s"] for p in outs[0][part]) / 6
        split = f"{outs[0][part][-1]['local_samples']}:{outs[1][part][-1]['local_samples']}"
        rates.append(16 / step_s)
        print(f"{phase:14s} H100:A100 shares {split:6s} {16 / step_s:7.1f} samples/s")
    print(f"rate-weighted / equal: {rates[1] / rates[0]:.2f}x samples/s")


def _serve(
    arrivals: list[Arrival], router: Router, replicas: dict[str, InferenceReplica]
) -> list[Completion]:
    futures: list[Future[Completion]] = []

    def submit(a: Arrival) -> None:
        futures.append(replicas[router.pick()].submit([65] * a.prompt_tokens, a.max_new_tokens))

    play(arrivals, submit)
    return [f.result() for f in futures]


def _routing(model: torch.nn.Module) -> None:
    workload = INFER.workload()
    arrivals = poisson_arrivals(30.0, 5.0, 32, 16, seed=0)
    p99 = []
    for weighted in (False, True):
        gpus = {"h100": _gpu("H100-SXM", workload, None), "l4": _gpu("L4", workload, None)}
        replicas = {
            name: InferenceReplica(
                model,
                256,
                8,
                sim_throughput=gpu.throughput,
                reference_throughput_per_s=reference_throughput(workload),
                device="cpu",
            )
            for name, gpu in gpus.items()
        }
        for replica in replicas.values():
            replica.start()
        router = Router({n: g.throughput() if weighted else 1.0 for n, g in gpus.items()})
        start_s = time.monotonic()
        results = _serve(arrivals, router, replicas)
        wall_s = time.monotonic() - start_s
        for replica in replicas.values():
            replica.stop()
        p99.append(percentile([r.latency_s for r in results], 99) or 0.0)
        errors = sum(r.error is not None for r in results)
        label = "throughput" if weighted else "uniform"
        done = f"{len(results)} requests, {errors} errors"
        print(f"{label:10s} {done}, {wall_s:6.2f} s, p99 {p99[-1]:.3f} s")
    print(f"p99 uniform / throughput-weighted: {p99[0] / p99[1]:.1f}x")


def main() -> None:
    torch.set_num_threads(1)
    model = build_untrained(BUILTINS["tiny"])
    print("-- pacing: paced rate / unpaced CPU rate, same run, vs the model's ratio")
    _pacing(model)
    print("-- micro-batch shares, 2 ranks paced as H100 and A100")
    _shares()
    print("-- routing over replicas paced as H100 and L4 (Poisson 30 req/s, 5 s)")
    _routing(model)


if __name__ == "__main__":
    main()
