"""`storyreel batch`'s reading of its file: one create body a line, each with a key a rerun finds again."""

from __future__ import annotations

import json

import pytest

from serve_app.client.api import ApiError
from serve_app.client.batch import read_lines


def test_each_line_gets_a_key_of_its_own_that_a_rerun_finds_again(tmp_path):
    fox, sea = json.dumps({"prompt": "A fox."}), json.dumps({"prompt": "The sea.", "seconds": 2})
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join([fox, "", sea, fox, "[1, 2]", "{oops", fox]) + "\n")

    lines, bad = read_lines(path)
    again, _ = read_lines(path)

    assert [line.number for line in lines] == [1, 3, 4, 7]
    assert [(result.line, result.status) for result in bad] == [(5, "invalid"), (6, "invalid")]
    assert "not JSON" in bad[1].error and "one JSON object" in bad[0].error
    keys = [line.key for line in lines]
    assert len(set(keys)) == 4  # the same body three times is three videos
    assert keys == [line.key for line in again]
    # Keys hang on the text, not on line numbers: a line added above leaves every earlier key to its body.
    path.write_text("\n".join([sea, fox, "", sea, fox, "[1, 2]", "{oops", fox]) + "\n")
    moved, _ = read_lines(path)
    assert {line.key for line in moved} >= set(keys)


def test_a_file_that_is_not_utf8_is_one_clear_error(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b'{"prompt": "A fox."}\n\xff\xfe\n')
    with pytest.raises(ApiError, match="cannot read .*prompts.jsonl"):
        read_lines(path)
