"""cluster.yaml: the pydantic v2 models and the loader.

Every model forbids unknown keys. :func:`load_cluster_config` turns any problem
(missing file, bad YAML, unknown key, wrong type, impossible budget) into one
:class:`~greenllm.errors.ConfigError` whose message names the file, the field path
and what is wrong. The YAML loader and the error format live in :mod:`greenllm.loading`
(re-exported here for job specs and scenarios).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from greenllm.config_sections import (
    AuthConfig,
    BudgetConfig,
    BudgetFollow,
    CarbonConfig,
    ControllerConfig,
    FailsafeConfig,
    PowerDomain,
    ServeConfig,
    TLSConfig,
)
from greenllm.devices.catalog import get_spec
from greenllm.energy.carbon import GridIntensity
from greenllm.errors import ConfigError, GreenllmError
from greenllm.loading import format_validation_error as format_validation_error
from greenllm.loading import load_yaml_mapping as load_yaml_mapping
from greenllm.loading import validate as validate
from greenllm.power_domains import DomainLayout, resolve

__all__ = [
    "AuthConfig",
    "BudgetConfig",
    "BudgetFollow",
    "CarbonConfig",
    "ClusterConfig",
    "ControllerConfig",
    "FailsafeConfig",
    "GPUGroup",
    "NodeConfig",
    "NodeMatch",
    "PowerDomain",
    "ServeConfig",
    "TLSConfig",
    "check_signal",
    "failsafe_shares_w",
    "load_cluster_config",
    "parse_cluster_config",
    "registered_policies",
]

#: Entry-point group under which allocation policies register (see pyproject.toml).
POLICY_ENTRY_POINT_GROUP = "greenllm.policies"


def registered_policies() -> list[str]:
    """Names of the installed allocation policies, sorted."""
    return sorted(ep.name for ep in entry_points(group=POLICY_ENTRY_POINT_GROUP))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GPUGroup(_Strict):
    """Several GPUs of one type on a node.

    Attributes:
        type: Catalog GPU type, e.g. ``"H100-SXM"``.
        count: How many.
    """

    type: str
    count: int = Field(default=1, ge=1, le=64)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        try:
            return get_spec(value).name
        except GreenllmError as exc:
            raise ValueError(str(exc)) from None


class NodeMatch(_Strict):
    """Which machine of a joined Ray cluster a node entry describes (``greenllm up
    --address``); given both, a machine must match both.

    Attributes:
        address: The Ray node's IP address (what ``ray start --node-ip-address`` gave, or
            Ray found).
        hostname: The Ray node's host name.
    """

    address: str | None = Field(default=None, min_length=1, pattern=r"^[^\s/]+$")
    hostname: str | None = Field(default=None, min_length=1, pattern=r"^[^\s/]+$")

    @model_validator(mode="after")
    def _something(self) -> NodeMatch:
        if self.address is None and self.hostname is None:
            raise ValueError("give 'address', 'hostname' or both")
        return self


class NodeConfig(_Strict):
    """One node.

    Attributes:
        name: Unique node name.
        backend: ``"simulated"`` (GPUs modelled from ``gpus``) or ``"nvml"`` (real GPUs,
            discovered; ``gpus`` then states the expected inventory, if given).
        gpus: GPU groups on the node.
        match: On a joined Ray cluster, the machine this entry describes (by IP address
            and/or host name); without it, the machine whose host name or IP address is
            ``name``. Machines no entry describes get an NVML node named after them.
    """

    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    backend: Literal["simulated", "nvml"] = "simulated"
    gpus: list[GPUGroup] = Field(default_factory=list)
    match: NodeMatch | None = None

    @model_validator(mode="after")
    def _has_gpus(self) -> NodeConfig:
        if self.backend == "simulated" and not self.gpus:
            raise ValueError("a simulated node needs at least one entry in 'gpus'")
        return self

    def gpu_types(self) -> list[str]:
        """Type of each GPU in index order."""
        return [g.type for g in self.gpus for _ in range(g.count)]


class ClusterConfig(_Strict):
    """The whole of cluster.yaml.

    Attributes:
        name: Cluster name (a client finds its controller through Ray by it).
        nodes: The nodes and their GPUs.
        budget: The global power budget and reserve.
        policy: Allocation policy (``greenllm policy list``, docs/policies.md).
        control_period_s: Seconds between control steps (decide() calls).
        telemetry_interval_s: Seconds between GPU samples on each agent.
        failsafe: What an agent does when it loses the controller.
        state_dir: Folder for the controller's state (jobs, ledger, tokens, endpoint);
            relative paths are taken from the file's folder.
        storage_path: Where training jobs keep checkpoints (see its description).
        auth: Bearer-token auth and optional TLS.
        controller: Where the controller listens, and its metrics port.
        serve: The inference ingress.
        carbon: Carbon accounting (grid intensity, PUE).
        power_domains: The power delivery tree (site > row > rack ...): each domain's GPUs
            may hold limits summing to at most its ``limit_w - reserve_w``, beside the
            cluster budget (docs/power-domains.md). Empty: the budget alone.
    """

    name: str = "greenllm"
    nodes: list[NodeConfig] = Field(min_length=1)
    budget: BudgetConfig
    policy: str = "max-throughput"
    control_period_s: float = Field(default=0.5, gt=0, le=60, allow_inf_nan=False)
    telemetry_interval_s: float = Field(default=0.1, gt=0, le=60, allow_inf_nan=False)
    failsafe: FailsafeConfig = FailsafeConfig()
    state_dir: Path = Path(".greenllm")
    storage_path: Path | None = Field(
        default=None,
        description=(
            "Where training jobs keep their checkpoints: GREENLLM_CHECKPOINT_DIR is "
            "<storage_path>/<job id> (default <state_dir>/checkpoints; relative paths are "
            "taken from the file's folder). As with Ray Train's storage_path: a local path "
            "works on one machine; across machines it must be shared storage mounted at the "
            "same path on every node (e.g. NFS), so a job placed again elsewhere finds its "
            "checkpoints."
        ),
    )
    auth: AuthConfig = AuthConfig()
    controller: ControllerConfig = ControllerConfig()
    serve: ServeConfig = ServeConfig()
    carbon: CarbonConfig = CarbonConfig()
    power_domains: list[PowerDomain] = Field(default_factory=list)
    _ranges_w: tuple[float, float] | None = PrivateAttr(default=None)
    _layout: DomainLayout | None = PrivateAttr(default=None)
    _domain_sums_w: tuple[object, object, list[tuple[float, float]]] | None = PrivateAttr(
        default=None
    )

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        known = registered_policies()
        if value not in known:
            raise ValueError(f"unknown policy {value!r} (known: {', '.join(known) or 'none'})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ClusterConfig:
        names = [n.name for n in self.nodes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate node names: {', '.join(dupes)}")
        usable = self.budget.budget_w - self.budget.reserve_w
        floor = self.sum_min_power_limit_w()
        if usable < floor:
            raise ValueError(
                f"budget.budget_w - budget.reserve_w = {usable:g} W is below the sum of the "
                f"GPUs' minimum power limits ({floor:g} W)"
            )
        layout = resolve(self.power_domains, names)
        minimums = {
            n.name: sum(get_spec(t).min_power_limit_w for t in n.gpu_types()) for n in self.nodes
        }
        under = [0.0] * len(layout.names)
        for node, _ in layout.node_domain:
            for at in layout.chain(node):
                under[at] += minimums[node]
        for name, usable_w, floor_w in zip(layout.names, layout.usable_w, under, strict=True):
            if usable_w < floor_w:
                raise ValueError(
                    f"power_domains: domain {name!r} limit_w - reserve_w = {usable_w:g} W is "
                    f"below the sum of its GPUs' minimum power limits ({floor_w:g} W)"
                )
        follow = self.budget.follow
        if follow is not None:
            if self.carbon.signal_file is None:
                raise ValueError("budget.follow needs carbon.signal_file (the signal it follows)")
            if follow.floor_w - self.budget.reserve_w < floor:
                raise ValueError(
                    f"budget.follow.floor_w {follow.floor_w:g} W - budget.reserve_w "
                    f"{self.budget.reserve_w:g} W is below the sum of the GPUs' minimum power "
                    f"limits ({floor:g} W)"
                )
        self._layout = layout
        return self

    def domain_layout(self) -> DomainLayout:
        """The power tree laid out over the nodes (empty when none is configured)."""
        return (
            self._layout
            if self._layout is not None
            else resolve(self.power_domains, [n.name for n in self.nodes])
        )

    def gpu_types(self) -> list[tuple[str, int, str]]:
        """Every configured GPU as ``(node, index, type)``."""
        return [(n.name, i, t) for n in self.nodes for i, t in enumerate(n.gpu_types())]

    def sum_min_power_limit_w(self) -> float:
        """Sum of the configured GPUs' minimum power limits, watts."""
        return sum(get_spec(t).min_power_limit_w for _, _, t in self.gpu_types())

    def sum_tdp_w(self) -> float:
        """Sum of the configured GPUs' TDPs, watts."""
        return sum(get_spec(t).tdp_w for _, _, t in self.gpu_types())

    def usable_budget_w(self) -> float:
        """``budget_w - reserve_w``, watts: what limits may sum to."""
        return self.budget.budget_w - self.budget.reserve_w

    def failsafe_limit_w(
        self, gpu_type: str, usable_budget_w: float | None = None, node: str | None = None
    ) -> float:
        """Fail-safe power limit of one GPU of ``gpu_type``, watts, inside its constraints.

        Unless ``failsafe.limit_w`` is set, the GPU's static share of the usable budget over
        every configured GPU (:func:`failsafe_shares_w`), so agents holding their fail-safe
        limits keep the budget invariant; on a node under power domains, the smallest of
        that share and each domain's above it (so every domain's GPUs at their fail-safe
        limits fit its limit too). O(1) after the first call: the configured GPUs' ranges
        are summed once.

        Args:
            gpu_type: The GPU's type.
            usable_budget_w: The usable budget now (default: the config's), watts.
            node: The GPU's node (None: the cluster budget alone is considered).
        """
        spec = get_spec(gpu_type)
        if self.failsafe.limit_w is not None and not self.power_domains:
            limit = min(spec.max_power_limit_w, max(spec.min_power_limit_w, self.failsafe.limit_w))
            return math.floor(limit * 1000) / 1000
        usable_w = self.usable_budget_w() if usable_budget_w is None else usable_budget_w
        lo_w, hi_w = self._range_sums_w()
        if hi_w <= 0:
            lo_w, hi_w = spec.min_power_limit_w, spec.max_power_limit_w
        share = _share_fraction([lo_w], [hi_w], usable_w)
        if node is not None:
            layout = self.domain_layout()
            sums = self._domain_range_sums_w()
            for at in layout.chain(node):
                share = min(
                    share, _share_fraction([sums[at][0]], [sums[at][1]], layout.usable_w[at])
                )
        if self.failsafe.limit_w is not None:
            span = spec.max_power_limit_w - spec.min_power_limit_w
            fixed = (self.failsafe.limit_w - spec.min_power_limit_w) / span if span > 0 else 0.0
            share = min(share, max(0.0, fixed))
        shares = failsafe_shares_w(
            [spec.min_power_limit_w], [spec.max_power_limit_w], usable_w, share
        )
        return shares[0]

    def _domain_range_sums_w(self) -> list[tuple[float, float]]:
        """Per domain, sums of its configured GPUs' minimum and maximum limits, watts
        (cached for these nodes and this tree: asked per GPU, a scan of every node per
        call made setting up 100,000 simulated GPUs quadratic)."""
        layout = self.domain_layout()
        hit = self._domain_sums_w
        if hit is not None and hit[0] is self.nodes and hit[1] is layout:
            return hit[2]
        if not layout.names:
            return []
        sums = [[0.0, 0.0] for _ in layout.names]
        for node in self.nodes:
            specs = [get_spec(t) for t in node.gpu_types()]
            for at in layout.chain(node.name):
                sums[at][0] += sum(s.min_power_limit_w for s in specs)
                sums[at][1] += sum(s.max_power_limit_w for s in specs)
        out = [(lo, hi) for lo, hi in sums]
        object.__setattr__(self, "_domain_sums_w", (self.nodes, layout, out))
        return out

    def _range_sums_w(self) -> tuple[float, float]:
        """Sums of the configured GPUs' minimum and maximum limits, watts (cached)."""
        if self._ranges_w is None:
            specs = [get_spec(t) for _, _, t in self.gpu_types()]
            sums = (
                sum(s.min_power_limit_w for s in specs),
                sum(s.max_power_limit_w for s in specs),
            )
            object.__setattr__(self, "_ranges_w", sums)
        assert self._ranges_w is not None
        return self._ranges_w

    def node(self, name: str) -> NodeConfig:
        """The node called ``name``.

        Raises:
            ConfigError: No such node; the message lists the known ones.
        """
        for n in self.nodes:
            if n.name == name:
                return n
        raise ConfigError(f"no node {name!r} in the config (nodes: {', '.join(self.names())})")

    def names(self) -> list[str]:
        """Node names, in order."""
        return [n.name for n in self.nodes]


def _share_fraction(min_w: Sequence[float], max_w: Sequence[float], usable_w: float) -> float:
    spare_w = usable_w - float(sum(min_w))
    range_w = float(sum(max_w)) - float(sum(min_w))
    return min(1.0, max(0.0, spare_w / range_w)) if range_w > 0 else 0.0


def failsafe_shares_w(
    min_w: Sequence[float], max_w: Sequence[float], usable_w: float, share: float | None = None
) -> list[float]:
    """Static shares of a usable budget: each GPU gets its minimum limit, and what the
    minimums leave is split in proportion to each GPU's range (max - min). They sum to at
    most ``usable_w`` (to the minimums when even those do not fit), each inside its range,
    rounded down to the milliwatt.

    Args:
        min_w: Per GPU, its lowest limit, watts.
        max_w: Per GPU, its highest limit, watts.
        usable_w: Budget minus reserve, watts.
        share: The fraction of each range given (default: the one that spends ``usable_w``).
    """
    if share is None:
        share = _share_fraction(min_w, max_w, usable_w)
    return [
        math.floor((lo + share * (hi - lo)) * 1000) / 1000
        for lo, hi in zip(min_w, max_w, strict=True)
    ]


def parse_cluster_config(data: dict[str, Any], source: str = "<config>") -> ClusterConfig:
    """Validate a cluster.yaml mapping.

    Raises:
        ConfigError: ``source: field.path: what is wrong``.
    """
    return validate(ClusterConfig, data, source)


def load_cluster_config(path: str | Path) -> ClusterConfig:
    """Load and validate cluster.yaml; relative ``state_dir`` and ``storage_path`` are taken
    from the file's folder.

    Raises:
        ConfigError: ``FILE: field.path: what is wrong``.
    """
    path = Path(path)
    config = parse_cluster_config(load_yaml_mapping(path), str(path))
    if not config.state_dir.is_absolute():
        config = config.model_copy(update={"state_dir": path.parent.resolve() / config.state_dir})
    if config.storage_path is not None and not config.storage_path.is_absolute():
        storage = path.parent.resolve() / config.storage_path
        config = config.model_copy(update={"storage_path": storage})
    signal = config.carbon.signal_file
    if signal is not None:
        if not signal.is_absolute():
            signal = path.parent.resolve() / signal
            carbon = config.carbon.model_copy(update={"signal_file": signal})
            config = config.model_copy(update={"carbon": carbon})
        check_signal(config, str(path))
    return config


def check_signal(config: ClusterConfig, source: str) -> GridIntensity | None:
    """Read the config's grid signal file (None: none configured), checking that it
    carries what ``budget.follow`` follows.

    Raises:
        ConfigError: One line naming the signal file and line, or ``source``.
    """
    if config.carbon.signal_file is None:
        return None
    signal = GridIntensity.from_file(config.carbon.signal_file)
    follow = config.budget.follow
    if follow is not None and follow.signal == "price" and not signal.has_price:
        raise ConfigError(
            f"{source}: budget.follow.signal is price but {config.carbon.signal_file} has no "
            "price_per_kwh column"
        )
    return signal


def default_config_path() -> Path:
    """The cluster.yaml used when none is given: ``$GREENLLM_CONFIG``, else ./cluster.yaml,
    else the embedded default shipped with the package."""
    import os

    env = os.environ.get("GREENLLM_CONFIG")
    if env:
        return Path(env)
    local = Path("cluster.yaml")
    if local.exists():
        return local
    return Path(__file__).parent / "data" / "cluster.yaml"
