"""Which greenllm node each Ray node is, where the controller listens, and the cluster's CA
(no Ray, no sockets)."""

from __future__ import annotations

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from greenllm.config import parse_cluster_config
from greenllm.errors import ConfigError
from greenllm.rpc.tls import ensure_ca, issue_server_cert
from scheduler.runtime.agents import agent_config
from scheduler.runtime.listen import plan_listen
from scheduler.runtime.nodemap import NodeMap, RayNode, name_from, ray_nodes

SIM = [{"type": "L4", "count": 1}]


def config(nodes, **extra):
    return parse_cluster_config({"nodes": nodes, "budget": {"budget_w": 1000}, **extra})


def gpu_box(node_id: str, address: str, hostname: str = "box", gpus: float = 1) -> RayNode:
    return RayNode(node_id, address, hostname, {"CPU": 1.0, "GPU": gpus} if gpus else {"CPU": 1})


def test_ray_nodes_keeps_the_alive_ones() -> None:
    raw = [
        {"NodeID": "a", "Alive": True, "NodeManagerAddress": "10.0.0.1",
         "NodeManagerHostname": "h1", "Resources": {"CPU": 2.0, "GPU": 1.0}},
        {"NodeID": "b", "Alive": False, "NodeManagerAddress": "10.0.0.2"},
    ]  # fmt: skip
    assert ray_nodes(raw) == [RayNode("a", "10.0.0.1", "h1", {"CPU": 2.0, "GPU": 1.0})]


def test_the_local_cluster_binds_by_resource_and_skips_the_head() -> None:
    cfg = config([{"name": "n1", "gpus": SIM}, {"name": "n2", "gpus": SIM}])
    nodes = NodeMap(cfg, joined=False)
    alive = [
        RayNode("head", "127.0.0.1", "h", {"greenllm-head": 1.0}),
        RayNode("x", "127.0.0.1", "h", {"greenllm-node:n2": 1.0}),
        RayNode("y", "127.0.0.1", "h", {"greenllm-node:n1": 1.0}),
    ]
    assert nodes.update(alive) == []
    assert nodes.bound == {"x": "n2", "y": "n1"} and "head" in nodes.skipped


def test_a_joined_cluster_binds_by_match_by_name_and_discovers_the_rest() -> None:
    cfg = config(
        [
            {"name": "sim-a", "gpus": SIM, "match": {"address": "10.77.0.1"}},
            {"name": "gpu-host", "backend": "nvml"},
        ]
    )
    nodes = NodeMap(cfg, joined=True)
    alive = [
        gpu_box("1", "10.77.0.1", "shared", gpus=0),
        gpu_box("2", "10.77.0.2", "gpu-host.example.org"),
        gpu_box("3", "10.77.0.3", "lonely"),
        gpu_box("4", "10.77.0.4", "cpu-only", gpus=0),
    ]
    new = nodes.update(alive)
    assert nodes.bound == {"1": "sim-a", "2": "gpu-host", "3": "lonely"}
    assert [(n.name, n.backend, n.match and n.match.address) for n in new] == [
        ("lonely", "nvml", "10.77.0.3")
    ]
    assert "no GPU and no cluster.yaml entry" in nodes.skipped["4"]
    assert [n.name for n in nodes.cluster_config().nodes] == ["sim-a", "gpu-host", "lonely"]


def test_shared_host_names_give_ip_names_that_stay_with_the_machine() -> None:
    nodes = NodeMap(config([{"name": "sim", "gpus": SIM, "match": {"address": "10.0.0.9"}}]), True)
    first = nodes.update([gpu_box("a", "10.0.0.1", "vm"), gpu_box("b", "10.0.0.2", "vm")])
    assert sorted(n.name for n in first) == ["10.0.0.1", "10.0.0.2"]
    # the machine at 10.0.0.2 leaves and comes back as a new Ray node: same name, not new
    assert nodes.update([gpu_box("a", "10.0.0.1", "vm")]) == []
    assert nodes.bound == {"a": "10.0.0.1"}
    assert nodes.update([gpu_box("a", "10.0.0.1", "vm"), gpu_box("c", "10.0.0.2", "vm")]) == []
    assert nodes.bound == {"a": "10.0.0.1", "c": "10.0.0.2"}
    # remembered across a controller restart
    again = NodeMap(nodes.config, True, list(nodes.discovered.values()))
    assert again.update([gpu_box("d", "10.0.0.2", "vm")]) == []
    assert again.bound == {"d": "10.0.0.2"}


def test_an_entry_describing_two_machines_is_noted_and_bound_once() -> None:
    nodes = NodeMap(config([{"name": "vm", "gpus": SIM}]), True)
    nodes.update([gpu_box("a", "10.0.0.1", "vm"), gpu_box("b", "10.0.0.2", "vm")])
    assert nodes.bound["a"] == "vm" and nodes.bound["b"] == "10.0.0.2"
    assert any("also describes the Ray node at 10.0.0.2" in n for n in nodes.notes)


def test_names_are_made_valid() -> None:
    assert name_from("fe80::1") == "fe80--1"
    assert name_from("GPU_box.local") == "GPU_box.local"
    assert name_from("???") == "node"


def test_a_match_names_something() -> None:
    with pytest.raises(ConfigError, match="give 'address', 'hostname' or both"):
        config([{"name": "n", "gpus": SIM, "match": {}}])


def test_the_local_cluster_listens_where_the_config_says(tmp_path) -> None:
    cfg = config([{"name": "n", "gpus": SIM}], state_dir=str(tmp_path))
    plan = plan_listen(cfg, joined=False, node_ip="10.1.2.3")
    assert plan.listen == plan.published == "127.0.0.1:50051"
    assert plan.tls is None and plan.ca_pem is None
    assert plan.metrics_url == "http://127.0.0.1:9464/metrics"
    assert not (tmp_path / "tls").exists()


def test_a_joined_cluster_listens_on_the_node_with_tls_from_its_ca(tmp_path) -> None:
    cfg = config([{"name": "n", "gpus": SIM}], state_dir=str(tmp_path))
    plan = plan_listen(cfg, joined=True, node_ip="10.1.2.3")
    assert plan.listen == plan.published == "10.1.2.3:50051"
    assert plan.metrics_url == "http://10.1.2.3:9464/metrics"
    assert plan.tls is not None and plan.ca_file == tmp_path / "tls" / "ca.pem"
    assert plan.ca_pem == (tmp_path / "tls" / "ca.pem").read_bytes()
    applied = plan.apply(cfg)
    assert applied.controller.address == "10.1.2.3:50051" and applied.auth.tls == plan.tls
    cert = x509.load_pem_x509_certificate(plan.tls.cert_file.read_bytes())
    ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.1.2.3") in ips.get_values_for_type(x509.IPAddress)
    wildcard = config(
        [{"name": "n", "gpus": SIM}],
        state_dir=str(tmp_path),
        controller={"address": "0.0.0.0:7000", "metrics_port": 0},
    )
    plan = plan_listen(wildcard, joined=True, node_ip="10.1.2.3")
    assert (plan.listen, plan.published, plan.metrics_url) == (
        "0.0.0.0:7000",
        "10.1.2.3:7000",
        None,
    )


def test_the_ca_is_made_once_and_signs_the_controller(tmp_path) -> None:
    ca = ensure_ca(tmp_path)
    assert ensure_ca(tmp_path) == ca
    assert stat.S_IMODE(ca.key_file.stat().st_mode) == 0o600
    first = ca.cert_file.read_bytes()
    server = issue_server_cert(tmp_path, ["10.0.0.1", "box", "10.0.0.1"])
    assert stat.S_IMODE(server.key_file.stat().st_mode) == 0o600
    assert ca.cert_file.read_bytes() == first
    ca_cert = x509.load_pem_x509_certificate(first)
    leaf = x509.load_pem_x509_certificate(server.cert_file.read_bytes())
    assert leaf.issuer == ca_cert.subject
    public = ca_cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    leaf.verify_directly_issued_by(ca_cert)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["box"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1")]


def test_an_agent_gets_the_config_without_tls_paths_and_a_safe_boot(tmp_path) -> None:
    tls = {"cert_file": str(tmp_path / "c.pem"), "key_file": str(tmp_path / "k.pem")}
    cfg = config(
        [{"name": "sim", "gpus": SIM}, {"name": "real", "backend": "nvml"}],
        auth={"enabled": True, "tls": tls},
    )
    sim = agent_config(cfg, "sim", strip_tls=True)
    assert sim.auth.tls is None and sim.auth.enabled and sim.failsafe.limit_w is None
    assert sim.failsafe_limit_w("L4") == cfg.failsafe_limit_w("L4")  # its static share
    real = agent_config(cfg, "real", strip_tls=False)
    assert real.auth.tls == cfg.auth.tls
    # GPUs the config does not list have no share: they boot at their minimum limit
    assert real.failsafe_limit_w("A100-SXM4") == 100.0 and real.failsafe_limit_w("L4") == 40.0
    fixed = parse_cluster_config(
        {**cfg.model_dump(mode="json"), "failsafe": {"timeout_s": 5, "limit_w": 250}}
    )
    assert agent_config(fixed, "real", strip_tls=False).failsafe.limit_w == 250


def _raw(node_id: str, alive: bool, resources: dict[str, float], address: str = "127.0.0.1"):
    return {"NodeID": node_id, "Alive": alive, "NodeManagerAddress": address,
            "NodeManagerHostname": "h", "Resources": resources}  # fmt: skip


def test_a_ray_node_that_dies_names_its_node_as_down() -> None:
    """Issue 19 (a): a dead Ray node is a machine gone, told to the controller as node down:
    one it was bound to, and (after a controller restart, nothing bound yet) one that
    ``ray.nodes()`` lists as dead with its node's resource; never a node that is back."""
    cfg = config([{"name": "n1", "gpus": SIM}, {"name": "n2", "gpus": SIM}])
    nodes = NodeMap(cfg, joined=False)
    up = [_raw("x", True, {"greenllm-node:n1": 1.0}), _raw("y", True, {"greenllm-node:n2": 1.0})]
    nodes.update(ray_nodes(up))
    before = dict(nodes.bound)
    now = [up[0], _raw("y", False, {"greenllm-node:n2": 1.0})]
    nodes.update(ray_nodes(now))
    assert nodes.dead(now, before) == ["n2"]
    fresh = NodeMap(cfg, joined=False)  # a restarted controller
    fresh.update(ray_nodes(now))
    assert fresh.dead(now, {}) == ["n2"]
    back = [*now, _raw("z", True, {"greenllm-node:n2": 1.0})]  # n2's machine rebooted
    before = dict(fresh.bound)
    fresh.update(ray_nodes(back))
    assert fresh.dead(back, before) == []
