"""CPU and DRAM energy from Intel RAPL through the Linux powercap interface.

Each RAPL zone is a folder ``/sys/class/powercap/intel-rapl:N`` (a CPU package, or
``psys``) with subzones ``intel-rapl:N:M`` (``core``, ``uncore``, ``dram``). Every zone has
a ``name`` file, an ``energy_uj`` counter in microjoules and ``max_energy_range_uj``, the
value at which the counter wraps to zero. AMD CPUs expose the same files on recent kernels.

The counter is often unreadable: no powercap folder (virtual machines, containers, non-x86
hosts) or, since Linux 5.10 (CVE-2020-8694), ``energy_uj`` readable by root only. Then
the reader is *unavailable* and says why; it never reports zero joules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: Where the kernel exposes powercap zones.
DEFAULT_POWERCAP_ROOT = Path("/sys/class/powercap")

_ZONE_DIR = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")
_UJ_PER_J = 1_000_000.0


@dataclass(frozen=True)
class RaplZone:
    """One RAPL zone.

    Attributes:
        key: Unique label: the zone name (``package-0``, ``psys``) or, for a subzone,
            ``<parent>/<name>`` (``package-0/dram``).
        name: Contents of the zone's ``name`` file.
        path: The zone folder.
        max_energy_range_uj: Counter value at which ``energy_uj`` wraps, microjoules.
        in_total: Whether the zone counts towards the CPU total: packages and DRAM do;
            ``core``/``uncore`` are already inside their package, and ``psys`` covers the
            whole platform including the packages.
    """

    key: str
    name: str
    path: Path
    max_energy_range_uj: int
    in_total: bool


class RaplReader:
    """Reads the RAPL counters of every zone and keeps wrap-corrected totals.

    Call :meth:`read_j` at least once per wrap period of the counters (minutes at full
    load on typical servers) to catch every wraparound; a window spanning several wraps
    between two reads under-counts.

    Args:
        root: The powercap folder (injectable so tests use a fake tree).
    """

    def __init__(self, root: str | Path = DEFAULT_POWERCAP_ROOT) -> None:
        self.root = Path(root)
        self.zones: list[RaplZone] = []
        self.unavailable_reason: str | None = None
        self._last_uj: dict[str, int] = {}
        self._total_j: dict[str, float] = {}
        try:
            self.zones = _discover(self.root)
            if not self.zones:
                self.unavailable_reason = f"no RAPL zones under {self.root}"
            else:
                self._last_uj = self._read_counters_uj()
                self._total_j = {z.key: 0.0 for z in self.zones}
        except PermissionError as exc:
            self.unavailable_reason = (
                f"permission denied reading {exc.filename or self.root} (RAPL counters are "
                "root-only since Linux 5.10; run as root or grant read access to energy_uj)"
            )
        except FileNotFoundError:
            self.unavailable_reason = f"no RAPL powercap interface at {self.root}"
        except (OSError, ValueError) as exc:
            self.unavailable_reason = f"cannot read RAPL under {self.root}: {exc}"
        if self.unavailable_reason:
            self.zones = []

    @property
    def available(self) -> bool:
        """Whether the counters could be read."""
        return self.unavailable_reason is None

    def _read_counters_uj(self) -> dict[str, int]:
        return {z.key: int((z.path / "energy_uj").read_text().strip()) for z in self.zones}

    def read_j(self) -> dict[str, float] | None:
        """Energy of each zone since this reader was created, joules.

        Returns:
            ``{zone key: joules}``, or None when RAPL is unavailable (see
            :attr:`unavailable_reason`, which is set if a read fails now).
        """
        if not self.available:
            return None
        try:
            now_uj = self._read_counters_uj()
        except (OSError, ValueError) as exc:
            self.unavailable_reason = f"RAPL read failed: {exc}"
            return None
        for zone in self.zones:
            self._total_j[zone.key] += (
                counter_delta_uj(
                    self._last_uj[zone.key], now_uj[zone.key], zone.max_energy_range_uj
                )
                / _UJ_PER_J
            )
        self._last_uj = now_uj
        return dict(self._total_j)


def counter_delta_uj(before_uj: int, after_uj: int, max_energy_range_uj: int) -> int:
    """Energy between two readings of a wrapping counter, microjoules.

    Args:
        before_uj: Earlier reading.
        after_uj: Later reading; smaller than ``before_uj`` when the counter wrapped once.
        max_energy_range_uj: The counter's range (it counts ``0 .. max_energy_range_uj``).
    """
    if after_uj >= before_uj:
        return after_uj - before_uj
    return after_uj + max_energy_range_uj + 1 - before_uj


def _discover(root: Path) -> list[RaplZone]:
    """The zones under ``root``, packages before their subzones, sorted by index."""
    found: list[tuple[tuple[int, int], Path]] = []
    for entry in root.iterdir():
        match = _ZONE_DIR.match(entry.name)
        if match:
            sub = int(match.group(2)) if match.group(2) is not None else -1
            found.append(((int(match.group(1)), sub), entry))
        # Subzones may also appear only nested inside their parent folder.
        if match and match.group(2) is None and entry.is_dir():
            for child in entry.iterdir():
                child_match = _ZONE_DIR.match(child.name)
                if child_match and child_match.group(2) is not None:
                    found.append(((int(child_match.group(1)), int(child_match.group(2))), child))
    by_index: dict[tuple[int, int], Path] = {}
    for index, path in sorted(found, key=lambda f: f[0]):
        by_index.setdefault(index, path)
    zones: list[RaplZone] = []
    names: dict[int, str] = {}
    for (pkg, sub), path in sorted(by_index.items()):
        name = (path / "name").read_text().strip()
        max_uj = int((path / "max_energy_range_uj").read_text().strip())
        (path / "energy_uj").read_text()  # fail now (PermissionError) rather than later
        if sub < 0:
            names[pkg] = name
            key, in_total = name, name.startswith("package")
        else:
            key, in_total = f"{names.get(pkg, f'zone-{pkg}')}/{name}", name == "dram"
        if any(z.key == key for z in zones):
            key = f"{key}#{pkg}" if sub < 0 else f"{key}#{pkg}:{sub}"
        zones.append(RaplZone(key, name, path, max_uj, in_total))
    return zones
