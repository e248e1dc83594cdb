"""Hosts on one machine: Linux network namespaces on a bridge, each its own address
(10.77.0.1-5), its own /etc/hosts and its own Ray temp directory. Plain Ray joins three of
them (``ray start --head`` in one, ``ray start --address`` in the others), then
``greenllm up --address`` from the head's namespace, and everything runs as on real machines:

- ``greenllm status`` lists the three nodes;
- a fourth host joins the Ray cluster later: its agent registers within 10 s, and from there
  (no state directory on it) ``greenllm status`` finds the controller through Ray and reaches
  it over TLS with the cluster's CA;
- a fifth host with a GPU that cluster.yaml does not describe joins: the controller takes it
  in as an NVML node named by its address;
- a user's 2-rank DDP script runs with one rank on each of two hosts (rendezvous over TCP on
  the hosts' addresses);
- a budget cut is obeyed on every host;
- deleting one host's namespace (its processes killed first) restarts the job on the others.

Only the namespaces' addresses are used. Needs root (``ip netns``): skipped with the reason
otherwise. Everything it made (namespaces, veths, bridge, /etc/netns files, processes) goes
in a finally.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from netns_hosts import HOSTS, REPO, SUBNET, Hosts, namespaces_unavailable

RAY = str(Path(sys.executable).parent / "ray")
#: The hosts Ray runs on when ``greenllm up`` starts; h4 joins later.
FIRST = HOSTS[:3]
#: The hosts cluster.yaml describes; h5 is not one (a machine with a GPU it does not list).
DESCRIBED = HOSTS[:4]
pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]

#: Health checks on the head as in the local cluster: a lost host is noticed in ~3 s.
HEAD_SYSTEM_CONFIG = (
    '{"health_check_period_ms":1000,"health_check_failure_threshold":3,'
    '"health_check_timeout_ms":1000,"health_check_initial_delay_ms":1000}'
)

TRAIN = """
import os, time
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
import greenllm.job

dist.init_process_group("gloo")
print(f"rank {dist.get_rank()} of {dist.get_world_size()} via {os.environ['MASTER_ADDR']}",
      flush=True)
model = DDP(torch.nn.Linear(32, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(1, 10**9):
    loss = model(torch.randn(16, 32)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    time.sleep(0.05)
    greenllm.job.report(samples=16, step=step)
"""


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if check():
            return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def start_ray(hosts: Hosts) -> None:
    """``ray start --head`` on h1, then ``ray start --address`` on h2 and h3 (in parallel)."""
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]
    head = [
        "--head", f"--node-ip-address={hosts.ip['h1']}", "--port=6379",
        "--include-dashboard=false", f"--system-config={HEAD_SYSTEM_CONFIG}",
    ]  # fmt: skip
    for group in (["h1"], list(FIRST[1:])):
        procs = {}
        for h in group:
            role = head if h == "h1" else [f"--address={hosts.ip['h1']}:6379",
                                           f"--node-ip-address={hosts.ip[h]}"]  # fmt: skip
            temp = f"--temp-dir={hosts.ray_tmp / h}"  # short: Ray's socket paths are limited
            procs[h] = hosts.popen(h, RAY, "start", *role, temp, *common, log=hosts.log(h))
        for h, proc in procs.items():
            assert proc.wait(90) == 0, hosts.log(h).read_text()[-2000:]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hosts, Path]]:
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(f"three hosts from network namespaces: {reason}")
    work = tmp_path_factory.mktemp("multihost")
    hosts = Hosts(work)
    data = yaml.safe_load((REPO / "cluster.yaml").read_text())
    data["nodes"] = [
        {"name": h, "gpus": [{"type": "A100-SXM4", "count": 1}], "match": {"address": hosts.ip[h]}}
        for h in DESCRIBED
    ]
    data.update(budget={"budget_w": 1000, "reserve_w": 50}, state_dir=str(work / "state"))
    data["failsafe"] = {"timeout_s": 3}
    config = work / "cluster.yaml"
    config.write_text(yaml.safe_dump(data))
    try:
        start = time.monotonic()
        hosts.create()
        start_ray(hosts)
        print(f"\nRay on {len(FIRST)} hosts in {time.monotonic() - start:.1f} s")
        start = time.monotonic()
        up = hosts.greenllm("h1", "up", "--address", f"{hosts.ip['h1']}:6379", "--config",
                            str(config), "--json", timeout_s=180)  # fmt: skip
        assert up.returncode == 0, up.stderr
        doc = json.loads(up.stdout)
        print(f"greenllm up --address in {time.monotonic() - start:.1f} s")
        assert doc["nodes"] == list(FIRST)
        assert any("h4 matches no Ray node yet" in n for n in doc["notes"])
        assert doc["controller_address"] == f"{hosts.ip['h1']}:50051"
        assert doc["ray_address"] == f"{hosts.ip['h1']}:6379" and not doc["started_ray"]
        yield hosts, config
    finally:
        if "h1" not in hosts.lost and hosts.pids("h1"):
            hosts.greenllm("h1", "down", "--config", str(config), timeout_s=60)
        hosts.destroy()


def query(hosts: Hosts, config: Path, *args: str, host: str = "h1") -> dict[str, Any]:
    """A ``--json`` command's document (tried three times: a loaded 2-core box can make one
    call miss its deadline)."""
    for attempt in range(3):
        proc = hosts.greenllm(host, *args, "--config", str(config), "--json")
        if proc.returncode == 0:
            doc: dict[str, Any] = json.loads(proc.stdout)
            return doc
        time.sleep(1.0 + attempt)
    raise AssertionError(proc.stderr)


def status(hosts: Hosts, config: Path) -> dict[str, Any]:
    return query(hosts, config, "status")


def job(hosts: Hosts, config: Path, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        j for j in query(hosts, config, "jobs")["jobs"] if j["id"] == job_id
    )
    return found


def limits_w(doc: dict[str, Any]) -> dict[str, float]:
    """The power limit of each described host's GPU, watts."""
    return {
        n["name"]: n["gpus"][0]["power_limit_w"] for n in doc["nodes"] if n["name"] in DESCRIBED
    }


def join_ray(hosts: Hosts, host: str, *extra: str) -> subprocess.Popen[bytes]:
    """``ray start --address`` on ``host`` (the caller waits for it)."""
    role = [f"--address={hosts.ip['h1']}:6379", f"--node-ip-address={hosts.ip[host]}"]
    temp = f"--temp-dir={hosts.ray_tmp / host}"
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]
    return hosts.popen(host, RAY, "start", *role, temp, *common, *extra, log=hosts.log(host))


def rank_hosts(hosts: Hosts) -> set[str]:
    """The hosts a rank of the training script runs in (by its process's namespace)."""
    found = set()
    for host in set(HOSTS) - hosts.lost:
        for pid in hosts.pids(host):
            with contextlib.suppress(OSError):
                if b"train.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.add(host)
    return found


def test_three_hosts_then_a_fourth_joins(cluster: tuple[Hosts, Path], tmp_path: Path) -> None:
    hosts, config = cluster
    doc = status(hosts, config)
    assert [n["name"] for n in doc["nodes"]] == list(DESCRIBED)
    connected = {n["name"] for n in doc["nodes"] if n["connected"]}
    assert connected == set(FIRST) and all(len(n["gpus"]) == 1 for n in doc["nodes"][:3])
    # h4 joins the Ray cluster: its agent is started and registers within 10 s
    joining = join_ray(hosts, "h4")
    assert joining.wait(90) == 0, hosts.log("h4").read_text()[-2000:]
    took = wait_for(
        lambda: all(n["connected"] for n in status(hosts, config)["nodes"]),
        10,
        "h4's agent to register",
    )
    print(f"h4's agent registered {took:.1f} s after its Ray node started")
    # from h4, with no state directory there: the controller through Ray, over TLS
    state_dir = Path(yaml.safe_load(config.read_text())["state_dir"])
    tokens = json.loads((state_dir / "tokens").read_text())
    data = yaml.safe_load(config.read_text())
    data["state_dir"] = str(tmp_path / "h4-state")
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(yaml.safe_dump(data))
    env = {"RAY_ADDRESS": f"{hosts.ip['h1']}:6379", "GREENLLM_TOKEN": tokens["operator"]}
    remote = hosts.greenllm("h4", "status", "--config", str(elsewhere), "--json", env=env)
    assert remote.returncode == 0, remote.stderr
    assert all(n["connected"] for n in json.loads(remote.stdout)["nodes"])
    assert not (tmp_path / "h4-state").exists()


def test_a_machine_cluster_yaml_does_not_describe(cluster: tuple[Hosts, Path]) -> None:
    """h5 joins with a GPU (as Ray counts them) and no cluster.yaml entry: it becomes an
    NVML node named by its address (the host name is shared), the controller takes it in,
    and its agent says why it cannot run here (no NVIDIA GPU in this test machine)."""
    hosts, config = cluster
    joining = join_ray(hosts, "h5", "--num-gpus=1")
    assert joining.wait(90) == 0, hosts.log("h5").read_text()[-2000:]
    name = hosts.ip["h5"]
    wait_for(lambda: name in [n["name"] for n in status(hosts, config)["nodes"]], 10, name)
    wait_for(
        lambda: all(n["connected"] for n in status(hosts, config)["nodes"] if n["name"] != name),
        20,
        "the described hosts connected again",
    )
    probe = (
        "import ray; ray.init(address='auto', namespace='greenllm', log_to_driver=False, "
        "logging_level='ERROR'); a = ray.get_actor('greenllm-agent-" + name + "'); "
        "print(ray.get(a.info.remote(), timeout=30)['error'])"
    )
    env = {"RAY_ADDRESS": f"{hosts.ip['h1']}:6379"}
    why = hosts.run("h1", sys.executable, "-c", probe, env=env)
    assert why.returncode == 0, why.stderr[-2000:]
    assert "NVIDIA" in why.stdout or "NVML" in why.stdout, why.stdout


def test_a_job_across_hosts_a_budget_cut_and_a_lost_host(
    cluster: tuple[Hosts, Path], tmp_path: Path
) -> None:
    hosts, config = cluster
    (tmp_path / "train.py").write_text(TRAIN)
    out = hosts.greenllm("h1", "submit", "--name", "ddp", "--shards", "2", "--working-dir",
                         str(tmp_path), "--config", str(config), "--json", "--",
                         "python", "train.py")  # fmt: skip
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["id"]
    took = wait_for(
        lambda: job(hosts, config, job_id)["state"] == "running" and len(rank_hosts(hosts)) == 2,
        180,
        "both ranks running, on two hosts",
    )
    busy = rank_hosts(hosts)
    print(f"job running on {sorted(busy)} after {took:.1f} s")
    wait_for(lambda: (job(hosts, config, job_id)["throughput"] or 0) > 0, 60, "throughput")
    for rank in (0, 1):  # rendezvous at rank 0's host address, from both hosts
        text = hosts.greenllm("h1", "logs", job_id, "--rank", str(rank), "--config", str(config))
        assert text.returncode == 0, text.stderr
        assert f"rank {rank} of 2 via {SUBNET}." in text.stdout, text.stdout

    before = limits_w(status(hosts, config))
    proc = hosts.greenllm("h1", "budget", "set", "600", "--config", str(config))
    assert proc.returncode == 0, proc.stderr

    def obeyed() -> bool:
        d = status(hosts, config)
        nodes = [n for n in d["nodes"] if n["name"] in DESCRIBED]
        gpus = [n["gpus"][0] for n in nodes]
        return (
            all(n["connected"] for n in nodes)
            and sum(g["power_limit_w"] for g in gpus) <= 600 - d["reserve_w"] + 1e-6
            and all(g["pending_power_limit_w"] is None for g in gpus)
            and all(g["power_limit_w"] <= g["commanded_power_limit_w"] + 1e-6 for g in gpus)
            and all(g["power_w"] <= g["power_limit_w"] + 1.0 for g in gpus)
        )

    wait_for(obeyed, 30, "every host to hold the new budget")
    after = limits_w(status(hosts, config))
    for host in busy:
        assert after[host] < before[host], (before, after)

    victim = sorted(busy - {"h1"})[-1]  # not the controller's host
    hosts.lose(victim)

    def restarted() -> bool:
        j = job(hosts, config, job_id)
        now = rank_hosts(hosts)
        return j["restarts"] >= 1 and j["state"] == "running" and len(now) == 2

    took = wait_for(restarted, 180, "the job to run again on the hosts left")
    print(f"restarted on {sorted(rank_hosts(hosts))} {took:.1f} s after {victim} was lost")
    d = status(hosts, config)
    lost = next(n for n in d["nodes"] if n["name"] == victim)
    assert not lost["connected"]
    assert d["accounted_power_limit_w"] <= d["budget_w"] - d["reserve_w"] + 1e-6
    proc = hosts.greenllm("h1", "cancel", job_id, "--config", str(config))
    assert proc.returncode == 0, proc.stderr
