"""Where the controller listens, and with which TLS certificate.

- The local cluster: ``controller.address`` and ``auth.tls`` as cluster.yaml gives them.
- A joined cluster (machines reach it over the network): the node's own address (a loopback
  or empty host in ``controller.address`` becomes the node's IP; ``0.0.0.0`` listens
  everywhere and publishes the node's IP; any other host is kept), always with TLS: the
  certificate of ``auth.tls`` when given, else one for the node's addresses from the
  cluster's own CA (:mod:`greenllm.rpc.tls`), created in the state directory.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from greenllm.config import ClusterConfig, TLSConfig
from greenllm.errors import GreenllmError
from greenllm.rpc.tls import ensure_ca, issue_server_cert

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "")
WILDCARD_HOSTS = ("0.0.0.0", "::")


def join_host_port(host: str, port: str | int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class ListenPlan:
    """Where the controller listens and what it publishes.

    Attributes:
        listen: The address its gRPC server binds.
        published: The address agents and clients dial.
        tls: Its TLS certificate (None: plaintext).
        ca_file: The CA clients trust (None: plaintext).
        ca_pem: That CA's certificate, handed to agents (None: they use the config's TLS
            paths, which exist on this machine only).
        metrics_url: Its Prometheus endpoint (None: disabled).
    """

    listen: str
    published: str
    tls: TLSConfig | None
    ca_file: Path | None
    ca_pem: bytes | None
    metrics_url: str | None

    def apply(self, config: ClusterConfig) -> ClusterConfig:
        """``config`` with this listen address and TLS certificate."""
        return config.model_copy(
            update={
                "controller": config.controller.model_copy(update={"address": self.listen}),
                "auth": config.auth.model_copy(update={"tls": self.tls}),
            }
        )


def _metrics_url(config: ClusterConfig, published_host: str) -> str | None:
    port = config.controller.metrics_port
    if not port:
        return None
    host = config.controller.metrics_address or published_host
    if host in WILDCARD_HOSTS:
        host = published_host
    return f"http://{join_host_port(host.strip('[]'), port)}/metrics"


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise GreenllmError(f"auth.tls.{what}: cannot read {path}: {exc.strerror}") from None


def plan_listen(config: ClusterConfig, joined: bool, node_ip: str) -> ListenPlan:
    """Where the controller of ``config`` listens on the node whose address is
    ``node_ip``.

    Raises:
        GreenllmError: The CA or certificate cannot be made or read.
    """
    host, _, port = config.controller.address.rpartition(":")
    host = host.strip("[]")
    if not joined:
        tls = config.auth.tls
        ca_file = None if tls is None else (tls.ca_file or tls.cert_file)
        return ListenPlan(
            config.controller.address,
            config.controller.address,
            tls,
            ca_file,
            None,
            _metrics_url(config, host),
        )
    if host in LOOPBACK_HOSTS:
        listen_host = published_host = node_ip
    elif host in WILDCARD_HOSTS:
        listen_host, published_host = host, node_ip
    else:
        listen_host = published_host = host
    tls = config.auth.tls
    if tls is None:
        names = [published_host, node_ip, socket.gethostname(), "127.0.0.1", "localhost"]
        cert = issue_server_cert(config.state_dir, names)
        tls = TLSConfig(cert_file=cert.cert_file, key_file=cert.key_file)
        ca_file = ensure_ca(config.state_dir).cert_file
    else:
        ca_file = tls.ca_file or tls.cert_file
    return ListenPlan(
        join_host_port(listen_host, port),
        join_host_port(published_host, port),
        tls,
        ca_file,
        _read(ca_file, "ca_file"),
        _metrics_url(config, published_host),
    )
