"""Shared pytest set-up: keep every test off real GPUs and out of the user's state, and
train the built-in ``tiny`` model once per run, before the first test that needs it."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

# Tests never touch a real GPU or a real hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

#: Marks a test that needs the trained built-in ``tiny`` (its replicas or its own code load it).
TINY_MARKER = "tiny_model"
_CACHE_KEY = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """One model cache (``$GREENLLM_CACHE``) for the whole run, never the user's: every
    test, CLI subprocess, Ray worker and inference replica of the run inherits it."""
    config.addinivalue_line(
        "markers", f"{TINY_MARKER}: needs the trained built-in tiny model (trained once a run)"
    )
    cache = Path(tempfile.mkdtemp(prefix="greenllm-test-cache-"))
    config.stash[_CACHE_KEY] = cache
    os.environ["GREENLLM_CACHE"] = str(cache)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Train ``tiny`` (1-4 min on 2 cores) before the run when a selected test needs it,
    so no test pays for it inside its own timeout and no module trains it again."""
    if session.config.option.collectonly or not any(
        item.get_closest_marker(TINY_MARKER) for item in session.items
    ):
        return
    from greenllm.workloads.registry import pretrained_builtin

    started = time.monotonic()
    pretrained_builtin("tiny")
    print(f"\ntiny model ready in {time.monotonic() - started:.0f} s", file=sys.stderr)


def pytest_unconfigure(config: pytest.Config) -> None:
    cache = config.stash.get(_CACHE_KEY, None)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="session")
def model_cache(pytestconfig: pytest.Config) -> Path:
    """The run's model cache (``$GREENLLM_CACHE``)."""
    return pytestconfig.stash[_CACHE_KEY]
