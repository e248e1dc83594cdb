"""TLS on the controller's port (certificate paths in cluster.yaml auth.tls, or the
cluster's own CA), and where clients find the controller."""

from __future__ import annotations

import datetime
import ipaddress
import time
from pathlib import Path

import grpc
import pytest
from conftest import free_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from greenllm.config import load_cluster_config
from greenllm.proto.v1 import cluster_pb2, cluster_pb2_grpc
from greenllm.rpc.client import ClusterClient
from scheduler.server.app import Controller

pytestmark = pytest.mark.timeout(60)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "greenllm-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_controller(tmp_path, make_config, loop_thread) -> None:
    cert, key = _self_signed(tmp_path)
    tls = {"cert_file": str(cert), "key_file": str(key)}
    config = load_cluster_config(make_config(auth={"enabled": True, "tls": tls}))
    ctl = Controller(config)
    loop_thread.run(ctl.start())
    try:
        with ClusterClient(config) as client:
            assert len(client.get_status().nodes) == 3
        with grpc.insecure_channel(config.controller.address) as plain:
            stub = cluster_pb2_grpc.ClusterStub(plain)
            with pytest.raises(grpc.RpcError) as info:
                stub.GetStatus(cluster_pb2.GetStatusRequest(), timeout=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        loop_thread.run(ctl.stop(0))


def test_the_clusters_own_ca(tmp_path, make_config, loop_thread, wait) -> None:
    """A joined cluster's controller: a certificate from the CA in the state directory, its
    address and CA published there; the CLI's client and an agent given the CA connect."""
    from greenllm.rpc.locate import read_endpoint, write_endpoint
    from scheduler.runtime.listen import plan_listen
    from workers.agent.agent import Backoff, NodeAgent

    config = load_cluster_config(make_config())
    plan = plan_listen(config, joined=True, node_ip="127.0.0.1")
    assert plan.ca_pem is not None and plan.published == config.controller.address
    ctl = Controller(plan.apply(config), address=plan.listen)
    loop_thread.run(ctl.start())
    try:
        write_endpoint(config.state_dir, plan.published, plan.ca_file)
        endpoint = read_endpoint(config.state_dir)
        assert endpoint is not None and endpoint.ca_pem == plan.ca_pem
        agent = NodeAgent(
            config,
            "node-l4",
            backoff=Backoff(0.05, 0.3),
            run_shards=False,
            tls_root_pem=plan.ca_pem,
        )
        task = loop_thread.spawn(agent.run())
        try:
            with ClusterClient(config) as client:  # config has no TLS: the endpoint's CA
                wait(
                    lambda: any(
                        n.connected for n in client.get_status().nodes if n.name == "node-l4"
                    ),
                    10,
                    "node-l4 over TLS",
                )
        finally:
            loop_thread.cancel(task)
        with (
            grpc.insecure_channel(config.controller.address) as plain,
            pytest.raises(grpc.RpcError) as info,
        ):
            cluster_pb2_grpc.ClusterStub(plain).GetStatus(cluster_pb2.GetStatusRequest(), timeout=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        loop_thread.run(ctl.stop(0))


def test_where_the_controller_is_found(make_config, monkeypatch) -> None:
    """The published endpoint first; else the config's address; a Ray cluster that does not
    answer is not waited for."""
    from greenllm.rpc.locate import find_controller, remove_endpoint, write_endpoint

    config = load_cluster_config(make_config())
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")  # nothing listens there
    start = time.monotonic()
    found = find_controller(config)
    assert (found.address, found.ca_pem, found.source) == (
        config.controller.address,
        None,
        "config",
    )
    assert time.monotonic() - start < 5
    ca = config.state_dir / "ca.pem"
    config.state_dir.mkdir(parents=True, exist_ok=True)
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----")
    write_endpoint(config.state_dir, "10.0.0.1:50051", ca)
    found = find_controller(config)
    assert (found.address, found.ca_pem, found.source) == (
        "10.0.0.1:50051",
        ca.read_bytes(),
        "state",
    )
    remove_endpoint(config.state_dir)
    assert find_controller(config).source == "config"
