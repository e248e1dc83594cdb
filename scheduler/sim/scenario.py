"""Scenario files for ``greenllm sim``: pydantic models (unknown keys are errors) and the loader.

A scenario names the nodes (a ``count`` repeats a node), the budget and its schedule, the
jobs, node failures, and how the control plane behaves. A scenario job is a job spec, as
``greenllm submit`` takes it (:class:`greenllm.jobspec.JobSpec`), plus a ``sim`` section of
simulation-only fields; the simulator submits it to the controller at ``sim.arrive_s``
exactly as the cluster API would. Files written with the keys of earlier versions
(``id``, ``allowed_gpu_types``, ``model_params``, ``batch``, ``arrivals``, ...) still load;
each old key is named on stderr with the key that replaces it
(:mod:`scheduler.sim.legacy`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from greenllm.config import (
    GPUGroup,
    PowerDomain,
    load_yaml_mapping,
    registered_policies,
    validate,
)
from greenllm.devices.catalog import get_spec
from greenllm.devices.physics import Workload
from greenllm.jobspec import JobSpec
from greenllm.power_domains import DomainLayout, resolve
from scheduler.sim.legacy import upgrade_scenario


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimNode(_Strict):
    """A node, or ``count`` identical nodes named ``NAME-0 .. NAME-(count-1)``.

    Attributes:
        name: Node name (the prefix of the names when ``count`` > 1).
        count: How many identical nodes this entry stands for.
        gpus: The GPUs of one such node, by type and count.
    """

    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    count: int = Field(default=1, ge=1, le=100_000)
    gpus: list[GPUGroup] = Field(min_length=1)

    def names(self) -> list[str]:
        """The node names this entry stands for."""
        return [self.name] if self.count == 1 else [f"{self.name}-{i}" for i in range(self.count)]

    def gpu_types(self) -> list[str]:
        """Type of each GPU on one such node, in index order."""
        return [g.type for g in self.gpus for _ in range(g.count)]


class BudgetChange(_Strict):
    """At ``t_s``, the budget becomes ``budget_w`` or ``frac_of_tdp`` times the summed TDP;
    with ``domain``, that power domain's ``limit_w`` becomes ``budget_w`` instead (as
    ``greenllm budget set --domain``).

    Attributes:
        t_s: When the budget changes, seconds of virtual time.
        budget_w: The new budget, watts (give this or ``frac_of_tdp``).
        frac_of_tdp: The new budget as a fraction of the GPUs' summed TDP.
        domain: The power domain whose limit changes (None: the cluster budget).
    """

    t_s: float = Field(ge=0, allow_inf_nan=False)
    budget_w: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    frac_of_tdp: float | None = Field(default=None, gt=0, le=2, allow_inf_nan=False)
    domain: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> BudgetChange:
        if (self.budget_w is None) == (self.frac_of_tdp is None):
            raise ValueError("give exactly one of budget_w and frac_of_tdp")
        if self.domain is not None and self.budget_w is None:
            raise ValueError("a domain's change gives budget_w (its new limit_w)")
        return self

    def watts(self, sum_tdp_w: float) -> float:
        """The budget it sets, watts."""
        return self.budget_w if self.budget_w is not None else (self.frac_of_tdp or 0.0) * sum_tdp_w


class SimBudget(_Strict):
    """The budget: initial value (``budget_w`` or ``frac_of_tdp``), reserve, schedule.

    Attributes:
        budget_w: The budget at the start, watts (give this or ``frac_of_tdp``).
        frac_of_tdp: The budget at the start as a fraction of the GPUs' summed TDP.
        reserve_w: Kept back from the GPUs: their limits sum to at most budget - reserve,
            watts.
        schedule: Later changes of the budget, in time order.
    """

    budget_w: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    frac_of_tdp: float | None = Field(default=None, gt=0, le=2, allow_inf_nan=False)
    reserve_w: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    schedule: list[BudgetChange] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_of(self) -> SimBudget:
        if (self.budget_w is None) == (self.frac_of_tdp is None):
            raise ValueError("give exactly one of budget_w and frac_of_tdp")
        return self

    def watts(self, sum_tdp_w: float) -> float:
        """The initial budget, watts."""
        return self.budget_w if self.budget_w is not None else (self.frac_of_tdp or 0.0) * sum_tdp_w


class SimFields(_Strict):
    """What only the simulator needs to know of a job.

    Attributes:
        count: The job is submitted this many times, named ``NAME-0 ..``.
        arrive_s: When it is submitted, seconds.
        true_model_params: What really runs when it differs from what the job declares
            (``simulated_model_params``): the controller must learn it from telemetry.
        total_samples: Training: samples after which it is done (None: runs to the end).
        fit_to_model_context: Inference: requests are shrunk to the served model's context
            (a built-in model's: ``tiny`` and ``small`` hold 256 tokens), output first and
            the prompt cut, as the live cluster's load client sends them; ``sim
            --from-cluster`` sets it, since there the named model really serves. False:
            requests as asked (``simulated_model_params`` stands for a model with room).
    """

    count: int = Field(default=1, ge=1, le=100_000)
    arrive_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    true_model_params: float | None = Field(default=None, gt=0, le=1e15, allow_inf_nan=False)
    total_samples: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    fit_to_model_context: bool = False


class ScenarioJob(JobSpec):
    """A job spec (what ``greenllm submit`` takes) plus the simulation-only ``sim`` fields.

    Attributes:
        sim: What only the simulator needs (copies, arrival time, true size, total work).
    """

    sim: SimFields = SimFields()

    @model_validator(mode="after")
    def _sim_consistent(self) -> ScenarioJob:
        if self.kind == "infer" and self.sim.total_samples is not None:
            raise ValueError("sim.total_samples is for training jobs")
        if self.kind == "train" and self.slo.deadline_s > 0 and self.sim.total_samples is None:
            raise ValueError("slo.deadline_s needs sim.total_samples (the work to finish)")
        return self

    def ids(self) -> list[str]:
        """The names of the jobs this entry stands for."""
        n = self.sim.count
        return [self.name] if n == 1 else [f"{self.name}-{i}" for i in range(n)]

    def spec_json(self, name: str) -> str:
        """The job spec submitted for the job called ``name`` (no ``sim`` section; training
        jobs carry their total work so a deadline can be planned)."""
        doc = self.model_dump(mode="json", exclude={"sim"}, exclude_none=True)
        doc["name"] = name
        if self.kind == "train" and self.sim.total_samples is not None:
            doc.setdefault("train", {})["total_samples"] = self.sim.total_samples
        return json.dumps(doc)

    def true_workload(self, kind: Literal["train", "prefill", "decode"]) -> Workload:
        """The workload of one shard in a phase, as it truly runs."""
        params = self.sim.true_model_params or self.simulated_model_params
        if self.kind == "train":
            t = self.train_settings
            return Workload("train", batch=t.batch_size, model_params=params, seq_len=t.seq_len)
        return Workload(kind, batch=self.infer_settings.batch_size, model_params=params)


class Failure(_Strict):
    """Node ``node`` fails at ``at_s`` and, if ``recover_s`` is given, comes back then.

    ``kind``: ``crash`` (the node goes down with its machine: its GPUs draw nothing; the
    controller hears of it as of a Ray node's death; it reboots at ``recover_s``),
    ``partition`` (its agent and GPUs run on but cannot reach the controller),
    ``agent_restart`` (only its agent process restarts, at ``at_s``), ``agent_crash`` (its
    agent process dies and stays dead until ``recover_s``: its shards stop, its GPUs stay
    up at the limits they were given, nobody applies the fail-safe),
    ``refuse_lowering`` (its GPUs refuse limits below ``below_w`` until ``recover_s``), or
    ``state_unwritable`` (its agent cannot write its state file, as on a full disk, until
    ``recover_s``).

    Attributes:
        node: The node that fails (a name the scenario's nodes give).
        kind: ``crash``, ``partition``, ``agent_restart``, ``agent_crash``,
            ``refuse_lowering`` or ``state_unwritable``.
        at_s: When it fails, seconds of virtual time.
        recover_s: When it comes back, seconds (null: never).
        below_w: ``refuse_lowering``: limits below this are refused, watts.
    """

    node: str
    kind: Literal[
        "crash", "partition", "agent_restart", "agent_crash", "refuse_lowering", "state_unwritable"
    ] = "crash"
    at_s: float = Field(ge=0, allow_inf_nan=False)
    recover_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    below_w: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _consistent(self) -> Failure:
        if self.recover_s is not None and self.recover_s <= self.at_s:
            raise ValueError("recover_s must be after at_s")
        if (self.kind == "refuse_lowering") != (self.below_w is not None):
            raise ValueError("below_w is needed for, and only for, kind refuse_lowering")
        return self


class ControllerRestart(_Strict):
    """The controller is killed at ``at_s`` and a new one starts ``down_s`` later.

    Attributes:
        at_s: When the controller is killed, seconds of virtual time.
        down_s: How long no controller runs, seconds.
    """

    at_s: float = Field(ge=0, allow_inf_nan=False)
    down_s: float = Field(default=1.0, ge=0, allow_inf_nan=False)


class ControlPlane(_Strict):
    """How the simulated control plane behaves.

    Attributes:
        control_period_s: Seconds between control steps.
        step_s: Simulation step, seconds (a divisor of the control period).
        ack_delay_s: Mean delay of a command on its way to the agent, seconds.
        ack_jitter_frac: Each command's delay is drawn uniformly within this fraction.
        telemetry_delay_s: Delay of the agents' messages (telemetry, acks) on their way, s.
        power_noise_frac: Relative noise of measured power.
        stale_after_s: Telemetry older than this marks a node stale, seconds.
        lost_after_s: A node silent this long is declared lost, seconds (its jobs are
            placed again; it still counts at the limits it may hold, unless its machine is
            known down: a crash, which counts at no more than its fail-safe limits).
        failsafe_timeout_s: Agents lower their GPUs to their fail-safe limits after this
            long without the controller, seconds.
    """

    control_period_s: float = Field(default=0.5, gt=0, le=60, allow_inf_nan=False)
    step_s: float = Field(default=0.1, gt=0, le=60, allow_inf_nan=False)
    ack_delay_s: float = Field(default=0.2, ge=0, le=60, allow_inf_nan=False)
    ack_jitter_frac: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False)
    telemetry_delay_s: float = Field(default=0.1, ge=0, le=60, allow_inf_nan=False)
    power_noise_frac: float = Field(default=0.02, ge=0, le=0.5, allow_inf_nan=False)
    stale_after_s: float = Field(default=1.5, gt=0, allow_inf_nan=False)
    lost_after_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    failsafe_timeout_s: float = Field(default=2.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _steps(self) -> ControlPlane:
        ratio = self.control_period_s / self.step_s
        if abs(ratio - round(ratio)) > 1e-6:
            raise ValueError("control_period_s must be a whole multiple of step_s")
        need_s = self.stale_after_s + self.failsafe_timeout_s + self.step_s
        if self.lost_after_s < need_s:
            raise ValueError(
                f"lost_after_s must be at least stale_after_s + failsafe_timeout_s + step_s "
                f"({need_s:g} s): a node is declared lost only once its agent surely failed safe"
            )
        return self


class Scenario(_Strict):
    """A whole scenario file.

    Attributes:
        name: Scenario name (in the outputs).
        duration_s: Seconds of virtual time to simulate.
        seed: Seed of every random draw (arrivals, noise, delays).
        policy: Allocation policy (``greenllm policy list``).
        nodes: The nodes and their GPUs.
        budget: The budget, its reserve and its schedule.
        jobs: The jobs: job specs as ``greenllm submit`` takes them, plus a ``sim`` section.
        failures: Node failures to inject.
        controller_restarts: Controller restarts to inject.
        control: How the simulated control plane behaves (periods, delays, timeouts).
        power_domains: The power tree over the nodes, as in cluster.yaml (names of
            repeated nodes, ``NAME-0`` ..., or patterns such as ``row0-*``).
    """

    name: str = "scenario"
    duration_s: float = Field(gt=0, le=1e7, allow_inf_nan=False)
    seed: int = 0
    policy: str = "max-throughput"
    nodes: list[SimNode] = Field(min_length=1)
    budget: SimBudget
    jobs: list[ScenarioJob] = Field(default_factory=list)
    failures: list[Failure] = Field(default_factory=list)
    controller_restarts: list[ControllerRestart] = Field(default_factory=list)
    control: ControlPlane = ControlPlane()
    power_domains: list[PowerDomain] = Field(default_factory=list)

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
        layout = resolve(self.power_domains, names)
        self._check_domain_changes(layout)
        known = set(names)
        for f in self.failures:
            if f.node not in known:
                raise ValueError(f"failure names unknown node {f.node!r}")
        ids = [i for job in self.jobs for i in job.ids()]
        if len(set(ids)) != len(ids):
            raise ValueError("job names must be unique")
        sum_tdp_w = self.sum_tdp_w()
        floor_w = self.sum_min_power_limit_w()
        reserve_w = self.budget.reserve_w
        budgets = [("budget", self.budget.watts(sum_tdp_w))]
        budgets += [
            (f"budget.schedule at {c.t_s:g} s", c.watts(sum_tdp_w))
            for c in self.budget.schedule
            if c.domain is None
        ]
        for where, watts in budgets:
            if reserve_w >= watts:
                raise ValueError(
                    f"{where}: reserve_w {reserve_w:g} W is not below the budget {watts:g} W"
                )
            if watts - reserve_w < floor_w:
                raise ValueError(
                    f"{where}: budget {watts:g} W - reserve {reserve_w:g} W is below the sum of "
                    f"the GPUs' minimum power limits ({floor_w:g} W)"
                )
        for c in self.budget.schedule:
            if c.t_s >= self.duration_s:
                raise ValueError(
                    f"budget.schedule: t_s {c.t_s:g} is not before duration_s {self.duration_s:g}"
                )
        return self

    def _check_domain_changes(self, layout: DomainLayout) -> None:
        """Each domain change names a domain, and leaves room for its GPUs' minimums."""
        types = {n: node.gpu_types() for node in self.nodes for n in node.names()}
        for c in self.budget.schedule:
            if c.domain is None:
                continue
            if c.domain not in layout.names:
                known = ", ".join(layout.names) or "none"
                raise ValueError(
                    f"budget.schedule at {c.t_s:g} s: no power domain {c.domain!r} (known: {known})"
                )
            at = layout.names.index(c.domain)
            domain = next(
                d for top in self.power_domains for d, _ in top.walk() if d.name == c.domain
            )
            floor_w = sum(
                get_spec(t).min_power_limit_w for n in layout.nodes_under(at) for t in types[n]
            )
            if (c.budget_w or 0.0) - domain.reserve_w < floor_w:
                raise ValueError(
                    f"budget.schedule at {c.t_s:g} s: domain {c.domain} limit {c.budget_w:g} W - "
                    f"reserve {domain.reserve_w:g} W is below its GPUs' minimum power limits "
                    f"({floor_w:g} W)"
                )

    def sum_tdp_w(self) -> float:
        """Summed TDP of every GPU, watts."""
        return sum(
            node.count * sum(get_spec(t).tdp_w for t in node.gpu_types()) for node in self.nodes
        )

    def sum_min_power_limit_w(self) -> float:
        """Summed minimum power limit of every GPU, watts."""
        return sum(
            node.count * sum(get_spec(t).min_power_limit_w for t in node.gpu_types())
            for node in self.nodes
        )


def load_scenario(path: str | Path, notes: list[str] | None = None) -> tuple[Scenario, Path]:
    """Load and validate a scenario file.

    Args:
        path: The file.
        notes: Receives one line per deprecated key (old name -> new name).

    Returns:
        The scenario and the folder relative paths in it are taken from.

    Raises:
        ConfigError: ``FILE: field.path: what is wrong``.
    """
    path = Path(path)
    data = upgrade_scenario(load_yaml_mapping(path), str(path), notes if notes is not None else [])
    return validate(Scenario, data, str(path)), path.parent
