"""Rank output: the agent ships new bytes in bounded chunks; the controller keeps them per
job and rank (resends skipped, gaps marked, generations marked, the newest bytes kept)."""

from __future__ import annotations

from pathlib import Path

from greenllm.proto.v1 import agent_pb2
from scheduler.server.logstore import LogStore
from workers.shards.logtail import LogTail, collect


def chunk(shard: str, gen: int, offset: int, data: bytes) -> agent_pb2.LogChunk:
    return agent_pb2.LogChunk(shard_id=shard, generation=gen, offset=offset, data=data)


def test_tails_share_a_bounded_budget_fairly(tmp_path: Path) -> None:
    chatty, quiet = tmp_path / "a.log", tmp_path / "b.log"
    chatty.write_bytes(b"x" * 100_000)
    quiet.write_bytes(b"hello\n")
    tails = [LogTail("j-0", 0, chatty), LogTail("j-1", 0, quiet)]
    first = collect(tails, budget=1000)
    assert sum(len(c.data) for c in first) == 1000
    assert {c.shard_id: c.data for c in first if c.shard_id == "j-1"} == {"j-1": b"hello\n"}
    got = b"".join(c.data for c in first if c.shard_id == "j-0")
    while chunks := collect(tails, budget=64 * 1024):
        assert sum(len(c.data) for c in chunks) <= 64 * 1024
        for c in chunks:
            assert c.shard_id == "j-0" and c.offset == len(got)
            got += c.data
    assert got == chatty.read_bytes()
    with chatty.open("ab") as f:
        f.write(b"more")
    assert [(c.offset, c.data) for c in collect(tails)] == [(100_000, b"more")]
    assert collect([LogTail("j-2", 0, tmp_path / "missing.log")]) == []


def test_store_appends_skips_resends_and_marks_gaps(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.append("n1", [chunk("job-1-0", 0, 0, b"hello "), chunk("job-1-0", 0, 6, b"world\n")])
    store.append("n1", [chunk("job-1-0", 0, 0, b"hello wor")])  # resent: nothing new
    store.append("n1", [chunk("job-1-0", 0, 9, b"ld\nagain\n")])  # overlaps: the rest only
    assert store.read("job-1", 0, 0).data == b"hello world\nagain\n"
    store.append("n1", [chunk("job-1-0", 0, 30, b"late\n")])  # 12 bytes never arrived
    text = store.read("job-1", 0, 0).data.decode()
    assert text.endswith("again\n\n[greenllm] 12 bytes of output lost\nlate\n")
    assert store.read("job-1", 1, 0).data == b"" and store.read("nojob", 0, 0).size == 0


def test_store_marks_generations_and_drops_stale_ones(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.append("n1", [chunk("j-0", 1, 0, b"first\n")])
    store.append("n2", [chunk("j-0", 2, 0, b"second\n")])
    store.append("n1", [chunk("j-0", 1, 6, b"stale\n")])  # the old generation, late
    got = store.read("j", 0, 0)
    assert got.data == b"first\n\n[greenllm] generation 2 (node n2):\nsecond\n"
    assert got.generation == 2 and got.next_offset == got.size == len(got.data)


def test_store_reads_from_offsets_and_the_end(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.append("n", [chunk("j-3", 0, 0, b"0123456789")])
    got = store.read("j", 3, 4, max_bytes=3)
    assert (got.data, got.next_offset) == (b"456", 7)
    assert store.read("j", 3, got.next_offset).data == b"789"
    assert store.read("j", 3, -2).data == b"89"
    assert store.read("j", 3, 99).data == b"" and store.read("j", 3, 99).next_offset == 10


def test_store_keeps_the_newest_bytes_with_stable_offsets(tmp_path: Path) -> None:
    store = LogStore(tmp_path, max_bytes_per_rank=100)
    offset = 0
    for i in range(30):
        data = f"line {i:03d}\n".encode()  # 9 bytes
        store.append("n", [chunk("j-0", 0, offset, data)])
        offset += len(data)
    got = store.read("j", 0, 0)
    assert got.size <= 125 and got.data.endswith(b"line 029\n")
    assert got.next_offset == 270 and (tmp_path / "j" / "0.log").stat().st_size == got.size
    assert store.read("j", 0, 261).data == b"line 029\n"  # absolute offsets survive trimming
    again = LogStore(tmp_path, max_bytes_per_rank=100)  # a restarted controller
    assert again.read("j", 0, 0) == got
    again.append("n", [chunk("j-0", 0, 270, b"after restart\n")])
    assert again.read("j", 0, 270).data == b"after restart\n"


def test_store_refuses_bad_shard_ids(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.append("n", [chunk("../../etc-0", 0, 0, b"x"), chunk("j-x", 0, 0, b"x"),
                       chunk("nodash", 0, 0, b"x"), chunk("/abs-0", 0, 0, b"x")])  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    assert store.read("../etc", 0, 0).data == b""
