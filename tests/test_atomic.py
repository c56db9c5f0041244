"""The one atomic-write helper: a reader sees the old file or the new one, and a failed write leaves nothing."""

from __future__ import annotations

import json

import pytest

from rnnray.results.atomic import TMP_MARK, atomic_write_json, replacing


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "best.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with replacing(target) as tmp:
            tmp.write_text('{"a": 2')  # half written, then the writer fails
            raise RuntimeError("writer died")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["best.json"]


def test_the_new_content_appears_whole_under_the_final_name(tmp_path):
    target = tmp_path / "summary.md"
    with replacing(target) as tmp:
        assert tmp.parent == target.parent and TMP_MARK in tmp.name and not target.exists()
        tmp.write_text("| encoder |\n")
    assert target.read_text() == "| encoder |\n" and [p.name for p in tmp_path.iterdir()] == ["summary.md"]
