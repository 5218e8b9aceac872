"""Only LF (or CRLF) ends a line of input. U+2028 and U+0085 occur inside real abstracts, and biomtl's own JSONL
(``ensure_ascii=False``) holds them raw inside strings: str.splitlines() would cut such a line in two."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biomtl.formats import read_documents, write_documents
from biomtl.lines import numbered_lines, split_lines

TEXT = "Aspirin\u2028inhibits COX-1.\x85Heparin\x0cworks."


def test_split_lines_breaks_only_at_lf_and_crlf():
    assert split_lines(f"{TEXT}\r\nsecond\n") == [TEXT, "second"]
    assert split_lines("") == [] and split_lines("\n") == [] and split_lines("a\n\n") == ["a", ""]
    assert numbered_lines(f"{TEXT}\n\n \nlast") == [(1, TEXT), (4, "last")]


@pytest.mark.parametrize("fmt", ["text", "jsonl"])
def test_a_document_with_other_line_separators_stays_one_document(fmt, tmp_path: Path):
    raw = (TEXT + "\nsecond\n") if fmt == "text" else (json.dumps({"id": "a", "text": TEXT}, ensure_ascii=False) + "\n")
    path = tmp_path / f"in.{fmt}"
    path.write_text(raw, encoding="utf-8")
    collection, _ = read_documents(path, fmt)
    assert collection.documents[0].passages[0].text == TEXT
    assert len(collection.documents) == (2 if fmt == "text" else 1)
    if fmt == "jsonl":  # and biomtl's own output reads back unchanged
        again = tmp_path / "again.jsonl"
        again.write_text(write_documents(collection, "jsonl"), encoding="utf-8")
        assert read_documents(again, "jsonl")[0].documents[0].passages[0].text == TEXT
