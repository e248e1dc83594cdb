"""The replica engine: continuous batching, per-request energy, queue bound, stop, pacing."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from greenllm.devices.simulated import SimulatedGPU
from greenllm.workloads import BUILTINS, ByteTokenizer, build_untrained
from workers.serve.engine import ReplicaEngine
from workers.serve.kvbatch import KVBatch
from workers.serve.stream import (
    ContextLengthError,
    FinishEvent,
    QueueFullError,
    ReplicaStoppedError,
    Sampling,
    TokenEvent,
)
from workers.shards.decode import decode_steps

EOS = ByteTokenizer.eos_token_id
PROMPTS = [[72, 101, 108, 108, 111, 32, 119], [84, 104], [1, 2, 3, 4], [5] * 30, [9, 8, 7]]
LENGTHS = [12, 5, 20, 7, 9]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """The tiny architecture with weights scaled up so greedy outputs vary by prompt."""
    torch.set_num_threads(1)
    tiny = build_untrained(BUILTINS["tiny"], seed=1)
    with torch.no_grad():
        for p in tiny.parameters():
            p.mul_(8.0)
    return tiny


def alone(model: torch.nn.Module, prompt: list[int], n: int) -> list[int]:
    return [step[0] for step in decode_steps(model, [prompt], n, EOS, torch.device("cpu"))]


def engine(model: torch.nn.Module, gpu: SimulatedGPU, **kwargs: object) -> ReplicaEngine:
    return ReplicaEngine(model, ByteTokenizer(), gpu, model_id="t", **kwargs)  # type: ignore[arg-type]


def test_rows_joining_and_leaving_decode_as_they_would_alone(model: torch.nn.Module) -> None:
    batch = KVBatch(model, EOS, torch.device("cpu"))
    outputs: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def take(keys: list[Any], logits: torch.Tensor) -> list[int]:
        tokens = logits.argmax(dim=-1).tolist()
        for key, token in zip(keys, tokens, strict=True):
            outputs[key].append(token)
        return tokens

    first = take([0, 1], batch.join([0, 1], [PROMPTS[0], PROMPTS[1]]))
    batch.set_pending(first)
    for _ in range(3):
        batch.set_pending(take(list(batch.keys), batch.decode()))
    batch.leave([1])  # the short row leaves; a longer prompt joins the running row
    batch.set_pending(take([2], batch.join([2], [PROMPTS[3]])), rows=[1])
    for _ in range(4):
        batch.set_pending(take(list(batch.keys), batch.decode()))
    assert outputs[0] == alone(model, PROMPTS[0], 8)
    assert outputs[1] == alone(model, PROMPTS[1], 4)
    assert outputs[2] == alone(model, PROMPTS[3], 5)
    batch.leave([0, 2])
    assert len(batch) == 0 and batch.width_tokens == 0


@pytest.mark.timeout(60)
def test_continuous_batching_serves_every_request_with_its_energy(
    model: torch.nn.Module,
) -> None:
    gpu = SimulatedGPU("H100-SXM")
    start_j = gpu.energy_j()
    eng = engine(model, gpu, max_batch=3).start()
    streams = []
    for prompt, n in zip(PROMPTS, LENGTHS, strict=True):
        streams.append(eng.submit(prompt, n))
        time.sleep(0.005)  # arrivals spread: later ones join a running batch
    results = [s.result.result(30) for s in streams]
    time.sleep(0.1)  # some idle time
    eng.stop("test over")
    metered_j = gpu.energy_j() - start_j
    for prompt, n, result in zip(PROMPTS, LENGTHS, results, strict=True):
        assert result.error is None and result.finish_reason == "length"
        assert result.output_ids == alone(model, prompt, n)
        assert result.energy_j > 0 and result.ttft_s is not None and result.tpot_s is not None
        assert result.ttft_s <= result.latency_s
    events = list(streams[0])
    assert [e.ids[0] for e in events if isinstance(e, TokenEvent)] == results[0].output_ids
    assert isinstance(events[-1], FinishEvent)
    m = eng.metrics()
    assert (m.completed, m.failed, m.queued, m.in_batch) == (5, 0, 0, 0)
    assert m.completion_tokens == sum(LENGTHS) and m.prompt_tokens == sum(map(len, PROMPTS))
    assert m.idle_energy_j > 0 and m.busy_tokens_per_s > 0
    assert m.ttft_p50_s is not None and m.tpot_p99_s is not None
    requests_j = sum(r.energy_j for r in results)
    assert requests_j == pytest.approx(m.request_energy_j, rel=1e-9)
    assert requests_j + m.idle_energy_j == pytest.approx(m.energy_j, rel=1e-9)
    assert requests_j + m.idle_energy_j == pytest.approx(metered_j, rel=0.02)


@pytest.mark.timeout(60)
def test_bounded_queue_stop_and_bad_sizes(model: torch.nn.Module) -> None:
    gpu = SimulatedGPU("L4")  # slow: requests stay in flight
    eng = engine(model, gpu, max_batch=1, max_queue=2).start()
    with pytest.raises(ContextLengthError) as long:
        eng.submit([1] * 250, 10)
    assert long.value.status == 400
    running = eng.submit([1, 2, 3], 200, Sampling(ignore_eos=True))
    first = next(iter(running))  # in the batch, producing tokens
    assert isinstance(first, TokenEvent)
    waiting = [eng.submit([4], 5), eng.submit([5], 5)]
    with pytest.raises(QueueFullError) as full:
        eng.submit([6], 5)
    assert full.value.status == 429 and full.value.retry_after_s >= 1
    eng.stop("maintenance")
    for stream in [running, *waiting]:
        result = stream.result.result(5)
        assert result.finish_reason == "error"
        assert isinstance(result.error, ReplicaStoppedError)
        assert "maintenance" in str(result.error)
    assert running.result.result().energy_j > 0
    with pytest.raises(ReplicaStoppedError):
        eng.submit([1], 1)
    m = eng.metrics()
    assert m.failed == 3 and m.rejected == 3 and not m.running
    assert m.request_energy_j + m.idle_energy_j == pytest.approx(m.energy_j, rel=1e-9)


@pytest.mark.timeout(60)
def test_cancelled_request_leaves_the_batch(model: torch.nn.Module) -> None:
    eng = engine(model, SimulatedGPU("L4")).start()
    try:
        stream = eng.submit([1, 2], 200, Sampling(ignore_eos=True))
        for event in stream:
            if isinstance(event, TokenEvent):
                stream.cancel()
        result = stream.result.result(5)
        assert result.finish_reason == "cancelled" and 1 <= result.completion_tokens < 200
        assert eng.metrics().cancelled == 1
    finally:
        eng.stop()


@pytest.mark.timeout(60)
def test_a_slower_gpu_slows_the_paced_replica(model: torch.nn.Module) -> None:
    def tokens_per_s(gpu_type: str) -> float:
        eng = engine(model, SimulatedGPU(gpu_type)).start()
        try:
            streams = [eng.submit([1, 2, 3], 40, Sampling(ignore_eos=True)) for _ in range(4)]
            for s in streams:
                s.result.result(30)
            return eng.metrics().busy_tokens_per_s
        finally:
            eng.stop()

    slow, fast = tokens_per_s("L4"), tokens_per_s("H100-SXM")
    assert slow < 0.3 * fast  # the physical model gives L4 / H100 = 0.09 for this decode


@pytest.mark.timeout(60)
def test_a_model_failure_fails_its_batch_and_the_replica_serves_on(
    model: torch.nn.Module,
) -> None:
    eng = engine(model, SimulatedGPU("H100-SXM")).start()
    real_join = eng._batch.join
    calls = [0]

    def join_once_broken(keys: Any, prompts: Any) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("device lost")
        return real_join(keys, prompts)

    eng._batch.join = join_once_broken  # type: ignore[method-assign]
    try:
        failed = eng.submit([1, 2], 4).result.result(10)
        assert failed.finish_reason == "error" and "device lost" in str(failed.error)
        assert failed.error is not None and failed.error.status == 500
        served = eng.submit([1, 2], 4).result.result(10)  # a fresh batch after the failure
        assert served.error is None and served.output_ids == alone(model, [1, 2], 4)
    finally:
        eng.stop()


@pytest.mark.timeout(60)
def test_a_long_prompt_is_prefilled_in_chunks_beside_the_running_decodes(
    model: torch.nn.Module,
) -> None:
    """With a step budget of 16 tokens, a 200-token prompt takes 13 steps to prefill; each
    of them also decodes the running request, which finishes its 10 tokens before the long
    prompt's first token (one unchunked prefill would have stalled it), and both outputs
    are what each would generate alone."""
    eng = engine(model, SimulatedGPU("H100-SXM"), max_num_batched_tokens=16).start()
    try:
        short_at = time.monotonic()
        short = eng.submit(PROMPTS[0], 10, Sampling(ignore_eos=True))
        deadline = time.monotonic() + 10
        while eng.metrics().completion_tokens < 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        long_prompt = [(7 * i) % 250 + 1 for i in range(200)]
        long_at = time.monotonic()
        long = eng.submit(long_prompt, 3, Sampling(ignore_eos=True))
        first = short.result.result(30)
        second = long.result.result(30)
    finally:
        eng.stop()
    assert first.output_ids == alone(model, PROMPTS[0], 10)
    assert second.output_ids == alone(model, long_prompt, 3)
    assert eng.step_tokens == 16
    # the short request's last token came before the long prompt's first
    assert second.ttft_s is not None
    assert short_at + first.latency_s < long_at + second.ttft_s
    assert eng.metrics().prompt_tokens == len(PROMPTS[0]) + 200
