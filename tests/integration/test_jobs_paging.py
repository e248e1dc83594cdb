"""``greenllm jobs`` pages and ``greenllm status`` stays bounded, through the CLI on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from greenllm.rpc.client import ClusterClient
from scheduler.server.app import Controller


def cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenllm.cli.main", *args, "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(120)
def test_jobs_pages_with_a_total_and_a_next_token(
    config_path: Path, controller: Controller
) -> None:
    """Issue 19 (b): `jobs --json` gave the 100 newest, no total, no way to page."""
    with ClusterClient(controller.config) as client:
        ids = [client.submit_job(json.dumps({"name": "j", "kind": "train"})).id for _ in range(5)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        args = ["jobs", "--json", "--limit", "2"] + (["--page-token", token] if token else [])
        out = cli(config_path, *args)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["total"] == 5 and len(doc["jobs"]) <= 2
        seen += [j["id"] for j in doc["jobs"]]
        pages += 1
        token = doc["next_page_token"]
        if token is None:
            break
    assert pages == 3 and seen == ids[::-1]  # newest first, each once
    bad = cli(config_path, "jobs", "--page-token", "nope")
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    assert "page_token" in bad.stderr and "Traceback" not in bad.stderr
    status = json.loads(cli(config_path, "status", "--json").stdout)
    assert status["jobs_by_phase"] == {"pending": 5} and status["jobs_total"] == 5
    assert not status["jobs_truncated"] and len(status["jobs"]) == 5
