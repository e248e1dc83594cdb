"""The agent's fail-safe limit: a share of the budget within what the GPU reports, also for
a GPU model the catalog does not know."""

from __future__ import annotations

from pathlib import Path

from greenllm.config import load_cluster_config
from greenllm.devices.base import PowerLimitConstraints
from greenllm.devices.catalog import find_spec
from greenllm.devices.simulated import SimulatedGPU
from workers.agent.devices import failsafe_limit_w

REPO = Path(__file__).resolve().parents[2]


class ReportedGPU(SimulatedGPU):
    """A simulated H100 that reports another name and power range (as NVML would)."""

    def __init__(self, name: str, min_w: float, max_w: float) -> None:
        super().__init__("H100-SXM", index=0)
        self.gpu_type = name
        self._range = PowerLimitConstraints(min_w, max_w, max_w)

    def power_limit_constraints(self) -> PowerLimitConstraints:
        return self._range


def test_an_unknown_gpu_model_gets_a_failsafe_limit_in_its_range() -> None:
    config = load_cluster_config(REPO / "cluster.yaml")
    gpu = ReportedGPU("NVIDIA Future X 96GB", 300.0, 900.0)
    assert find_spec(gpu.gpu_type) is None
    limit_w = failsafe_limit_w(config, gpu)
    assert 300.0 <= limit_w <= 900.0
    assert find_spec(gpu.gpu_type) is not None  # known to this process from now on


def test_a_minimum_above_the_catalogs_is_respected() -> None:
    config = load_cluster_config(REPO / "cluster.yaml")
    share_w = config.failsafe_limit_w("H100-SXM")
    gpu = ReportedGPU("H100-SXM", share_w + 50.0, 700.0)
    assert failsafe_limit_w(config, gpu) == share_w + 50.0
    plain = SimulatedGPU("H100-SXM", index=0)
    assert failsafe_limit_w(config, plain) == share_w
