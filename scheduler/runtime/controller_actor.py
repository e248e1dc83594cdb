"""The controller as a detached, named Ray actor that Ray restarts when it dies."""

from __future__ import annotations

import os
from typing import Any

import ray

from greenllm.config import load_cluster_config
from greenllm.rpc.background import BackgroundService
from greenllm.rpc.foreground import configure_logging
from scheduler.runtime.raynodes import HEAD_NODE, NAMESPACE, node_resource
from scheduler.server.app import Controller

CONTROLLER_ACTOR = "greenllm-controller"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class ControllerActor:
    """Runs :class:`scheduler.server.app.Controller` on its own event-loop thread.

    Args:
        config_path: Absolute path of cluster.yaml.
    """

    def __init__(self, config_path: str) -> None:
        configure_logging()
        config = load_cluster_config(config_path)
        self._controller = Controller(config)
        self._service = BackgroundService(self._controller.serve, "greenllm-controller")

    def info(self) -> dict[str, Any]:
        """Where the controller listens and whether it runs."""
        error = self._service.error
        return {
            "pid": os.getpid(),
            "alive": self._service.alive(),
            "address": self._controller.address,
            "metrics_port": self._controller.metrics_port,
            "error": None if error is None else str(error),
        }

    def stop(self) -> None:
        """Stop serving (before the actor is killed)."""
        self._service.stop()


def start_controller(config_path: str) -> Any:
    """Create (or find) the detached controller actor on the head node; returns its handle."""
    return ControllerActor.options(  # type: ignore[attr-defined]
        name=CONTROLLER_ACTOR,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        resources={node_resource(HEAD_NODE): 0.01},
    ).remote(config_path)
