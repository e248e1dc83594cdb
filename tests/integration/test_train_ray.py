"""The working directory through Ray: `greenllm submit`'s upload (Ray's own packaging into the
GCS) and a rank run by a Ray actor pinned to the agent's node, in the unpacked package."""

from __future__ import annotations

import shutil
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from greenllm.cli.workdir import upload_to_ray
from greenllm.devices.simulated import SimulatedGPU
from greenllm.jobspec import JobSpec
from workers.shardhost import ShardHost

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch.distributed as dist
    import greenllm.job
    dist.init_process_group("gloo")
    print("cwd", os.getcwd(), flush=True)
    print("data", open("data.txt").read().strip(), flush=True)
    print("secret shipped", os.path.exists("secret.txt"), flush=True)
    greenllm.job.report(samples=5, step=1)
    if sys.argv[1:] == ["sleep"]:
        import time
        print("sleeping", flush=True)
        time.sleep(600)
    dist.destroy_process_group()
    """
)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def ray_node() -> Iterator[None]:
    import ray

    temp = tempfile.mkdtemp(prefix="glr", dir="/tmp")  # Ray's socket paths must stay short
    ray.init(
        num_cpus=1,
        object_store_memory=100 * 1024 * 1024,
        include_dashboard=False,
        _temp_dir=temp,
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def output(host: ShardHost) -> str:
    return b"".join(c.data for c in host.log_chunks()).decode()


def test_rank_runs_in_the_uploaded_package(ray_node: None, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "job.py").write_text(SCRIPT)
    (project / "data.txt").write_text("shipped through the GCS\n")
    (project / "secret.txt").write_text("not for the cluster\n")
    (project / ".gitignore").write_text("secret.txt\n")
    uri = upload_to_ray(project, "unused: this process is already connected")
    assert uri.startswith("gcs://_ray_pkg_") and uri.endswith(".zip")

    host = ShardHost("n", [SimulatedGPU("A100-SXM4", i, "n") for i in range(2)], tmp_path / "s")
    try:
        for index, args in enumerate(([], ["sleep"])):
            spec = JobSpec.model_validate(
                {"name": f"r{index}", "kind": "train",
                 "train": {"entrypoint": ["python", "job.py", *args], "working_dir": uri}}
            )  # fmt: skip
            host.start(f"r{index}-0", index, spec.model_dump_json())
        done = {"text": ""}

        def finished() -> bool:
            done["text"] += output(host)
            return host.statuses()[0].state != "running" and "sleeping" in done["text"]

        wait_for(finished, 180, "the first rank to end and the second to sleep")
        first = host.statuses()[0]
        assert first.state == "done", first
        assert first.work_units == 5 and first.steps == 1
        text = done["text"]
        assert "data shipped through the GCS" in text and "secret shipped False" in text
        cwd = next(line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("cwd"))
        assert Path(cwd) != project and "working_dir_files" in cwd  # unpacked by Ray

        started = time.monotonic()
        assert host.stop("r1-0", timeout_s=30)
        assert host.statuses()[1].state == "stopped"
        assert time.monotonic() - started < 20
    finally:
        host.stop_all(30)
