"""Compression methods: each changes what it claims (measured), the result still generates,
int8 keeps held-out perplexity within a stated bound, artifacts load back, and the report
holds the ratios."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantLinear

from greenllm.compression import lowrank, prune, quantize
from greenllm.compression.artifacts import load_compressed, save_compressed
from greenllm.compression.evaluate import (
    EvalConfig,
    Evaluation,
    Generation,
    Stat,
    energy_source,
    generate,
    measure_generation,
    perplexity,
)
from greenllm.compression.layers import conv1d_to_linear, count_parameters, target_linears
from greenllm.compression.pipeline import parse_methods
from greenllm.compression.report import (
    MethodResult,
    build_report,
    figure_rows,
    pareto_front,
    plot_pareto,
    ratio_rows,
    write_report,
)
from greenllm.energy import EnergyMeter, Measurement
from greenllm.energy.cpu_estimate import CpuTimeEstimator
from greenllm.errors import GreenllmError
from greenllm.workloads import LoadedModel, corpus_ids, load_model, pretrained_builtin

#: Training `tiny` for the module takes 1-4 min on 2 cores (275 s measured beside other work).
pytestmark = [pytest.mark.slow, pytest.mark.tiny_model]
TEST_STEPS = 300
#: int8 (dynamic or weight-only) may change held-out perplexity by at most this fraction.
INT8_PERPLEXITY_BOUND = 0.02
#: int4 (groups of 32) may change it by at most this fraction.
INT4_PERPLEXITY_BOUND = 0.10
EVAL = EvalConfig(seq_len=128, max_eval_tokens=2048)


@pytest.fixture(scope="module")
def tiny(model_cache: Path) -> LoadedModel:
    """``tiny`` as trained by its recipe, in the run's model cache (tests/conftest.py)."""
    return pretrained_builtin("tiny", train_steps=TEST_STEPS)


@pytest.fixture(scope="module")
def heldout(tiny: LoadedModel) -> torch.Tensor:
    return corpus_ids(tiny.tokenizer, "heldout")


@pytest.fixture(scope="module")
def base_perplexity(tiny: LoadedModel, heldout: torch.Tensor) -> float:
    return perplexity(tiny.model, heldout, EVAL)[0]


def fresh(tiny: LoadedModel) -> nn.Module:
    """A copy of the tiny model with nn.Linear layers."""
    model = copy.deepcopy(tiny.model)
    assert conv1d_to_linear(model) == 8  # 4 projections in each of 2 blocks
    return model


def assert_generates(model: nn.Module, tiny: LoadedModel, heldout: torch.Tensor) -> None:
    prompt = heldout[:16].repeat(2, 1)
    out = generate(model, prompt, 8, tiny.tokenizer)
    assert out.shape == (2, 8)
    assert int(out.min()) >= 0 and int(out.max()) < tiny.tokenizer.vocab_size


def test_conv1d_to_linear_keeps_the_function(tiny: LoadedModel, heldout: torch.Tensor) -> None:
    model = fresh(tiny)
    x = heldout[:32][None]
    with torch.no_grad():
        assert torch.allclose(model(x).logits, tiny.model(x).logits, atol=1e-5)
    assert "lm_head" not in target_linears(model)


@pytest.mark.parametrize("method", ["int8-dynamic", "int8"])
def test_int8_stores_int8_and_keeps_perplexity(
    method: str, tiny: LoadedModel, heldout: torch.Tensor, base_perplexity: float
) -> None:
    model = fresh(tiny)
    linears = target_linears(model)
    if method == "int8-dynamic":
        quantize.quantize_dynamic_int8(model)
        for name in linears:
            module = model.get_submodule(name)
            assert isinstance(module, DynamicQuantLinear)
            assert module.weight().dtype == torch.qint8
    else:
        result = quantize.quantize_weight_only(model, 8)
        assert sorted(result.layers) == sorted(linears)
        for name, linear in linears.items():
            module = model.get_submodule(name)
            assert isinstance(module, quantize.Int8WeightOnlyLinear)
            assert module.weight_int8.dtype == torch.int8
            err = (module.dequantized_weight() - linear.weight).abs()
            assert bool((err <= module.weight_scales[:, None] / 2 + 1e-7).all())
    for name in linears:  # no float weight matrix is left in a quantized layer
        assert all(p.dim() < 2 for p in model.get_submodule(name).parameters())
    ppl = perplexity(model, heldout, EVAL)[0]
    assert abs(ppl / base_perplexity - 1) < INT8_PERPLEXITY_BOUND
    assert count_parameters(model) == count_parameters(tiny.model)
    assert_generates(model, tiny, heldout)


def test_int8_weight_only_uses_the_int8_kernel(tiny: LoadedModel) -> None:
    linear = nn.Linear(64, 48)
    module = quantize.Int8WeightOnlyLinear.from_linear(linear)
    x = torch.randn(3, 5, 64)
    expected = F.linear(x, module.dequantized_weight(), module.bias)
    assert torch.allclose(module(x), expected, atol=1e-4)
    assert module.kernel(torch.device("cpu")) == quantize.KERNEL_INT8_PACK
    assert "fake/dequantized" in module.kernel(torch.device("cuda"))


def test_int4_packs_two_weights_per_byte(
    tiny: LoadedModel, heldout: torch.Tensor, base_perplexity: float
) -> None:
    model = fresh(tiny)
    linears = {n: copy.deepcopy(m) for n, m in target_linears(model).items()}
    result = quantize.quantize_weight_only(model, 4, group_size=32)
    assert sorted(result.layers) == sorted(linears) and not result.skipped
    for name, linear in linears.items():
        module = model.get_submodule(name)
        assert isinstance(module, quantize.Int4WeightOnlyLinear)
        assert module.weight_uint4.dtype == torch.uint8
        assert module.weight_uint4.shape == (linear.out_features, linear.in_features // 2)
        assert int(module.unpacked().max()) <= 15
        scale = module.scales_and_zeros[..., 0].t().repeat_interleave(32, dim=1)
        err = (module.dequantized_weight() - linear.weight).abs()
        assert bool((err <= scale / 2 + 1e-6).all())
        x = torch.randn(4, linear.in_features)
        expected = F.linear(x, module.dequantized_weight(), module.bias)
        assert torch.allclose(module(x), expected, atol=1e-3)
    ppl = perplexity(model, heldout, EVAL)[0]
    assert abs(ppl / base_perplexity - 1) < INT4_PERPLEXITY_BOUND
    assert_generates(model, tiny, heldout)
    assert quantize.kernels_used(model, torch.device("cpu")) == [quantize.KERNEL_INT4_PACK]


def test_int4_skips_shapes_the_kernel_cannot_take() -> None:
    model = nn.Sequential(nn.Linear(64, 24), nn.Linear(24, 32))
    result = quantize.quantize_weight_only(model, 4, group_size=32)
    assert set(result.skipped) == {"0", "1"}
    assert type(model[0]) is nn.Linear


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_pruning_reaches_the_target_sparsity(
    scope: str, tiny: LoadedModel, heldout: torch.Tensor
) -> None:
    model = fresh(tiny)
    result = prune.prune_magnitude(model, 0.6, scope)  # type: ignore[arg-type]
    assert prune.sparsity(model) == pytest.approx(0.6, abs=0.005)
    per_layer = [float((m.weight == 0).float().mean()) for m in target_linears(model).values()]
    if scope == "layer":
        assert all(s == pytest.approx(0.6, abs=0.005) for s in per_layer)
    else:
        assert max(per_layer) - min(per_layer) > 0.01  # one global cut, uneven per layer
    assert all(int(mask.sum()) > 0 for mask in result.masks.values())
    assert_generates(model, tiny, heldout)


def test_2_4_pruning_leaves_two_of_every_four(tiny: LoadedModel, heldout: torch.Tensor) -> None:
    model = fresh(tiny)
    prune.prune_2_4(model)
    assert all(prune.is_2_4_sparse(m.weight) for m in target_linears(model).values())
    assert prune.sparsity(model) == pytest.approx(0.5, abs=1e-6)
    assert not prune.is_2_4_sparse(fresh(tiny).transformer.h[0].mlp.c_fc.weight)
    assert_generates(model, tiny, heldout)


def test_finetune_after_pruning_keeps_the_mask_and_recovers(
    tiny: LoadedModel, heldout: torch.Tensor
) -> None:
    from greenllm.workloads import TrainConfig

    model = fresh(tiny)
    result = prune.prune_magnitude(model, 0.8, "global")
    before = perplexity(model, heldout, EVAL)[0]
    config = TrainConfig(steps=15, batch_size=4, seq_len=64, lr=1e-3, log_every=0)
    prune.finetune_pruned(model, result, corpus_ids(tiny.tokenizer, "train"), config)
    assert prune.sparsity(model) >= 0.8 - 0.005
    for name, mask in result.masks.items():
        assert bool((model.get_submodule(name).weight[~mask] == 0).all())
    assert perplexity(model, heldout, EVAL)[0] < before


def test_lowrank_to_a_fixed_rank_is_the_best_rank_r_approximation(
    tiny: LoadedModel, heldout: torch.Tensor
) -> None:
    model = fresh(tiny)
    originals = {n: m.weight.detach().clone() for n, m in target_linears(model).items()}
    result = lowrank.factorize(model, rank=16)
    assert set(result.ranks) == set(originals) and set(result.ranks.values()) == {16}
    for name, weight in originals.items():
        module = model.get_submodule(name)
        assert isinstance(module, lowrank.LowRankLinear)
        assert module.down.weight.shape == (16, weight.shape[1])
        assert module.up.weight.shape == (weight.shape[0], 16)
        s = torch.linalg.svdvals(weight.double())
        error = torch.linalg.matrix_norm(
            module.weight_product().detach().double() - weight.double()
        )
        assert float(error) == pytest.approx(float(s[16:].square().sum().sqrt()), rel=1e-3)
    assert count_parameters(model) < count_parameters(tiny.model)
    assert_generates(model, tiny, heldout)


def test_lowrank_by_energy_keeps_the_fraction_with_the_least_rank(tiny: LoadedModel) -> None:
    model = fresh(tiny)
    originals = {n: m.weight.detach().clone() for n, m in target_linears(model).items()}
    result = lowrank.factorize(model, energy=0.8)
    assert result.ranks
    for name, r in result.ranks.items():
        s2 = torch.linalg.svdvals(originals[name].double()).square()
        assert float(s2[:r].sum() / s2.sum()) >= 0.8
        assert float(s2[: r - 1].sum() / s2.sum()) < 0.8
    for name in result.skipped:
        assert type(model.get_submodule(name)) is nn.Linear


METHODS: dict[str, Callable[[nn.Module], Any]] = {
    "int8-dynamic": quantize.quantize_dynamic_int8,
    "int8": lambda m: quantize.quantize_weight_only(m, 8),
    "int4": lambda m: quantize.quantize_weight_only(m, 4),
    "prune": lambda m: prune.prune_magnitude(m, 0.5),
    "lowrank+int4": lambda m: (lowrank.factorize(m, rank=32), quantize.quantize_weight_only(m, 4)),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_artifact_round_trip(
    method: str, tiny: LoadedModel, heldout: torch.Tensor, tmp_path: Path
) -> None:
    model = fresh(tiny)
    METHODS[method](model)
    baseline_bytes = save_compressed(
        copy.deepcopy(tiny.model), tiny.tokenizer, tmp_path / "base", {"steps": []}
    )
    weight_bytes = save_compressed(model, tiny.tokenizer, tmp_path / "c", {"steps": [method]})
    loaded = load_model(str(tmp_path / "c"))
    assert loaded.source == "compressed" and loaded.manifest is not None
    assert loaded.manifest["steps"] == [method]
    x = heldout[:48].view(2, 24)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x).logits, model(x).logits, atol=1e-5)
    assert [type(m) for m in loaded.model.modules()] == [type(m) for m in model.modules()]
    if method != "prune":
        assert weight_bytes < 0.6 * baseline_bytes
    again = load_compressed(tmp_path / "base")
    with torch.no_grad():
        assert torch.allclose(again.model(x).logits, tiny.model(x).logits, atol=1e-5)


def test_a_broken_manifest_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "greenllm_compression.json").write_text('{"format": "other"}')
    with pytest.raises(GreenllmError, match="format"):
        load_compressed(tmp_path)


def test_parse_methods_validates_names_and_order() -> None:
    assert parse_methods("int8, prune+int4") == [["int8"], ["prune", "int4"]]
    for bad, message in [
        ("int3", "unknown method"),
        ("int8+prune", "must come last"),
        ("prune+distill", "distill must come first"),
        ("prune+prune", "twice"),
        ("int8,,prune", "empty"),
    ]:
        with pytest.raises(GreenllmError, match=message):
            parse_methods(bad)


def _result(
    method: str, ppl: float, jpt: float, size: int, spread: float = 0.02, runs: int = 5
) -> MethodResult:
    def stat(x: float) -> Stat:
        return Stat(x, x * (1 - spread / 2), x * (1 + spread / 2), runs)

    gen = Generation(stat(1.0 / jpt), stat(jpt), "estimate", True, 256, 1.0)
    ev = Evaluation(ppl, 100, gen)
    return MethodResult(method=method, parameters=size, weight_bytes=size * 4, evaluation=ev)


def test_report_ratios_pareto_and_files(tmp_path: Path) -> None:
    base = _result("baseline", 10.0, 0.02, 1000)
    results = [_result("int8", 10.1, 0.01, 1000), _result("prune", 11.0, 0.03, 500)]
    report = build_report("m", "cpu", base, results)
    int8 = report["results"][0]
    assert int8["perplexity_ratio"] == pytest.approx(1.01)
    assert int8["joules_per_token_ratio"] == pytest.approx(0.5)
    assert int8["tokens_per_s_ratio"] == pytest.approx(2.0)
    assert report["results"][1]["bytes_ratio"] == pytest.approx(0.5)
    assert "ESTIMATE" in report["energy_note"] and report["energy_sources"] == ["estimate"]
    write_report(report, tmp_path)
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "report.json").read_text())["results"][1]["method"] == "prune"
    assert pareto_front([(0.02, 10.0), (0.01, 10.1), (0.03, 11.0)]) == [1, 0]


def test_one_baseline_per_report_and_ratios_from_the_table_figures() -> None:
    base = _result("baseline", 10.0, 0.02, 1000)
    results = [_result("int8", 10.1, 0.016, 1000), _result("prune", 11.0, 0.03, 500)]
    report = build_report("m", "cpu", base, results)
    figures, ratios = figure_rows(report), ratio_rows(report)
    assert figures[0][0] == ratios[0][0] == "baseline"  # shown in both tables
    assert ratios[0][1:] == [1.0] * 5
    assert all("paired_baseline" not in row for row in report["results"])
    for fig, ratio in zip(figures[1:], ratios[1:], strict=True):
        assert float(ratio[4]) == pytest.approx(fig[4] / figures[0][4], rel=1e-3)  # tokens/s
        assert float(ratio[5]) == pytest.approx(fig[6] / figures[0][6], rel=1e-3)  # J/token
        assert ratio[3] == pytest.approx(fig[3] / figures[0][3])  # perplexity


def test_spreads_are_shown_and_noisy_figures_marked() -> None:
    base = _result("baseline", 10.0, 0.02, 1000, spread=0.02)
    noisy = _result("int8", 10.0, 0.01, 1000, spread=0.12)
    single = _result("prune", 10.0, 0.01, 1000, runs=1)
    report = build_report("m", "cpu", base, [noisy, single], max_spread=0.05)
    b, n, one = figure_rows(report)
    assert b[5] == "2.0%" and b[7] == "2.0%"
    assert n[5] == "12.0% noisy" and n[7] == "12.0% noisy"
    assert one[5] == "1 run (noisy)"
    row = report["results"][0]
    assert row["joules_per_token_spread"] == pytest.approx(0.12)
    assert row["joules_per_token_min"] < row["joules_per_token"] < row["joules_per_token_max"]
    assert row["joules_per_token_noisy"] and row["joules_per_token_ratio_noisy"]
    assert ratio_rows(report)[1][5].endswith("(noisy)")
    assert not report["baseline"]["tokens_per_s_noisy"]


def test_stat_median_and_spread() -> None:
    s = Stat.of([1.0, 1.1, 0.9, 1.05, 1.0])
    assert (s.median, s.low, s.high, s.runs) == (1.0, 0.9, 1.1, 5)
    assert s.spread == pytest.approx(0.2) and s.noisy(0.05) and not s.noisy(0.25)
    assert Stat.of([2.0]).spread is None and Stat.of([2.0]).noisy(1.0)


def test_pareto_plot_uses_the_table_figures_with_honest_axes(tmp_path: Path) -> None:
    base = _result("baseline", 10.0, 0.02, 1000)
    results = [_result("int8", 10.1, 0.0199, 1000, spread=0.1)]
    report = build_report("m", "cpu", base, results)
    (x0, x1), (y0, y1) = plot_pareto(report, tmp_path / "p.png")
    assert x0 == 0 and y0 == 0  # a 0.5% difference is not blown up to the whole axis
    assert x1 >= report["results"][0]["joules_per_token_max"] and y1 >= 10.1


def test_energy_source_labels_estimates() -> None:
    estimate = Measurement("w", 0.0, 1.0, 0.0, 1.0, cpu_estimate_j=3.0)
    assert energy_source(estimate) == ("estimate", True)
    rapl = Measurement("w", 0.0, 1.0, 0.0, 1.0, cpu_energy_j={"package-0": 2.0}, cpu_estimate_j=3.0)
    assert energy_source(rapl) == ("rapl", False)
    gpu = Measurement(
        "w",
        0.0,
        1.0,
        0.0,
        1.0,
        gpu_energy_j={"u": 5.0},
        gpu_sources={"u": "nvml-counter"},
        cpu_energy_j={"package-0": 2.0},
    )
    assert energy_source(gpu) == ("nvml-counter+rapl", False)


def test_a_quantized_model_cannot_be_compressed_again(tiny: LoadedModel) -> None:
    from greenllm.compression.pipeline import CompressOptions, _apply_step

    model = fresh(tiny)
    quantize.quantize_dynamic_int8(model)
    with pytest.raises(GreenllmError, match="no float Linear layers"):
        _apply_step(
            "prune", model, tiny.model, torch.zeros(10, dtype=torch.long), CompressOptions()
        )


def test_devices_are_checked() -> None:
    from greenllm.compression.pipeline import check_device

    check_device("cpu")
    with pytest.raises(GreenllmError, match="cpu or cuda"):
        check_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(GreenllmError, match="no such CUDA device"):
            check_device("cuda:0")


class _FakeLM(nn.Module):
    """Generates zeros; each call takes ``call_s`` seconds and adds as much to ``cpu_s``
    (the process's CPU time, as the fake meter reads it); records its calls in ``log``."""

    def __init__(self, name: str, call_s: float, log: list[str], cpu_s: list[float]) -> None:
        super().__init__()
        self.name, self.call_s, self.log, self.cpu_s = name, call_s, log, cpu_s
        self.w = nn.Parameter(torch.zeros(1))

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **_: Any) -> torch.Tensor:
        self.log.append(self.name)
        time.sleep(self.call_s)
        self.cpu_s[0] += self.call_s
        new = torch.zeros(input_ids.shape[0], max_new_tokens, dtype=torch.long)
        return torch.cat([input_ids, new], dim=1)


def _ticking_meter(cpu_s: list[float]) -> EnergyMeter:
    """The CPU-time estimate read with a 10 ms tick, as os.times() reads it."""
    estimator = CpuTimeEstimator(
        watts_per_core=6.25, cpu_time_s=lambda: math.floor(cpu_s[0] * 100 + 1e-9) / 100
    )
    return EnergyMeter(gpus=[], rapl=None, cpu_estimate=estimator)


def test_all_models_are_timed_interleaved_in_one_session(tiny: LoadedModel) -> None:
    log: list[str] = []
    cpu_s = [0.0]
    models = [_FakeLM(n, 0.002, log, cpu_s) for n in ("base", "a", "b")]
    config = EvalConfig(gen_batch_size=2, new_tokens=4, repeats=3, min_run_s=0.01, max_run_s=0.01)
    gens = measure_generation(
        models, tiny.tokenizer, torch.arange(100), _ticking_meter(cpu_s), config
    )
    assert len(gens) == 3 and all(g.tokens_per_s.runs == 3 for g in gens)
    timed = log[3:]  # after one warm-up call per model
    firsts = [timed[i] for i in range(len(timed)) if i == 0 or timed[i] != timed[i - 1]]
    assert firsts == ["base", "a", "b", "a", "b", "base", "b", "base", "a"]  # rotated rounds


def test_runs_last_long_enough_that_the_cpu_tick_does_not_step_j_per_token(
    tiny: LoadedModel,
) -> None:
    cpu_s = [0.0]
    model = _FakeLM("m", 0.013, [], cpu_s)  # one call ~ one tick: J/token would step ~100%
    config = EvalConfig(gen_batch_size=4, new_tokens=64, repeats=4, min_run_s=0.5, max_run_s=0.5)
    meter = _ticking_meter(cpu_s)
    (gen,) = measure_generation([model], tiny.tokenizer, torch.arange(200), meter, config)
    assert gen.run_s >= 0.5
    jpt = gen.joules_per_token
    assert jpt is not None and jpt.spread is not None
    true_jpt = 0.013 * 6.25 / 256
    assert 0.97 * true_jpt <= jpt.low <= jpt.high <= 1.03 * true_jpt  # within a tick per run
    assert jpt.spread < 0.03


def test_noisy_timing_retries_with_longer_runs(tiny: LoadedModel) -> None:
    cpu_s = [0.0]
    model = _FakeLM("m", 0.003, [], cpu_s)
    messages: list[str] = []
    config = EvalConfig(
        gen_batch_size=1, new_tokens=2, repeats=2, min_run_s=0.01, max_run_s=0.04, max_spread=1e-9
    )
    (gen,) = measure_generation(
        [model], tiny.tokenizer, torch.arange(100), _ticking_meter(cpu_s), config, messages.append
    )
    assert [m.split("with ")[1] for m in messages] == ["0.02 s runs", "0.04 s runs"]
    assert gen.noisy(config.max_spread)  # still above: marked, not hidden


def test_timing_runs_on_one_cpu_thread_and_restores_the_setting(tiny: LoadedModel) -> None:
    seen: list[int] = []

    class Probe(_FakeLM):
        def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **k: Any) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return super().generate(input_ids, max_new_tokens, **k)

    cpu_s = [0.0]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        config = EvalConfig(gen_batch_size=1, new_tokens=2, repeats=2, min_run_s=0.01)
        meter = _ticking_meter(cpu_s)
        measure_generation(
            [Probe("m", 0.001, [], cpu_s)], tiny.tokenizer, torch.arange(50), meter, config
        )
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_compress_silences_transformers_notices() -> None:
    from transformers.utils import logging as hf_logging

    from greenllm.cli.compress_cmd import _quiet_transformers

    before = hf_logging.get_verbosity()
    try:
        _quiet_transformers()
        assert hf_logging.get_verbosity() == hf_logging.ERROR
    finally:
        hf_logging.set_verbosity(before)
