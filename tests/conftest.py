"""Shared pytest set-up: keep every test off real GPUs and out of the user's state."""

from __future__ import annotations

import os

# Tests never touch a real GPU or a real hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
