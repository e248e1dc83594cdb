"""Each inference job's own request load, sent by the ingress to the job's endpoint.

A job spec's ``infer.load`` section (when the spec gives one) describes requests to send
to the job: :class:`JobLoads` notices the job, waits until its endpoint answers, and
replays the load with the same client ``greenllm load`` uses
(:mod:`greenllm.serving.loadclient`), once per job. Jobs without a load section get only
the requests their users send.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Callable

import httpx

from greenllm.errors import GreenllmError
from greenllm.jobspec import JobSpec
from greenllm.proto.v1 import cluster_pb2
from greenllm.serving.arrivals import job_arrivals
from greenllm.serving.loadclient import LoadClient, LoadOptions
from greenllm.serving.report import LoadReport

log = logging.getLogger(__name__)

#: How often the ingress looks for new inference jobs, seconds.
POLL_S = 1.0
#: Longest wait for a job's endpoint to answer before its load is given up, seconds.
READY_TIMEOUT_S = 600.0
#: Job states in which a load may start.
ACTIVE = ("pending", "placed", "running")


def spec_with_load(job: cluster_pb2.Job) -> JobSpec | None:
    """The job's spec when it is an inference job whose spec gives a load, else None."""
    if job.spec.kind != "infer" or not job.spec.spec_json:
        return None
    try:
        doc = json.loads(job.spec.spec_json)
        spec = JobSpec.model_validate(doc)
    except ValueError:
        return None
    infer = doc.get("infer") if isinstance(doc, dict) else None
    return spec if isinstance(infer, dict) and "load" in infer else None


class JobLoads:
    """Starts every inference job's own load against its endpoint (see module doc).

    Args:
        list_jobs: Returns the cluster's active and recent jobs (blocking).
        get_job: Returns a job with its spec, None when unknown (blocking).
        base_url: The ingress's own base URL (``http://host:port``).
        poll_s: Seconds between looks for new jobs.
    """

    def __init__(
        self,
        list_jobs: Callable[[], list[cluster_pb2.Job]],
        get_job: Callable[[str], cluster_pb2.Job | None],
        base_url: str,
        poll_s: float = POLL_S,
    ) -> None:
        self._list_jobs, self._get_job = list_jobs, get_job
        self.base_url = base_url.rstrip("/")
        self.poll_s = poll_s
        self.started: set[str] = set()
        self.reports: dict[str, LoadReport] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Look for new jobs until cancelled."""
        while True:
            try:
                await self.look()
            except GreenllmError as exc:  # the controller is away: look again later
                log.warning("ingress: cannot list jobs: %s", exc)
            await asyncio.sleep(self.poll_s)

    async def look(self) -> None:
        """Start the load of every new active inference job that has one."""
        jobs = await asyncio.to_thread(self._list_jobs)
        for job in jobs:
            if job.spec.kind != "infer" or job.state not in ACTIVE or job.id in self.started:
                continue
            self.started.add(job.id)
            full = await asyncio.to_thread(self._get_job, job.id)
            spec = spec_with_load(full) if full is not None else None
            if spec is None:
                continue
            task = asyncio.create_task(self._play(job.id, spec))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def endpoint(self, job_id: str) -> str:
        """Job ``job_id``'s API, as its users reach it."""
        return f"{self.base_url}/jobs/{job_id}/v1"

    async def _play(self, job_id: str, spec: JobSpec) -> None:
        url = self.endpoint(job_id)
        if not await _ready(url):
            log.warning("ingress: job %s never served; its load was not sent", job_id)
            return
        infer = spec.infer_settings
        try:
            arrivals = job_arrivals(infer, seed=zlib.crc32(job_id.encode()))
        except GreenllmError as exc:
            log.warning("ingress: job %s: its load cannot be read: %s", job_id, exc)
            return
        options = LoadOptions(endpoint=url, drain_timeout_s=120.0)
        label = f"job {job_id}: {infer.load.process} load"
        try:
            report = await LoadClient(options).run(arrivals, infer.load.duration_s, label)
        except GreenllmError as exc:
            log.warning("ingress: job %s: load failed: %s", job_id, exc)
            return
        self.reports[job_id] = report
        log.info(
            "ingress: job %s load done: %d sent, %d ok, %s",
            job_id,
            report.sent,
            report.ok,
            report.errors or "no errors",
        )


async def _ready(url: str, timeout_s: float = READY_TIMEOUT_S) -> bool:
    """Whether ``url``/models answers 200 within ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with httpx.AsyncClient(timeout=5.0) as client:
        while loop.time() < deadline:
            try:
                if (await client.get(f"{url}/models")).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    return False
