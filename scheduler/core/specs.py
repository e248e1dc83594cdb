"""Catalog look-ups cached for the hot path (decide() touches every GPU every period)."""

from __future__ import annotations

from functools import lru_cache

from greenllm.devices.catalog import GPUSpec, get_spec


@lru_cache(maxsize=256)
def spec_of(gpu_type: str) -> GPUSpec:
    """The catalog spec of ``gpu_type`` (see :func:`greenllm.devices.catalog.get_spec`)."""
    return get_spec(gpu_type)
