"""Loading what users write (cluster.yaml, job specs, scenarios): one line naming the file,
the field and the problem, whatever the bytes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from greenllm.config import load_cluster_config
from greenllm.errors import ConfigError
from greenllm.jobspec import load_job_spec
from greenllm.loading import MAX_DEPTH, MAX_FILE_BYTES, load_yaml_mapping, one_line
from scheduler.sim.scenario import load_scenario

NODES = "nodes: [{name: a, gpus: [{type: L4, count: 2}]}]\n"


def error(
    path: Path, text: str | bytes, loader: Callable[[Path], object] = load_cluster_config
) -> str:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    with pytest.raises(ConfigError) as info:
        loader(path)
    message = str(info.value)
    assert message.startswith(f"{path}"), message
    assert len(message.splitlines()) == 1, message
    return message


def test_typo_reports_the_unknown_key_first_with_did_you_mean(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    msg = error(path, NODES + "budgt: {budget_w: 100}\n")
    assert msg == f"{path}: budgt: unknown key (did you mean 'budget'?)"


def test_nested_typo_suggests_from_the_model(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    msg = error(path, "nodes: [{name: a, gpus: [{type: L4, cont: 2}]}]\nbudget: {budget_w: 99}\n")
    assert msg == f"{path}: nodes.0.gpus.0.cont: unknown key (did you mean 'count'?)"


def test_unknown_key_far_from_any_lists_the_known_ones(tmp_path: Path) -> None:
    msg = error(tmp_path / "c.yaml", NODES + "budget: {budget_w: 100, zzz: 1}\n")
    assert msg.endswith("budget.zzz: unknown key (known keys: budget_w, reserve_w, follow)")


def test_job_spec_typo_is_suggested_too(tmp_path: Path) -> None:
    msg = error(tmp_path / "j.yaml", "name: j\nkind: train\npriorty: 3\n", load_job_spec)
    assert msg.endswith("priorty: unknown key (did you mean 'priority'?)")


def test_duplicate_key_names_the_key_and_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    msg = error(path, NODES + "budget: {budget_w: 100}\npolicy: uniform\nbudget: {budget_w: 9}\n")
    assert msg == f"{path}:4:1: invalid YAML: duplicate key 'budget' (first on line 2)"


def test_duplicate_nested_key_in_a_job_spec(tmp_path: Path) -> None:
    text = "name: j\nkind: train\ntrain:\n  steps: 3\n  steps: 4\n"
    msg = error(tmp_path / "j.yaml", text, load_job_spec)
    assert ":5:3: invalid YAML: duplicate key 'steps' (first on line 4)" in msg


def test_merge_keys_may_override(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "base: &b {type: L4, count: 1}\n"
        "nodes: [{name: a, gpus: [{<<: *b, count: 2}]}]\nbudget: {budget_w: 100}\n"
    )
    assert load_yaml_mapping(path)["nodes"][0]["gpus"][0] == {"type": "L4", "count": 2}


def test_non_utf8_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    msg = error(path, NODES.encode() + b"budget: {budget_w: 1\xe900}\n")
    assert msg.startswith(f"{path}:2: not UTF-8 text (byte 0xe9 at offset")


def test_utf16_file_says_so(tmp_path: Path) -> None:
    msg = error(tmp_path / "c.yaml", (NODES + "budget: {budget_w: 100}\n").encode("utf-16"))
    assert "UTF-16" in msg and "save the file as UTF-8" in msg


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + (NODES + "budget: {budget_w: 100}\n").encode())
    assert load_cluster_config(path).budget.budget_w == 100


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
def test_deep_nesting_is_one_line(tmp_path: Path, depth: int) -> None:
    msg = error(tmp_path / "c.yaml", "a: " + "[" * depth + "]" * depth + "\n")
    assert f"nested deeper than {MAX_DEPTH} levels" in msg


def test_deep_nesting_in_a_scenario(tmp_path: Path) -> None:
    msg = error(
        tmp_path / "s.yaml",
        "x:\n" + "".join(" " * i + "- \n" for i in range(1, 300)),
        load_scenario,
    )
    assert "nested deeper" in msg


def test_nesting_within_the_limit_reaches_validation(tmp_path: Path) -> None:
    depth = MAX_DEPTH - 2
    msg = error(
        tmp_path / "c.yaml", NODES + "budget: {budget_w: 1}\nx: " + "[" * depth + "]" * depth
    )
    assert ": x: unknown key (known keys: name, nodes, budget," in msg


def test_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    with path.open("wb") as f:
        f.write(b"# " + b"x" * MAX_FILE_BYTES + b"\n")
    start = time.monotonic()
    msg = error(path, path.read_bytes())
    assert msg == f"{path}: file larger than the 2 MiB limit"
    assert time.monotonic() - start < 5


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    start = time.monotonic()
    msg = error(tmp_path / "c.yaml", "\n".join(lines) + "\n")
    assert "more than 1,000,000 values once YAML aliases are expanded" in msg
    assert time.monotonic() - start < 5


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    assert "refers to a mapping or list containing it" in error(tmp_path / "c.yaml", "a: &a [*a]\n")


def test_giant_integer_is_one_line(tmp_path: Path) -> None:
    msg = error(tmp_path / "c.yaml", "a: " + "9" * 5000 + "\n")
    assert msg.endswith("invalid YAML: a number too long to convert")
    msg = error(tmp_path / "c.yaml", NODES + "budget: {budget_w: " + "9" * 4000 + "}\n")
    assert "budget.budget_w:" in msg and "about 4001 digits" in msg


def test_control_characters_in_keys_stay_on_one_line(tmp_path: Path) -> None:
    msg = error(tmp_path / "c.yaml", NODES + 'budget: {budget_w: 1}\n"a\\u2028b\\nc": 1\n')
    assert "a\\u2028b\\nc: unknown key" in msg


def test_long_values_are_cut_in_messages(tmp_path: Path) -> None:
    msg = error(tmp_path / "c.yaml", NODES + "budget: {budget_w: 100}\npolicy: " + "p" * 100_000)
    assert "policy: unknown policy" in msg and len(msg) < 1000


def test_empty_file(tmp_path: Path) -> None:
    assert error(tmp_path / "c.yaml", "").endswith(
        "empty file (expected a mapping at the top level)"
    )


def test_one_line_escapes_and_cuts() -> None:
    assert one_line("a\nb\x00c\u2029") == "a\\nb\\x00c\\u2029"
    assert one_line("x" * 100, 10) == "xxxxxxx..."


@pytest.mark.parametrize(
    ("duration", "deadline"),
    [("9" * 400, "60"), ("60", "9" * 400), ("60", "'soon'"), ("60", "[1]"), ("60", ".inf")],
)
def test_scenario_times_that_are_not_seconds_are_one_line(
    tmp_path: Path, duration: str, deadline: str
) -> None:
    """Found by the fuzz: a giant integer ``duration_s`` (or an old-style job's deadline
    that is not a number) raised OverflowError/ValueError while old job keys were upgraded."""
    text = (
        f"duration_s: {duration}\n"
        "nodes: [{name: n, gpus: [{type: H100-SXM, count: 1}]}]\n"
        "budget: {frac_of_tdp: 0.7}\n"
        f"jobs: [{{id: t, kind: train, shards: 1, model_params: 1.0e9, deadline_s: {deadline}}}]\n"
    )
    msg = error(tmp_path / "s.yaml", text, load_scenario)
    assert "duration_s" in msg or "deadline_s" in msg, msg
