"""Allocation policies, registered as entry points in the ``greenllm.policies`` group."""

from __future__ import annotations

from importlib.metadata import entry_points

from greenllm.config import POLICY_ENTRY_POINT_GROUP, registered_policies
from greenllm.errors import ConfigError
from scheduler.core.problem import Policy


def load_policy(name: str) -> Policy:
    """Instantiate the policy registered as ``name``.

    Raises:
        ConfigError: No policy has that name; the message lists the known ones.
    """
    for ep in entry_points(group=POLICY_ENTRY_POINT_GROUP):
        if ep.name == name:
            policy: Policy = ep.load()()
            return policy
    known = ", ".join(registered_policies())
    raise ConfigError(f"unknown policy {name!r} (known: {known})")
