"""Compression methods: each changes what it claims (measured), the result still generates,
int8 keeps held-out perplexity within a stated bound, artifacts load back, and the report
holds the ratios."""

from __future__ import annotations

import copy
import json
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
    energy_source,
    generate,
    perplexity,
)
from greenllm.compression.layers import conv1d_to_linear, count_parameters, target_linears
from greenllm.compression.pipeline import parse_methods
from greenllm.compression.report import (
    MethodResult,
    build_report,
    pareto_front,
    write_report,
)
from greenllm.energy import Measurement
from greenllm.errors import GreenllmError
from greenllm.workloads import LoadedModel, corpus_ids, load_model, pretrained_builtin

TEST_STEPS = 300
#: int8 (dynamic or weight-only) may change held-out perplexity by at most this fraction.
INT8_PERPLEXITY_BOUND = 0.02
#: int4 (groups of 32) may change it by at most this fraction.
INT4_PERPLEXITY_BOUND = 0.10
EVAL = EvalConfig(seq_len=128, max_eval_tokens=2048)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """``tiny`` trained for a few steps, cached for the whole session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENLLM_CACHE", str(tmp_path_factory.getbasetemp() / "greenllm-cache"))
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


def _result(method: str, ppl: float, jpt: float, size: int) -> MethodResult:
    ev = Evaluation(ppl, 100, 1.0 / jpt, jpt, "estimate", True, 10, 1.0)
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


def test_speed_and_energy_ratios_use_the_paired_baseline_runs() -> None:
    from greenllm.compression.evaluate import Generation

    base = _result("baseline", 10.0, 0.02, 1000)
    method = _result("int8", 10.0, 0.01, 1000)
    method.paired_baseline = Generation(50.0, 0.04, "estimate", True, 10, 0.2)
    row = build_report("m", "cpu", base, [method])["results"][0]
    assert row["tokens_per_s_ratio"] == pytest.approx(100.0 / 50.0)
    assert row["joules_per_token_ratio"] == pytest.approx(0.01 / 0.04)
    assert row["paired_baseline"]["tokens_per_s"] == 50.0
    assert row["perplexity_ratio"] == pytest.approx(1.0)


def test_generation_is_measured_in_alternation(tiny: LoadedModel, heldout: torch.Tensor) -> None:
    from greenllm.compression.evaluate import evaluate
    from greenllm.energy import EnergyMeter

    meter = EnergyMeter(gpus=[], rapl=None, cpu_estimate=True)
    config = EvalConfig(max_eval_tokens=512, gen_batch_size=2, new_tokens=4, repeats=3)
    evaluation, paired = evaluate(tiny.model, tiny.tokenizer, heldout, meter, config, tiny.model)
    assert paired is not None and paired.generated_tokens == evaluation.generated_tokens == 8
    assert evaluation.energy_source == paired.energy_source == "estimate"
    assert evaluation.energy_is_estimate and evaluation.tokens_per_s > 0
