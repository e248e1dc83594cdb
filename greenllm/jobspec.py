"""Job specs (JOB.yaml): what an ML engineer submits.

pydantic v2 models with ``extra="forbid"``; :func:`load_job_spec` turns any problem into one
:class:`~greenllm.errors.ConfigError` naming the file, the field path and what is wrong.

Example (training)::

    name: train-tiny
    kind: train
    model: tiny
    shards: 2
    gpu_types: [H100-SXM, A100-SXM4]
    priority: 2
    slo: {min_throughput: 20}
    train: {batch_size: 8, seq_len: 128, steps: 400, checkpoint_interval_steps: 50}

A user's own script (each rank runs it with torchrun's environment)::

    name: my-run
    kind: train
    shards: 2
    train:
      entrypoint: [python, train.py, --epochs, "2"]
      working_dir: ./my-project
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from greenllm.config import load_yaml_mapping, validate
from greenllm.devices.catalog import get_spec
from greenllm.devices.physics import Workload
from greenllm.errors import ConfigError, GreenllmError


def _known_type(value: str) -> str:
    try:
        return get_spec(value).name
    except GreenllmError as exc:
        raise ValueError(str(exc)) from None


GPUTypeName = Annotated[str, Field(max_length=64), AfterValidator(_known_type)]
#: Longest model name or path accepted, characters.
MAX_MODEL_CHARS = 4096
#: greenllm's own model names (served by its engine only).
BUILTIN_MODELS = ("tiny", "small", "smollm2-135m")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SLO(_Strict):
    """Service-level objective of a job (0 means none).

    Attributes:
        min_throughput: Minimum work rate of the whole job, units/s (samples/s for
            training, tokens/s for inference).
        deadline_s: Training must finish within this many seconds of submission.
        p99_latency_s: Inference: 99th-percentile request latency, seconds.
        p99_ttft_s: Inference: 99th-percentile time to first token, seconds.
        p99_tpot_s: Inference: 99th-percentile time per output token, seconds.
    """

    min_throughput: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    deadline_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    p99_latency_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    p99_ttft_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    p99_tpot_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


#: One word of an entrypoint command.
EntrypointWord = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_no_nul)]
#: Most words in an entrypoint command.
MAX_ENTRYPOINT_WORDS = 64
#: Longest working directory (path or package URI), characters.
MAX_WORKING_DIR_CHARS = 4096


class TrainSection(_Strict):
    """Training settings (data-parallel, synchronous).

    Attributes:
        entrypoint: The command each rank runs, as a list of words (``["python",
            "train.py", "--epochs", "2"]``), with torchrun's environment (RANK, WORLD_SIZE,
            MASTER_ADDR, ...); a first word ``python`` is the interpreter the cluster runs
            on, as with Ray Jobs. None: the built-in trainer
            (``examples/train/train_gpt2.py``) with the settings below.
        working_dir: The folder the command runs in: a local path (relative to the spec
            file when loaded from one), or a Ray package URI (``gcs://...``; ``greenllm
            submit`` uploads a local folder when the cluster runs on Ray).
        batch_size: Sequences per step per shard.
        seq_len: Tokens per sequence.
        steps: Optimizer steps to run.
        checkpoint_interval_steps: Save a checkpoint every this many steps.
        learning_rate: AdamW learning rate.
        total_samples: Samples the whole job processes, when known (a deadline SLO plans
            the rate it needs from it); default ``steps x batch_size x shards``.
    """

    entrypoint: list[EntrypointWord] | None = Field(
        default=None, min_length=1, max_length=MAX_ENTRYPOINT_WORDS
    )
    working_dir: str | None = Field(default=None, min_length=1, max_length=MAX_WORKING_DIR_CHARS)
    batch_size: int = Field(default=8, ge=1, le=4096)
    seq_len: int = Field(default=128, ge=8, le=1_000_000)
    steps: int = Field(default=200, ge=1, le=10**9)
    checkpoint_interval_steps: int = Field(default=50, ge=1, le=10**9)
    learning_rate: float = Field(default=3e-4, gt=0, lt=1)
    total_samples: float | None = Field(default=None, gt=0, le=1e15, allow_inf_nan=False)

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, value: str | None) -> str | None:
        return None if value is None else _no_nul(value)


def is_package_uri(working_dir: str) -> bool:
    """True when ``working_dir`` names a Ray package (``gcs://...``, ``s3://...``), not a
    local path."""
    scheme, sep, _ = working_dir.partition("://")
    return bool(sep) and scheme.isalnum()


class LoadSection(_Strict):
    """The request load an inference job serves.

    Attributes:
        process: ``poisson`` arrivals at ``rate_per_s``; ``bursty``: Poisson whose rate is
            ``rate_per_s * burst_factor`` for the first ``burst_s`` of every ``period_s``;
            ``trace``: the requests of ``trace_file``.
        rate_per_s: Mean request arrival rate, requests/s.
        burst_factor: Rate multiplier during a burst (bursty).
        burst_s: Length of each burst, seconds (bursty).
        period_s: Burst period, seconds (bursty).
        duration_s: How long requests arrive, seconds.
        trace_file: CSV of requests: the Azure LLM-inference trace format
            (TIMESTAMP, ContextTokens, GeneratedTokens) or ``t_s,prompt_tokens,output_tokens``.
        time_scale: A trace is replayed this many times faster (arrival times divided by it).
    """

    process: Literal["poisson", "bursty", "trace"] = "poisson"
    rate_per_s: float = Field(default=2.0, gt=0, le=1e6, allow_inf_nan=False)
    burst_factor: float = Field(default=4.0, ge=1, le=1e3, allow_inf_nan=False)
    burst_s: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    period_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    duration_s: float = Field(default=60.0, gt=0, le=1e8, allow_inf_nan=False)
    trace_file: Path | None = None
    time_scale: float = Field(default=1.0, gt=0, le=1e6, allow_inf_nan=False)

    @model_validator(mode="after")
    def _consistent(self) -> LoadSection:
        if (self.process == "trace") != (self.trace_file is not None):
            raise ValueError("trace_file is needed for, and only for, process 'trace'")
        if self.process == "bursty" and self.burst_s >= self.period_s:
            raise ValueError("burst_s must be shorter than period_s")
        return self


#: Flags of vLLM's server that greenllm sets itself (``infer.vllm.extra_args`` may not).
VLLM_OWN_FLAGS = ("--host", "--port", "--model", "--served-model-name", "--tensor-parallel-size")
#: Environment variable naming the python of the vLLM environment on each node.
VLLM_PYTHON_ENV = "GREENLLM_VLLM_PYTHON"


class VllmSection(_Strict):
    """What a vLLM replica is started with (``infer.engine: vllm``): the arguments of
    vLLM's OpenAI server (``python -m vllm.entrypoints.openai.api_server``).

    Attributes:
        model: Model directory (relative to the spec file when loaded from one) or a name
            in the node's Hugging Face cache (default: the job's ``model``). Nothing is
            downloaded: replicas run with ``HF_HUB_OFFLINE=1`` unless the node's
            environment says otherwise.
        dtype: ``--dtype``.
        max_model_len: ``--max-model-len``, tokens (None: the model's).
        max_num_seqs: ``--max-num-seqs``: most requests in a batch (None: vLLM's).
        max_num_batched_tokens: ``--max-num-batched-tokens``: most tokens per engine step
            (None: vLLM's).
        tensor_parallel_size: GPUs per replica; 1 (each replica holds one GPU: the
            controller places one GPU per shard).
        extra_args: More arguments for the server, as a list of words (not the flags
            greenllm sets: ``--host``, ``--port``, ``--model``, ``--served-model-name``,
            ``--tensor-parallel-size``).
        python: The python of the vLLM environment on the nodes (default: the node's
            ``GREENLLM_VLLM_PYTHON``). vLLM lives in its own environment (its torch and
            CUDA wheels are its own).
        startup_timeout_s: How long a replica may take to answer ``/health``, seconds.
    """

    model: str | None = Field(default=None, min_length=1, max_length=MAX_MODEL_CHARS)
    dtype: Literal["auto", "bfloat16", "float16", "float32", "half", "float"] = "auto"
    max_model_len: int | None = Field(default=None, ge=16, le=10_000_000)
    max_num_seqs: int | None = Field(default=None, ge=1, le=65_536)
    max_num_batched_tokens: int | None = Field(default=None, ge=16, le=10_000_000)
    tensor_parallel_size: int = Field(default=1, ge=1, le=1)
    extra_args: list[EntrypointWord] = Field(default_factory=list, max_length=64)
    python: str | None = Field(default=None, min_length=1, max_length=MAX_WORKING_DIR_CHARS)
    startup_timeout_s: float = Field(default=600.0, gt=0, le=86_400, allow_inf_nan=False)

    @field_validator("extra_args")
    @classmethod
    def _not_ours(cls, value: list[str]) -> list[str]:
        for word in value:
            flag = word.split("=", 1)[0]
            if flag in VLLM_OWN_FLAGS:
                raise ValueError(f"{flag} is set by greenllm, not in extra_args")
        return value

    @field_validator("python", "model")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return None if value is None else _no_nul(value)


class InferSection(_Strict):
    """Inference settings (batched generation).

    Attributes:
        batch_size: Largest batch of requests decoded together.
        prompt_tokens: Prompt length when the load gives none, tokens.
        max_new_tokens: Output length when the load gives none, tokens.
        max_num_batched_tokens: Most tokens one engine step processes (decodes plus
            chunks of waiting prompts; vLLM's option of the same name). None: vLLM's
            OpenAI-server default, 8,192 on 80 GB-class GPUs and 2,048 on others (see
            :mod:`greenllm.serving.chunking`).
        load: The request load.
        engine: What serves each replica: ``greenllm`` (its own engine, paced by a
            simulated GPU) or ``vllm`` (a vLLM server per replica behind greenllm's
            energy proxy; see ``infer.vllm``). The simulator models either with
            greenllm's replica model.
        vllm: vLLM's settings (engine ``vllm`` only).
    """

    batch_size: int = Field(default=8, ge=1, le=4096)
    prompt_tokens: int = Field(default=32, ge=1, le=1_000_000)
    max_new_tokens: int = Field(default=32, ge=1, le=1_000_000)
    max_num_batched_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    load: LoadSection = LoadSection()
    engine: Literal["greenllm", "vllm"] = "greenllm"
    vllm: VllmSection | None = None

    @model_validator(mode="after")
    def _engine(self) -> InferSection:
        if self.vllm is not None and self.engine != "vllm":
            raise ValueError("a vllm section needs engine: vllm")
        return self

    @property
    def vllm_settings(self) -> VllmSection:
        """The vLLM section, with defaults when omitted."""
        return self.vllm or VllmSection()


class JobSpec(_Strict):
    """One job.

    Attributes:
        name: Job name (ids are assigned by the controller).
        kind: ``train`` or ``infer``.
        model: Built-in config (``tiny``, ``small``), ``smollm2-135m``, or a local model
            or compressed-artifact directory.
        shards: Training shards or inference replicas, one GPU each, placed together.
        min_shards: Inference: the fewest replicas kept serving; a policy that follows the
            load (min-energy) drains the others when the load is low (default: ``shards``,
            no scaling).
        gpu_types: GPU types allowed (empty: any).
        preferred_gpu_types: Types to use first, in order.
        priority: Higher keeps its power longer under a tight budget.
        floor_w: Lowest power limit any of its GPUs may be capped to, watts.
        simulated_model_params: Size of the model this job stands for on simulated GPUs,
            parameters: the power model plans with it, and CPU shards are paced by it.
        slo: Service-level objective.
        train: Training settings (kind train).
        infer: Inference settings (kind infer).
    """

    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    kind: Literal["train", "infer"]
    model: str = Field(default="tiny", min_length=1, max_length=MAX_MODEL_CHARS)
    shards: int = Field(default=1, ge=1, le=100_000)
    min_shards: int | None = Field(default=None, ge=1, le=100_000)
    gpu_types: list[GPUTypeName] = Field(default_factory=list, max_length=64)
    preferred_gpu_types: list[GPUTypeName] = Field(default_factory=list, max_length=64)
    priority: int = Field(default=1, ge=0, le=1000)
    floor_w: float = Field(default=0.0, ge=0, le=1e5, allow_inf_nan=False)
    simulated_model_params: float = Field(default=1.3e9, gt=0, le=1e15, allow_inf_nan=False)
    slo: SLO = SLO()
    train: TrainSection | None = None
    infer: InferSection | None = None

    @model_validator(mode="after")
    def _sections(self) -> JobSpec:
        wrong = "infer" if self.kind == "train" else "train"
        if getattr(self, wrong) is not None:
            raise ValueError(f"a {self.kind} job takes no '{wrong}' section")
        if self.gpu_types and any(p not in self.gpu_types for p in self.preferred_gpu_types):
            raise ValueError("preferred_gpu_types must be among gpu_types")
        if self.infer is not None and self.infer.engine == "vllm":
            model = self.infer.vllm_settings.model or self.model
            if model in BUILTIN_MODELS:
                raise ValueError(
                    f"engine vllm serves a model directory or a Hugging Face name, not "
                    f"greenllm's built-in {model!r} (give infer.vllm.model)"
                )
        if self.min_shards is not None:
            if self.kind != "infer":
                raise ValueError("min_shards is for inference jobs (replicas)")
            if self.min_shards > self.shards:
                raise ValueError(f"min_shards {self.min_shards} is more than shards {self.shards}")
        return self

    @property
    def train_settings(self) -> TrainSection:
        """The training section, with defaults when omitted."""
        return self.train or TrainSection()

    @property
    def infer_settings(self) -> InferSection:
        """The inference section, with defaults when omitted."""
        return self.infer or InferSection()

    @property
    def unit(self) -> str:
        """Unit of work: ``samples`` for training, ``tokens`` for inference."""
        return "samples" if self.kind == "train" else "tokens"

    def total_work_units(self) -> float | None:
        """Work the whole job does when that is known, in its unit (training: steps x
        batch_size x shards samples); None for inference."""
        if self.kind != "train":
            return None
        t = self.train_settings
        if t.total_samples is not None:
            return t.total_samples
        return float(t.steps * t.batch_size * self.shards)

    def workload(self) -> Workload:
        """How one shard looks to the power model (decode for inference replicas)."""
        if self.kind == "train":
            t = self.train_settings
            return Workload(
                "train",
                batch=t.batch_size,
                model_params=self.simulated_model_params,
                seq_len=t.seq_len,
            )
        return Workload(
            "decode", batch=self.infer_settings.batch_size, model_params=self.simulated_model_params
        )


def parse_job_spec(data: dict[str, Any], source: str = "<job>") -> JobSpec:
    """Validate a job-spec mapping.

    Raises:
        ConfigError: ``source: field.path: what is wrong``.
    """
    return validate(JobSpec, data, source)


def load_job_spec(path: str | Path) -> JobSpec:
    """Load and validate JOB.yaml (a relative ``trace_file`` or ``train.working_dir`` is
    taken from its folder).

    Raises:
        ConfigError: ``FILE: field.path: what is wrong``.
    """
    path = Path(path)
    spec = parse_job_spec(load_yaml_mapping(path), str(path))
    train = spec.train
    if train is not None and train.working_dir and not is_package_uri(train.working_dir):
        folder = (path.parent / train.working_dir).resolve()
        if not folder.is_dir():
            raise ConfigError(f"{path}: train.working_dir: {folder} is not a folder")
        train = train.model_copy(update={"working_dir": str(folder)})
        spec = spec.model_copy(update={"train": train})
    infer = spec.infer
    if infer is not None and infer.load.trace_file and not infer.load.trace_file.is_absolute():
        load = infer.load.model_copy(update={"trace_file": path.parent / infer.load.trace_file})
        spec = spec.model_copy(update={"infer": infer.model_copy(update={"load": load})})
    return _local_vllm_model(spec, path)


def _local_vllm_model(spec: JobSpec, path: Path) -> JobSpec:
    """A vLLM job's model given as a relative path is taken from the spec's folder (a
    name that is no folder there is left as is: a name in the nodes' model cache)."""
    infer = spec.infer
    if infer is None or infer.engine != "vllm":
        return spec
    vllm = infer.vllm_settings
    model = vllm.model or spec.model
    local = path.parent / model
    if Path(model).is_absolute() or not local.is_dir():
        return spec
    vllm = vllm.model_copy(update={"model": str(local.resolve())})
    return spec.model_copy(update={"infer": infer.model_copy(update={"vllm": vllm})})
