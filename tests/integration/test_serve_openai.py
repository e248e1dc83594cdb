"""The OpenAI-compatible endpoint, driven by the official ``openai`` client.

Servers run under uvicorn on 127.0.0.1 (a free port) with replicas of the built-in tiny
model on simulated GPUs; each test starts and stops its own.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch

from greenllm.devices.simulated import SimulatedGPU
from workers.serve.engine import ReplicaEngine
from workers.serve.pool import ReplicaPool
from workers.serve.server import ApiServer, create_replicas

pytestmark = [pytest.mark.timeout(120), pytest.mark.tiny_model]


def serve(gpu_types: list[str], **kwargs: Any) -> tuple[ApiServer, list[SimulatedGPU]]:
    """A started server with one replica per GPU type, and its simulated GPUs."""
    torch.set_num_threads(1)
    gpus = [SimulatedGPU(t, index=i) for i, t in enumerate(gpu_types)]
    return ApiServer(ReplicaPool(create_replicas("tiny", gpus, **kwargs))).start(), gpus


def counters_j(gpus: list[SimulatedGPU]) -> list[float]:
    return [g.energy_j() for g in gpus]


def client(server: ApiServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def server() -> Iterator[ApiServer]:
    srv, _ = serve(["H100-SXM", "A100-SXM4"])
    try:
        yield srv
    finally:
        srv.stop()


def test_models_completion_and_chat(server: ApiServer) -> None:
    api = client(server)
    assert [m.id for m in api.models.list()] == ["tiny"]
    done = api.completions.create(model="tiny", prompt="The grid", max_tokens=12, temperature=0)
    assert done.object == "text_completion" and done.choices[0].finish_reason == "length"
    assert done.choices[0].text
    usage = done.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (8, 12, 20)
    assert usage.model_extra is not None and usage.model_extra["energy_j"] > 0
    chat = api.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=10
    )
    assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
    assert chat.usage is not None and chat.usage.completion_tokens == 10
    assert getattr(chat.usage, "energy_j", 0) > 0


def test_streamed_chat_matches_the_whole_answer(server: ApiServer) -> None:
    api = client(server)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "system", "content": "Answer."},
        {"role": "user", "content": "Why save power?"},
    ]
    whole = api.chat.completions.create(
        model="tiny", messages=messages, max_tokens=24, temperature=0
    )
    chunks = list(
        api.chat.completions.create(
            model="tiny",
            messages=messages,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["length"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 24 and getattr(last.usage, "energy_j", 0) > 0
    with httpx.stream(
        "POST",
        f"{server.base_url}/completions",
        json={"model": "tiny", "prompt": "a", "max_tokens": 3, "stream": True},
    ) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in raw.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


def test_bad_requests_get_openai_error_bodies(server: ApiServer) -> None:
    api = client(server)
    with pytest.raises(openai.NotFoundError) as missing:
        api.completions.create(model="gpt-9", prompt="x")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as long:
        api.completions.create(model="tiny", prompt="x" * 300, max_tokens=4)
    assert long.value.code == "context_length_exceeded"
    url = f"{server.base_url}/chat/completions"
    bad_json = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    no_messages = httpx.post(url, json={"model": "tiny"})
    for reply in (bad_json, no_messages):
        assert reply.status_code == 400
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
    assert no_messages.json()["error"]["param"] == "messages"
    assert httpx.get(f"{server.base_url}/nowhere").json()["error"]["code"] == "unknown_url"


def test_request_energies_plus_idle_match_the_metered_energy() -> None:
    gpus = [SimulatedGPU("H100-SXM", index=0), SimulatedGPU("L4", index=1)]
    replicas, start_j = [], []
    for i, gpu in enumerate(gpus):
        replicas.append(ReplicaEngine.load("tiny", gpu, name=f"replica-{i}", max_batch=4).start())
        start_j.append(gpu.energy_j())  # the replica's first reading was just before
    srv = ApiServer(ReplicaPool(replicas)).start()
    api = client(srv)

    def ask(i: int) -> float:
        done = api.completions.create(
            model="tiny", prompt="Power " * (1 + i % 5), max_tokens=8 + i % 9, temperature=0
        )
        assert done.usage is not None
        return float(getattr(done.usage, "energy_j", 0.0))

    try:
        with ThreadPoolExecutor(6) as pool:
            energies = list(pool.map(ask, range(24)))
        figures = httpx.get(f"{srv.base_url}/greenllm/replicas").json()["data"]
        srv.pool.stop_all()  # the replicas' last readings
        metered_j = sum(counters_j(gpus)) - sum(start_j)
    finally:
        srv.stop()
    idle_j = sum(m.idle_energy_j for m in srv.pool.metrics().values())
    assert all(e > 0 for e in energies)
    assert sum(energies) + idle_j == pytest.approx(metered_j, rel=0.02)
    assert sum(m["completed"] for m in figures) == 24
    assert all(m["completed"] > 0 for m in figures)  # both replicas took requests


def test_overload_answers_429_with_retry_after() -> None:
    srv, _ = serve(["L4"], max_batch=1, max_queue=1)
    api = client(srv)
    statuses: list[int] = []
    retry_after: list[str] = []
    lock = threading.Lock()

    def ask(_: int) -> None:
        try:
            api.completions.create(
                model="tiny", prompt="x", max_tokens=30, extra_body={"ignore_eos": True}
            )
            status = 200
        except openai.RateLimitError as exc:
            status = 429
            retry_after.append(exc.response.headers.get("retry-after", ""))
            assert exc.code == "queue_full"
        with lock:
            statuses.append(status)

    try:
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(ask, range(6)))
    finally:
        srv.stop()
    assert statuses.count(200) >= 2 and statuses.count(429) >= 1
    assert all(r.isdigit() and int(r) >= 1 for r in retry_after)


def test_a_stopped_replica_ends_its_stream_with_an_error() -> None:
    srv, _ = serve(["L4"])
    api = client(srv)
    got_error = threading.Event()
    try:
        stream = api.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Go on"}],
            max_tokens=200,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        pending = ThreadPoolExecutor(1)
        whole = pending.submit(
            api.completions.create,
            model="tiny",
            prompt="y",
            max_tokens=200,
            extra_body={"ignore_eos": True},
        )
        pieces = []
        with pytest.raises(openai.APIError) as ended:
            for chunk in stream:
                pieces.append(chunk)
                if len(pieces) == 3:
                    srv.pool.replicas()["replica-0"].stop("taken down for the test")
        got_error.set()
        assert "taken down for the test" in ended.value.message
        assert isinstance(ended.value.body, dict) and ended.value.body["code"] == "replica_stopped"
        with pytest.raises(openai.InternalServerError) as failed:
            whole.result(30)
        assert failed.value.status_code == 503
        pending.shutdown()
        with pytest.raises(openai.InternalServerError):  # no replica left: 503
            api.completions.create(model="tiny", prompt="z", max_tokens=2)
    finally:
        srv.stop()
    assert got_error.is_set()


def test_a_compressed_artifact_is_served_under_its_name(tmp_path: Path) -> None:
    from greenllm.compression.artifacts import save_compressed
    from greenllm.compression.layers import conv1d_to_linear
    from greenllm.compression.quantize import quantize_weight_only
    from greenllm.workloads import load_model

    loaded = load_model("tiny")
    model = copy.deepcopy(loaded.model)
    conv1d_to_linear(model)
    quantize_weight_only(model, 8)
    artifact = tmp_path / "tiny-int8"
    save_compressed(model, loaded.tokenizer, artifact, {"base_model": "tiny", "steps": ["int8"]})
    replica = ReplicaEngine.load(str(artifact), SimulatedGPU("A100-SXM4"), model_id="tiny-int8")
    srv = ApiServer(ReplicaPool([replica.start()])).start()
    try:
        api = client(srv)
        assert [m.id for m in api.models.list()] == ["tiny-int8"]
        done = api.completions.create(model="tiny-int8", prompt="Watts", max_tokens=6)
        assert done.usage is not None and done.usage.completion_tokens == 6
        assert getattr(done.usage, "energy_j", 0) > 0
    finally:
        srv.stop()
