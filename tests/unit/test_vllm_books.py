"""vLLM replicas without vLLM: the proxy's energy books, the job spec's engine section,
the vLLM environment check, the server's command line and metrics."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from greenllm.devices.simulated import SimulatedGPU
from greenllm.errors import ConfigError
from greenllm.jobspec import load_job_spec, parse_job_spec
from greenllm.vllm_env import check_vllm, vllm_python
from workers.serve.proxy_books import ProxyBooks, WorkCosts
from workers.shards.vllm_replica import parse_vllm_metrics, vllm_command, vllm_environment

REPO = Path(__file__).resolve().parents[2]


class Meter:
    """A fake GPU energy counter and clock: the GPU draws ``watts`` from now on."""

    def __init__(self) -> None:
        self.t_s = 0.0
        self.energy_j = 1000.0
        self.watts = 100.0

    def clock(self) -> float:
        return self.t_s

    def read(self) -> float:
        return self.energy_j

    def advance(self, seconds: float) -> None:
        self.t_s += seconds
        self.energy_j += self.watts * seconds


COSTS = WorkCosts(prefill_s_per_token=0.001, decode_s_per_token=0.01)


def books(meter: Meter) -> ProxyBooks:
    return ProxyBooks(meter.read, COSTS, meter.clock)


def test_interval_energy_goes_to_requests_by_weighted_work() -> None:
    m = Meter()
    b = books(m)
    b.begin("a", 8)
    b.begin("b", 8)
    m.advance(1.0)  # 100 J: a prefilled 100 tokens and got 1, b got 1 decode token only
    b.tokens("a", 1, prompt_tokens=100)
    b.tokens("b", 1, prompt_tokens=0)
    b.book()
    work_a, work_b = 100 * 0.001 + 1 * 0.01, 1 * 0.01
    assert b.energy_of("a") == pytest.approx(100.0 * work_a / (work_a + work_b))
    assert b.energy_of("b") == pytest.approx(100.0 * work_b / (work_a + work_b))


def test_requests_plus_idle_equal_metered_energy() -> None:
    m = Meter()
    b = books(m)
    m.advance(2.0)  # idle
    b.begin("a", 4)
    m.advance(0.3)
    b.tokens("a", 1, prompt_tokens=50)
    b.begin("b")
    m.watts = 250.0
    m.advance(0.4)
    b.book()
    b.tokens("a", 3)
    b.tokens("b", 2, prompt_tokens=20)
    m.advance(0.2)
    done_a = b.finish("a", prompt_tokens=50, output_tokens=4)
    m.advance(0.5)
    done_b = b.finish("b", prompt_tokens=20, output_tokens=5)
    m.watts = 60.0
    m.advance(3.0)  # idle again
    snap = b.snapshot()
    assert snap.energy.metered_j == pytest.approx(m.energy_j - 1000.0)
    assert done_a.energy_j + done_b.energy_j + snap.energy.idle_j == pytest.approx(
        snap.energy.metered_j
    )
    assert snap.energy.idle_j == pytest.approx(2.0 * 100.0 + 3.0 * 60.0)
    assert snap.prefill_tokens == 70 and snap.decode_tokens == 9
    assert snap.requests == 2 and snap.in_flight == 0
    assert snap.active_s == pytest.approx(0.3 + 0.4 + 0.2 + 0.5)


def test_a_prefill_spanning_intervals_shares_equally_while_nobody_has_work() -> None:
    m = Meter()
    b = books(m)
    b.begin("a")
    b.begin("b")
    m.advance(1.0)
    b.book()  # no token yet for either: 50 J each
    assert b.energy_of("a") == pytest.approx(50.0)
    assert b.energy_of("b") == pytest.approx(50.0)


def test_finish_settles_tokens_seen_only_in_the_final_usage() -> None:
    m = Meter()
    b = books(m)
    b.begin("whole", 16)  # a request forwarded unchanged: its tokens come with its answer
    b.begin("streamed", 16)
    m.advance(1.0)
    b.tokens("streamed", 1, prompt_tokens=10)
    done = b.finish("whole", prompt_tokens=10, output_tokens=16)
    work_whole, work_streamed = 10 * 0.001 + 16 * 0.01, 10 * 0.001 + 1 * 0.01
    assert done.energy_j == pytest.approx(100.0 * work_whole / (work_whole + work_streamed))
    assert done.output_tokens == 16 and done.prompt_tokens == 10


def test_latency_percentiles_and_waiting_requests() -> None:
    m = Meter()
    b = books(m)
    b.begin("a", 3)
    b.begin("b", 3)
    assert b.snapshot().waiting == 2
    m.advance(0.2)
    b.tokens("a", 1, prompt_tokens=5)
    snap = b.snapshot()
    assert snap.waiting == 1 and snap.outstanding_tokens == 2 + 3
    m.advance(0.1)
    b.tokens("a", 3)
    done = b.finish("a")
    assert done.ttft_s == pytest.approx(0.2)
    assert done.tpot_s == pytest.approx(0.1 / 2)
    assert b.snapshot().ttft_p50_s == pytest.approx(0.2)


def test_work_costs_follow_the_power_model() -> None:
    costs = WorkCosts.for_gpu("H100-SXM", 1.3e9, 8)
    assert 0 < costs.prefill_s_per_token < costs.decode_s_per_token
    assert WorkCosts.for_gpu("no such GPU", 1.3e9, 8) == WorkCosts(1.0, 1.0)


# -- job spec ------------------------------------------------------------------------------
def _infer(**infer: object) -> dict[str, object]:
    return {"name": "v", "kind": "infer", "model": "/models/m", "infer": infer}


def test_engine_defaults_to_greenllm_and_vllm_section_needs_vllm_engine() -> None:
    assert parse_job_spec(_infer()).infer_settings.engine == "greenllm"
    with pytest.raises(ConfigError, match="vllm section needs engine: vllm"):
        parse_job_spec(_infer(vllm={"dtype": "bfloat16"}))
    spec = parse_job_spec(_infer(engine="vllm", vllm={"max_num_seqs": 4}))
    assert spec.infer_settings.vllm_settings.max_num_seqs == 4


@pytest.mark.parametrize(
    ("vllm", "message"),
    [
        ({"extra_args": ["--port=9"]}, "--port is set by greenllm"),
        ({"tensor_parallel_size": 2}, "tensor_parallel_size"),
        ({"dtype": "int3"}, "dtype"),
        ({"max_num_seqs": 0}, "max_num_seqs"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_vllm_sections_are_one_line(vllm: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_job_spec(_infer(engine="vllm", vllm=vllm))
    assert "\n" not in str(caught.value)


def test_vllm_does_not_serve_greenllms_built_in_models() -> None:
    with pytest.raises(ConfigError, match="built-in 'tiny'"):
        parse_job_spec({"name": "v", "kind": "infer", "infer": {"engine": "vllm"}})


def test_a_relative_vllm_model_is_taken_from_the_spec_folder(tmp_path: Path) -> None:
    (tmp_path / "models" / "tiny-llama").mkdir(parents=True)
    path = tmp_path / "job.yaml"
    doc = _infer(engine="vllm", vllm={"model": "models/tiny-llama"})
    path.write_text(yaml.safe_dump(doc))
    model = load_job_spec(path).infer_settings.vllm_settings.model
    assert model == str((tmp_path / "models" / "tiny-llama").resolve())


# -- the vLLM environment -------------------------------------------------------------------
def test_no_vllm_environment_says_how_to_install_it() -> None:
    with pytest.raises(ConfigError, match="GREENLLM_VLLM_PYTHON") as caught:
        vllm_python(None, environ={})
    assert "pip install vllm" in str(caught.value) and "\n" not in str(caught.value)
    assert vllm_python(None, environ={"GREENLLM_VLLM_PYTHON": "/x/python"}) == "/x/python"
    assert vllm_python("/y/python", environ={"GREENLLM_VLLM_PYTHON": "/x"}) == "/y/python"


def test_a_python_without_vllm_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a python executable"):
        check_vllm(str(tmp_path / "nowhere" / "python"))
    # the project's own python has no vllm (it must never be installed there)
    with pytest.raises(ConfigError, match="has no vllm package") as caught:
        check_vllm(sys.executable)
    assert "\n" not in str(caught.value)


def test_server_command_and_environment(tmp_path: Path) -> None:
    spec = parse_job_spec(
        _infer(
            engine="vllm",
            vllm={"max_model_len": 512, "dtype": "bfloat16", "extra_args": ["--enforce-eager"]},
        )
    )
    cmd = vllm_command("/v/bin/python", spec, 8123)
    assert cmd[:3] == ["/v/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(cmd)
    assert "--model /models/m --served-model-name m" in joined
    assert "--host 127.0.0.1 --port 8123" in joined  # loopback: only the proxy is reached
    assert "--max-model-len 512" in joined and "--max-num-seqs" not in joined
    assert cmd[-1] == "--enforce-eager"
    env = vllm_environment(SimulatedGPU("L4"), tmp_path)
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["VLLM_CPU_KVCACHE_SPACE"]
    assert "PYTHONPATH" not in env and env["VLLM_CACHE_ROOT"]


def test_vllm_metrics_are_summed_over_labels() -> None:
    text = "\n".join(
        [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            'vllm:num_requests_running{engine="0",model_name="m"} 2.0',
            'vllm:num_requests_waiting{engine="0",model_name="m"} 1.0',
            'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25',
            'vllm:prompt_tokens_total{engine="0",model_name="m"} 120.0',
            'vllm:generation_tokens_total{engine="0",model_name="m"} 30.0',
            'vllm:generation_tokens_total{engine="1",model_name="m"} 12.0',
            'vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 3.0',
            'vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 1.0',
            'vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 0.5',
        ]
    )
    assert parse_vllm_metrics(text) == {
        "requests_running": 2.0,
        "requests_waiting": 1.0,
        "kv_cache_usage": 0.25,
        "prompt_tokens": 120.0,
        "generation_tokens": 42.0,
        "requests_succeeded": 4.0,
    }


def test_the_simulator_models_a_vllm_job_with_greenllms_replica_model(tmp_path: Path) -> None:
    from scheduler.policies import load_policy
    from scheduler.sim.engine import Simulation
    from scheduler.sim.scenario import load_scenario

    doc = yaml.safe_load((REPO / "examples" / "scenarios" / "small.yaml").read_text())
    doc["duration_s"] = 30
    (tmp_path / "greenllm.yaml").write_text(yaml.safe_dump(doc))
    for job in doc["jobs"]:
        if job["kind"] == "infer":
            job["model"] = "/models/llama"
            job["infer"].update(engine="vllm", vllm={"max_num_seqs": 32})
    (tmp_path / "vllm.yaml").write_text(yaml.safe_dump(doc))
    runs = {}
    for name in ("greenllm", "vllm"):
        scenario, base_dir = load_scenario(tmp_path / f"{name}.yaml")
        sim = Simulation(scenario, base_dir, load_policy("uniform"), "uniform")
        runs[name] = sim.run()
    assert runs["vllm"].work == runs["greenllm"].work and runs["vllm"].work["chat-7b"] > 0
    assert runs["vllm"].energy_j == runs["greenllm"].energy_j


def test_a_simulated_gpu_follows_vllms_activity_and_a_cap_does_not_slow_it(
    tmp_path: Path,
) -> None:
    import threading

    from workers.shards.status import ShardStatus
    from workers.shards.vllm_replica import VllmReplica

    spec = parse_job_spec({**_infer(engine="vllm"), "simulated_model_params": 1e9})
    gpu = SimulatedGPU("H100-SXM")
    replica = VllmReplica(
        spec, ShardStatus("v-1-0", "v-1"), threading.Lock(), gpu, "127.0.0.1", tmp_path, tmp_path
    )
    m = Meter()
    costs = WorkCosts.for_gpu("H100-SXM", 1e9, spec.infer_settings.batch_size)
    b = ProxyBooks(m.read, costs, m.clock)

    def second_of(tokens: int) -> tuple[float, float | None]:
        """One second in which the engine streams ``tokens``; the GPU's busy share."""
        b.begin("r", tokens)
        m.advance(1.0)
        b.tokens("r", tokens, prompt_tokens=0)
        b.finish("r")
        wait = replica._follow_activity(b.snapshot())
        return gpu.busy_fraction, wait

    busy, wait = second_of(100)
    assert gpu.workload is not None
    assert busy == pytest.approx(100 * costs.decode_s_per_token, rel=1e-6)
    assert wait == pytest.approx(1.0 - busy)
    # a cap: the GPU is slower, so the same tokens keep it busier; vLLM itself is not slowed
    gpu.set_power_limit_w(gpu.power_limit_constraints().min_power_limit_w)
    capped_busy, _ = second_of(100)
    assert capped_busy > busy
    # nothing in flight and no activity since: the GPU idles
    m.advance(1.0)
    replica._follow_activity(b.snapshot())
    assert gpu.workload is None
