"""The same API as a Ray Serve ingress on a local one-node Ray (HTTP proxy on 127.0.0.1)."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator

import openai
import pytest

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.slow,
    pytest.mark.tiny_model,
]  # ~30 s: a Ray cluster and Serve


@pytest.fixture
def serve_port() -> Iterator[int]:
    ray = pytest.importorskip("ray")
    from ray import serve

    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must be short
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 2**20,
        _temp_dir=temp_dir,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_serve_ingress_answers_openai_clients_and_takes_weights(serve_port: int) -> None:
    from ray import serve

    from workers.serve.ray_ingress import openai_deployment

    app = openai_deployment(ray_actor_options={"num_cpus": 0}).bind("tiny", ["H100-SXM", "L4"])
    handle = serve.run(app, name="job-1", route_prefix="/job-1")
    api = openai.OpenAI(
        base_url=f"http://127.0.0.1:{serve_port}/job-1/v1", api_key="x", max_retries=0, timeout=30
    )
    assert [m.id for m in api.models.list()] == ["tiny"]
    done = api.completions.create(model="tiny", prompt="hello", max_tokens=8, temperature=0)
    assert done.usage is not None and getattr(done.usage, "energy_j", 0) > 0
    chunks = list(
        api.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    handle.set_weights.remote({"replica-0": 3.0, "replica-1": 1.0}).result()
    figures = handle.replica_metrics.remote().result()
    assert set(figures) == {"replica-0", "replica-1"}
    assert sum(f["completed"] for f in figures.values()) == 2
    assert all(f["energy_j"] > 0 for f in figures.values())
    assert handle.stop_replica.remote("replica-1").result() is True
