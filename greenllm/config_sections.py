"""The sections of cluster.yaml below the top level: budget, fail-safe, auth and TLS, the
controller's addresses, the inference ingress, carbon accounting (re-exported by
:mod:`greenllm.config`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BudgetConfig(_Strict):
    """The global power budget.

    Attributes:
        budget_w: Cluster GPU power budget, watts.
        reserve_w: Headroom kept unallocated, watts: limits sum to at most
            ``budget_w - reserve_w``.
    """

    budget_w: float = Field(gt=0, allow_inf_nan=False)
    reserve_w: float = Field(default=0.0, ge=0, allow_inf_nan=False)


class FailsafeConfig(_Strict):
    """What an agent does when it loses the controller.

    Attributes:
        timeout_s: Seconds without the controller before the agent acts.
        limit_w: Per-GPU fail-safe power limit, watts; None means the GPU's static
            share of the budget (its minimum limit plus its part of what the minimums
            leave, in proportion to its limit range; the shares sum to at most
            ``budget - reserve``).
    """

    timeout_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    limit_w: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class TLSConfig(_Strict):
    """Optional TLS for the controller's gRPC port (paths to PEM files).

    Attributes:
        cert_file: The controller's certificate, PEM.
        key_file: Its private key, PEM.
        ca_file: The CA that signed the controller's certificate, which clients trust;
            with it, clients must also present a certificate it signed (null: clients trust
            the controller's own certificate and present none).
    """

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None


class AuthConfig(_Strict):
    """Bearer-token auth. Tokens live in ``<state_dir>/tokens`` (mode 0600).

    Attributes:
        enabled: Require a bearer token on every call (tokens in ``<state_dir>/tokens``):
            the operator's for the cluster API, each node's own for the agent API.
        tls: TLS for the controller's gRPC port (null: plaintext).
    """

    enabled: bool = True
    tls: TLSConfig | None = None


class ControllerConfig(_Strict):
    """Where the controller listens.

    Attributes:
        address: ``host:port`` of its gRPC server.
        metrics_port: Port of its Prometheus endpoint (0 disables it).
        metrics_address: Host its Prometheus endpoint listens on (e.g. ``0.0.0.0`` for a
            Prometheus on another machine); None: the host of ``address``.
        max_waiting_jobs: Jobs that may wait for GPUs at once; past it SubmitJob answers
            RESOURCE_EXHAUSTED until some are placed or cancelled (a flood of submissions
            cannot grow the controller's memory, its status or its control step).
    """

    address: str = "127.0.0.1:50051"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    metrics_address: str | None = Field(default=None, min_length=1, pattern=r"^[^\s/]+$")
    max_waiting_jobs: int = Field(default=1000, ge=1, le=1_000_000)

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, got {value!r}")
        return value


class ServeConfig(_Strict):
    """Where inference jobs are served: the ingress, a Ray Serve application that
    ``greenllm up`` starts when the first inference job is placed. Job ``J``'s
    OpenAI-compatible API is then ``http://HOST:PORT/jobs/J/v1``.

    Attributes:
        enabled: Start the ingress for inference jobs.
        host: Address Serve's HTTP proxy listens on (``0.0.0.0``: every interface; the
            endpoint shown then names the controller's address).
        port: Its port.
        max_body_bytes: Largest request body the ingress reads, bytes; a larger one is
            answered 413 before it is read (each replica's own API caps at the default,
            4 MiB).
    """

    enabled: bool = True
    host: str = Field(default="127.0.0.1", min_length=1, pattern=r"^[^\s/]+$")
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=1024**3)


class CarbonConfig(_Strict):
    """Carbon accounting.

    Attributes:
        region: Grid region key of the shipped intensity table (``world`` by default).
        pue: Power usage effectiveness of the facility (>= 1).
        intensity_file: Optional CSV time series of grid intensity, overriding ``region``.
    """

    region: str = "world"
    pue: float = Field(default=1.2, ge=1.0, le=3.0)
    intensity_file: Path | None = None


class PowerDomain(_Strict):
    """A domain of the power delivery tree (site, row, rack, PDU...): the GPUs of the nodes
    below it may hold limits summing to at most ``limit_w - reserve_w``.

    Attributes:
        name: Unique domain name (``greenllm budget set --domain NAME``).
        limit_w: The domain's power limit (its feed or breaker), watts.
        reserve_w: Headroom kept below the limit, watts.
        domains: Child domains.
        nodes: Nodes fed directly by this domain, by name; shell-style patterns
            (``rack-a-*``) match several. Every node is in exactly one domain of a tree.
    """

    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    limit_w: float = Field(gt=0, allow_inf_nan=False)
    reserve_w: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    domains: list[PowerDomain] = Field(default_factory=list)
    nodes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _reserve_below_limit(self) -> PowerDomain:
        if self.reserve_w >= self.limit_w:
            raise ValueError(
                f"domain {self.name!r}: reserve_w {self.reserve_w:g} W is not below its "
                f"limit_w {self.limit_w:g} W"
            )
        return self

    def usable_w(self) -> float:
        """``limit_w - reserve_w``, watts."""
        return self.limit_w - self.reserve_w

    def walk(self, parent: str | None = None) -> list[tuple[PowerDomain, str | None]]:
        """This domain and every one below it, parents first, each with its parent's name."""
        out: list[tuple[PowerDomain, str | None]] = [(self, parent)]
        for child in self.domains:
            out.extend(child.walk(self.name))
        return out
