"""Hosts made of Linux network namespaces on a bridge, for tests/e2e/test_multihost.py.

Each host is a namespace with its own address on ``10.77.0.0/24`` (a veth named ``eth0``
in it, the other end on the bridge), its own /etc/hosts (``ip netns exec`` mounts
``/etc/netns/<ns>/hosts``: the machine's host name resolves to the host's own address, as on
a real machine) and its processes, found with ``ip netns pids``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOSTS = ("h1", "h2", "h3", "h4", "h5")
SUBNET = "10.77.0"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def namespaces_unavailable() -> str | None:
    """Why namespaces on a bridge cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"glmh{os.getpid() % 100000}"
    steps = [
        (f"ip netns add {probe}", f"ip netns del {probe}"),
        (f"ip link add {probe}b type bridge", f"ip link del {probe}b"),
        (f"ip link add {probe}v type veth peer name eth0 netns {probe}", f"ip link del {probe}v"),
        (f"ip netns exec {probe} true", ""),
    ]
    undo: list[list[str]] = []
    try:
        for make, remove in steps:
            made = subprocess.run(make.split(), capture_output=True, text=True)
            if made.returncode != 0:
                return f"`{make}` failed: {made.stderr.strip()}"
            if remove:
                undo.append(remove.split())
    finally:
        for remove in reversed(undo):
            subprocess.run(remove, capture_output=True)
    return None


class Hosts:
    """The namespaces, their veths and the bridge; every process in them is theirs."""

    def __init__(self, work: Path) -> None:
        tag = f"gm{os.getpid() % 100000}"
        self.bridge = f"{tag}b"
        self.ns = {h: f"{tag}-{h}" for h in HOSTS}
        self.veth = {h: f"{tag}v{i}" for i, h in enumerate(HOSTS, 1)}
        self.ip = {h: f"{SUBNET}.{i}" for i, h in enumerate(HOSTS, 1)}
        self.work = work
        self.env = {
            **os.environ,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",  # a real multi-node cluster
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
        }
        self._made_etc_netns = not Path("/etc/netns").exists()
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="gmh", dir="/tmp"))
        #: Hosts whose namespace is gone.
        self.lost: set[str] = set()

    def create(self) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "link", "set", self.bridge, "up")
        for host in HOSTS:
            ns, veth = self.ns[host], self.veth[host]
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _run("ip", "link", "set", veth, "master", self.bridge)
            _run("ip", "link", "set", veth, "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.ip[host]}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            # each host's name resolves to its own address, as on a real machine
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True, exist_ok=True)
            hostname = os.uname().nodename
            (etc / "hosts").write_text(f"127.0.0.1 localhost\n{self.ip[host]} {hostname}\n")

    def log(self, host: str) -> Path:
        """Where ``ray start`` on ``host`` writes."""
        return self.work / f"ray-{host}.log"

    def popen(self, host: str, *argv: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                ["ip", "netns", "exec", self.ns[host], *argv],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=REPO,
            )  # fmt: skip

    def run(
        self, host: str, *argv: str, env: dict[str, str] | None = None, timeout_s: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``host`` and wait for it."""
        return subprocess.run(
            ["ip", "netns", "exec", self.ns[host], *argv],
            capture_output=True, text=True, timeout=timeout_s, cwd=REPO,
            env={**self.env, **(env or {})},
        )  # fmt: skip

    def greenllm(
        self, host: str, *args: str, env: dict[str, str] | None = None, timeout_s: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a ``greenllm`` command in ``host`` and wait for it."""
        cli = [sys.executable, "-m", "greenllm.cli.main"]
        return self.run(host, *cli, *args, env=env, timeout_s=timeout_s)

    def pids(self, host: str) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.ns[host]], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def lose(self, host: str) -> None:
        """The host is gone: every process in it killed, its namespace and veth deleted."""
        for _ in range(20):
            pids = self.pids(host)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        subprocess.run(["ip", "netns", "del", self.ns[host]], capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth[host]], capture_output=True)
        shutil.rmtree(Path("/etc/netns") / self.ns[host], ignore_errors=True)
        self.lost.add(host)

    def destroy(self) -> None:
        for host in HOSTS:
            self.lose(host)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        if self._made_etc_netns:
            with contextlib.suppress(OSError):
                Path("/etc/netns").rmdir()
