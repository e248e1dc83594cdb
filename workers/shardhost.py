"""Runs the shards the controller starts on a node, each on its own thread.

A shard occupies one GPU. On a simulated GPU, the GPU is set to the job's workload (so its
telemetry shows the draw) and the shard's real CPU work is paced by the GPU's throughput
at its current power limit and clocks. A training shard is one rank of a data-parallel job:
the job's entrypoint (or the built-in trainer) run as its own process with torchrun's
environment, the rendezvous the controller sent (rank 0's node address and port, ranks),
the job's checkpoint folder under ``storage_path``, and its working directory: a local
folder, or a Ray package unpacked on this node by Ray (:mod:`workers.shards.rankenv`,
:mod:`workers.shards.rayrank`). Its output is kept in a file and shipped to the controller
in telemetry (:meth:`ShardHost.log_chunks`). An inference replica serves the job's model
on its own OpenAI-compatible API at ``serve_host`` (:mod:`workers.shards.served`); the
job's ingress routes requests to it by the load weights. A replica of a job whose
``infer.engine`` is ``vllm`` is a vLLM server process behind greenllm's energy proxy
(:mod:`workers.shards.vllm_replica`); its output is in the job's logs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from greenllm.devices.base import GPU
from greenllm.devices.simulated import SimulatedGPU
from greenllm.errors import ConfigError, GreenllmError
from greenllm.jobspec import JobSpec, parse_job_spec
from greenllm.proto.v1 import agent_pb2
from greenllm.shard_state import ShardState
from workers.shards.logtail import LogTail, collect
from workers.shards.rankenv import Rendezvous
from workers.shards.status import ShardStatus, split_shard_id

__all__ = ["ShardHost", "ShardStatus", "split_shard_id"]

log = logging.getLogger(__name__)

#: Model loading is not thread-safe in transformers (meta-device init is process-global):
#: replicas on one node load one at a time.
_MODEL_LOAD_LOCK = threading.Lock()
#: How long a shard waits for the one stopping on its GPU before starting anyway, seconds.
PREDECESSOR_WAIT_S = 60.0


class _Shard:
    def __init__(self, status: ShardStatus, spec: JobSpec, gpu: GPU) -> None:
        self.status = status
        self.spec = spec
        self.gpu = gpu
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.runner: Any = None
        self.weights: dict[str, float] = {}
        self.lock = threading.Lock()
        self.rendezvous: Rendezvous | None = None


class ShardHost:
    """The shards of one node.

    Args:
        node: Node name.
        gpus: The node's GPUs.
        state_dir: Holds ``ranks/<job>/<rank>-g<generation>/`` (each rank's output,
            progress, share and pace files).
        world_size_of: Ranks in a training job started without a rendezvous (default:
            the spec's ``shards``; those ranks meet on 127.0.0.1).
        storage_path: Holds ``<job>/``, each training job's ``GREENLLM_CHECKPOINT_DIR``
            (default ``<state_dir>/checkpoints``; shared storage across machines).
        serve_host: Address inference replicas listen on (this node's address, as the
            job's ingress reaches it).
    """

    def __init__(
        self,
        node: str,
        gpus: Sequence[GPU],
        state_dir: Path,
        world_size_of: Callable[[JobSpec], int] | None = None,
        storage_path: Path | None = None,
        serve_host: str = "127.0.0.1",
    ) -> None:
        self.node = node
        self.gpus = {g.index: g for g in gpus}
        self.state_dir = Path(state_dir)
        self.storage_path = Path(storage_path or self.state_dir / "checkpoints")
        self.serve_host = serve_host
        self._world_size_of = world_size_of or (lambda spec: spec.shards)
        self._shards: dict[str, _Shard] = {}
        self._tails: dict[tuple[str, int], LogTail] = {}
        self._lock = threading.Lock()

    # -- commands ---------------------------------------------------------------------
    def start_rank(self, body: agent_pb2.StartShard) -> None:
        """Start the shard a StartShard command names, with its rendezvous when it is a
        training rank (see :meth:`start`).

        Raises:
            GreenllmError: As :meth:`start`, or a training rank without a rendezvous.
        """
        if len(body.gpu_indices) != 1:
            raise GreenllmError(f"a shard takes one GPU, not {len(body.gpu_indices)}")
        rdzv = Rendezvous.from_start(body) if body.world_size else None
        self.start(body.shard_id, body.gpu_indices[0], body.spec_json, body.generation, rdzv)

    def start(
        self,
        shard_id: str,
        gpu_index: int,
        spec_json: str,
        generation: int = 0,
        rendezvous: Rendezvous | None = None,
    ) -> None:
        """Start a shard on GPU ``gpu_index`` (a no-op when it already runs).

        ``generation`` counts the job's placements: ranks of one generation meet at their
        own rendezvous, so a job placed again after a failure starts clean. A training
        rank started without ``rendezvous`` meets the others on 127.0.0.1.

        Raises:
            GreenllmError: Bad shard id, unknown GPU, GPU busy, or a bad job spec.
        """
        job_id, rank = split_shard_id(shard_id)
        gpu = self.gpus.get(gpu_index)
        if gpu is None:
            raise GreenllmError(f"node {self.node} has no GPU {gpu_index}")
        try:
            spec = parse_job_spec(json.loads(spec_json), f"job {job_id}")
        except json.JSONDecodeError as exc:
            raise ConfigError(f"job {job_id}: spec is not JSON: {exc}") from None
        with self._lock:
            current = self._shards.get(shard_id)
            if current is not None and current.status.state == "running":
                return
            busy = [
                s for s in self._shards.values() if s.gpu is gpu and s.status.state == "running"
            ]
            working = [s for s in busy if not s.stop_event.is_set()]
            if working:
                raise GreenllmError(f"GPU {gpu_index} already runs {working[0].status.shard_id}")
            shard = _Shard(ShardStatus(shard_id, job_id, generation=generation), spec, gpu)
            shard.status.extra["start_energy_j"] = gpu.energy_j()
            shard.rendezvous = rendezvous
            self._shards[shard_id] = shard
        target = self._run_train if spec.kind == "train" else self._run_infer
        shard.thread = threading.Thread(
            target=self._guard,
            args=(shard, target, rank, busy),
            name=f"shard-{shard_id}",
            daemon=True,
        )
        shard.thread.start()
        log.info(
            "node %s: started %s shard %s on GPU %d", self.node, spec.kind, shard_id, gpu_index
        )

    def stop(self, shard_id: str, timeout_s: float | None = 30.0) -> bool:
        """Stop a shard; returns False when it is unknown.

        Args:
            shard_id: The shard.
            timeout_s: How long to wait for it to end, seconds (None: do not wait; the
                agent's command path never waits, so power commands are not held up).
        """
        shard = self._shards.get(shard_id)
        if shard is None:
            return False
        self._signal_stop(shard)
        if shard.thread is not None and timeout_s is not None:
            shard.thread.join(timeout_s)
        return True

    def stop_all(self, timeout_s: float = 30.0) -> None:
        """Stop every shard: all are told first (ranks of one job stop together), then
        each is waited for, ``timeout_s`` in all."""
        shards = list(self._shards.values())
        for shard in shards:
            self._signal_stop(shard)
        deadline = time.monotonic() + timeout_s
        for shard in shards:
            if shard.thread is not None:
                shard.thread.join(max(0.0, deadline - time.monotonic()))

    @staticmethod
    def _signal_stop(shard: _Shard) -> None:
        shard.stop_event.set()
        stopper = getattr(shard.runner, "stop", None)
        if callable(stopper):
            stopper()

    def set_load_weights(self, weights: dict[str, float]) -> None:
        """Record the load weights of each job's shards and pass this node's shares on
        (a training rank gets its fraction of the job's weights as its batch share)."""
        for shard in list(self._shards.values()):
            job_weights = {
                sid: w
                for sid, w in weights.items()
                if split_shard_id(sid)[0] == shard.status.job_id
            }
            if not job_weights:
                continue
            with shard.lock:
                shard.weights.update(job_weights)
                total = sum(w for w in shard.weights.values() if w > 0)
            mine = job_weights.get(shard.status.shard_id)
            set_share = getattr(shard.runner, "set_share", None)
            if mine is not None and mine > 0 and callable(set_share):
                set_share(mine / total)

    def log_chunks(self) -> list[agent_pb2.LogChunk]:
        """New output of the node's training ranks, at most 64 KiB in all (the rest
        follows in the next calls); tails of ended shards are dropped once shipped."""
        with self._lock:
            tails = list(self._tails.values())
        chunks = collect(tails)
        with self._lock:
            for key, tail in list(self._tails.items()):
                shard = self._shards.get(tail.shard_id)
                ended = shard is None or shard.status.generation != tail.generation
                ended = ended or (shard is not None and shard.status.state != "running")
                if ended and tail.pending() == 0:
                    del self._tails[key]
        return chunks

    def statuses(self) -> list[ShardStatus]:
        """A snapshot of every shard's progress."""
        out = []
        for shard in list(self._shards.values()):
            with shard.lock:
                s = shard.status
                out.append(ShardStatus(**{**s.__dict__, "extra": dict(s.extra)}))
        return out

    # -- runners ----------------------------------------------------------------------
    def _guard(
        self,
        shard: _Shard,
        target: Callable[[_Shard, int], None],
        rank: int,
        predecessors: list[_Shard],
    ) -> None:
        try:
            for previous in predecessors:  # shards still stopping on this GPU
                if previous.thread is not None:
                    previous.thread.join(PREDECESSOR_WAIT_S)
            if isinstance(shard.gpu, SimulatedGPU) and shard.spec.kind == "train":
                shard.gpu.set_workload(shard.spec.workload())  # a replica's engine sets its own
            target(shard, rank)
            with shard.lock:
                shard.status.state = (
                    ShardState.STOPPED if shard.stop_event.is_set() else ShardState.DONE
                )
        except Exception as exc:  # a failing shard must not take the agent down
            log.exception("node %s: shard %s failed", self.node, shard.status.shard_id)
            with shard.lock:
                shard.status.state = ShardState.FAILED
                shard.status.error = f"{type(exc).__name__}: {exc}"
        finally:
            if isinstance(shard.gpu, SimulatedGPU) and not self._successor_runs(shard):
                shard.gpu.set_workload(None)

    def _successor_runs(self, shard: _Shard) -> bool:
        return any(
            s is not shard and s.gpu is shard.gpu and s.status.state == "running"
            for s in list(self._shards.values())
        )

    def _sim_throughput(self, gpu: GPU) -> Callable[[], float] | None:
        return gpu.throughput if isinstance(gpu, SimulatedGPU) else None

    def _run_train(self, shard: _Shard, rank: int) -> None:
        from workers.shards.rankrun import exit_reason, launch

        job_id, generation = shard.status.job_id, shard.status.generation
        rdzv = shard.rendezvous or Rendezvous.local(
            job_id, generation, rank, self._world_size_of(shard.spec)
        )
        runner = launch(
            shard.spec,
            shard.status.shard_id,
            generation,
            rdzv,
            shard.gpu,
            self.state_dir,
            self.storage_path / job_id,
            lambda doc: self._on_progress(shard, doc),
            shard.stop_event,
        )
        with self._lock:
            key = (shard.status.shard_id, generation)
            self._tails[key] = LogTail(shard.status.shard_id, generation, runner.files.log)
        with shard.lock:
            shard.runner = runner
            weights = dict(shard.weights)
        mine = weights.get(shard.status.shard_id, 0.0)
        if mine > 0:
            runner.set_share(mine / sum(w for w in weights.values() if w > 0))
        code = runner.run()
        if code != 0 and not runner.stop_requested:
            raise GreenllmError(runner.failure() or exit_reason(code, runner.files))

    @staticmethod
    def _on_progress(shard: _Shard, doc: dict[str, Any]) -> None:
        with shard.lock:
            s = shard.status
            s.work_units = float(doc.get("samples") or 0.0)
            s.steps = int(doc.get("steps") or 0)
            s.extra["tokens"] = float(doc.get("tokens") or 0.0)
            s.extra["gpu_wait_fraction"] = doc.get("gpu_wait_fraction")  # simulated GPUs

    def _run_infer(self, shard: _Shard, rank: int) -> None:
        if shard.spec.infer_settings.engine == "vllm":
            self._run_vllm(shard, rank)
            return
        from workers.shards.served import ServedReplica

        replica = ServedReplica(shard.spec, shard.status, shard.lock, shard.gpu, self.serve_host)
        shard.runner = replica
        if shard.stop_event.is_set():
            return
        replica.run(_MODEL_LOAD_LOCK)

    def _run_vllm(self, shard: _Shard, rank: int) -> None:
        """A replica served by vLLM (its own process) behind greenllm's energy proxy; its
        output is the shard's log, shipped like a training rank's."""
        from workers.shards.vllm_replica import VllmReplica

        job_id, generation = shard.status.job_id, shard.status.generation
        folder = self.state_dir / "ranks" / job_id / f"{rank}-g{generation}"
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / "output.log"
        log_path.touch()
        with self._lock:
            key = (shard.status.shard_id, generation)
            self._tails[key] = LogTail(shard.status.shard_id, generation, log_path)
        replica = VllmReplica(
            shard.spec,
            shard.status,
            shard.lock,
            shard.gpu,
            self.serve_host,
            log_path,
            self.state_dir / "vllm-cache",
            stop_event=shard.stop_event,
        )
        shard.runner = replica
        replica.run()
