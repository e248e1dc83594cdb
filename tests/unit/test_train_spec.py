"""Training job specs that run a user's script: entrypoint and working_dir, limits, paths;
the quick form of submit; the checkpoint storage path of cluster.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from greenllm.cli.jobs_cmd import quick_spec, ship_working_dir
from greenllm.config import load_cluster_config
from greenllm.errors import ConfigError
from greenllm.jobspec import is_package_uri, load_job_spec, parse_job_spec

REPO = Path(__file__).resolve().parents[2]


def train(**section: Any) -> dict[str, Any]:
    return {"name": "j", "kind": "train", "train": section}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"entrypoint": []}, "train.entrypoint: List should have at least 1 item"),
        ({"entrypoint": ["x"] * 65}, "train.entrypoint: List should have at most 64 items"),
        ({"entrypoint": ["python", "a" * 4097]}, "train.entrypoint.1: String should have at most"),
        ({"entrypoint": ["py\x00"]}, "train.entrypoint.0: must not contain a NUL"),
        ({"entrypoint": "python train.py"}, "train.entrypoint: Input should be a valid list"),
        ({"entrypoint": [""]}, "train.entrypoint.0: String should have at least 1 character"),
        ({"working_dir": "x" * 4097}, "train.working_dir: String should have at most 4096"),
        ({"working_dir": ""}, "train.working_dir: String should have at least 1 character"),
        ({"working_dir": "a\x00b"}, "train.working_dir: must not contain a NUL"),
    ],
)
def test_bad_entrypoints_and_working_dirs(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_job_spec(train(**section), "job.yaml")
    assert str(info.value).startswith("job.yaml: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_working_dir_is_taken_from_the_spec_file(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "project").mkdir()
    path = tmp_path / "jobs" / "job.yaml"
    path.write_text(yaml.safe_dump(train(entrypoint=["python", "t.py"], working_dir="../project")))
    assert load_job_spec(path).train_settings.working_dir == str(tmp_path / "project")
    path.write_text(yaml.safe_dump(train(working_dir="../nowhere")))
    with pytest.raises(ConfigError, match=r"train\.working_dir: .*nowhere is not a folder"):
        load_job_spec(path)
    path.write_text(yaml.safe_dump(train(working_dir="gcs://_ray_pkg_abc.zip")))
    assert load_job_spec(path).train_settings.working_dir == "gcs://_ray_pkg_abc.zip"


def test_package_uris() -> None:
    assert is_package_uri("gcs://_ray_pkg_abc.zip") and is_package_uri("s3://b/p.zip")
    assert not is_package_uri("/home/me/project") and not is_package_uri("./a://b")


def test_shipped_example_runs_the_trainer_entrypoint() -> None:
    spec = load_job_spec(REPO / "examples" / "jobs" / "train-tiny.yaml")
    entry = spec.train_settings.entrypoint
    assert entry is not None and entry[:2] == ["python", "train_gpt2.py"]
    assert Path(spec.train_settings.working_dir or "") == REPO / "examples" / "train"


def test_quick_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = quick_spec("run", 2, "H100-SXM, A100-SXM4", tmp_path, ("python", "t.py", "--x"))
    assert spec.kind == "train" and spec.shards == 2
    assert spec.gpu_types == ["H100-SXM", "A100-SXM4"]
    assert spec.train_settings.entrypoint == ["python", "t.py", "--x"]
    assert spec.train_settings.working_dir == str(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert quick_spec("run", 1, "", None, ("python", "t.py")).train_settings.working_dir == str(
        tmp_path
    )
    with pytest.raises(ConfigError, match="give the command after --"):
        quick_spec("run", 1, "", None, ())
    with pytest.raises(ConfigError, match=r"gpu_types\.0"):
        quick_spec("run", 1, "H9000", None, ("python", "t.py"))


def test_no_ray_no_upload(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "cluster.yaml").read_text())
    data["state_dir"] = str(tmp_path / "state")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    config = load_cluster_config(tmp_path / "c.yaml")
    spec = quick_spec("run", 1, "", tmp_path, ("python", "t.py"))
    assert ship_working_dir(spec, config) == spec  # no runtime.json: the agents read the folder


def test_storage_path(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "cluster.yaml").read_text())
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    assert load_cluster_config(tmp_path / "c.yaml").storage_path is None
    data["storage_path"] = "shared/ck"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    assert load_cluster_config(tmp_path / "c.yaml").storage_path == tmp_path / "shared" / "ck"
