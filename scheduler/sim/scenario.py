"""Scenario files for ``greenllm sim``: pydantic models (unknown keys are errors) and the loader.

A scenario names the nodes (a ``count`` repeats a node, for large clusters), the budget
and its schedule, the jobs (``count`` repeats a job), node failures, and how the control
plane behaves (control period, command-ack delay, telemetry delay and noise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from greenllm.config import (
    GPUGroup,
    load_yaml_mapping,
    registered_policies,
    validate,
)
from greenllm.devices.catalog import get_spec
from greenllm.devices.physics import Workload
from greenllm.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimNode(_Strict):
    """A node, or ``count`` identical nodes named ``NAME-0 .. NAME-(count-1)``."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    count: int = Field(default=1, ge=1, le=100_000)
    gpus: list[GPUGroup] = Field(min_length=1)

    def names(self) -> list[str]:
        """The node names this entry stands for."""
        return [self.name] if self.count == 1 else [f"{self.name}-{i}" for i in range(self.count)]

    def gpu_types(self) -> list[str]:
        """Type of each GPU on one such node, in index order."""
        return [g.type for g in self.gpus for _ in range(g.count)]


class BudgetChange(_Strict):
    """At ``t_s``, the budget becomes ``budget_w`` or ``frac_of_tdp`` times the summed TDP."""

    t_s: float = Field(ge=0, allow_inf_nan=False)
    budget_w: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    frac_of_tdp: float | None = Field(default=None, gt=0, le=2, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_of(self) -> BudgetChange:
        if (self.budget_w is None) == (self.frac_of_tdp is None):
            raise ValueError("give exactly one of budget_w and frac_of_tdp")
        return self


class SimBudget(_Strict):
    """The budget: initial value (``budget_w`` or ``frac_of_tdp``), reserve, schedule."""

    budget_w: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    frac_of_tdp: float | None = Field(default=None, gt=0, le=2, allow_inf_nan=False)
    reserve_w: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    schedule: list[BudgetChange] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_of(self) -> SimBudget:
        if (self.budget_w is None) == (self.frac_of_tdp is None):
            raise ValueError("give exactly one of budget_w and frac_of_tdp")
        return self


class Arrivals(_Strict):
    """Inference request arrivals.

    ``poisson``: rate ``rate_rps``. ``bursty``: Poisson whose rate alternates between
    ``rate_rps * burst_factor`` for ``burst_s`` and ``rate_rps`` for the rest of each
    ``period_s``. ``trace``: a CSV file ``t_s,prompt_tokens,output_tokens`` (relative paths
    from the scenario's folder). Token counts are per request.
    """

    process: Literal["poisson", "bursty", "trace"] = "poisson"
    rate_rps: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    burst_factor: float = Field(default=4.0, ge=1, allow_inf_nan=False)
    burst_s: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    period_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    prompt_tokens: int = Field(default=512, ge=1)
    output_tokens: int = Field(default=256, ge=1)
    trace_file: Path | None = None

    @model_validator(mode="after")
    def _trace(self) -> Arrivals:
        if (self.process == "trace") != (self.trace_file is not None):
            raise ValueError("trace_file is needed for, and only for, process: trace")
        if self.process == "bursty" and self.burst_s >= self.period_s:
            raise ValueError("burst_s must be shorter than period_s")
        return self


class SimJob(_Strict):
    """A job (or ``count`` copies named ``ID-0 ..``).

    Training: ``shards`` synchronous data-parallel shards, ``total_samples`` to finish
    (None: runs to the end), optional ``deadline_s`` (sets its SLO rate) or
    ``slo_samples_per_s``. Inference: ``shards`` replicas serving ``arrivals`` with
    batches of ``batch``; SLO ``slo_tokens_per_s`` of service.
    ``true_model_params`` (optional) is what really runs when it differs from what the
    job declares (``model_params``): the power model must learn it from telemetry.
    """

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    count: int = Field(default=1, ge=1, le=100_000)
    kind: Literal["train", "infer"]
    arrive_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    end_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    shards: int = Field(default=1, ge=1, le=100_000)
    priority: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    allowed_gpu_types: list[str] = Field(default_factory=list)
    preferred_gpu_types: list[str] = Field(default_factory=list)
    floor_w: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    model_params: float = Field(default=1.3e9, gt=0, allow_inf_nan=False)
    true_model_params: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    batch: int = Field(default=8, ge=1, le=4096)
    seq_len: int = Field(default=2048, ge=1)
    total_samples: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    deadline_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    slo_samples_per_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    slo_tokens_per_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    arrivals: Arrivals | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SimJob:
        for t in (*self.allowed_gpu_types, *self.preferred_gpu_types):
            try:
                get_spec(t)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        if self.kind == "infer" and self.arrivals is None:
            raise ValueError("an inference job needs 'arrivals'")
        if self.kind == "train" and self.arrivals is not None:
            raise ValueError("'arrivals' is for inference jobs")
        if self.deadline_s is not None and self.total_samples is None:
            raise ValueError("deadline_s needs total_samples")
        return self

    def ids(self) -> list[str]:
        """The job ids this entry stands for."""
        return [self.id] if self.count == 1 else [f"{self.id}-{i}" for i in range(self.count)]

    def workload(self, kind: Literal["train", "prefill", "decode"], true: bool = False) -> Workload:
        """The per-shard workload of a phase (declared, or what truly runs)."""
        params = self.true_model_params if true and self.true_model_params else self.model_params
        return Workload(kind=kind, batch=self.batch, model_params=params, seq_len=self.seq_len)


class Failure(_Strict):
    """Node ``node`` fails at ``at_s`` and, if ``recover_s`` is given, comes back then."""

    node: str
    at_s: float = Field(ge=0, allow_inf_nan=False)
    recover_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class ControlPlane(_Strict):
    """How the simulated control plane behaves.

    Attributes:
        control_period_s: Seconds between decide() calls.
        step_s: Simulation step, seconds (a divisor of the control period).
        ack_delay_s: Mean delay until a command is applied and acked, seconds.
        ack_jitter_frac: Each command's delay is drawn uniformly within this fraction.
        telemetry_delay_s: Age of the telemetry the controller sees, seconds.
        power_noise_frac: Relative noise of measured power and work rate.
        stale_after_s: Telemetry older than this marks a node stale, seconds.
        lost_after_s: A node silent this long is declared down, seconds: it then counts at
            its minimum limits, those its agent reboots with (simulated failures are
            crashes: a failed node draws nothing).
    """

    control_period_s: float = Field(default=0.5, gt=0, le=60, allow_inf_nan=False)
    step_s: float = Field(default=0.1, gt=0, le=60, allow_inf_nan=False)
    ack_delay_s: float = Field(default=0.2, ge=0, le=60, allow_inf_nan=False)
    ack_jitter_frac: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False)
    telemetry_delay_s: float = Field(default=0.2, ge=0, le=60, allow_inf_nan=False)
    power_noise_frac: float = Field(default=0.02, ge=0, le=0.5, allow_inf_nan=False)
    stale_after_s: float = Field(default=1.5, gt=0, allow_inf_nan=False)
    lost_after_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _steps(self) -> ControlPlane:
        ratio = self.control_period_s / self.step_s
        if abs(ratio - round(ratio)) > 1e-6:
            raise ValueError("control_period_s must be a whole multiple of step_s")
        return self


class Scenario(_Strict):
    """A whole scenario file."""

    name: str = "scenario"
    duration_s: float = Field(gt=0, le=1e7, allow_inf_nan=False)
    seed: int = 0
    policy: str = "max-throughput"
    nodes: list[SimNode] = Field(min_length=1)
    budget: SimBudget
    jobs: list[SimJob] = Field(default_factory=list)
    failures: list[Failure] = Field(default_factory=list)
    control: ControlPlane = ControlPlane()

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        known = [*registered_policies(), "oracle"]
        if value not in known:
            raise ValueError(f"unknown policy {value!r} (known: {', '.join(known)})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        names = [n for node in self.nodes for n in node.names()]
        if len(set(names)) != len(names):
            raise ValueError("node names must be unique")
        known = set(names)
        for f in self.failures:
            if f.node not in known:
                raise ValueError(f"failure names unknown node {f.node!r}")
        ids = [i for job in self.jobs for i in job.ids()]
        if len(set(ids)) != len(ids):
            raise ValueError("job ids must be unique")
        return self

    def sum_tdp_w(self) -> float:
        """Summed TDP of every GPU, watts."""
        return sum(
            node.count * sum(get_spec(t).tdp_w for t in node.gpu_types()) for node in self.nodes
        )


def load_scenario(path: str | Path) -> tuple[Scenario, Path]:
    """Load and validate a scenario file.

    Returns:
        The scenario and the folder relative paths in it are taken from.

    Raises:
        ConfigError: ``FILE: field.path: what is wrong``.
    """
    path = Path(path)
    return validate(Scenario, load_yaml_mapping(path), str(path)), path.parent
