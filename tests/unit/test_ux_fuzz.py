"""Fuzz the loaders of cluster.yaml, job specs and scenarios: whatever the file holds
(arbitrary YAML/JSON trees, mutated valid files, random bytes, other encodings, sizes),
loading gives a valid object or one ConfigError line naming the file and the problem;
never a traceback. The same for a job spec submitted over the API (SubmitJob's JSON):
a spec or INVALID_ARGUMENT with one line."""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenllm.config import load_cluster_config
from greenllm.errors import ConfigError
from greenllm.jobspec import load_job_spec
from greenllm.loading import MAX_FILE_BYTES
from scheduler.shell.errors import BadInput
from scheduler.shell.jobs import parse_submission
from scheduler.sim.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

LOADERS: dict[str, tuple[Callable[[Path], object], Path]] = {
    "cluster": (load_cluster_config, REPO / "cluster.yaml"),
    "job-train": (load_job_spec, REPO / "examples" / "jobs" / "train-tiny.yaml"),
    "job-infer": (load_job_spec, REPO / "examples" / "jobs" / "infer-tiny.yaml"),
    "scenario": (load_scenario, REPO / "examples" / "scenarios" / "small.yaml"),
}


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="greenllm-fuzz-") as tmp:
        yield Path(tmp)


def check(loader: Callable[[Path], object], path: Path, content: bytes) -> None:
    """Load ``content`` from ``path``: a value, or one ConfigError line naming the file."""
    path.write_bytes(content)
    try:
        loader(path)
    except ConfigError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1, message
        assert message.startswith(f"{path}"), message
        rest = message[len(str(path)) :]
        assert rest.startswith((":", " ")) and len(rest.strip(": ")) > 0, message
        assert len(message) < 2000, message


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["H100-SXM", "L4", "train", "infer", "poisson", "trace", "uniform", ""])
)
keys = st.text(max_size=20) | st.sampled_from(
    ["name", "kind", "nodes", "gpus", "type", "count", "budget", "budget_w", "jobs", "id"]
)
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=40,
)


def dump(tree: Any, as_json: bool) -> bytes:
    if as_json:
        return json.dumps(tree, allow_nan=True).encode()
    return yaml.safe_dump(tree, allow_unicode=True).encode()


@pytest.mark.parametrize("kind", LOADERS)
@FUZZ
@given(tree=trees, as_json=st.booleans())
def test_arbitrary_trees(kind: str, tree: Any, as_json: bool, workdir: Path) -> None:
    loader, _ = LOADERS[kind]
    check(loader, workdir / f"{kind}.yaml", dump(tree, as_json))


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, kind: str) -> Any:
    """A valid example file with a few values replaced, keys dropped or keys added."""
    tree = yaml.safe_load(LOADERS[kind][1].read_text())
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(tree)))
        if not path:
            continue
        parent = tree
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(trees)
        elif action == "drop":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(keys)] = draw(trees)
        else:
            parent.append(draw(trees))
    return tree


@pytest.mark.parametrize("kind", LOADERS)
@FUZZ
@given(data=st.data())
def test_mutated_valid_files(kind: str, data: st.DataObject, workdir: Path) -> None:
    loader, _ = LOADERS[kind]
    tree = data.draw(mutated(kind))
    check(loader, workdir / f"{kind}.yaml", dump(copy.deepcopy(tree), False))


@pytest.mark.parametrize("kind", LOADERS)
@FUZZ
@given(content=st.binary(max_size=400))
def test_random_bytes(kind: str, content: bytes, workdir: Path) -> None:
    loader, _ = LOADERS[kind]
    check(loader, workdir / f"{kind}.yaml", content)


@pytest.mark.parametrize("kind", LOADERS)
@FUZZ
@given(
    encoding=st.sampled_from(["utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "shift_jis"]),
    extra=st.text(max_size=20),
)
def test_other_encodings(kind: str, encoding: str, extra: str, workdir: Path) -> None:
    loader, example = LOADERS[kind]
    text = example.read_text() + f"# {extra}\n"
    content = text.encode(encoding, errors="replace")
    check(loader, workdir / f"{kind}.yaml", content)


@pytest.mark.parametrize("kind", LOADERS)
@FUZZ
@given(
    depth=st.integers(1, 5000),
    width=st.integers(0, 3),
    flow=st.booleans(),
)
def test_nesting_and_sizes(kind: str, depth: int, width: int, flow: bool, workdir: Path) -> None:
    loader, example = LOADERS[kind]
    if flow:
        nest = "x: " + "[" * depth + ", ".join(["1"] * width) + "]" * depth + "\n"
    else:
        nest = "x:\n" + "".join(" " * i + "- \n" for i in range(1, min(depth, 400)))
    check(loader, workdir / f"{kind}.yaml", (example.read_text() + nest).encode())


@pytest.mark.parametrize("kind", LOADERS)
@settings(max_examples=10, deadline=None)
@given(offset=st.integers(-2000, 2000) | st.integers(-MAX_FILE_BYTES, 4 * MAX_FILE_BYTES))
def test_sizes_around_the_limit(kind: str, offset: int, workdir: Path) -> None:
    loader, example = LOADERS[kind]
    text = example.read_text().encode()
    pad = max(0, MAX_FILE_BYTES + offset - len(text))
    check(loader, workdir / f"{kind}.yaml", text + b"#" * pad + b"\n")


def check_submission(spec_json: str) -> None:
    """Submit ``spec_json``: a spec, or INVALID_ARGUMENT with one line naming the problem."""
    try:
        parse_submission(spec_json)
    except BadInput as exc:
        assert exc.code == grpc.StatusCode.INVALID_ARGUMENT, exc
        assert len(exc.message.splitlines()) == 1 and exc.message.startswith("job spec"), exc
        assert len(exc.message) < 2000, exc.message


@FUZZ
@given(tree=trees)
def test_api_submission_of_arbitrary_trees(tree: Any) -> None:
    check_submission(json.dumps(tree, allow_nan=True))


@FUZZ
@given(data=st.data())
def test_api_submission_of_mutated_valid_specs(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["job-train", "job-infer"]))
    check_submission(json.dumps(data.draw(mutated(kind)), allow_nan=True))


@FUZZ
@given(text=st.text(max_size=200) | st.integers(1, 100_000).map(lambda d: "[" * d + "]" * d))
def test_api_submission_of_arbitrary_text(text: str) -> None:
    check_submission(text)
