"""``greenllm profile``: a workload's throughput and power across power limits or clocks."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import click

from greenllm.cli.output import emit_json, print_table, progress_console
from greenllm.devices import physics
from greenllm.devices.catalog import CATALOG, get_spec
from greenllm.errors import DeviceNotFoundError
from greenllm.profiling import (
    Knob,
    ProfileRow,
    check_settings,
    parse_range,
    profile_device,
    profile_model,
)


@click.command("profile")
@click.option(
    "--gpu-type",
    help=f"Profile the simulated model of this catalog type ({', '.join(CATALOG)}).",
)
@click.option(
    "--gpu",
    "gpu_index",
    type=int,
    help="Profile real NVIDIA GPU INDEX (as `greenllm gpus` numbers it) by running the load "
    "on that GPU, found by UUID, at each setting.",
)
@click.option(
    "--workload",
    type=click.Choice(list(physics.WORKLOAD_KINDS)),
    required=True,
    help="train and prefill are compute-bound; decode is memory-bound.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Sequences per step (the simulated profile's batch size).",
)
@click.option(
    "--model-params",
    type=click.FloatRange(min=1e6),
    default=1.3e9,
    show_default=True,
    help="Model size in parameters (simulated profile).",
)
@click.option("--power-limits", metavar="START:STOP:STEP", help="Power limits to visit, watts.")
@click.option("--sm-clocks", metavar="START:STOP:STEP", help="SM clocks to lock, MHz.")
@click.option(
    "--warmup-s",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Seconds run at each setting before measuring (power and clocks settle).",
)
@click.option(
    "--measure-s",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds measured at each setting.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of rows.")
def profile(
    gpu_type: str | None,
    gpu_index: int | None,
    workload: physics.WorkloadKind,
    batch: int,
    model_params: float,
    power_limits: str | None,
    sm_clocks: str | None,
    warmup_s: float,
    measure_s: float,
    as_json: bool,
) -> None:
    """Throughput, power and energy per unit across power limits or SM clocks.

    Rows are relative to the same workload uncapped at maximum clock. With --gpu-type
    the calibrated model answers at once; with --gpu the load really runs on that GPU
    (warm-up, then measurement) and the limit and clocks in force before are restored
    afterwards, also when the command is stopped with Ctrl-C or SIGTERM.
    """
    if (power_limits is None) == (sm_clocks is None):
        raise click.UsageError("give exactly one of --power-limits and --sm-clocks")
    if (gpu_type is None) == (gpu_index is None):
        raise click.UsageError("give exactly one of --gpu-type (simulated) and --gpu (real GPU)")
    knob: Knob = "power_limit" if power_limits else "sm_clock"
    spec_text = power_limits or sm_clocks or ""
    settings = parse_range(spec_text, "--power-limits" if power_limits else "--sm-clocks")
    work = physics.Workload(kind=workload, batch=batch, model_params=model_params)
    if gpu_type is not None:
        spec = get_spec(gpu_type)
        if knob == "power_limit":
            lo, hi, what = spec.min_power_limit_w, spec.max_power_limit_w, "--power-limits (W)"
        else:
            lo, hi, what = spec.min_sm_clock_mhz, spec.max_sm_clock_mhz, "--sm-clocks (MHz)"
        check_settings(lo, hi, settings, f"{what} on {spec.name}")
        rows = profile_model(spec, work, knob, settings)
        unit, gpu_name, simulated = work.unit, spec.name, True
    else:
        rows, gpu_name = _profile_real(gpu_index or 0, work, knob, settings, warmup_s, measure_s)
        unit, simulated = ("tokens" if workload == "decode" else "steps"), False
    context = {
        "gpu_type": gpu_name,
        "gpu_index": gpu_index,
        "simulated": simulated,
        "workload": workload,
        "batch": batch,
        "model_params": model_params if simulated else None,
        "unit": unit,
    }
    out = []
    for value, row in zip(settings, rows, strict=True):
        requested = {
            "requested_power_limit_w": value if knob == "power_limit" else None,
            "requested_sm_clock_mhz": value if knob == "sm_clock" else None,
        }
        out.append({**context, **requested, **row.to_dict()})
    if as_json:
        emit_json(out)
        return
    _print(rows, unit)
    moved = [
        f"{value:g} -> {row.sm_clock_mhz:g}"
        for value, row in zip(settings, rows, strict=True)
        if knob == "sm_clock" and abs(row.sm_clock_mhz - value) >= 0.5
    ]
    if moved:
        note = "reached" if not simulated else "on the GPU's clock grid"
        sys.stdout.flush()
        click.echo(f"note: SM clocks {note}: {', '.join(moved)} MHz", err=True)


@contextmanager
def sigterm_raises_system_exit() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` for the ``with`` block, so ``finally`` blocks
    (restoring the GPU's settings) run; the previous handler is put back afterwards.

    Outside the main thread (where signals cannot be handled) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _profile_real(
    index: int,
    work: physics.Workload,
    knob: Knob,
    settings: list[float],
    warmup_s: float,
    measure_s: float,
) -> tuple[list[ProfileRow], str]:
    """Profile NVML GPU ``index``; returns the rows and the GPU's type."""
    from greenllm.devices.cuda import torch_device_index
    from greenllm.devices.nvml import discover_nvml_gpus
    from greenllm.gpu_load import torch_runner

    with sigterm_raises_system_exit():
        gpus = discover_nvml_gpus()
        try:
            by_index = {g.index: g for g in gpus}
            if index not in by_index:
                raise DeviceNotFoundError(
                    f"--gpu {index}: this node's NVIDIA GPUs are {sorted(by_index)}"
                )
            gpu = by_index[index]
            console = progress_console()
            # NVML's GPU N is not necessarily cuda:N: run the load on the CUDA device whose
            # UUID is the one measured and capped.
            runner = torch_runner(work.kind, work.batch, torch_device_index(gpu.uuid))
            rows = profile_device(
                gpu, runner, knob, settings, warmup_s, measure_s, progress=console.print
            )
            return rows, gpu.gpu_type
        finally:
            for g in gpus:
                g.close()


def _print(rows: list[ProfileRow], unit: str) -> None:
    table = [
        [
            r.power_limit_w,
            r.sm_clock_mhz,
            r.power_w,
            r.throughput,
            r.relative_throughput,
            r.joules_per_unit,
            r.relative_energy,
        ]
        for r in rows
    ]
    cols = [
        "limit W",
        "SM MHz",
        "power W",
        f"{unit}/s",
        "rel. throughput",
        f"J/{unit.rstrip('s')}",
        "rel. energy",
    ]
    print_table(None, cols, table)


def register(cli: click.Group) -> None:
    """Add ``profile`` to the CLI."""
    cli.add_command(profile)
