"""The references in docs/ are generated from the code (scripts/gen_docs.py): these tests
fail when the models, documents or output files change and the docs were not regenerated,
or when a key has no meaning written down."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import click
import pytest
from pydantic import BaseModel, Field

from greenllm.cli import main as cli_main
from greenllm.docgen import (
    UNDOCUMENTED,
    docstring_parts,
    flat_keys,
    keys_reference,
    model_reference,
    type_name,
)

REPO = Path(__file__).resolve().parents[2]
REGENERATE = "regenerate with: .venv/bin/python scripts/gen_docs.py"


def _gen_docs() -> ModuleType:
    sys.path.insert(0, str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def documents() -> dict[str, str]:
    generated: dict[str, str] = _gen_docs().documents()
    return generated


@pytest.mark.parametrize(
    "name",
    [
        "cluster-yaml.md",
        "job-spec.md",
        "scenario.md",
        "policies.md",
        "cli-json.md",
        "output-files.md",
    ],
)
def test_checked_in_docs_match_the_code(name: str, documents: dict[str, str]) -> None:
    path = REPO / "docs" / name
    assert path.exists(), f"docs/{name} is missing; {REGENERATE}"
    assert path.read_text(encoding="utf-8") == documents[name], f"docs/{name} drifted; {REGENERATE}"


def test_every_key_has_a_meaning(documents: dict[str, str]) -> None:
    for name, text in documents.items():
        assert UNDOCUMENTED not in text, f"docs/{name}: a key has no meaning in doc_meanings.py"


def test_every_json_command_is_documented(documents: dict[str, str]) -> None:
    cli_main._load_commands()

    def walk(cmd: click.Command, path: str) -> list[str]:
        if isinstance(cmd, click.Group):
            return [p for name, sub in cmd.commands.items() for p in walk(sub, f"{path} {name}")]
        has_json = any(isinstance(p, click.Option) and "--json" in p.opts for p in cmd.params)
        return [path] if has_json else []

    for path in walk(cli_main.cli, "greenllm"):
        assert f"## `{path} --json`" in documents["cli-json.md"], f"{path} --json undocumented"


class _Inner(BaseModel):
    """An inner part.

    Attributes:
        rate_per_s: Requests per second, going on
            over two lines.
    """

    rate_per_s: float = Field(default=2.0, gt=0, allow_inf_nan=False)


class _Outer(BaseModel):
    """The top.

    Attributes:
        name: Its ``name``.
    """

    name: str = Field(min_length=1, max_length=8)
    inner: _Inner | None = None
    kinds: list[str] = Field(default_factory=list)
    other: int = Field(default=3, description="From the field.")


def test_model_reference_renders_fields_types_defaults_and_meanings() -> None:
    text = model_reference(_Outer, "top")
    assert "| `name` | string | required | at least 1, at most 8 | Its `name`. |" in text
    assert "| `inner` | [_Inner](#_inner) or null | null | - | - |" in text
    assert "| `kinds` | list of string | `[]` | - | - |" in text
    assert "| `other` | integer | `3` | - | From the field. |" in text
    assert (
        "| `rate_per_s` | number | `2.0` | > 0, finite | Requests per second, going on over two "
        "lines. |"
    ) in text


def test_docstring_and_key_helpers() -> None:
    prose, attrs = docstring_parts(_Inner)
    assert prose == "An inner part." and list(attrs) == ["rate_per_s"]
    doc = {"a": 1, "m": {"x1": 1}, "l": [{"b": 2}], "e": []}
    assert flat_keys(doc, frozenset({"m"})) == ["a", "m", "l", "l[].b", "e"]
    table = keys_reference(doc, {"a": "A."}, frozenset({"m"}))
    assert "| `a` | A. |" in table and f"| `m` | {UNDOCUMENTED} |" in table
    assert type_name(dict[str, float]) == "mapping string -> number"
