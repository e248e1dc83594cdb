"""The sections of cluster.yaml below the top level: budget, fail-safe, auth and TLS, the
controller's addresses, the inference ingress, carbon accounting (re-exported by
:mod:`greenllm.config`)."""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BudgetFollow(_Strict):
    """A budget that follows the grid signal (``carbon.signal_file``): at each interval of
    the signal the controller sets the budget the map gives for the signal's value then,
    between ``floor_w`` and ``ceiling_w``, as an ordinary budget change (lowerings first).

    Attributes:
        signal: What the budget follows: ``intensity`` (gCO2e/kWh) or ``price`` (per kWh;
            the signal file must carry ``price_per_kwh``).
        floor_w: The lowest budget it sets, watts.
        ceiling_w: The highest budget it sets, watts.
        map: ``linear``: the budget is interpolated between the ``points`` (held at the
            first and last beyond them); ``table``: the budget of the last point whose
            value is at most the signal's (the first point's below them).
        points: ``[signal value, budget_w]`` pairs, values strictly increasing (two points
            of a linear map: e.g. ``[[100, 2400], [500, 1200]]``: 2400 W at 100 g/kWh or
            less, 1200 W at 500 g/kWh or more).
    """

    signal: Literal["intensity", "price"] = "intensity"
    floor_w: float = Field(gt=0, allow_inf_nan=False)
    ceiling_w: float = Field(gt=0, allow_inf_nan=False)
    map: Literal["linear", "table"] = "linear"
    points: list[tuple[float, float]] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> BudgetFollow:
        if self.ceiling_w < self.floor_w:
            raise ValueError(f"ceiling_w {self.ceiling_w:g} W is below floor_w {self.floor_w:g} W")
        for value, budget_w in self.points:
            if not (math.isfinite(value) and math.isfinite(budget_w) and budget_w > 0):
                raise ValueError(f"points: [{value!r}, {budget_w!r}] must be finite, budget > 0")
        values = [v for v, _ in self.points]
        if any(b <= a for a, b in pairwise(values)):
            raise ValueError("points: signal values must increase strictly")
        return self

    def budget_w(self, value: float) -> float:
        """The budget for a signal value (gCO2e/kWh or price per kWh), watts, within
        ``[floor_w, ceiling_w]``."""
        points = self.points
        if self.map == "table" or len(points) == 1:
            chosen = points[0][1]
            for at, watts in points:
                if value >= at:
                    chosen = watts
        elif value <= points[0][0]:
            chosen = points[0][1]
        elif value >= points[-1][0]:
            chosen = points[-1][1]
        else:
            chosen = points[-1][1]
            for (v0, w0), (v1, w1) in pairwise(points):
                if v0 <= value <= v1:
                    chosen = w0 + (w1 - w0) * (value - v0) / (v1 - v0)
                    break
        return min(self.ceiling_w, max(self.floor_w, chosen))


class BudgetConfig(_Strict):
    """The global power budget.

    Attributes:
        budget_w: Cluster GPU power budget, watts.
        reserve_w: Headroom kept unallocated, watts: limits sum to at most
            ``budget_w - reserve_w``.
        follow: The budget follows the grid signal (``carbon.signal_file``) between a
            floor and a ceiling (None: it changes only when an operator sets it).
    """

    budget_w: float = Field(gt=0, allow_inf_nan=False)
    reserve_w: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    follow: BudgetFollow | None = None


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
        demand_points: Points of the demand curve (watts -> value) the controller puts in
            its status each step, for a parent controller (``greenllm tree run``); 0: none.
    """

    address: str = "127.0.0.1:50051"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    metrics_address: str | None = Field(default=None, min_length=1, pattern=r"^[^\s/]+$")
    max_waiting_jobs: int = Field(default=1000, ge=1, le=1_000_000)
    demand_points: int = Field(default=0, ge=0, le=1024)

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
        signal_file: Grid signal the controller books each job's gCO2e (and cost, with a
            price) against, interval by interval, and that ``budget.follow`` follows: a
            CSV ``t,gco2e_per_kwh[,price_per_kwh]`` or an Electricity Maps history JSON
            (relative paths are taken from the file's folder; overrides ``region`` and
            ``intensity_file``).
        signal_replay: The signal's first time is taken as the controller's start (a
            recorded day replayed; the simulator always replays). False: its times are
            Unix/UTC times, read against the clock.
    """

    region: str = "world"
    pue: float = Field(default=1.2, ge=1.0, le=3.0)
    intensity_file: Path | None = None
    signal_file: Path | None = None
    signal_replay: bool = False


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
