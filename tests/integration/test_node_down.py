"""``greenllm node down NAME`` through the controller's API, on loopback."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from greenllm.proto.v1 import agent_pb2, cluster_pb2
from greenllm.rpc.client import ClusterClient
from scheduler.server.app import Controller


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenllm.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(120)
def test_node_down_counts_a_silent_node_at_its_failsafe_limits(
    config_path: Path, controller: Controller, raw_agents, messages, wait
) -> None:
    """A node that never reported is counted at its maximum; once an operator says it is
    down, at no more than its fail-safe limits, and status says so. A node whose agent
    reports is not down (one line, no traceback); nor is a node that does not exist."""
    shell = controller.shell
    config = controller.config
    with ClusterClient(config) as client:
        before_w = client.get_status().accounted_power_limit_w
        out = cli("node", "down", "node-h100", "--config", str(config_path), "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["changed"] is True

        def h100():  # type: ignore[no-untyped-def]
            return next(n for n in client.get_status().nodes if n.name == "node-h100")

        wait(lambda: h100().phase == cluster_pb2.NODE_PHASE_LOST, 10, "node-h100 lost")
        assert h100().down_reason == "an operator said so"
        h100_max_w = 4 * 700.0
        share_w = sum(config.failsafe_limit_w(t) for t in config.node("node-h100").gpu_types())
        after_w = client.get_status().accounted_power_limit_w
        assert after_w == pytest.approx(before_w - h100_max_w + min(h100_max_w, share_w))
        again = client.node_down("node-h100")
        assert not again.changed

        agent = raw_agents()
        agent.send(register=messages.register("node-l4"))
        agent.receive()
        reporting = threading.Event()

        def report() -> None:  # telemetry every 0.1 s, so node-l4 stays fresh however slow
            while not reporting.wait(0.1):
                agent.send(telemetry=messages.telemetry("node-l4"))

        def ack() -> None:  # and every command acked, so its stream is never ended
            with contextlib.suppress(grpc.RpcError):  # the stream is cancelled at the end
                for msg in agent.call:
                    if msg.WhichOneof("body") == "commands":
                        acks = [agent_pb2.CommandAck(command_id=c.command_id, success=True)
                                for c in msg.commands.commands]  # fmt: skip
                        agent.send(acks=agent_pb2.AckBatch(acks=acks))

        reporter = threading.Thread(target=report, daemon=True)
        acker = threading.Thread(target=ack, daemon=True)
        reporter.start()
        acker.start()
        try:
            wait(lambda: shell.nodes["node-l4"].last_telemetry_s is not None, 10, "telemetry")
            refused = cli("node", "down", "node-l4", "--config", str(config_path))
        finally:
            reporting.set()
            reporter.join(5)
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert "reporting telemetry" in refused.stderr and len(refused.stderr.splitlines()) == 1
        unknown = cli("node", "down", "nope", "--config", str(config_path))
        assert unknown.returncode != 0 and "no node 'nope'" in unknown.stderr
        assert len(unknown.stderr.splitlines()) == 1
