"""Inference replicas: batched decoding, every request answered, percentiles, stop."""

from __future__ import annotations

import time
from concurrent.futures import Future, wait
from pathlib import Path

import pytest
import torch

from greenllm.devices.physics import Workload
from greenllm.devices.simulated import SimulatedGPU
from greenllm.errors import ConfigError
from greenllm.jobspec import InferSection, JobSpec
from greenllm.workloads import BUILTINS, ByteTokenizer, build_untrained, corpus_ids
from workers.shards.decode import decode_steps
from workers.shards.infer import RATE_WINDOW_S, Completion, InferenceReplica, percentile
from workers.shards.loadgen import Arrival, PromptSource, play, poisson_arrivals
from workers.shards.pacing import reference_throughput

PAD = ByteTokenizer.eos_token_id


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """The tiny architecture with weights scaled up so greedy outputs vary by prompt."""
    torch.set_num_threads(1)
    tiny = build_untrained(BUILTINS["tiny"], seed=1)
    with torch.no_grad():
        for p in tiny.parameters():
            p.mul_(8.0)
    return tiny


def test_batched_left_padded_decoding_matches_decoding_alone(model: torch.nn.Module) -> None:
    cpu = torch.device("cpu")
    prompts = [[72, 101, 108, 108, 111, 32, 119], [84, 104], [1, 2, 3, 4]]
    together = list(decode_steps(model, prompts, 6, PAD, cpu))
    for row, prompt in enumerate(prompts):
        alone = [step[0] for step in decode_steps(model, [prompt], 6, PAD, cpu)]
        assert [step[row] for step in together] == alone
    assert len({tuple(step[r] for step in together) for r in range(3)}) > 1


@pytest.mark.timeout(60)
def test_serves_a_poisson_load_every_request_completed(model: torch.nn.Module) -> None:
    offset_s = [0.0]
    replica = InferenceReplica(
        model, PAD, batch_size=4, device="cpu", clock=lambda: time.monotonic() + offset_s[0]
    )
    replica.start()
    source = PromptSource(corpus_ids(ByteTokenizer(), "heldout").tolist(), seed=0)
    arrivals = poisson_arrivals(40.0, 0.5, prompt_tokens=24, max_new_tokens=8, seed=0)
    arrivals += [Arrival(0.5, 5 + i, 3 + i) for i in range(6)]  # mixed lengths
    futures: list[Future[Completion]] = []
    try:
        play(
            arrivals,
            lambda a: futures.append(
                replica.submit(source.take(a.prompt_tokens), a.max_new_tokens)
            ),
        )
        _, pending = wait(futures, timeout=30)
    finally:
        replica.stop("test over")
    assert not pending
    results = [f.result() for f in futures]
    assert all(r.error is None for r in results), [r.error for r in results if r.error]
    assert [len(r.output_ids) for r in results] == [a.max_new_tokens for a in arrivals]
    assert sorted(r.request_id for r in results) == list(range(len(arrivals)))
    stats = replica.stats()
    assert (stats.completed, stats.failed, stats.queued, stats.running) == (len(arrivals), 0, 0, 0)
    assert stats.tokens == sum(a.max_new_tokens for a in arrivals)
    assert stats.busy_tokens_per_s > 0 and stats.tokens_per_s > 0
    assert stats.p50_latency_s is not None and stats.p95_latency_s is not None
    assert 0 < stats.p50_latency_s <= stats.p95_latency_s <= (stats.p99_latency_s or 0)
    assert all(r.first_token_s is not None and r.first_token_s <= r.latency_s for r in results)
    # Rates cover the last RATE_WINDOW_S only: an idle replica's rates fall to 0.
    offset_s[0] = RATE_WINDOW_S + 1.0
    idle = replica.stats()
    assert (idle.tokens, idle.tokens_per_s, idle.busy_tokens_per_s) == (stats.tokens, 0.0, 0.0)


@pytest.mark.timeout(60)
def test_stop_fails_running_and_queued_requests_with_the_reason(model: torch.nn.Module) -> None:
    # A heavily capped L4 paces each forward ~100x slower: the first batch is still running.
    gpu = SimulatedGPU("L4")
    workload = Workload("decode", batch=1, model_params=1.3e9)
    gpu.set_workload(workload)
    gpu.set_power_limit_w(40)
    replica = InferenceReplica(
        model,
        PAD,
        batch_size=1,
        sim_throughput=gpu.throughput,
        reference_throughput_per_s=reference_throughput(workload),
        device="cpu",
    )
    replica.start()
    futures = [replica.submit([65, 66, 67], 50) for _ in range(5)]
    assert replica.stats().queued + replica.stats().running == 5
    replica.stop("node drained")
    results = [f.result(timeout=10) for f in futures]
    assert all(r.error == "replica stopped: node drained" for r in results)
    assert replica.stats().failed == 5
    late = replica.submit([65], 2).result(timeout=1)
    assert late.error == "replica stopped: node drained"


def test_requests_too_long_or_empty_get_errors_zero_tokens_completes(
    model: torch.nn.Module,
) -> None:
    replica = InferenceReplica(model, PAD, batch_size=2, device="cpu")
    too_long = replica.submit([1] * 250, 10).result(timeout=1)
    assert too_long.error is not None and "context of 256 tokens" in too_long.error
    assert replica.submit([], 3).result(timeout=1).error == "empty prompt"
    nothing = replica.submit([1, 2], 0).result(timeout=1)
    assert nothing.error is None and nothing.output_ids == []
    replica.stop()


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 95) == pytest.approx(95.0)


def test_from_spec_loads_a_local_model_directory(tmp_path: Path) -> None:
    build_untrained(BUILTINS["tiny"]).save_pretrained(str(tmp_path))
    ByteTokenizer().save(tmp_path)
    spec = JobSpec(name="i", kind="infer", model=str(tmp_path), infer=InferSection(batch_size=3))
    replica = InferenceReplica.from_spec(spec)
    assert (replica.batch_size, replica.pad_id, replica.context_tokens) == (3, PAD, 256)
    replica.start()
    try:
        assert len(replica.submit([72, 105], 4).result(timeout=20).output_ids) == 4
    finally:
        replica.stop()
    with pytest.raises(ConfigError, match="needs kind 'infer'"):
        InferenceReplica.from_spec(JobSpec(name="t", kind="train"))


@pytest.mark.timeout(60)
def test_a_new_request_joins_the_running_batch(model: torch.nn.Module) -> None:
    # Paced as an L4 (~11x slower than the CPU) so the long request runs for seconds.
    gpu = SimulatedGPU("L4")
    workload = Workload("decode", batch=4, model_params=1.3e9)
    gpu.set_workload(workload)
    replica = InferenceReplica(
        model,
        PAD,
        batch_size=4,
        sim_throughput=gpu.throughput,
        reference_throughput_per_s=reference_throughput(workload),
        device="cpu",
    )
    replica.start()
    prompt = [72, 101, 108, 108, 111]
    try:
        long = replica.submit(prompt, 60)
        while replica.stats().tokens == 0:
            time.sleep(0.01)
        short = replica.submit([84, 104], 2).result(timeout=30)
        assert short.error is None and len(short.output_ids) == 2
        assert not long.done()  # it joined the running batch instead of waiting for it
        result = long.result(timeout=30)
    finally:
        replica.stop()
    # Re-prefilling the running row when the batch was rebuilt continued it unchanged.
    alone = [s[0] for s in decode_steps(model, [prompt], 60, PAD, torch.device("cpu"))]
    assert result.output_ids == alone
