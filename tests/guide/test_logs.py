"""The resumable log (guide/logs.py): its header checked on opening, a line cut by a kill dropped, the union of
every shard's log; the fingerprint of a model folder that heads a log of generations (guide/files.py)."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest

from w2s.guide.files import BLOCK, SAMPLE_BLOCKS, folder_fingerprint
from w2s.guide.logs import LogMismatch, ResumableLog

HEADER = {"recipe": {"decoder": "cbs", "width": 2}, "sampler": "gumbel-max (1)"}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_log_is_headed_by_what_made_it_and_another_header_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "out.partial.jsonl"
    log = ResumableLog(path, "index", header=HEADER)
    assert not path.exists()  # opening writes nothing: a run refused by a check leaves nothing behind
    log.append([{"index": 0, "text": "a"}])
    log.append([{"index": 1, "text": "b"}])
    assert lines(path) == [HEADER, {"index": 0, "text": "a"}, {"index": 1, "text": "b"}]  # one header, first
    assert ResumableLog(path, "index", header=HEADER).get(1) == {"index": 1, "text": "b"}

    for field, other in (("recipe", {"decoder": "bon"}), ("sampler", "an older sampler")):
        with pytest.raises(LogMismatch, match="delete it") as caught:
            ResumableLog(path, "index", header={**HEADER, field: other})
        assert str(path) in str(caught.value) and f"another {field}" in str(caught.value)
        assert caught.value.field == field and caught.value.was == HEADER[field]
    path.write_text('{"index": 0, "text": "a"}\n')  # a log of an older release: no header at all
    with pytest.raises(LogMismatch, match="another recipe"):
        ResumableLog(path, "index", header=HEADER)


def test_a_line_cut_by_a_kill_is_dropped_from_its_own_log_and_skipped_in_another_shards(tmp_path):
    path = tmp_path / "g.jsonl"
    own, other = tmp_path / "g.0-of-2.jsonl", tmp_path / "g.1-of-2.jsonl"
    head = json.dumps(HEADER) + "\n"
    own.write_text(head + '{"index": 0, "text": "a"}\n{"index": 2, "te')  # killed mid-write
    other.write_text(head + '{"index": 1, "text": "b"}\n{"index": 3, "te')  # still being written, maybe
    log = ResumableLog(path, "index", header=HEADER, shard=(0, 2))
    assert sorted(log.records) == [0, 1]
    assert other.read_text().endswith('"te')  # another process's file is only read
    log.append([{"index": 2, "text": "c"}])
    assert lines(own) == [HEADER, {"index": 0, "text": "a"}, {"index": 2, "text": "c"}]


def test_the_log_is_the_union_of_every_shards_log_whatever_number_of_processes_wrote_them(tmp_path):
    path = tmp_path / "g.jsonl"
    for shard, items in (((0, 1), [0]), ((1, 2), [1, 3]), ((2, 3), [2, 5]), ((0, 3), [0, 3])):
        ResumableLog(path, "index", header=HEADER, shard=shard).append([{"index": i, "by": shard} for i in items])
    log = ResumableLog(path, "index", header=HEADER, shard=(1, 4))
    assert sorted(log.records) == [0, 1, 2, 3, 5] and log.get(0)["by"] == [0, 1]  # the first log read wins
    assert log.path == tmp_path / "g.1-of-4.jsonl" and not log.path.exists()
    log.append([{"index": 3, "by": "again"}, {"index": 4, "by": "new"}])  # 3 is in another shard's log
    assert [r["index"] for r in lines(log.path)[1:]] == [4]
    (tmp_path / "g.2-of-3.jsonl").write_text(json.dumps({**HEADER, "sampler": "other"}) + "\n")
    with pytest.raises(LogMismatch, match=re.escape("g.2-of-3.jsonl")):  # every shard's log is checked
        ResumableLog(path, "index", header=HEADER)


def test_a_field_named_in_since_may_be_missing_from_an_older_log_but_not_differ(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(HEADER) + "\n" + json.dumps({"index": 0}) + "\n")  # written before "models" was
    header = HEADER | {"models": {"/m": "ab"}}
    assert 0 in ResumableLog(path, "index", header=header, since=("models",))
    with pytest.raises(LogMismatch):  # without `since`, a missing field is a mismatch like any other
        ResumableLog(path, "index", header=header)
    path.write_text(json.dumps(header | {"models": {"/m": "cd"}}) + "\n")
    with pytest.raises(LogMismatch) as e:
        ResumableLog(path, "index", header=header, since=("models",))
    assert (e.value.field, e.value.was, e.value.now) == ("models", {"/m": "cd"}, {"/m": "ab"})


def test_a_folders_fingerprint_survives_a_copy_and_sees_new_weights_and_any_small_file(tmp_path):
    rng = random.Random(0)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(rng.randbytes(3 * SAMPLE_BLOCKS * BLOCK + 7))  # sampled, not read
    (model / ".cache").write_text("ignored")
    first = folder_fingerprint(model)
    shutil.copytree(model, tmp_path / "copy")
    (tmp_path / "copy" / ".cache").write_text("another")
    assert folder_fingerprint(tmp_path / "copy") == first  # a copy (new times, other hidden files) is the same model
    (model / "model.safetensors").write_bytes(rng.randbytes(3 * SAMPLE_BLOCKS * BLOCK + 7))  # retrained
    assert folder_fingerprint(model) != first
    shutil.copy(tmp_path / "copy" / "model.safetensors", model)
    assert folder_fingerprint(model) == first
    (model / "config.json").write_text('{"hidden_size": 9}')  # a small file is read whole
    assert folder_fingerprint(model) != first
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "tokenizer.json").write_text("{}")  # a file more
    assert folder_fingerprint(model) != first
