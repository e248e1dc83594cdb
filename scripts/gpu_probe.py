#!/usr/bin/env python3
"""Read-only probe of one NVIDIA GPU: what greenllm sees, and how NVML's readings behave.

    python3 scripts/gpu_probe.py [--gpu 0] [--out probe.json]

It NEVER changes the GPU: no power limit, clock, persistence-mode, MIG or reset call is made
(every NVML setter is replaced by one that raises before anything runs). It reports, as one
JSON document on stdout (and ``--out``), with a summary on stderr:

1. identity: name, UUID, architecture, driver/NVML/CUDA versions, persistence and MIG mode,
   and the catalog type greenllm maps the name to, with the catalog's figures against the
   reported ones (limits, clocks, memory);
2. greenllm's GPU list (what ``greenllm gpus --json`` shows, from greenllm's NVML backend);
3. the energy counter's update period, idle and under a bf16 matmul load;
4. power during the load: counter-derived, instant field, averaged (nvmlDeviceGetPowerUsage)
   and ``nvidia-smi --query-gpu=power.draw``, side by side;
5. short windows (5-200 ms) against the long-window power: how often they read 0 J;
6. instant vs averaged power in the seconds after the load stops;
7. the NVML UUID against torch's (this process's CUDA numbering, and a process started with
   ``CUDA_VISIBLE_DEVICES=<uuid>``, which is how greenllm points a shard at a GPU).

Needs Python 3.10+, nvidia-ml-py and torch (with CUDA) only: no pydantic, no Ray. It imports
only greenllm's device layer from this repository. Exit status: 0 all parts ran, 1 some part
was skipped or failed (see ``errors``), 2 no usable NVIDIA GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository
sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_probe_nvml

try:
    import pynvml
except ImportError:
    print("gpu_probe: nvidia-ml-py is not installed (pip install nvidia-ml-py)", file=sys.stderr)
    sys.exit(2)

from gpu_probe_nvml import (  # scripts/gpu_probe_nvml.py, beside this file
    counter_period,
    decay,
    forbid_setters,
    nvidia_smi,
    power_window,
    short_windows,
    try_read,
)

from greenllm.devices import catalog

LOAD_CODE = r"""
import sys, threading, time, torch
size, max_s = int(sys.argv[1]), float(sys.argv[2])
if not torch.cuda.is_available():
    print("error torch sees no CUDA device", flush=True); sys.exit(3)
print("uuid", str(torch.cuda.get_device_properties(0).uuid), flush=True)
a = torch.randn(size, size, device="cuda:0", dtype=torch.bfloat16)
b = torch.randn(size, size, device="cuda:0", dtype=torch.bfloat16)
torch.matmul(a, b); torch.cuda.synchronize()
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
print("ready", flush=True)
end, steps = time.monotonic() + max_s, 0
while not stop.is_set() and time.monotonic() < end:
    for _ in range(10):
        torch.matmul(a, b)
    torch.cuda.synchronize(); steps += 10
print("stopped", steps, flush=True)
"""


def identity(handle: Any, gpu_type: str | None) -> dict[str, Any]:
    """Who the GPU is, its modes, and the catalog's figures against the reported ones."""
    out: dict[str, Any] = {
        "name": try_read(lambda: pynvml.nvmlDeviceGetName(handle)),
        "uuid": try_read(lambda: pynvml.nvmlDeviceGetUUID(handle)),
        "pci_bus_id": try_read(lambda: pynvml.nvmlDeviceGetPciInfo(handle).busId),
        "architecture": try_read(lambda: pynvml.nvmlDeviceGetArchitecture(handle)),
        "driver_version": try_read(pynvml.nvmlSystemGetDriverVersion),
        "nvml_version": try_read(pynvml.nvmlSystemGetNVMLVersion),
        "cuda_driver_version": try_read(pynvml.nvmlSystemGetCudaDriverVersion),
        "persistence_mode": try_read(lambda: pynvml.nvmlDeviceGetPersistenceMode(handle)),
        "mig_mode": try_read(lambda: pynvml.nvmlDeviceGetMigMode(handle)),
        "requested_power_limit_w": try_read(
            lambda: pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000
        ),
        "max_sm_clock_mhz": try_read(
            lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)
        ),
        "catalog_type": gpu_type,
    }
    return out


def catalog_check(info: dict[str, Any]) -> dict[str, Any]:
    """The catalog's figures for the mapped type against what the GPU reports."""
    spec = catalog.find_spec(info["type"])
    if spec is None:
        prior = catalog.spec_for_inventory(
            info["type"],
            info["min_power_limit_w"],
            info["max_power_limit_w"],
            info["default_power_limit_w"],
            [info["min_sm_clock_mhz"] or 0, info["max_sm_clock_mhz"] or 0],
            info["memory_total_mib"],
        )
        return {"known": False, "reported_prior": dataclasses.asdict(prior)}
    pairs = {
        "max_power_limit_w": (spec.max_power_limit_w, info["max_power_limit_w"]),
        "min_power_limit_w": (spec.min_power_limit_w, info["min_power_limit_w"]),
        "default_power_limit_w": (spec.boot_power_limit_w, info["default_power_limit_w"]),
        "max_sm_clock_mhz": (spec.max_sm_clock_mhz, info["max_sm_clock_mhz"]),
        "min_sm_clock_mhz": (spec.min_sm_clock_mhz, info["min_sm_clock_mhz"]),
        "memory_mib": (spec.memory_mib, round(info["memory_total_mib"])),
    }
    return {
        "known": True,
        "figures": {k: {"catalog": a, "reported": b} for k, (a, b) in pairs.items()},
        "mismatches": sorted(k for k, (a, b) in pairs.items() if b is not None and a != b),
    }


def gpu_list(gpus: list[Any]) -> list[dict[str, Any]]:
    """What ``greenllm gpus --json`` lists, from greenllm's NVML backend."""
    rows = []
    for g in gpus:
        c = g.power_limit_constraints()
        clocks = g.supported_sm_clocks_mhz()
        s = g.sample()
        rows.append(
            {
                "index": g.index,
                "nvml_index": g.nvml_index,
                "uuid": g.uuid,
                "type": g.gpu_type,
                "product_name": g.product_name,
                "backend": "nvml",
                "power_limit_w": s.power_limit_w,
                "min_power_limit_w": c.min_power_limit_w,
                "max_power_limit_w": c.max_power_limit_w,
                "default_power_limit_w": c.default_power_limit_w,
                "power_w": s.power_w,
                "power_source": g.power_source,
                "uses_energy_counter": g.uses_energy_counter,
                "sm_clock_mhz": s.sm_clock_mhz,
                "min_sm_clock_mhz": clocks[0] if clocks else None,
                "max_sm_clock_mhz": clocks[-1] if clocks else None,
                "supported_sm_clocks": len(clocks),
                "memory_total_mib": g.memory_total_mib(),
                "memory_used_mib": s.memory_used_mib,
                "temperature_c": s.temperature_c,
                "utilization_pct": s.utilization_pct,
                "unavailable": list(s.unavailable),
            }
        )
    return rows


def torch_uuids() -> dict[str, Any]:
    """This process's CUDA devices and their UUIDs (torch's numbering)."""
    import torch

    if not torch.cuda.is_available():
        return {"error": "torch sees no CUDA device"}
    return {
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "CUDA_DEVICE_ORDER": os.environ.get("CUDA_DEVICE_ORDER"),
        "devices": [
            str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())
        ],
    }


def start_load(uuid: str, size: int, max_s: float) -> tuple[subprocess.Popen[str], str]:
    """Start the bf16 matmul load on ``uuid`` (via CUDA_VISIBLE_DEVICES); returns the
    process and the UUID torch reports inside it, once the load runs."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": uuid, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    proc = subprocess.Popen(
        [sys.executable, "-c", LOAD_CODE, str(size), str(max_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    seen_uuid, line = "", ""
    for line in proc.stdout:
        if line.startswith("uuid "):
            seen_uuid = line.split(maxsplit=1)[1].strip()
        elif line.startswith("ready"):
            return proc, seen_uuid
        elif line.startswith("error"):
            break
    proc.kill()
    raise RuntimeError(f"the load did not start ({line.strip() if line else 'no output'})")


def stop_load(proc: subprocess.Popen[str]) -> str:
    """Tell the load to stop; returns its last line once it has stopped."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("stop\n")
    proc.stdin.flush()
    line = proc.stdout.readline().strip()
    proc.wait(timeout=30)
    return line


def main(argv: list[str] | None = None) -> int:
    """Run every part; print the JSON report; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", type=int, default=0, help="greenllm's index of the GPU")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument("--load-s", type=float, default=3.0, help="power window under load")
    args = parser.parse_args(argv)
    forbid_setters()
    from greenllm.devices.cuda import normalise_uuid
    from greenllm.devices.nvml_discovery import discover_nvml
    from greenllm.errors import DeviceNotFoundError

    try:
        found = discover_nvml(power_poll_interval_s=None)
    except DeviceNotFoundError as err:
        print(f"gpu_probe: {err}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"errors": []}
    errors: list[str] = report["errors"]
    try:
        listed = gpu_list(found.gpus)
        unavailable = [dataclasses.asdict(u) for u in found.unavailable]
        report["greenllm_gpus"] = {"gpus": listed, "unavailable": unavailable}
        by_index = {g.index: g for g in found.gpus}
        if args.gpu not in by_index:
            print(f"gpu_probe: --gpu {args.gpu}: GPUs are {sorted(by_index)}", file=sys.stderr)
            return 2
        gpu = by_index[args.gpu]
        handle = pynvml.nvmlDeviceGetHandleByIndex(gpu.nvml_index)
        report["identity"] = identity(handle, catalog.catalog_type_for_nvml_name(gpu.product_name))
        report["catalog_check"] = catalog_check(listed[args.gpu])
        report["counter_idle"] = counter_period(handle, 2.0)
        report["power_idle"] = power_window(handle, 1.0)
        try:
            proc, load_uuid = start_load(gpu.uuid, args.matmul_size, 300.0)
        except (OSError, RuntimeError) as err:
            errors.append(f"load: {err}")
        else:
            try:
                report["load_uuid_seen_by_torch"] = load_uuid
                report["load_uuid_matches"] = normalise_uuid(load_uuid) == normalise_uuid(gpu.uuid)
                time.sleep(2.0)  # let power and clocks settle under the load
                report["counter_load"] = counter_period(handle, 2.0)
                report["power_load"] = power_window(handle, args.load_s)
                report["nvidia_smi_load"] = [nvidia_smi(gpu.nvml_index) for _ in range(3)]
                reference_w = report["power_load"]["counter_w"]
                report["short_windows_load"] = short_windows(handle, reference_w)
            finally:
                report["load_end"] = stop_load(proc)
            report["after_load"] = decay(handle)
        try:
            seen = torch_uuids()
            report["torch"] = seen
            nvml_uuids = [normalise_uuid(g.uuid) for g in found.gpus]
            torch_list = [normalise_uuid(u) for u in seen.get("devices", [])]
            report["cuda_index_of_nvml_gpu"] = {
                g.index: torch_list.index(u) if u in torch_list else None
                for g, u in zip(found.gpus, nvml_uuids, strict=True)
            }
        except ImportError as err:
            errors.append(f"torch: {err}")
    except Exception as err:  # report what was measured so far
        errors.append(f"{type(err).__name__}: {err}")
    finally:
        for g in found.gpus:
            g.close()
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    summarise(report)
    return 1 if errors else 0


def summarise(r: dict[str, Any]) -> None:
    """A few lines on stderr."""

    def show(*parts: object) -> None:
        print(*parts, file=sys.stderr)

    ident = r.get("identity", {})
    show(f"GPU: {ident.get('name')} {ident.get('uuid')} -> catalog {ident.get('catalog_type')}")
    show(f"catalog mismatches: {r.get('catalog_check', {}).get('mismatches')}")
    for key in ("counter_idle", "counter_load"):
        period = (r.get(key) or {}).get("period_ms") or {}
        show(f"{key}: energy counter period median {period.get('median')} ms")
    load = r.get("power_load") or {}
    inst, avg = load.get("instant_w") or {}, load.get("average_w") or {}
    show(
        f"power under load: counter {load.get('counter_w')} W, instant {inst.get('mean')} W, "
        f"average {avg.get('mean')} W, nvidia-smi {r.get('nvidia_smi_load')}"
    )
    show(f"UUID under CUDA_VISIBLE_DEVICES=<uuid> matches: {r.get('load_uuid_matches')}")
    show(f"cuda index of each greenllm GPU here: {r.get('cuda_index_of_nvml_gpu')}")
    if r["errors"]:
        show(f"errors: {r['errors']}")


if __name__ == "__main__":
    sys.exit(main())
