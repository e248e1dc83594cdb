"""Durability of the live controller: an acknowledged budget survives kill -9 at once, and a
state directory that fills up or turns read-only stops changes, not control."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import ControllerProcess, Fleet, LoopThread, write_config

from greenllm.config import load_cluster_config
from greenllm.rpc.client import ClusterClient, ControllerError


@pytest.mark.timeout(120)
def test_a_budget_acknowledged_just_before_kill9_is_enforced_after_restart(
    config, controller_process: ControllerProcess, fleet: Fleet, wait
) -> None:
    controller_process.start()
    wait(lambda: all(a.registered for a in fleet.agents), 20, "the agents to register")
    for budget_w in (1500.0, 2200.0, 1700.0):
        with ClusterClient(config) as client:
            client.set_budget(budget_w)  # acknowledged ...
        controller_process.kill9()  # ... and killed at once
        controller_process.start()
        with ClusterClient(config) as client:
            assert client.get_status().budget_w == budget_w
        usable_w = budget_w - config.budget.reserve_w
        wait(
            lambda u=usable_w: (
                all(a.registered for a in fleet.agents) and sum(fleet.limits_w()) <= u
            ),
            20,
            f"limits under {usable_w:g} W",
        )


def _root() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (root only), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenllm.cli.main", *args, "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(not _root(), reason="mounting a small tmpfs needs root (CI runs as root)")
@pytest.mark.timeout(120)
def test_a_full_state_directory_stops_changes_not_control(
    tmp_path: Path, loop_thread: LoopThread, wait
) -> None:
    """(A read-only one fails the same writes the same way: see test_sqlstore.py.)"""
    from scheduler.server.app import Controller

    with small_tmpfs(tmp_path / "state") as state_dir:
        config_path = write_config(tmp_path, state_dir=str(state_dir))
        config = load_cluster_config(config_path)
        controller = Controller(config)
        loop_thread.run(controller.start())
        fleet = Fleet(config, loop_thread)
        try:
            wait(lambda: all(a.registered for a in fleet.agents), 20, "the agents to register")
            with contextlib.suppress(OSError), (state_dir / "filler").open("wb") as fh:
                while True:
                    fh.write(b"\0" * 65536)
            with ClusterClient(config) as client:
                with pytest.raises(ControllerError) as raised:
                    client.set_budget(2600)  # a raise: refused
                assert raised.value.code == grpc.StatusCode.UNAVAILABLE
                assert "state not saved" in str(raised.value) and "disk full" in str(raised.value)
                assert "cannot rollback" not in str(raised.value)
                with pytest.raises(ControllerError):
                    client.submit_job('{"name": "j", "kind": "train"}')
                assert [j for j in client.list_jobs()] == []
                cli = _cli(config_path, "budget", "set", "2500")
                assert cli.returncode != 0 and len(cli.stderr.strip().splitlines()) == 1
                assert "state not saved" in cli.stderr and "Traceback" not in cli.stderr
                status = client.get_status()
                assert not status.state_writable and "disk full" in status.state_error
                # a cut is enforced at once (lowering is always safe), and says it is not kept
                with pytest.raises(ControllerError, match="will not survive a controller restart"):
                    client.set_budget(1500)
                wait(lambda: sum(fleet.limits_w()) <= 1400 + 1e-6, 15, "the cut to be obeyed")
            time.sleep(config.failsafe.timeout_s + 0.5)
            assert not any(a.failsafe_active for a in fleet.agents), "heartbeats kept going"
            assert all(a.registered for a in fleet.agents)
            (state_dir / "filler").unlink()
            with ClusterClient(config) as client:
                client.set_budget(2000)
                wait(lambda: client.get_status().state_writable, 10, "the store to work again")
        finally:
            fleet.stop()
            loop_thread.run(controller.stop(0))


@pytest.mark.timeout(120)
def test_a_database_overwritten_under_a_running_controller_is_noticed(
    config, config_path: Path, controller, fleet: Fleet, wait
) -> None:
    """Issue 19 (c): 64 KiB of random bytes over controller.db went unnoticed and `budget set`
    answered OK. Now the periodic check notices it: status and the metrics say so, naming the
    file, writes are refused (UNAVAILABLE, one line), and control goes on from memory."""
    import urllib.request

    db = config.state_dir / "controller.db"
    wait(lambda: all(a.registered for a in fleet.agents), 20, "the agents to register")
    db.write_bytes(os.urandom(64 * 1024))
    with ClusterClient(config) as client:
        wait(lambda: not client.get_status().state_writable, 20, "the store to notice")
        assert str(db) in client.get_status().state_error
        with pytest.raises(ControllerError) as raised:
            client.set_budget(2600)
        assert raised.value.code == grpc.StatusCode.UNAVAILABLE and str(db) in str(raised.value)
        cli = _cli(config_path, "budget", "set", "2000")
        assert cli.returncode != 0 and len(cli.stderr.strip().splitlines()) == 1
        assert "damaged" in cli.stderr and "Traceback" not in cli.stderr
        url = f"http://127.0.0.1:{config.controller.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert "greenllm_state_writable 0.0" in reply.read().decode()
    assert all(a.registered and not a.failsafe_active for a in fleet.agents)
