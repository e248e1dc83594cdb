"""Shared pytest set-up: keep every test off real GPUs and out of the user's state."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests never touch a real GPU or a real hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

#: Where the run's model cache lives, under pytest's base temporary directory.
MODEL_CACHE_DIR = "greenllm-cache"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One model cache (``$GREENLLM_CACHE``) for the whole run, never the user's.

    The built-in ``tiny`` is trained on first use (1-4 min on 2 cores) and cached by recipe;
    every test, CLI subprocess, Ray worker and inference replica of the run inherits this
    variable, so it is trained once per run instead of once per module that needs it.
    """
    cache = tmp_path_factory.getbasetemp() / MODEL_CACHE_DIR
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENLLM_CACHE", str(cache))
        yield cache
