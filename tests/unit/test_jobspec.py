"""Job specs are validated like cluster.yaml: one line naming file, field and problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from greenllm.errors import ConfigError
from greenllm.jobspec import load_job_spec

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples" / "jobs").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    spec = load_job_spec(path)
    assert spec.workload().kind == ("train" if spec.kind == "train" else "decode")


def error_for(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_job_spec(path)
    assert str(info.value).startswith(f"{path}: ")
    return str(info.value)


def test_unknown_key(tmp_path: Path) -> None:
    msg = error_for(tmp_path, {"name": "j", "kind": "train", "train": {"stepz": 3}})
    assert "train.stepz: unknown key" in msg


def test_wrong_section_for_kind(tmp_path: Path) -> None:
    msg = error_for(tmp_path, {"name": "j", "kind": "train", "infer": {}})
    assert "a train job takes no 'infer' section" in msg


def test_unknown_kind_and_gpu_type(tmp_path: Path) -> None:
    assert "kind: " in error_for(tmp_path, {"name": "j", "kind": "serve"})
    msg = error_for(tmp_path, {"name": "j", "kind": "infer", "gpu_types": ["H200"]})
    assert "gpu_types.0: unknown GPU type 'H200'" in msg


def test_trace_needs_file(tmp_path: Path) -> None:
    data = {"name": "j", "kind": "infer", "infer": {"load": {"process": "trace"}}}
    assert "infer.load: trace_file is needed for" in error_for(tmp_path, data)


def test_relative_trace_file_is_resolved(tmp_path: Path) -> None:
    data = {
        "name": "j",
        "kind": "infer",
        "infer": {"load": {"process": "trace", "trace_file": "t.csv"}},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_job_spec(path)
    assert spec.infer_settings.load.trace_file == tmp_path / "t.csv"


def test_preferred_must_be_allowed(tmp_path: Path) -> None:
    data = {"name": "j", "kind": "train", "gpu_types": ["L4"], "preferred_gpu_types": ["A40"]}
    assert "preferred_gpu_types must be among gpu_types" in error_for(tmp_path, data)
