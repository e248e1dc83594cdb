#!/usr/bin/env python3
"""Put back the GPU settings greenllm changed and did not restore (after SIGKILL, a crash,
or an agent service stopped for good).

    sudo python3 scripts/gpu_restore.py --state-dir /var/lib/greenllm [--dry-run]

Reads ``<state-dir>/gpu-restore/<uuid>.json`` (written before greenllm's first change to each
GPU), sets each listed GPU's power limit back to the one in force before greenllm, resets
the SM clocks greenllm locked, and removes the file. GPUs without a file are not touched.
Do not run it while a greenllm agent still manages these GPUs: the controller counts them at
their capped limits.

Needs only Python 3, nvidia-ml-py and this repository (no pydantic, no Ray); changing
settings needs root or CAP_SYS_ADMIN. Exits 0 when everything listed was restored, 1 when
something failed, 2 when NVML is unusable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from greenllm.devices.nvml_restore import load_record
from greenllm.errors import DeviceError, DeviceNotFoundError

RESTORE_SUBDIR = "gpu-restore"  # as greenllm.devices.discovery.RESTORE_SUBDIR


def main(argv: list[str] | None = None) -> int:
    """Restore every GPU with a record; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, required=True, help="greenllm's state_dir")
    parser.add_argument("--dry-run", action="store_true", help="say what would be restored")
    args = parser.parse_args(argv)
    directory = args.state_dir / RESTORE_SUBDIR
    try:
        from greenllm.devices.nvml_discovery import discover_nvml

        found = discover_nvml(power_poll_interval_s=None, restore_dir=directory)
    except DeviceNotFoundError as err:
        print(f"gpu_restore: {err}", file=sys.stderr)
        return 2
    status = 0
    try:
        for gpu in found.gpus:
            record = load_record(directory, gpu.uuid)
            if record is None or record.empty:
                continue
            limit = "unchanged" if record.power_limit_w is None else f"{record.power_limit_w:g} W"
            what = f"limit -> {limit}, clocks reset: {record.clocks_locked}"
            if args.dry_run:
                print(f"GPU {gpu.index} {gpu.uuid}: would restore ({what})")
                continue
            try:
                gpu.restore_defaults()
                print(f"GPU {gpu.index} {gpu.uuid}: restored ({what})")
            except DeviceError as err:
                print(f"GPU {gpu.index} {gpu.uuid}: {err}", file=sys.stderr)
                status = 1
    finally:
        for gpu in found.gpus:
            gpu.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
