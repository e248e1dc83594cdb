"""Reading YAML files that users write (cluster.yaml, job specs, scenarios) and turning
validation errors into one line: ``FILE: field.path: problem``.

Whatever the bytes, the loader answers with a mapping or one :class:`ConfigError`: files
over :data:`MAX_FILE_BYTES`, text that is not UTF-8, duplicate keys (with their line),
nesting deeper than :data:`MAX_DEPTH` and aliases that expand to more than
:data:`MAX_VALUES` values are errors, never a traceback. An unknown key is reported
before anything else, with a did-you-mean when a known key is close.
"""

from __future__ import annotations

import difflib
import re
import types
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode

from greenllm.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

#: Largest file the loader reads, bytes (libyaml parses about 0.6 MiB/s of dense YAML).
MAX_FILE_BYTES = 2 * 1024 * 1024
#: Deepest nesting of mappings and lists accepted.
MAX_DEPTH = 64
#: Most values (scalars, mappings, lists) a file may hold once aliases are expanded.
MAX_VALUES = 1_000_000
#: Longest key, value or message part echoed back in an error, characters.
MAX_SHOWN_CHARS = 80
#: Most known keys listed after "unknown key" when none is close to the typo.
MAX_LISTED_KEYS = 15

_MERGE_TAG = "tag:yaml.org,2002:merge"
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` with control characters escaped (so it stays one line), cut to ``limit``."""
    text = _UNSAFE.sub(lambda m: repr(m.group())[1:-1], text)
    if limit is not None and len(text) > limit:
        return text[: limit - 3] + "..."
    return text


def _construct_mapping(
    self: yaml.constructor.SafeConstructor, node: MappingNode, deep: bool = False
) -> dict[Any, Any]:
    """SafeConstructor.construct_mapping that refuses a key given twice (merge keys,
    ``<<: *base``, may still be overridden)."""
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
            continue
        key = self.construct_object(key_node)
        if key in first_line:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {one_line(str(key), 40)!r} (first on line {first_line[key]})",
                key_node.start_mark,
            )
        first_line[key] = key_node.start_mark.line + 1
    return yaml.constructor.SafeConstructor.construct_mapping(self, node, deep=deep)


class _PyLoader(yaml.SafeLoader):
    """Pure-Python SafeLoader: no duplicate keys, no nesting deeper than :data:`MAX_DEPTH`."""

    _depth = 0
    construct_mapping = _construct_mapping

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


if yaml.__with_libyaml__:

    class _CLoader(yaml.CSafeLoader):
        """libyaml's SafeLoader (about 4x faster; it refuses nesting past 1,000 levels,
        and :func:`_check_size` past :data:`MAX_DEPTH`) without duplicate keys."""

        construct_mapping = _construct_mapping

    _LOADER: type[Any] = _CLoader
else:  # pragma: no cover - PyYAML without libyaml
    _LOADER = _PyLoader


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: file larger than the {MAX_FILE_BYTES // 2**20} MiB limit")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{path}: UTF-16 text; save the file as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        byte = raw[exc.start]
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{byte:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None


def _check_size(data: Any, path: Path) -> None:
    """Refuse recursive aliases and trees too deep or too large once aliases expand."""
    memo: dict[int, tuple[int, int]] = {}
    active: set[int] = set()

    def measure(obj: Any, depth: int) -> tuple[int, int]:
        if not isinstance(obj, dict | list):
            return 1, 0
        key = id(obj)
        if key in active:
            raise ConfigError(f"{path}: a YAML alias refers to a mapping or list containing it")
        if key not in memo:
            if depth > MAX_DEPTH:
                raise ConfigError(f"{path}: nested deeper than {MAX_DEPTH} levels")
            active.add(key)
            children = list(obj.values()) if isinstance(obj, dict) else obj
            size, height = 1, 0
            for child in children:
                s, h = measure(child, depth + 1)
                size, height = size + s, max(height, h + 1)
                if size > MAX_VALUES:
                    raise ConfigError(
                        f"{path}: more than {MAX_VALUES:,} values once YAML aliases are expanded"
                    )
            active.discard(key)
            memo[key] = (size, height)
        size, height = memo[key]
        if depth + height > MAX_DEPTH:
            raise ConfigError(f"{path}: nested deeper than {MAX_DEPTH} levels")
        return size, height

    measure(data, 0)


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping.

    Raises:
        ConfigError: The file is missing, unreadable, too large, not UTF-8, not YAML, has
            duplicate keys, is nested too deeply, or is not a mapping; one line naming
            the file (and line, where known).
    """
    path = Path(path)
    text = _read_text(path)
    try:
        data = yaml.load(text, Loader=_LOADER)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if problem == "exceeded maximum nesting depth":  # libyaml's own limit
            problem = f"nested deeper than {MAX_DEPTH} levels"
        raise ConfigError(f"{path}{where}: invalid YAML: {one_line(problem, 200)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    except ValueError as exc:  # an integer literal longer than Python converts
        problem = "a number too long to convert" if "digits" in str(exc) else str(exc)
        raise ConfigError(f"{path}: invalid YAML: {one_line(problem, 200)}") from None
    if data is None:
        raise ConfigError(f"{path}: empty file (expected a mapping at the top level)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    _check_size(data, path)
    return data


def _unwrap(tp: Any) -> list[Any]:
    """The types a field annotation may hold (Annotated, Optional and unions opened)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _unwrap(get_args(tp)[0])
    if origin is Union or isinstance(tp, types.UnionType):
        return [t for arg in get_args(tp) for t in _unwrap(arg)]
    return [tp]


def keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The keys a mapping at ``loc`` (a pydantic error location) may hold, or None when
    ``loc`` does not lead to a model."""
    current: list[Any] = [model]
    for part in loc:
        following: list[Any] = []
        for tp in (t for c in current for t in _unwrap(c)):
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                field = tp.model_fields.get(part) if isinstance(part, str) else None
                if field is not None:
                    following.append(field.annotation)
            elif get_origin(tp) in (list, tuple, set, frozenset) and isinstance(part, int):
                following.extend(a for a in get_args(tp) if a is not Ellipsis)
            elif get_origin(tp) is dict:
                following.append(get_args(tp)[1])
        current = following
    names = [
        name
        for tp in (t for c in current for t in _unwrap(c))
        if isinstance(tp, type) and issubclass(tp, BaseModel)
        for name in tp.model_fields
    ]
    return list(dict.fromkeys(names)) or None


def _shown(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    return one_line(repr(value), MAX_SHOWN_CHARS)


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(one_line(str(p), MAX_SHOWN_CHARS) for p in loc)


def format_validation_error(
    source: str, exc: ValidationError, model: type[BaseModel] | None = None
) -> str:
    """Render a pydantic error as one line ``source: field.path: message``.

    Unknown keys come first (a typo'd key also makes its real key "missing"), with a
    did-you-mean from ``model``'s fields (or from the missing keys beside it).
    """
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    loc = tuple(err["loc"])
    msg = err["msg"]
    explained: set[tuple[Any, ...]] = set()
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
        parent, typo = loc[:-1], str(loc[-1]) if loc else ""
        missing = [
            str(e["loc"][-1])
            for e in errors
            if e["type"] == "missing" and tuple(e["loc"][:-1]) == parent
        ]
        known = (keys_at(model, parent) if model is not None else None) or missing
        close = difflib.get_close_matches(typo, missing, n=1, cutoff=0.6) or (
            difflib.get_close_matches(typo, known, n=1, cutoff=0.6)
        )
        if close:
            msg += f" (did you mean {close[0]!r}?)"
            explained.add((*parent, close[0]))
        elif known and len(known) <= MAX_LISTED_KEYS:
            msg += f" (known keys: {', '.join(known)})"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] not in ("extra_forbidden", "missing") and "input" in err:
        given = err["input"]
        if isinstance(given, str | int | float | bool):
            msg = f"{msg} (got {_shown(given)})"
    more = sum(
        1 for e in errors[1:] if not (e["type"] == "missing" and tuple(e["loc"]) in explained)
    )
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    where = f"{_loc(loc)}: " if loc else ""
    return f"{one_line(source)}: {where}{one_line(msg, 400)}{suffix}"


def validate(model: type[M], data: dict[str, Any], source: str) -> M:
    """Validate ``data`` as ``model``.

    Raises:
        ConfigError: ``source: field.path: what is wrong``.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, model)) from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None
