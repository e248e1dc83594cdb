"""Scenario files of earlier versions: their job keys, upgraded to the job-spec vocabulary.

Earlier scenario jobs had keys of their own (``id``, ``allowed_gpu_types``,
``model_params``, ``batch``, ``seq_len``, ``arrivals: {rate_rps, prompt_tokens,
output_tokens}``, ...). A job written that way is rewritten into a job spec with a ``sim``
section before validation, with its old defaults made explicit (2,048-token training
samples; 512 prompt and 256 output tokens per request), and each old key is named in a
note with the key that replaces it.
"""

from __future__ import annotations

import math
from typing import Any

#: Old flat job key -> its new place (a dotted path into the job spec).
RENAMED = {
    "id": "name",
    "allowed_gpu_types": "gpu_types",
    "model_params": "simulated_model_params",
    "count": "sim.count",
    "arrive_s": "sim.arrive_s",
    "true_model_params": "sim.true_model_params",
    "total_samples": "sim.total_samples",
    "slo_samples_per_s": "slo.min_throughput",
    "slo_tokens_per_s": "slo.min_throughput",
}
#: Old ``arrivals`` key -> its new place.
ARRIVALS = {
    "process": "infer.load.process",
    "rate_rps": "infer.load.rate_per_s",
    "burst_factor": "infer.load.burst_factor",
    "burst_s": "infer.load.burst_s",
    "period_s": "infer.load.period_s",
    "trace_file": "infer.load.trace_file",
    "prompt_tokens": "infer.prompt_tokens",
    "output_tokens": "infer.max_new_tokens",
}
#: Keys only old-style jobs have (one of them marks a job as old-style).
OLD_ONLY = {
    "id",
    "allowed_gpu_types",
    "model_params",
    "batch",
    "seq_len",
    "arrivals",
    "arrive_s",
    "end_s",
    "true_model_params",
    "total_samples",
    "deadline_s",
    "slo_samples_per_s",
    "slo_tokens_per_s",
    "count",
}


def _put(doc: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        doc = doc.setdefault(key, {})
    doc[last] = value


def _seconds(value: Any) -> float | None:
    """``value`` as a finite number of seconds, or None (left for validation to report)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return seconds if math.isfinite(seconds) else None


def _since_arrival(value: Any, job: dict[str, Any]) -> Any:
    """An absolute time ``value`` counted from the job's ``arrive_s`` (as read when either
    is not a number: validation then names it)."""
    at_s, arrive_s = _seconds(value), _seconds(job.get("arrive_s", 0.0))
    return value if at_s is None or arrive_s is None else at_s - arrive_s


def _upgrade_job(
    job: dict[str, Any], where: str, duration_s: float, notes: list[str]
) -> dict[str, Any]:
    if "name" in job or not OLD_ONLY & set(job):
        return job
    out: dict[str, Any] = {}
    kind = job.get("kind")
    section = "train" if kind == "train" else "infer"

    def note(old: str, new: str) -> None:
        notes.append(f"{where}.{old}: deprecated, use {new}")

    for key, value in job.items():
        if key in RENAMED:
            _put(out, RENAMED[key], value)
            note(key, RENAMED[key])
        elif key == "batch":
            _put(out, f"{section}.batch_size", value)
            note(key, f"{section}.batch_size")
        elif key == "seq_len":
            _put(out, "train.seq_len", value)
            note(key, "train.seq_len")
        elif key == "deadline_s":
            _put(out, "slo.deadline_s", _since_arrival(value, job))
            note(key, "slo.deadline_s (counted from sim.arrive_s)")
        elif key == "end_s":
            _put(out, "infer.load.duration_s", _since_arrival(value, job))
            note(key, "infer.load.duration_s (counted from sim.arrive_s)")
        elif key == "arrivals" and isinstance(value, dict):
            for a_key, a_value in value.items():
                _put(out, ARRIVALS.get(a_key, f"infer.load.{a_key}"), a_value)
                note(f"arrivals.{a_key}", ARRIVALS.get(a_key, f"infer.load.{a_key}"))
            out.setdefault("infer", {}).setdefault("prompt_tokens", 512)
            out["infer"].setdefault("max_new_tokens", 256)
        else:
            out[key] = value
    if kind == "train":
        out.setdefault("train", {}).setdefault("seq_len", 2048)
    elif kind == "infer":
        load = out.setdefault("infer", {}).setdefault("load", {})
        arrive_s = _seconds(job.get("arrive_s", 0.0)) or 0.0
        load.setdefault("duration_s", max(1e-3, duration_s - arrive_s))
    return out


def upgrade_scenario(data: dict[str, Any], source: str, notes: list[str]) -> dict[str, Any]:
    """``data`` with every old-style job rewritten (see the module docstring).

    Args:
        data: The scenario mapping as read.
        source: The file's name, for the notes.
        notes: Receives one line per deprecated key.
    """
    jobs = data.get("jobs")
    if not isinstance(jobs, list):
        return data
    duration_s = data.get("duration_s")
    duration_s = _seconds(duration_s) or 0.0
    upgraded = [
        _upgrade_job(job, f"{source}: jobs.{i}", duration_s, notes)
        if isinstance(job, dict)
        else job
        for i, job in enumerate(jobs)
    ]
    return {**data, "jobs": upgraded}
