"""The node agent as a Ray actor pinned to its node, restarted by Ray when it dies.

The controller side starts it through the ``greenllm.runtime`` entry point ``agent``
(scheduler/ never imports workers/), and hands it everything at start: the cluster config
(as a document, so no file has to exist on the agent's machine), the node's name and token,
the CA certificate to trust and the controller's address.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import ray

from greenllm.config import ClusterConfig
from greenllm.errors import GreenllmError
from greenllm.service.foreground import configure_logging
from greenllm.service.thread import BackgroundService
from workers.agent.agent import NodeAgent
from workers.shardhost import ShardHost

log = logging.getLogger(__name__)

#: Where an agent keeps its state when the controller's state directory cannot be made on
#: its machine (default ``~/.greenllm/agent``).
AGENT_STATE_DIR_ENV = "GREENLLM_AGENT_STATE_DIR"


def local_state_dir(config: ClusterConfig) -> Path:
    """A writable state directory on this machine: the config's (made if missing), else
    ``$GREENLLM_AGENT_STATE_DIR``, else ``~/.greenllm/agent``."""
    for candidate in (config.state_dir, os.environ.get(AGENT_STATE_DIR_ENV)):
        if not candidate:
            continue
        path = Path(candidate)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    fallback = Path.home() / ".greenllm" / "agent"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class AgentActor:
    """Runs :class:`workers.agent.agent.NodeAgent` for one node on its own thread.

    A problem a user can fix (no usable GPU, a bad token) does not kill the actor (Ray would
    start it again and again): it is kept, and :meth:`info` reports it.

    Args:
        config: The cluster config as a document (``ClusterConfig.model_dump(mode="json")``).
        node: The node's name in ``config``.
        token: The node's token (None: auth is off, or ``$GREENLLM_AGENT_TOKEN``).
        ca_pem: The CA certificate the controller's TLS certificate is signed by.
        address: The controller's address (None: ``config.controller.address``).
    """

    def __init__(
        self,
        config: dict[str, Any],
        node: str,
        token: str | None = None,
        ca_pem: bytes | None = None,
        address: str | None = None,
    ) -> None:
        configure_logging()
        self._node = node
        self._node_id = ray.get_runtime_context().get_node_id()
        self._agent: NodeAgent | None = None
        self._service: BackgroundService | None = None
        self._error: str | None = None
        try:
            cluster = ClusterConfig.model_validate(config)
            cluster = cluster.model_copy(update={"state_dir": local_state_dir(cluster)})
            self._agent = NodeAgent(
                cluster, node, token=token, address=address, tls_root_pem=ca_pem
            )
        except (GreenllmError, ValueError, OSError) as exc:
            self._error = " ".join(str(exc).split())
            log.error("agent of node %s cannot start: %s", node, self._error)
            return
        self._service = BackgroundService(self._agent.run, f"greenllm-agent-{node}")

    def info(self) -> dict[str, Any]:
        """Its node, whether it runs, is registered, or holds its fail-safe limits."""
        error = self._error
        if error is None and self._service is not None and self._service.error is not None:
            error = str(self._service.error)
        return {
            "node": self._node,
            "node_id": self._node_id,
            "pid": os.getpid(),
            "alive": self._service is not None and self._service.alive(),
            "registered": self._agent is not None and self._agent.registered,
            "failsafe_active": self._agent is not None and self._agent.failsafe_active,
            "error": error,
        }

    def stop(self) -> None:
        """Stop the agent and its shards, and restore its GPUs' default limits and clocks."""
        if self._service is not None:
            self._service.stop()
        if self._agent is None:
            return
        if isinstance(self._agent.shards, ShardHost):
            self._agent.shards.stop_all()
        for gpu in self._agent.gpus:
            gpu.restore_defaults()
