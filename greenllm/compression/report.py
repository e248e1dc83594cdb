"""The compression report: per method, size, quality, speed and energy, each also as a
ratio to the uncompressed model; as JSON, as table rows, and as a Pareto plot.

One baseline per report: the uncompressed model, timed in the same interleaved session as
every method (so all share the same background load). Every ratio is the method's figure
divided by the baseline's figure as the table shows them. Speed and energy are medians
over repeated runs, with their spread ``(max - min) / median``; a figure whose spread is
above ``max_spread`` (or unknown, from a single run) is marked noisy, and so is any ratio
that uses it. A ratio below 1 means smaller for parameters, bytes and J/token, and better
for perplexity; ``tokens_per_s_ratio`` above 1 means faster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenllm.compression.evaluate import Evaluation, Stat

REPORT_FILE = "report.json"
PLOT_FILE = "pareto.png"
FIGURE_COLUMNS = (
    "method",
    "params",
    "MB",
    "perplexity",
    "tokens/s",
    "tokens/s ±",
    "J/token",
    "J/token ±",
    "J source",
)
RATIO_COLUMNS = ("method", "params x", "bytes x", "perplexity x", "tokens/s x", "J/token x")
TIMED = ("tokens_per_s", "joules_per_token")
MB = 1e6


@dataclass
class MethodResult:
    """One compressed (or the uncompressed) model's figures.

    Attributes:
        method: Method name (``baseline`` for the uncompressed model).
        parameters: Parameters, quantized weights included.
        weight_bytes: Size of the saved weights file, bytes.
        evaluation: Perplexity, and timed generation (tokens/s, J/token and sources).
        kernels: Matmul paths of quantized layers (says "fake/dequantized" where so).
        artifact: Directory of the saved, loadable model.
        details: What the method did (sparsity, ranks, student shape...).
    """

    method: str
    parameters: int
    weight_bytes: int
    evaluation: Evaluation
    kernels: list[str] = field(default_factory=list)
    artifact: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def figures(self, max_spread: float) -> dict[str, Any]:
        """The absolute figures as a JSON-ready mapping; a timed figure ``X`` comes with
        ``X_min``, ``X_max``, ``X_spread`` and ``X_noisy``."""
        ev = self.evaluation
        gen = ev.generation
        doc: dict[str, Any] = {
            "method": self.method,
            "parameters": self.parameters,
            "bytes": self.weight_bytes,
            "perplexity": ev.perplexity,
            "eval_tokens": ev.eval_tokens,
        }
        stats: dict[str, Stat | None] = {
            "tokens_per_s": gen.tokens_per_s if gen else None,
            "joules_per_token": gen.joules_per_token if gen else None,
        }
        for key, stat in stats.items():
            doc[key] = stat.median if stat else None
            doc[f"{key}_min"] = stat.low if stat else None
            doc[f"{key}_max"] = stat.high if stat else None
            doc[f"{key}_spread"] = stat.spread if stat else None
            doc[f"{key}_noisy"] = stat.noisy(max_spread) if stat else False
        doc.update(
            energy_source=gen.energy_source if gen else "none",
            energy_is_estimate=gen.energy_is_estimate if gen else False,
            repeats=gen.tokens_per_s.runs if gen else 0,
            tokens_per_run=gen.tokens_per_run if gen else 0,
            run_s=gen.run_s if gen else None,
            kernels=self.kernels,
            artifact=self.artifact,
            details=self.details,
        )
        return doc


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def build_report(
    model: str,
    device: str,
    baseline: MethodResult,
    results: list[MethodResult],
    max_spread: float = 0.05,
    cpu_threads: int | None = None,
) -> dict[str, Any]:
    """The report document: the baseline's figures and each method's, with ratios of the
    same figures (``cpu_threads``: torch CPU threads during timing, None: torch's
    default)."""
    base = baseline.figures(max_spread)
    rows = []
    for result in results:
        row = result.figures(max_spread)
        for key in ("parameters", "bytes", "perplexity", *TIMED):
            row[f"{key}_ratio"] = _ratio(row[key], base[key])
        for key in TIMED:
            row[f"{key}_ratio_noisy"] = row[f"{key}_noisy"] or base[f"{key}_noisy"]
        rows.append(row)
    everything = [base, *rows]
    sources = sorted({r["energy_source"] for r in everything})
    estimated = any(r["energy_is_estimate"] for r in everything)
    note = (
        "J/token is an ESTIMATE (process CPU time x watts per core), not a measurement: "
        "RAPL is not readable here"
        if estimated
        else "J/token is measured by energy counters"
    )
    timing = (
        f"tokens/s and J/token: median of {base['repeats']} run"
        f"{'' if base['repeats'] == 1 else 's'} of about "
        f"{_g(base['run_s'])} s ({base['tokens_per_run']} tokens) per model, all models "
        f"interleaved, {cpu_threads or 'default'} CPU thread"
        f"{'' if cpu_threads == 1 else 's'}; ± is (max - min) / median over the runs, "
        f"'noisy' above {max_spread:.0%}; ratios divide the figures above by the baseline's"
    )
    return {
        "model": model,
        "device": device,
        "energy_sources": sources,
        "energy_note": note,
        "timing_note": timing,
        "max_spread": max_spread,
        "cpu_threads": cpu_threads,
        "baseline": base,
        "results": rows,
    }


def _spread_cell(row: dict[str, Any], key: str) -> str:
    spread = row[f"{key}_spread"]
    if row[key] is None:
        return "-"
    if spread is None:
        return "1 run (noisy)"
    return f"{100 * spread:.1f}%" + (" noisy" if row[f"{key}_noisy"] else "")


def figure_rows(report: dict[str, Any]) -> list[list[Any]]:
    """Rows for :data:`FIGURE_COLUMNS`: the baseline, then every method."""
    return [
        [
            r["method"],
            r["parameters"],
            r["bytes"] / MB,
            r["perplexity"],
            r["tokens_per_s"],
            _spread_cell(r, "tokens_per_s"),
            r["joules_per_token"],
            _spread_cell(r, "joules_per_token"),
            r["energy_source"],
        ]
        for r in [report["baseline"], *report["results"]]
    ]


def _ratio_cell(row: dict[str, Any], key: str) -> str:
    value = _g(row[f"{key}_ratio"])
    return f"{value} (noisy)" if row[f"{key}_ratio_noisy"] and value != "-" else value


def ratio_rows(report: dict[str, Any]) -> list[list[Any]]:
    """Rows for :data:`RATIO_COLUMNS`: the baseline (all 1), then one per method."""
    rows: list[list[Any]] = [["baseline", 1.0, 1.0, 1.0, 1.0, 1.0]]
    for r in report["results"]:
        rows.append(
            [
                r["method"],
                r["parameters_ratio"],
                r["bytes_ratio"],
                r["perplexity_ratio"],
                _ratio_cell(r, "tokens_per_s"),
                _ratio_cell(r, "joules_per_token"),
            ]
        )
    return rows


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (lower is better)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (ox <= x and oy <= y) and (ox < x or oy < y)
            for j, (ox, oy) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot_pareto(
    report: dict[str, Any], path: Path
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Perplexity against J/token for every model, from the table's figures (PNG).

    Each point is a model's median J/token with a bar from its fastest to its slowest run;
    noisy figures are drawn hollow. Both axes start at 0, so differences within the noise
    do not look larger than they are. The Pareto front (on the medians) is joined.

    Returns:
        The x (J/token) and y (perplexity) axis limits.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [
        r for r in [report["baseline"], *report["results"]] if r["joules_per_token"] is not None
    ]
    points = [(r["joules_per_token"], r["perplexity"]) for r in entries]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]
    for i, (r, (x, y)) in enumerate(zip(entries, points, strict=True)):
        color = "black" if r["method"] == "baseline" else colors[i % len(colors)]
        err = [[x - r["joules_per_token_min"]], [r["joules_per_token_max"] - x]]
        hollow = r["joules_per_token_noisy"]
        label = r["method"] + (" (noisy)" if hollow else "")
        ax.errorbar(
            [x], [y], xerr=err, fmt="o", color=color, capsize=3, label=label,
            markerfacecolor="white" if hollow else color,
        )  # fmt: skip
    front = pareto_front(points)
    if len(front) > 1:
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "--", color="gray")
    if points:
        ax.set_xlim(0, 1.15 * max(r["joules_per_token_max"] for r in entries))
        ax.set_ylim(0, 1.15 * max(y for _, y in points))
    source = "+".join(report["energy_sources"])
    kind = "ESTIMATE" if "estimate" in source else "measured"
    ax.set_xlabel(
        f"J/token: median, bar = min-max of runs, hollow = noisy ({kind}; source: {source})"
    )
    ax.set_ylabel("held-out perplexity")
    ax.set_title(f"{report['model']}: quality vs energy per token (lower-left is better)")
    ax.grid(True, alpha=0.3)
    if entries:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    limits = (tuple(ax.get_xlim()), tuple(ax.get_ylim()))
    plt.close(fig)
    return limits  # type: ignore[return-value]


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    """Write ``report.json`` and ``pareto.png`` into ``out_dir``; adds their paths."""
    report["plot"] = str(out_dir / PLOT_FILE)
    report["report"] = str(out_dir / REPORT_FILE)
    plot_pareto(report, out_dir / PLOT_FILE)
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
