"""``greenllm.v1.Cluster``: the operators' API, kept thin over the controller shell."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from greenllm.proto.v1 import cluster_pb2, cluster_pb2_grpc
from scheduler.server.errors import BadInput, abort_with
from scheduler.server.logstore import LogStore
from scheduler.shell import operator, status
from scheduler.shell.controller import ControllerShell

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
#: Bounds of WatchStatus's interval, seconds.
WATCH_INTERVAL_RANGE_S = (0.05, 3600.0)
#: SetBudget waits at most this many control periods (and seconds) for the step that
#: carries the change out and its acks, so its answer includes refusals.
SETTLE_PERIODS, SETTLE_MAX_S = 4, 3.0


class ClusterServicer(cluster_pb2_grpc.ClusterServicer):
    """Jobs, status, budget and policy."""

    def __init__(self, shell: ControllerShell, logs: LogStore | None = None) -> None:
        self._shell = shell
        self._logs = logs

    def status(self) -> cluster_pb2.ClusterStatus:
        """The cluster status now."""
        return status.cluster_status(self._shell)

    async def SubmitJob(
        self, request: cluster_pb2.SubmitJobRequest, context: Context
    ) -> cluster_pb2.SubmitJobResponse:
        try:
            job = operator.submit(self._shell, request.spec_json)
        except BadInput as exc:
            await abort_with(context, exc)
        log.info("job %s submitted (%s, %d shards)", job.job_id, job.spec.kind, job.spec.shards)
        return cluster_pb2.SubmitJobResponse(job=status.job_proto(self._shell, job, with_spec=True))

    async def CancelJob(
        self, request: cluster_pb2.CancelJobRequest, context: Context
    ) -> cluster_pb2.CancelJobResponse:
        try:
            job = operator.cancel(self._shell, request.job_id)
        except BadInput as exc:
            await abort_with(context, exc)
        log.info("job %s cancelled", job.job_id)
        return cluster_pb2.CancelJobResponse(job=status.job_proto(self._shell, job))

    async def ListJobs(
        self, request: cluster_pb2.ListJobsRequest, context: Context
    ) -> cluster_pb2.ListJobsResponse:
        try:
            return status.list_jobs(self._shell, request.page_size, request.page_token)
        except BadInput as exc:
            await abort_with(context, exc)

    async def GetJob(self, request: cluster_pb2.GetJobRequest, context: Context) -> cluster_pb2.Job:
        try:
            job = operator.get(self._shell, request.job_id)
        except BadInput as exc:
            await abort_with(context, exc)
        return status.job_proto(self._shell, job, with_spec=True)

    async def GetStatus(
        self, request: cluster_pb2.GetStatusRequest, context: Context
    ) -> cluster_pb2.ClusterStatus:
        return self.status()

    async def SetBudget(
        self, request: cluster_pb2.SetBudgetRequest, context: Context
    ) -> cluster_pb2.SetBudgetResponse:
        reserve_w = request.reserve_w if request.HasField("reserve_w") else None
        domain = request.domain
        try:
            if domain:
                budget_w, reserve_w = operator.set_domain_limit(
                    self._shell, domain, request.budget_w, reserve_w
                )
            else:
                budget_w, reserve_w = operator.set_budget(self._shell, request.budget_w, reserve_w)
        except BadInput as exc:
            await abort_with(context, exc)
        log.info(
            "%s %g W (reserve %g W)",
            f"domain {domain}" if domain else "budget",
            budget_w,
            reserve_w,
        )
        await self._settled()
        over_w, why = operator.budget_shortfall(self._shell, domain)
        return cluster_pb2.SetBudgetResponse(
            budget_w=budget_w,
            reserve_w=reserve_w,
            shortfall_w=over_w,
            shortfall_reason=why,
            domain=domain,
        )

    async def _settled(self) -> None:
        """Wait (a few control periods at most) for the step that carries out a change and
        for its power-limit acks: a GPU that refuses its lowering says so by then, so the
        answer tells what the GPUs will hold."""
        shell = self._shell
        loop = asyncio.get_running_loop()
        steps = shell.steps
        deadline = loop.time() + min(SETTLE_MAX_S, SETTLE_PERIODS * shell.period_s)
        while loop.time() < deadline:
            if shell.steps > steps and not shell.ledger.power_commands_pending():
                return
            await asyncio.sleep(min(0.02, shell.period_s / 4))

    async def SetPolicy(
        self, request: cluster_pb2.SetPolicyRequest, context: Context
    ) -> cluster_pb2.SetPolicyResponse:
        try:
            name = operator.set_policy(self._shell, request.name)
        except BadInput as exc:
            await abort_with(context, exc)
        log.info("policy -> %s", name)
        return cluster_pb2.SetPolicyResponse(name=name)

    async def NodeDown(
        self, request: cluster_pb2.NodeDownRequest, context: Context
    ) -> cluster_pb2.NodeDownResponse:
        try:
            changed = operator.node_down(
                self._shell, request.node, request.reason or "an operator said so"
            )
        except BadInput as exc:
            await abort_with(context, exc)
        node = self._shell.nodes[request.node]
        if changed:
            log.warning("node %s is down: %s", node.name, node.down_reason)
        return cluster_pb2.NodeDownResponse(
            node=node.name,
            changed=changed,
            phase=status.node_phase(node),  # type: ignore[arg-type]
        )

    async def GetJobEvents(
        self, request: cluster_pb2.GetJobEventsRequest, context: Context
    ) -> cluster_pb2.GetJobEventsResponse:
        try:
            operator.get(self._shell, request.job_id)
        except BadInput as exc:
            await abort_with(context, exc)
        events = status.job_events(self._shell, request.job_id, request.limit)
        return cluster_pb2.GetJobEventsResponse(
            events=[
                cluster_pb2.JobEvent(
                    timestamp_s=e.t_s,
                    kind=e.kind,
                    message=e.message,
                    entity=e.entity,
                    key=e.key,
                    old=e.old,
                )
                for e in events
            ]
        )

    async def GetJobLogs(
        self, request: cluster_pb2.GetJobLogsRequest, context: Context
    ) -> cluster_pb2.GetJobLogsResponse:
        try:
            operator.get(self._shell, request.job_id)
        except BadInput as exc:
            await abort_with(context, exc)
        if self._logs is None:
            return cluster_pb2.GetJobLogsResponse()
        got = self._logs.read(request.job_id, request.rank, request.offset, request.max_bytes)
        return cluster_pb2.GetJobLogsResponse(
            data=got.data, next_offset=got.next_offset, size=got.size, generation=got.generation
        )

    async def WatchStatus(
        self, request: cluster_pb2.WatchStatusRequest, context: Context
    ) -> AsyncIterator[cluster_pb2.ClusterStatus]:
        interval_s = request.interval_s or self._shell.config.control_period_s
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
