"""The inference endpoints cap what they read (issue 25), over real HTTP on loopback: a
replica's OpenAI API and the cluster ingress in front of it answer 413 to a body above
their cap (the server's memory does not grow by the body), and a prompt longer than the
model's context gets 400 with the numbers."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import httpx
import pytest
import torch

from greenllm.devices.simulated import SimulatedGPU
from greenllm.proto.v1 import cluster_pb2
from workers.serve.bodylimit import DEFAULT_MAX_BODY_BYTES
from workers.serve.ingress import ReplicaDirectory, create_ingress_app
from workers.serve.pool import ReplicaPool
from workers.serve.server import ApiServer, create_replicas

pytestmark = [pytest.mark.timeout(120), pytest.mark.tiny_model]
TWENTY_MB = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[ApiServer, ApiServer]]:
    torch.set_num_threads(1)
    replica = ApiServer(ReplicaPool(create_replicas("tiny", [SimulatedGPU("H100-SXM")]))).start()
    job = cluster_pb2.Job(id="j", spec=cluster_pb2.JobSpec(kind="infer"), state="running")
    job.replicas.append(
        cluster_pb2.Replica(
            shard_id="j-0", endpoint=replica.base_url, load_weight=1.0, state="running"
        )
    )
    app = create_ingress_app(ReplicaDirectory(lambda _job_id: job), max_body_bytes=64 * 1024)
    ingress = ApiServer(app=app).start()
    try:
        yield replica, ingress
    finally:
        ingress.stop()
        replica.stop()


def test_a_20_mb_body_is_answered_413_by_the_replica_and_the_ingress(
    servers: tuple[ApiServer, ApiServer],
) -> None:
    replica, ingress = servers
    body = b'{"model": "tiny", "prompt": "' + b"x" * TWENTY_MB + b'"}'
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for url, cap in (
        (f"{replica.base_url}/completions", DEFAULT_MAX_BODY_BYTES),
        (f"{ingress.root_url}/jobs/j/v1/completions", 64 * 1024),
    ):
        reply = httpx.post(url, content=body, headers={"content-type": "application/json"})
        assert reply.status_code == 413, (url, reply.text[:200])
        error = reply.json()["error"]
        assert error["code"] == "request_too_large" and str(cap) in error["message"]
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kib) / 1024
    assert grown_mib < 100, f"peak memory grew {grown_mib:.0f} MiB"  # the client's body: 20


def test_a_small_request_passes_and_a_prompt_beyond_the_context_gets_the_numbers(
    servers: tuple[ApiServer, ApiServer],
) -> None:
    _, ingress = servers
    url = f"{ingress.root_url}/jobs/j/v1/completions"
    ok = httpx.post(url, json={"model": "tiny", "prompt": "The grid", "max_tokens": 2}, timeout=30)
    assert ok.status_code == 200, ok.text
    long = httpx.post(
        url, json={"model": "tiny", "prompt": "x" * 5000, "max_tokens": 4}, timeout=30
    )
    assert long.status_code == 400
    error = long.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "maximum context length is" in error["message"] and "in the prompt" in error["message"]
