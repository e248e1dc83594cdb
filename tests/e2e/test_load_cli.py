"""``greenllm load`` as a user runs it, against a greenllm endpoint on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from greenllm.devices.simulated import SimulatedGPU
from greenllm.serving.arrivals import CONVERSATION_TRACE, read_trace
from workers.serve.pool import ReplicaPool
from workers.serve.server import ApiServer, create_replicas

pytestmark = [pytest.mark.timeout(120), pytest.mark.tiny_model]


def greenllm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenllm.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=cwd,
        env=dict(os.environ),
    )


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    torch.set_num_threads(1)
    gpus = [SimulatedGPU("H100-SXM", index=0), SimulatedGPU("A100-SXM4", index=1)]
    server = ApiServer(ReplicaPool(create_replicas("tiny", gpus, max_queue=256))).start()
    try:
        yield server.base_url
    finally:
        server.stop()


def test_replays_a_minute_of_the_conversation_trace_time_scaled(
    endpoint: str, tmp_path: Path
) -> None:
    first_minute = [a for a in read_trace(CONVERSATION_TRACE) if a.time_s < 60]
    result = greenllm(
        "load", "--endpoint", endpoint, "--trace", str(CONVERSATION_TRACE),
        "--time-scale", "10", "--duration", "6", "--max-tokens", "16", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["sent"] == len(first_minute) and doc["ok"] == doc["sent"]
    assert doc["errors"] == {}
    assert doc["model"] == "tiny" and "10x" in doc["load"]
    assert 0 < doc["ttft_p50_s"] <= doc["ttft_p99_s"]
    assert 0 < doc["tpot_p50_s"] <= doc["tpot_p99_s"]
    assert doc["tokens_per_s"] > 0 and doc["completion_tokens"] > 0
    assert doc["energy_j"] > 0 and doc["j_per_token"] > 0
    notes = " ".join(doc["notes"])
    assert "compressed 10x" in notes and "context of 256 tokens" in notes


def test_poisson_chat_load_prints_a_text_report(endpoint: str, tmp_path: Path) -> None:
    result = greenllm(
        "load", "--endpoint", endpoint.removesuffix("/v1"), "--rate", "10",
        "--process", "poisson", "--duration", "2", "--api", "chat", "--max-tokens", "8",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        "J/token" in result.stdout and "TTFT" in result.stdout and "errors: none" in result.stdout
    )


def test_bad_input_is_one_line_on_stderr(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens\n1,2\n")
    cases = [
        (["--endpoint", "http://127.0.0.1:9", "--rate", "1", "--duration", "1"], "cannot reach"),
        (["--endpoint", "http://127.0.0.1:9", "--trace", str(bad), "--duration", "1"],
         "missing column(s) GeneratedTokens"),
        (["--endpoint", "http://x", "--duration", "1"], "exactly one of --rate and --trace"),
    ]  # fmt: skip
    for args, message in cases:
        result = greenllm("load", *args, cwd=tmp_path)
        assert result.returncode != 0 and result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("greenllm: error:"), result.stderr
        assert message in lines[0]
