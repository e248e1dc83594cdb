"""``greenllm.v1.Cluster``: the operators' API (kept thin over the state and the loop)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import grpc

from greenllm.errors import ConfigError
from greenllm.proto.v1 import cluster_pb2, cluster_pb2_grpc
from scheduler.server.errors import BadInput, abort_with
from scheduler.server.jobs import ACTIVE_STATES, JobTable
from scheduler.server.loop import ControlLoop
from scheduler.server.state import ClusterState
from scheduler.server.views import cluster_status, job_proto

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
#: Bounds of WatchStatus's interval, seconds.
WATCH_INTERVAL_RANGE_S = (0.05, 3600.0)


class ClusterServicer(cluster_pb2_grpc.ClusterServicer):
    """Jobs, status, budget and policy."""

    def __init__(self, state: ClusterState, jobs: JobTable, loop: ControlLoop) -> None:
        self._state = state
        self._jobs = jobs
        self._loop = loop

    def status(self) -> cluster_pb2.ClusterStatus:
        """The cluster status now."""
        observed = self._loop.observed(self._state.clock())
        accounted_w = sum(g.accounted_limit_w for g in observed.gpus)
        return cluster_status(self._state, self._jobs, accounted_w)

    async def SubmitJob(
        self, request: cluster_pb2.SubmitJobRequest, context: Context
    ) -> cluster_pb2.SubmitJobResponse:
        try:
            job = self._jobs.submit(request.spec_json)
        except BadInput as exc:
            await abort_with(context, exc)
        if self._loop.persistence is not None:
            self._loop.persistence.submitted(job)
        log.info("job %s submitted (%s, %d shards)", job.job_id, job.spec.kind, job.spec.shards)
        self._loop.wake.set()
        return cluster_pb2.SubmitJobResponse(job=job_proto(self._state, job))

    async def CancelJob(
        self, request: cluster_pb2.CancelJobRequest, context: Context
    ) -> cluster_pb2.CancelJobResponse:
        try:
            job = self._jobs.get(request.job_id)
            if job.state not in ACTIVE_STATES:
                raise BadInput(
                    grpc.StatusCode.FAILED_PRECONDITION, f"job {job.job_id} is already {job.state}"
                )
        except BadInput as exc:
            await abort_with(context, exc)
        self._loop.cancel(job)
        log.info("job %s cancelled", job.job_id)
        return cluster_pb2.CancelJobResponse(job=job_proto(self._state, job))

    async def ListJobs(
        self, request: cluster_pb2.ListJobsRequest, context: Context
    ) -> cluster_pb2.ListJobsResponse:
        return cluster_pb2.ListJobsResponse(
            jobs=[job_proto(self._state, j) for j in self._jobs.jobs.values()]
        )

    async def GetStatus(
        self, request: cluster_pb2.GetStatusRequest, context: Context
    ) -> cluster_pb2.ClusterStatus:
        return self.status()

    async def SetBudget(
        self, request: cluster_pb2.SetBudgetRequest, context: Context
    ) -> cluster_pb2.SetBudgetResponse:
        budget_w = request.budget_w
        reserve_w = request.reserve_w if request.HasField("reserve_w") else self._state.reserve_w
        try:
            if not (math.isfinite(budget_w) and budget_w > 0):
                raise BadInput(
                    grpc.StatusCode.INVALID_ARGUMENT, f"budget_w must be > 0, got {budget_w!r}"
                )
            if not (math.isfinite(reserve_w) and 0 <= reserve_w < budget_w):
                raise BadInput(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"reserve_w must be in [0, budget_w), got {reserve_w!r}",
                )
            floor_w = self._state.config.sum_min_power_limit_w()
            if budget_w - reserve_w < floor_w:
                raise BadInput(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"budget {budget_w:g} W - reserve {reserve_w:g} W is below the sum of the "
                    f"GPUs' minimum power limits ({floor_w:g} W)",
                )
        except BadInput as exc:
            await abort_with(context, exc)
        log.info("budget %g W -> %g W (reserve %g W)", self._state.budget_w, budget_w, reserve_w)
        self._state.budget_w, self._state.reserve_w = budget_w, reserve_w
        self._loop.wake.set()
        return cluster_pb2.SetBudgetResponse(budget_w=budget_w, reserve_w=reserve_w)

    async def SetPolicy(
        self, request: cluster_pb2.SetPolicyRequest, context: Context
    ) -> cluster_pb2.SetPolicyResponse:
        try:
            self._loop.set_policy(request.name)
        except ConfigError as exc:
            await abort_with(context, BadInput(grpc.StatusCode.NOT_FOUND, str(exc)))
        log.info("policy -> %s", request.name)
        return cluster_pb2.SetPolicyResponse(name=request.name)

    async def GetJobEvents(
        self, request: cluster_pb2.GetJobEventsRequest, context: Context
    ) -> cluster_pb2.GetJobEventsResponse:
        try:
            self._jobs.get(request.job_id)
        except BadInput as exc:
            await abort_with(context, exc)
        persistence = self._loop.persistence
        if persistence is None:
            return cluster_pb2.GetJobEventsResponse()
        events = persistence.store.events(request.job_id, limit=request.limit or 200)
        return cluster_pb2.GetJobEventsResponse(
            events=[
                cluster_pb2.JobEvent(timestamp_s=e.t_s, kind=e.kind, message=e.message)
                for e in events
            ]
        )

    async def WatchStatus(
        self, request: cluster_pb2.WatchStatusRequest, context: Context
    ) -> AsyncIterator[cluster_pb2.ClusterStatus]:
        interval_s = request.interval_s or self._state.config.control_period_s
        lo, hi = WATCH_INTERVAL_RANGE_S
        if not lo <= interval_s <= hi:
            await abort_with(
                context,
                BadInput(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"interval_s must be in [{lo:g}, {hi:g}], got {interval_s!r}",
                ),
            )
        while True:
            yield self.status()
            await asyncio.sleep(interval_s)
