"""``greenllm meter -- CMD ARGS...``: run a command and report its energy and CO2e.

The command runs as a child process with this process's stdin, stdout and stderr; with
``--json`` its stdout goes to stderr instead, so that stdout carries exactly one JSON
document. The report (for people) goes to stderr too, like time(1), so the command's own
output stays clean. The exit status is the command's, 128+N when a signal N killed it,
127 when the command does not exist and 126 when it cannot be executed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.table import Table

from greenllm.cli.options import BACKEND_OPTION, CONFIG_OPTION, NODE_OPTION
from greenllm.cli.output import emit_json, fmt, progress_console
from greenllm.config import ClusterConfig, default_config_path, load_cluster_config
from greenllm.devices.discovery import get_gpus
from greenllm.energy.carbon import (
    DEFAULT_REGION,
    GridIntensity,
    carbon_g,
    check_pue,
    load_region_table,
)
from greenllm.energy.cpu_estimate import DEFAULT_WATTS_PER_CORE
from greenllm.energy.measurement import SOURCE_SIMULATED, Measurement
from greenllm.energy.meter import EnergyMeter
from greenllm.errors import ConfigError, GreenllmError

#: How often RAPL counters are read while the command runs (to catch wraparounds), s.
POLL_PERIOD_S = 5.0
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
WINDOW = "command"


def _default_region_help() -> str:
    world = load_region_table().get(DEFAULT_REGION)
    if world is None:
        return f"default region {DEFAULT_REGION}"
    return (
        f"the default region {world.region} is the world average, "
        f"{world.g_co2e_per_kwh:g} gCO2e/kWh ({world.source}, {world.year})"
    )


def _intensity(
    cfg: ClusterConfig, config_path: Path, region: str | None, intensity_file: Path | None
) -> GridIntensity:
    """The grid intensity chosen by options, else by the config's ``carbon`` section."""
    if intensity_file is not None:
        intensity = GridIntensity.from_csv(intensity_file)
    elif region is not None:
        intensity = GridIntensity.for_region(region)
    else:
        try:
            if cfg.carbon.intensity_file is not None:
                intensity = GridIntensity.from_csv(cfg.carbon.intensity_file)
            else:
                intensity = GridIntensity.for_region(cfg.carbon.region)
        except ConfigError as exc:
            raise ConfigError(f"{config_path}: carbon: {exc}") from None
    intensity.at(time.time())  # a series that starts in the future fails now, not after
    return intensity


def run_measured(command: list[str], meter: EnergyMeter, stdout_to_stderr: bool) -> int:
    """Run ``command`` inside the meter's window ``command``; return its raw return code.

    While it runs, Ctrl-C (which the terminal also sends to the child) does not stop the
    meter, and SIGTERM is passed on to the child.

    Raises:
        GreenllmError: The command does not exist or cannot be executed (with
            ``exit_code`` 127 or 126 set on the error).
    """
    meter.begin_window(WINDOW)
    try:
        child = subprocess.Popen(command, stdout=sys.stderr.fileno() if stdout_to_stderr else None)
    except OSError as exc:
        meter.end_window(WINDOW)
        code = EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_NOT_EXECUTABLE
        what = "command not found" if code == EXIT_NOT_FOUND else "cannot execute"
        raise _ExitError(f"meter: {what}: {command[0]}", code) from None

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                return child.wait(timeout=POLL_PERIOD_S)
            except subprocess.TimeoutExpired:
                meter.poll()
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


class _ExitError(GreenllmError):
    """A user-facing error with its own exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def exit_status(returncode: int) -> int:
    """The shell's exit status for a child's return code: 128+N when signal N killed it."""
    return 128 - returncode if returncode < 0 else returncode


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; ``SIG<n>`` for signals without a name (real-time ones)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def report(
    command: list[str],
    returncode: int,
    m: Measurement,
    intensity: GridIntensity,
    pue: float,
) -> dict[str, Any]:
    """The JSON document of one metered command.

    ``metered`` names the devices read from real counters (or the labelled CPU
    estimate), ``simulated`` the simulated GPUs, ``in_total`` those counted in the total
    and CO2e (simulated GPUs only with ``--include-simulated``). With nothing counted, the
    total, average power and CO2e are null, never zero.
    """
    sources = sorted(set(m.gpu_sources.values()))
    rows = m.devices()
    simulated = [r.device for r in rows if r.source == SOURCE_SIMULATED]
    simulated_in_total = any(r.in_total for r in rows if r.source == SOURCE_SIMULATED)
    in_total = [r.device for r in rows if r.in_total]
    note = None
    if simulated:
        counted = "counted in" if simulated_in_total else "left out of"
        note = (
            "simulated GPUs (no NVIDIA GPU in use): their energy is the model's idle draw, "
            f"not a measurement of the command; {counted} the total and CO2e"
        )
    total_j = m.total_energy_j if in_total else None
    g = None
    if total_j is not None:
        g = carbon_g(total_j, intensity, pue, m.start_unix_s, m.end_unix_s)
    doc: dict[str, Any] = {
        "command": command,
        "exit_status": exit_status(returncode),
        "signal": signal_name(-returncode) if returncode < 0 else None,
        "gpu_backend": ",".join(sources) if sources else None,
        "gpu_note": note,
        "metered": [r.device for r in rows if r.source != SOURCE_SIMULATED],
        "simulated": simulated,
        "in_total": in_total,
        "simulated_in_total": simulated_in_total,
    }
    doc.update(m.to_dict())
    if total_j is None:
        doc.update(total_energy_j=None, avg_power_w=None)
    doc["carbon_g"] = g
    doc["carbon"] = {
        "g_co2e": g,
        "energy_kwh": None if total_j is None else total_j / 3.6e6,
        "intensity": intensity.label,
        "intensity_source": intensity.source,
        "intensity_g_per_kwh": intensity.average_g_per_kwh(m.start_unix_s, m.end_unix_s),
        "pue": pue,
    }
    return doc


def print_report(doc: dict[str, Any]) -> None:
    """Print the report for people on stderr."""
    console = progress_console()
    status = doc["exit_status"]
    how = f"killed by {doc['signal']}" if doc["signal"] else f"exited {status}"
    console.print(
        f"greenllm meter: {' '.join(doc['command'])} {how} after {doc['duration_s']:.3f} s"
    )
    table = Table(show_lines=False)
    for col, justify in [
        ("device", "left"),
        ("source", "left"),
        ("energy J", "right"),
        ("avg W", "right"),
        ("in total", "left"),
    ]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in doc["devices"]:
        table.add_row(
            row["device"],
            row["source"],
            fmt(row["energy_j"]),
            fmt(row["avg_power_w"]),
            "yes" if row["in_total"] else "no",
        )
    console.print(table)
    if doc["gpu_note"]:
        console.print(f"note: {doc['gpu_note']}")
    if doc["cpu_energy_j"] is None:
        hint = "" if doc["cpu_estimate"] else "; --cpu-estimate adds a labelled estimate"
        console.print(f"CPU/DRAM not measured: {doc['cpu_unavailable_reason']}{hint}")
    c = doc["carbon"]
    if not doc["in_total"]:
        console.print(
            "total: nothing metered (no NVIDIA GPU, no CPU energy); --cpu-estimate adds a "
            "labelled CPU estimate, --include-simulated counts the simulated GPUs"
        )
        return
    console.print(f"in the total: {', '.join(doc['in_total'])}")
    console.print(
        f"total {fmt(doc['total_energy_j'])} J ({' + '.join(doc['total_includes'])}), "
        f"avg {fmt(doc['avg_power_w'])} W; {fmt(c['g_co2e'])} gCO2e at "
        f"{fmt(c['intensity_g_per_kwh'])} gCO2e/kWh ({c['intensity']}: {c['intensity_source']}) "
        f"x PUE {c['pue']:g}"
    )


@click.command(
    "meter",
    context_settings={"allow_interspersed_args": False},
    epilog="Carbon: gCO2e = kWh x grid intensity x PUE; " + _default_region_help() + ".",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document on stdout (the command's stdout then goes to stderr).",
)
@CONFIG_OPTION
@NODE_OPTION
@BACKEND_OPTION
@click.option(
    "--region",
    help="Grid region of the shipped intensity table (default: the config's carbon.region). "
    "Known: " + ", ".join(load_region_table()) + ".",
)
@click.option(
    "--intensity-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="CSV time series timestamp,g_co2e_per_kwh (ISO-8601 or Unix seconds), "
    "instead of a region.",
)
@click.option("--pue", type=float, help="Power usage effectiveness, >= 1 (default: the config's).")
@click.option(
    "--cpu-estimate",
    is_flag=True,
    help="Add a labelled CPU ESTIMATE (process-tree CPU time x per-core power), counted in "
    "the total only where RAPL is unreadable.",
)
@click.option(
    "--watts-per-core",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_WATTS_PER_CORE,
    show_default=True,
    help="Power of one busy core for --cpu-estimate, watts (default: Intel Xeon Platinum "
    "8480+, 350 W TDP / 56 cores).",
)
@click.option(
    "--include-simulated",
    is_flag=True,
    help="Count simulated GPUs (their model's idle draw) in the total and CO2e; by default "
    "they are listed but left out.",
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- CMD [ARGS]...")
@click.pass_context
def meter(
    ctx: click.Context,
    as_json: bool,
    config_path: Path | None,
    node: str | None,
    backend: str,
    region: str | None,
    intensity_file: Path | None,
    pue: float | None,
    cpu_estimate: bool,
    watts_per_core: float,
    include_simulated: bool,
    command: tuple[str, ...],
) -> None:
    """Run CMD and report its energy per device, time, average power and CO2e.

    GPUs are read through their energy counters; where no NVIDIA GPU is present the
    config's simulated GPUs are listed with their model's idle draw but left out of the
    total and CO2e (unless --include-simulated). CPU and DRAM through RAPL where
    readable. The report goes to stderr (like time(1)); with --json, one JSON document
    goes to stdout and CMD's stdout is sent to stderr. Exits with CMD's exit status
    (128+N if signal N killed it; 127 if CMD does not exist, 126 if it cannot run).
    """
    if not command:
        raise click.UsageError("missing command: greenllm meter [OPTIONS] -- CMD [ARGS]...")
    config_path = config_path or default_config_path()
    cfg = load_cluster_config(config_path)
    pue_value = check_pue(pue if pue is not None else cfg.carbon.pue)
    intensity = _intensity(cfg, config_path, region, intensity_file)
    gpus = get_gpus(cfg, node=node, backend=backend)
    try:
        energy_meter = EnergyMeter(
            gpus,
            rapl="auto",
            cpu_estimate=cpu_estimate,
            watts_per_core=watts_per_core,
            simulated_in_total=include_simulated,
        )
        try:
            returncode = run_measured(list(command), energy_meter, stdout_to_stderr=as_json)
        except _ExitError as exc:
            click.echo(f"greenllm: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        m = energy_meter.end_window(WINDOW)
    finally:
        for gpu in gpus:
            gpu.close()
    doc = report(list(command), returncode, m, intensity, pue_value)
    if as_json:
        emit_json(doc)
    else:
        print_report(doc)
    ctx.exit(doc["exit_status"])


def register(cli: click.Group) -> None:
    """Add ``meter`` to the CLI."""
    cli.add_command(meter)
