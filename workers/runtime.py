"""The node agent as a Ray actor pinned to its node, restarted by Ray when it dies.

The controller side starts it through the ``greenllm.runtime`` entry point ``agent``
(scheduler/ never imports workers/).
"""

from __future__ import annotations

from typing import Any

import ray

from greenllm.config import load_cluster_config
from greenllm.rpc.background import BackgroundService
from greenllm.rpc.foreground import configure_logging
from workers.agent.agent import NodeAgent
from workers.shardhost import ShardHost


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class AgentActor:
    """Runs :class:`workers.agent.agent.NodeAgent` for one node on its own thread.

    Args:
        config_path: Absolute path of cluster.yaml.
        node: The node's name.
    """

    def __init__(self, config_path: str, node: str) -> None:
        configure_logging()
        self._agent = NodeAgent(load_cluster_config(config_path), node)
        self._service = BackgroundService(self._agent.run, f"greenllm-agent-{node}")

    def info(self) -> dict[str, Any]:
        """Whether the agent runs, is registered, or holds its fail-safe limits."""
        error = self._service.error
        return {
            "alive": self._service.alive(),
            "registered": self._agent.registered,
            "failsafe_active": self._agent.failsafe_active,
            "error": None if error is None else str(error),
        }

    def stop(self) -> None:
        """Stop the agent and its shards, and restore its GPUs' default limits and clocks."""
        self._service.stop()
        if isinstance(self._agent.shards, ShardHost):
            self._agent.shards.stop_all()
        for gpu in self._agent.gpus:
            gpu.restore_defaults()
