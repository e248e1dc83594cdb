"""The committed generated code matches the .proto files (`make protos` refreshes it)."""

from __future__ import annotations

from greenllm.proto import generate


def test_committed_generated_code_is_current() -> None:
    stale = generate.stale_files(generate.generate())
    assert stale == [], f"stale generated files {stale}: run `make protos`"


def test_stale_file_is_reported(tmp_path, monkeypatch) -> None:
    generated = generate.generate()
    monkeypatch.setattr(generate, "OUTPUT_DIR", tmp_path)
    generate.write(generated)
    assert generate.stale_files(generated) == []
    (tmp_path / "agent_pb2.py").write_text("# edited by hand\n")
    (tmp_path / "extra_pb2.py").write_text("")
    assert generate.stale_files(generated) == ["agent_pb2.py", "extra_pb2.py"]
