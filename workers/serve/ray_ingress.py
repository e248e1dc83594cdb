"""The API as a Ray Serve ingress: one Serve deployment whose replica holds the engines.

    from ray import serve
    app = openai_deployment().bind("tiny", ["H100-SXM", "L4"])
    handle = serve.run(app, name="job-7", route_prefix="/job-7")
    handle.set_weights.remote({"replica-0": 3.0, "replica-1": 1.0})
    handle.replica_metrics.remote().result()

The FastAPI app is built inside the Serve replica, after the engines exist
(``__serve_build_asgi_app__``), so nothing but the arguments crosses processes. ``ray`` is
imported only when this is called: the app and the engines work without Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from greenllm.devices.base import GPU
from greenllm.devices.simulated import SimulatedGPU
from greenllm.errors import GreenllmError
from workers.serve.openai_app import create_app
from workers.serve.pool import ReplicaPool
from workers.serve.server import create_replicas


def gpus_from_names(names: list[str]) -> list[GPU]:
    """GPUs by name: a catalog type (simulated) or ``nvml:<index>`` (a real GPU).

    Raises:
        GreenllmError: Unknown type, or no such NVIDIA GPU.
    """
    gpus: list[GPU] = []
    for i, name in enumerate(names):
        if name.startswith("nvml:"):
            from greenllm.devices.nvml import NVMLGPU

            gpus.append(NVMLGPU(int(name.split(":", 1)[1])))
        else:
            gpus.append(SimulatedGPU(name, index=i))
    return gpus


class OpenAIIngress:
    """The state of the Serve replica: the engines and their pool.

    Args:
        model: Model to serve (see :func:`workers.serve.server.create_replicas`).
        gpus: One replica per entry (see :func:`gpus_from_names`).
        max_batch: Most requests each engine decodes together.
        max_queue: Most requests waiting at each engine.
    """

    def __init__(
        self, model: str, gpus: list[str], max_batch: int = 8, max_queue: int = 64
    ) -> None:
        if not gpus:
            raise GreenllmError("an inference endpoint needs at least one GPU")
        self.pool = ReplicaPool(
            create_replicas(model, gpus_from_names(gpus), max_batch=max_batch, max_queue=max_queue)
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.pool)

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Set routing weights (replica name -> weight)."""
        self.pool.set_weights(weights)

    def replica_metrics(self) -> dict[str, dict[str, Any]]:
        """Every engine's figures, by replica name."""
        return {name: m.to_dict() for name, m in self.pool.metrics().items()}

    def stop_replica(self, name: str, reason: str = "replica stopped") -> bool:
        """Stop one engine (its requests fail); False if unknown."""
        replica = self.pool.replicas().get(name)
        if replica is None:
            return False
        replica.stop(reason)
        return True

    def __del__(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.stop_all("endpoint stopped")


def openai_deployment(**options: Any) -> Any:
    """The Serve deployment of :class:`OpenAIIngress` (``options`` go to
    ``serve.deployment``, e.g. ``name``, ``ray_actor_options``)."""
    from ray import serve

    ingress = serve.ingress()(OpenAIIngress)
    return serve.deployment(**{"name": "greenllm-openai", **options})(ingress)
