"""The typed cluster-API client: every call has a deadline; failures become one-line errors."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc

from greenllm.config import ClusterConfig, default_config_path, load_cluster_config
from greenllm.errors import GreenllmError
from greenllm.proto.v1 import cluster_pb2, cluster_pb2_grpc
from greenllm.rpc.auth import OPERATOR_TOKEN_ENV, bearer_metadata, operator_token, tokens_path
from greenllm.rpc.channel import sync_channel
from greenllm.rpc.locate import PROBE_TIMEOUT_S, find_controller, listening

#: Deadline of a unary call, seconds.
DEFAULT_TIMEOUT_S = 5.0

#: How the controller's own UNAVAILABLE answers begin (it is up, but cannot do that now:
#: its state cannot be saved; the second is how earlier controllers said it).
SERVER_UNAVAILABLE = ("state not saved", "state directory not writable")

T = TypeVar("T")


class ControllerError(GreenllmError):
    """A cluster-API call failed; the message says why in one line.

    Attributes:
        code: The gRPC status code.
    """

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code


def describe_rpc_error(exc: grpc.RpcError, address: str) -> ControllerError:
    """Turn a gRPC failure into a one-line :class:`ControllerError`."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else "") or ""
    if code == grpc.StatusCode.UNAVAILABLE and details.startswith(SERVER_UNAVAILABLE):
        msg = f"controller at {address}: {details}"
    elif code == grpc.StatusCode.UNAVAILABLE:
        msg = f"no controller answers at {address} (start one with `greenllm up`)"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        msg = f"controller at {address} did not answer in time"
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        msg = f"controller at {address} rejected the token: {details}"
    else:
        msg = f"controller at {address}: {code.name}: {details}"
    return ControllerError(" ".join(msg.split()), code)


def controller_listening(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether something accepts TCP connections at ``address`` (``host:port``)."""
    return listening(address, timeout_s)


def no_token_error(address: str, state_dir: Path) -> ControllerError:
    """The error when there is no operator token: no controller, or one whose tokens are
    elsewhere."""
    if not controller_listening(address):
        return ControllerError(
            f"no controller running at {address} (start one with `greenllm up`)",
            grpc.StatusCode.UNAVAILABLE,
        )
    return ControllerError(
        f"controller at {address} is running, but {tokens_path(state_dir)} does not exist: "
        f"pass the --config it was started with, or set ${OPERATOR_TOKEN_ENV}",
        grpc.StatusCode.UNAUTHENTICATED,
    )


class ClusterClient:
    """Blocking client of the ``greenllm.v1.Cluster`` API.

    Args:
        config: The cluster config naming the controller (address, TLS, state_dir).
        token: Operator token; by default ``$GREENLLM_TOKEN`` or the state directory's,
            and none at all when the config disables auth.
        timeout_s: Deadline of each unary call, seconds.
        address: Where the controller listens; by default where it publishes its address
            (:func:`greenllm.rpc.locate.find_controller`: the state directory, the config,
            or the Ray cluster), with the CA it publishes beside it.
        root_pem: With ``address``: the CA certificate to trust (None: the config's TLS
            settings).

    Raises:
        ControllerError: There is no operator token: "no controller running at ADDR"
            when nothing listens there.
    """

    def __init__(
        self,
        config: ClusterConfig,
        token: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        address: str | None = None,
        root_pem: bytes | None = None,
    ) -> None:
        if address is None:
            endpoint = find_controller(config)
            address, root_pem = endpoint.address, endpoint.ca_pem
        self.address = address
        if token is None and config.auth.enabled:
            no_env = not os.environ.get(OPERATOR_TOKEN_ENV)
            if no_env and not tokens_path(config.state_dir).exists():
                raise no_token_error(self.address, config.state_dir)
            token = operator_token(config.state_dir)
        self._metadata = bearer_metadata(token)
        self._timeout_s = timeout_s
        self._channel = sync_channel(config, self.address, root_pem)
        self._stub = cluster_pb2_grpc.ClusterStub(self._channel)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: Any) -> T:
        try:
            return method(request, timeout=self._timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise describe_rpc_error(exc, self.address) from None

    def get_status(self) -> cluster_pb2.ClusterStatus:
        """The cluster's status now."""
        return self._call(self._stub.GetStatus, cluster_pb2.GetStatusRequest())

    def set_budget(
        self, budget_w: float, reserve_w: float | None = None, domain: str = ""
    ) -> cluster_pb2.SetBudgetResponse:
        """Set the cluster power budget (and optionally the reserve), watts; with
        ``domain``, that power domain's limit (and reserve) instead."""
        request = cluster_pb2.SetBudgetRequest(budget_w=budget_w, domain=domain)
        if reserve_w is not None:
            request.reserve_w = reserve_w
        return self._call(self._stub.SetBudget, request)

    def set_policy(self, name: str) -> cluster_pb2.SetPolicyResponse:
        """Switch the allocation policy."""
        return self._call(self._stub.SetPolicy, cluster_pb2.SetPolicyRequest(name=name))

    def node_down(self, node: str, reason: str = "") -> cluster_pb2.NodeDownResponse:
        """Say that ``node`` is powered off (see ``greenllm node down``)."""
        request = cluster_pb2.NodeDownRequest(node=node, reason=reason)
        return self._call(self._stub.NodeDown, request)

    def submit_job(self, spec_json: str) -> cluster_pb2.Job:
        """Submit a job (its JOB.yaml document as JSON); returns it with its id and state."""
        request = cluster_pb2.SubmitJobRequest(spec_json=spec_json)
        return self._call(self._stub.SubmitJob, request).job

    def cancel_job(self, job_id: str) -> cluster_pb2.Job:
        """Cancel a job; returns it in its new state."""
        return self._call(self._stub.CancelJob, cluster_pb2.CancelJobRequest(job_id=job_id)).job

    def list_jobs(self) -> list[cluster_pb2.Job]:
        """The newest jobs (the first page of :meth:`list_jobs_page`)."""
        return list(self.list_jobs_page().jobs)

    def list_jobs_page(
        self, page_size: int = 0, page_token: str = ""
    ) -> cluster_pb2.ListJobsResponse:
        """One page of every job ever submitted, newest first, with the total and the next
        page's token ("" after the last).

        Args:
            page_size: Jobs per page (0: the server's default, 100; at most 1000).
            page_token: A previous page's ``next_page_token`` ("": the first page).
        """
        request = cluster_pb2.ListJobsRequest(page_size=page_size, page_token=page_token)
        return self._call(self._stub.ListJobs, request)

    def job_events(self, job_id: str, limit: int = 0) -> list[cluster_pb2.JobEvent]:
        """A job's event log, oldest first (the newest ``limit``; 0: the server's default)."""
        request = cluster_pb2.GetJobEventsRequest(job_id=job_id, limit=limit)
        return list(self._call(self._stub.GetJobEvents, request).events)

    def get_job(self, job_id: str) -> cluster_pb2.Job:
        """One job, with its whole spec."""
        return self._call(self._stub.GetJob, cluster_pb2.GetJobRequest(job_id=job_id))

    def get_job_logs(
        self, job_id: str, rank: int = 0, offset: int = 0, max_bytes: int = 0
    ) -> cluster_pb2.GetJobLogsResponse:
        """Output of one rank (or replica) of a job from byte ``offset`` (negative: from the
        end), at most ``max_bytes`` (0: the server's default); read on from its
        ``next_offset``."""
        request = cluster_pb2.GetJobLogsRequest(
            job_id=job_id, rank=rank, offset=offset, max_bytes=max_bytes
        )
        return self._call(self._stub.GetJobLogs, request)

    def watch_status(self, interval_s: float = 0.0) -> Iterator[cluster_pb2.ClusterStatus]:
        """Status updates until the caller stops iterating (no deadline)."""
        stream = self._stub.WatchStatus(
            cluster_pb2.WatchStatusRequest(interval_s=interval_s), metadata=self._metadata
        )
        try:
            yield from stream
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise describe_rpc_error(exc, self.address) from None
        finally:
            stream.cancel()


def connect(config_path: Path | None, timeout_s: float = DEFAULT_TIMEOUT_S) -> ClusterClient:
    """A client for the controller named in a cluster.yaml (default: the usual search)."""
    config = load_cluster_config(config_path or default_config_path())
    return ClusterClient(config, timeout_s=timeout_s)
