"""(a) A node's configured backend decides which GPUs it gets; ``auto`` only without a node."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_nvml import Patched, fake_nvml  # noqa: F401 - the fake NVML fixture

from greenllm.config import ClusterConfig, parse_cluster_config
from greenllm.devices.base import GPU
from greenllm.devices.discovery import get_gpus, resolve_backend
from greenllm.devices.nvml import NVMLGPU
from greenllm.devices.simulated import SimulatedGPU
from greenllm.errors import DeviceNotFoundError

CONFIG = {
    "nodes": [
        {"name": "sim-a", "gpus": [{"type": "H100-SXM", "count": 2}]},
        {"name": "real", "backend": "nvml"},
    ],
    "budget": {"budget_w": 2000, "reserve_w": 0},
}


def _config(tmp_path: Path) -> ClusterConfig:
    return parse_cluster_config({**CONFIG, "state_dir": str(tmp_path)})


def _close(gpus: list[GPU]) -> None:
    for g in gpus:
        g.close()


def test_simulated_node_never_gets_real_gpus_when_nvml_works(
    fake_nvml: Patched,  # noqa: F811
    tmp_path: Path,
) -> None:
    gpus = get_gpus(_config(tmp_path), node="sim-a")
    assert [type(g) for g in gpus] == [SimulatedGPU, SimulatedGPU]
    assert [g.uuid for g in gpus] == ["sim-sim-a-0", "sim-sim-a-1"]
    fake_nvml["nvmlInit"].assert_not_called()


def test_nvml_node_gets_the_real_gpus(fake_nvml: Patched, tmp_path: Path) -> None:  # noqa: F811
    gpus = get_gpus(_config(tmp_path), node="real")
    assert [type(g) for g in gpus] == [NVMLGPU]
    _close(gpus)


def test_nvml_node_without_nvml_is_an_error_not_a_simulation(
    fake_nvml: Patched,  # noqa: F811
    tmp_path: Path,
) -> None:
    fake_nvml.fake.init_error = 9  # NVML_ERROR_DRIVER_NOT_LOADED
    with pytest.raises(DeviceNotFoundError):
        get_gpus(_config(tmp_path), node="real")


def test_auto_without_a_node_prefers_nvml(fake_nvml: Patched, tmp_path: Path) -> None:  # noqa: F811
    gpus = get_gpus(_config(tmp_path))
    assert [type(g) for g in gpus] == [NVMLGPU]
    _close(gpus)


def test_explicit_backend_overrides_the_node(fake_nvml: Patched, tmp_path: Path) -> None:  # noqa: F811
    gpus = get_gpus(_config(tmp_path), node="sim-a", backend="nvml")
    assert [type(g) for g in gpus] == [NVMLGPU]
    _close(gpus)
    with pytest.raises(DeviceNotFoundError, match="node real is configured for NVML"):
        get_gpus(_config(tmp_path), node="real", backend="simulated")  # nothing to simulate


def test_resolve_backend(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert resolve_backend(config, "sim-a", "auto") == "simulated"
    assert resolve_backend(config, "real", "auto") == "nvml"
    assert resolve_backend(config, None, "auto") == "auto"
    assert resolve_backend(config, "real", "simulated") == "simulated"
    with pytest.raises(ValueError, match="backend"):
        resolve_backend(config, None, "cuda")
