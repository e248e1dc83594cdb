"""The permission hint points at the systemd unit that grants CAP_SYS_ADMIN to the agent
alone, never at file capabilities on the Python interpreter."""

from __future__ import annotations

import configparser
from pathlib import Path

from greenllm.devices.nvml_errors import SYSTEMD_UNIT, permission_hint

REPO = Path(__file__).resolve().parents[2]


def test_hint_names_the_shipped_unit_and_never_setcap() -> None:
    hint = permission_hint()
    assert SYSTEMD_UNIT in hint and "CAP_SYS_ADMIN" in hint
    assert "setcap" not in hint and "python" not in hint.lower()
    assert (REPO / SYSTEMD_UNIT).is_file()


def test_unit_grants_cap_sys_admin_to_the_agent_service_alone() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / SYSTEMD_UNIT)
    service = unit["Service"]
    assert service["AmbientCapabilities"] == "CAP_SYS_ADMIN"
    assert service["CapabilityBoundingSet"] == "CAP_SYS_ADMIN"
    assert service["NoNewPrivileges"] == "yes"
    assert service["User"] != "root"
    assert " agent " in service["ExecStart"] + " "
    assert "ExecStopPost" not in service  # stopping never lifts the caps
