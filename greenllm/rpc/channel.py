"""Channel and server options shared by both ends, and TLS credentials from cluster.yaml."""

from __future__ import annotations

from pathlib import Path

import grpc

from greenllm.config import ClusterConfig, TLSConfig
from greenllm.errors import ConfigError

#: Largest message either end accepts, bytes. A node's telemetry batch is a few KiB.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

#: Options of every channel and server: message size caps and keepalive, so a dead peer
#: on a half-open connection is noticed within seconds.
GRPC_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
]


def _read(path: Path, field: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"auth.tls.{field}: cannot read {path}: {exc.strerror}") from None


def server_credentials(tls: TLSConfig) -> grpc.ServerCredentials:
    """TLS credentials for the controller; with ``ca_file``, clients must present a cert."""
    key, cert = _read(tls.key_file, "key_file"), _read(tls.cert_file, "cert_file")
    ca = _read(tls.ca_file, "ca_file") if tls.ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


def channel_credentials(tls: TLSConfig) -> grpc.ChannelCredentials:
    """TLS credentials for clients: trust ``ca_file`` (else the server's own certificate)."""
    root = _read(tls.ca_file, "ca_file") if tls.ca_file else _read(tls.cert_file, "cert_file")
    return grpc.ssl_channel_credentials(root_certificates=root)


def _client_credentials(
    config: ClusterConfig, root_pem: bytes | None
) -> grpc.ChannelCredentials | None:
    """TLS credentials trusting ``root_pem`` (a CA handed over at start), else the config's
    TLS settings; None for a plaintext channel."""
    if root_pem is not None:
        return grpc.ssl_channel_credentials(root_certificates=root_pem)
    if config.auth.tls is not None:
        return channel_credentials(config.auth.tls)
    return None


def aio_channel(
    config: ClusterConfig, address: str | None = None, root_pem: bytes | None = None
) -> grpc.aio.Channel:
    """An asyncio channel to the controller named in ``config`` (TLS when configured, or
    when ``root_pem``, the CA certificate to trust, is given)."""
    target = address or config.controller.address
    creds = _client_credentials(config, root_pem)
    if creds is not None:
        return grpc.aio.secure_channel(target, creds, options=GRPC_OPTIONS)
    return grpc.aio.insecure_channel(target, options=GRPC_OPTIONS)


def sync_channel(
    config: ClusterConfig, address: str | None = None, root_pem: bytes | None = None
) -> grpc.Channel:
    """A blocking channel to the controller named in ``config`` (TLS when configured, or
    when ``root_pem``, the CA certificate to trust, is given)."""
    target = address or config.controller.address
    creds = _client_credentials(config, root_pem)
    if creds is not None:
        return grpc.secure_channel(target, creds, GRPC_OPTIONS)
    return grpc.insecure_channel(target, options=GRPC_OPTIONS)
