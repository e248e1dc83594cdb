"""The agent's shard host runs real training ranks and inference replicas (no Ray)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from greenllm.devices.simulated import SimulatedGPU
from greenllm.jobspec import JobSpec
from workers.shardhost import ShardHost, split_shard_id

pytestmark = [pytest.mark.timeout(240), pytest.mark.tiny_model]


def wait_for(predicate, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_shard_ids() -> None:
    assert split_shard_id("job-7-12") == ("job-7", 12)


def endpoint_of(host: ShardHost) -> str:
    wait_for(lambda: bool(host.statuses()[0].extra.get("endpoint")), 120)
    return str(host.statuses()[0].extra["endpoint"])


def complete(endpoint: str, model: str, max_tokens: int) -> dict:  # type: ignore[type-arg]
    body = {"model": model, "prompt": "Hello", "max_tokens": max_tokens, "ignore_eos": True}
    reply = httpx.post(f"{endpoint}/completions", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()  # type: ignore[no-any-return]


@pytest.mark.slow  # ~13 s: two torch ranks
def test_two_training_ranks_on_one_node(tmp_path: Path) -> None:
    gpus = [SimulatedGPU("H100-SXM", i, "n") for i in range(2)]
    host = ShardHost("n", gpus, tmp_path)
    spec = JobSpec.model_validate(
        {
            "name": "t",
            "kind": "train",
            "model": "tiny",
            "shards": 2,
            "simulated_model_params": 1e8,
            "train": {"batch_size": 4, "seq_len": 32, "steps": 6, "checkpoint_interval_steps": 3},
        }
    )
    for rank in range(2):
        host.start(f"t-{rank}", rank, spec.model_dump_json())
    wait_for(lambda: gpus[0].workload is not None, 30)
    assert gpus[0].power_w() > gpus[0].spec.idle_power_w
    wait_for(lambda: all(s.state != "running" for s in host.statuses()), 200)
    statuses = {s.shard_id: s for s in host.statuses()}
    assert {s.state for s in statuses.values()} == {"done"}, statuses
    assert all(s.steps == 6 for s in statuses.values())
    assert sum(s.work_units for s in statuses.values()) == 6 * 2 * 4
    assert (tmp_path / "checkpoints" / "t").exists()
    assert gpus[0].workload is None


def test_an_inference_replica_serves_on_its_own_endpoint(tmp_path: Path) -> None:
    gpu = SimulatedGPU("L4", 0, "n")
    host = ShardHost("n", [gpu], tmp_path)
    spec = {"name": "i", "kind": "infer", "model": "tiny", "simulated_model_params": 1e8}
    host.start("i-0", 0, JobSpec.model_validate(spec).model_dump_json())
    endpoint = endpoint_of(host)
    assert endpoint.startswith("http://127.0.0.1:") and endpoint.endswith("/v1")
    answers = [complete(endpoint, "tiny", 4) for _ in range(3)]
    assert all(a["usage"]["energy_j"] > 0 for a in answers)
    wait_for(lambda: host.statuses()[0].requests == 3, 10)
    status = host.statuses()[0]
    assert status.work_units == 12 and status.failed_requests == 0
    assert status.state == "running"  # no load of its own: it serves until stopped
    assert host.stop("i-0", timeout_s=30)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{endpoint}/models", timeout=2)


def test_a_replica_with_a_load_finishes_after_it(tmp_path: Path) -> None:
    host = ShardHost("n", [SimulatedGPU("L4", 0, "n")], tmp_path)
    spec = JobSpec.model_validate(
        {
            "name": "i",
            "kind": "infer",
            "model": "tiny",
            "infer": {"load": {"process": "poisson", "rate_per_s": 1, "duration_s": 2}},
        }
    )
    host.start("i-0", 0, spec.model_dump_json())
    complete(endpoint_of(host), "tiny", 2)
    wait_for(lambda: host.statuses()[0].state != "running", 30)
    assert host.statuses()[0].state == "done"


def test_bad_start_requests(tmp_path: Path) -> None:
    host = ShardHost("n", [SimulatedGPU("L4", 0, "n")], tmp_path)
    with pytest.raises(Exception, match="no GPU 3"):
        host.start("j-0", 3, "{}")
    with pytest.raises(Exception, match="not <job>-<rank>"):
        host.start("nodash", 0, "{}")
    with pytest.raises(Exception, match="kind"):
        host.start("j-0", 0, '{"name": "j"}')
    assert not host.stop("j-9")


def test_inference_serves_a_compressed_artifact(tmp_path: Path) -> None:
    """An inference job may name a compressed artifact as its model."""
    import copy

    from greenllm.compression.artifacts import save_compressed
    from greenllm.compression.layers import conv1d_to_linear
    from greenllm.compression.quantize import Int8WeightOnlyLinear, quantize_weight_only
    from greenllm.workloads.registry import load_model

    loaded = load_model("tiny")
    model = copy.deepcopy(loaded.model)
    conv1d_to_linear(model)
    quantize_weight_only(model, 8)
    artifact = tmp_path / "tiny-int8"
    save_compressed(model, loaded.tokenizer, artifact, {"base_model": "tiny", "steps": ["int8"]})
    assert any(
        isinstance(m, Int8WeightOnlyLinear) for m in load_model(str(artifact)).model.modules()
    )

    host = ShardHost("n", [SimulatedGPU("A100-SXM4", 0, "n")], tmp_path / "state")
    spec = JobSpec.model_validate({"name": "q", "kind": "infer", "model": str(artifact)})
    host.start("q-0", 0, spec.model_dump_json())
    endpoint = endpoint_of(host)
    cards = httpx.get(f"{endpoint}/models", timeout=10).json()["data"]
    assert [c["id"] for c in cards] == ["tiny-int8"]
    assert complete(endpoint, "tiny-int8", 4)["usage"]["completion_tokens"] == 4
    host.stop_all(30)
