"""Regenerate :mod:`greenllm.proto.v1` from ``protos/greenllm/v1/*.proto``.

``python -m greenllm.proto.generate`` (``make protos``) rewrites the generated modules;
``python -m greenllm.proto.generate --check`` exits 1 and names the stale files when the
committed code differs from what the .proto files produce.

protoc writes ``from greenllm.v1 import x_pb2``; the modules live in
``greenllm.proto.v1``, so those imports are rewritten.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: Where the generated modules live.
OUTPUT_DIR = PACKAGE_DIR / "v1"
#: Root of the .proto tree (``protos/greenllm/v1/*.proto`` below it).
PROTO_ROOT = PACKAGE_DIR.parent.parent / "protos"
PROTO_SUBDIR = Path("greenllm") / "v1"
_INIT = '"""Generated code; do not edit. Regenerate with ``make protos``."""\n'


def proto_files() -> list[Path]:
    """The .proto files, relative to :data:`PROTO_ROOT`, sorted."""
    return sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / PROTO_SUBDIR).glob("*.proto"))


def generate() -> dict[str, str]:
    """Run protoc and return the generated modules as ``{file name: text}``.

    Raises:
        RuntimeError: protoc failed; the message holds its output.
    """
    from grpc_tools import protoc

    files = proto_files()
    if not files:
        raise RuntimeError(f"no .proto files under {PROTO_ROOT / PROTO_SUBDIR}")
    with tempfile.TemporaryDirectory() as tmp:
        include = Path(protoc.__file__).parent / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(f) for f in files),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
        out = Path(tmp) / PROTO_SUBDIR
        generated = {
            p.name: p.read_text(encoding="utf-8").replace(
                "from greenllm.v1 import", "from greenllm.proto.v1 import"
            )
            for p in sorted(out.iterdir())
            if p.suffix in (".py", ".pyi")
        }
    generated["__init__.py"] = _INIT
    return generated


def stale_files(generated: dict[str, str]) -> list[str]:
    """Names of committed files that differ from ``generated``, are missing or are extra."""
    present = {p.name for p in OUTPUT_DIR.glob("*.py*")} if OUTPUT_DIR.exists() else set()
    stale = sorted(n for n in present - set(generated) if n.endswith((".py", ".pyi")))
    for name, text in sorted(generated.items()):
        path = OUTPUT_DIR / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return sorted(stale)


def write(generated: dict[str, str]) -> None:
    """Replace the committed modules with ``generated``."""
    OUTPUT_DIR.mkdir(exist_ok=True)
    for old in OUTPUT_DIR.glob("*.py*"):
        if old.name not in generated:
            old.unlink()
    for name, text in generated.items():
        (OUTPUT_DIR / name).write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m greenllm.proto.generate")
    parser.add_argument(
        "--check", action="store_true", help="only report whether the committed code is stale"
    )
    args = parser.parse_args(argv)
    generated = generate()
    if args.check:
        stale = stale_files(generated)
        if stale:
            print(
                f"greenllm/proto/v1 is stale ({', '.join(stale)}): run `make protos`",
                file=sys.stderr,
            )
            return 1
        return 0
    write(generated)
    print(f"wrote {len(generated)} files to {OUTPUT_DIR}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
