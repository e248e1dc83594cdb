"""What a GPU's settings were before greenllm first changed them, kept on disk.

The power limit and locked clocks are device-wide and outlive the process that set them. An
:class:`~greenllm.devices.nvml.NVMLGPU` reads the limit in force before its first change and,
given a directory, writes it to ``<dir>/<uuid>.json`` before changing anything. A greenllm
process that was killed (SIGKILL, a crash) leaves that file behind, so the next one knows
the operator's original limit rather than mistaking greenllm's own cap for it; the file is
removed once the settings are restored.

NVML has no getter for locked clocks: only a lock greenllm set itself is known (and reset on
restore); a lock an operator set before is replaced by greenllm's first lock.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreRecord:
    """Settings to put back on one GPU.

    Attributes:
        uuid: The GPU's NVML UUID.
        power_limit_w: The power limit in force before greenllm's first change, watts (None
            while greenllm has not changed the limit).
        clocks_locked: True when greenllm locked the SM clocks (they are reset on restore).
    """

    uuid: str
    power_limit_w: float | None = None
    clocks_locked: bool = False

    @property
    def empty(self) -> bool:
        """True when there is nothing to restore."""
        return self.power_limit_w is None and not self.clocks_locked


def record_path(directory: Path, uuid: str) -> Path:
    """``<directory>/<uuid>.json`` (the UUID made safe as a file name)."""
    return directory / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', uuid)}.json"


def load_record(directory: Path, uuid: str) -> RestoreRecord | None:
    """The record a greenllm process left for ``uuid``, or None (none, or unreadable)."""
    path = record_path(directory, uuid)
    try:
        data = json.loads(path.read_text())
        limit = data.get("power_limit_w")
        return RestoreRecord(
            uuid=uuid,
            power_limit_w=None if limit is None else float(limit),
            clocks_locked=bool(data.get("clocks_locked", False)),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, AttributeError) as err:
        logger.warning("ignoring unreadable GPU restore record %s: %s", path, err)
        return None


def save_record(directory: Path, record: RestoreRecord) -> None:
    """Write ``record`` atomically (or remove the file when it is empty)."""
    if record.empty:
        clear_record(directory, record.uuid)
        return
    directory.mkdir(parents=True, exist_ok=True)
    path = record_path(directory, record.uuid)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".restore-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(record), f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def clear_record(directory: Path, uuid: str) -> None:
    """Remove ``uuid``'s record, if any."""
    record_path(directory, uuid).unlink(missing_ok=True)


class RestoreState:
    """What greenllm changed on one GPU, and what to put back; mirrored on disk.

    The record is written before each first change (so a process killed half-way still
    leaves it) and taken back when a change fails or is undone.

    Args:
        uuid: The GPU's UUID.
        directory: Where records live; None keeps the state in memory only.
        where: Which GPU, for the log.
    """

    def __init__(self, uuid: str, directory: Path | None, where: str) -> None:
        self.uuid = uuid
        self._dir = directory
        self._limit_before_w: float | None = None
        self._clocks_flag = False
        #: True while a limit greenllm set is in force.
        self.limit_changed = False
        #: True while clocks greenllm locked are in force.
        self.clocks_locked = False
        record = load_record(directory, uuid) if directory is not None else None
        if record is not None and not record.empty:
            self._limit_before_w = record.power_limit_w
            self._clocks_flag = record.clocks_locked
            self.limit_changed = record.power_limit_w is not None
            self.clocks_locked = record.clocks_locked
            limit = "unchanged" if record.power_limit_w is None else f"{record.power_limit_w:g} W"
            logger.info(
                "%s: greenllm changed its settings earlier and has not restored them (limit "
                "before: %s, clocks locked: %s); they are restored when greenllm is stopped "
                "on purpose",
                where,
                limit,
                record.clocks_locked,
            )

    @property
    def limit_before_w(self) -> float | None:
        """The limit in force before greenllm's first change, watts (None: not changed)."""
        return self._limit_before_w

    def _save(self) -> None:
        if self._dir is not None:
            record = RestoreRecord(self.uuid, self._limit_before_w, self._clocks_flag)
            save_record(self._dir, record)

    def before_limit_change(self, read_limit_w: Callable[[], float]) -> None:
        """Remember the limit in force now, if greenllm has not changed it yet."""
        if self._limit_before_w is None:
            self._limit_before_w = read_limit_w()
            self._save()

    def limit_set(self, ok: bool) -> None:
        """Account a limit change that succeeded (``ok``) or failed."""
        if ok:
            self.limit_changed = True
        elif not self.limit_changed:
            self._limit_before_w = None
            self._save()

    def limit_restored(self) -> None:
        """The limit before greenllm's first change is back in force."""
        self.limit_changed = False
        self._limit_before_w = None
        self._save()

    def before_clock_lock(self) -> None:
        """Note that greenllm is about to lock clocks."""
        if not self._clocks_flag:
            self._clocks_flag = True
            self._save()

    def clocks_set(self, ok: bool) -> None:
        """Account a clock lock that succeeded (``ok``) or failed."""
        if ok:
            self.clocks_locked = True
        elif not self.clocks_locked:
            self._clocks_flag = False
            self._save()

    def clocks_reset(self) -> None:
        """Clocks are free again."""
        self.clocks_locked = False
        if self._clocks_flag:
            self._clocks_flag = False
            self._save()
