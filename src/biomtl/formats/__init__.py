"""Documents with character-offset annotations, read from and written to the formats ``biomtl annotate``
speaks: plain text, JSONL, BioC XML, BioC JSON and PubTator.

A :class:`Document` is passages of text (each at a character offset into the document), entity mentions with
document offsets, relations between mentions, and document-level labels. Mentions and relations read from the
input have ``source="input"`` and are written back as they came; those biomtl adds have ``source="predicted"``,
the head (``task``) and a probability.

>>> docs = read_documents(Path("abstracts.pubtator"))  # doctest: +SKIP
>>> write_documents(docs, "bioc-xml")  # doctest: +SKIP
"""

from __future__ import annotations

import re
from pathlib import Path

from biomtl.errors import BiomtlError, DataError
from biomtl.formats import bioc, plain, pubtator
from biomtl.formats.documents import (
    FORMATS,
    INPUT,
    PREDICTED,
    Collection,
    Document,
    Mention,
    Passage,
    Relation,
    check_mention,
)

__all__ = [
    "FORMATS", "INPUT", "PREDICTED", "Collection", "Document", "Mention", "Passage", "Relation", "check_mention",
    "detect_format", "read_documents", "write_documents",
]

_PUBTATOR = re.compile(r"[^|\s]+\|[ta]\|")


def detect_format(path: Path, head: str) -> str:
    """The input format from the file name (``.xml``, ``.json``, ``.jsonl``, ``.pubtator``), else from the
    first non-blank characters; anything else is plain text."""
    suffix = path.suffix.lower()
    by_suffix = {".xml": "bioc-xml", ".json": "bioc-json", ".jsonl": "jsonl", ".pubtator": "pubtator"}
    if suffix in by_suffix:
        return by_suffix[suffix]
    start = head.lstrip()
    if start.startswith("<"):
        return "bioc-xml"
    if start.startswith("{"):
        return "bioc-json" if re.match(r'\{\s*"(bioctype|source|date|key|version|infons|documents)"', start) else "jsonl"
    if _PUBTATOR.match(start):
        return "pubtator"
    return "text"


def decode_input(path: Path, raw: bytes) -> str:
    """UTF-8 text of an input file; a bad byte is an error naming its line."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(path, line, f"not valid UTF-8 (byte 0x{raw[e.start]:02x})") from None


def read_documents(path: Path, fmt: str | None = None, raw: bytes | None = None) -> tuple[Collection, str]:
    """The documents of an input file and the format they were read as (``fmt``, else detected).

    ``raw`` gives the bytes when they do not come from ``path`` (stdin)."""

    if raw is None:
        if not path.is_file():
            raise BiomtlError(f"{path}: input file not found")
        raw = path.read_bytes()
    text = decode_input(path, raw)
    fmt = fmt or detect_format(path, text[:200])
    if fmt not in FORMATS:
        raise BiomtlError(f"--input-format: unknown format '{fmt}'; choose {', '.join(FORMATS)}")
    readers = {
        "text": plain.read_text,
        "jsonl": plain.read_jsonl,
        "bioc-xml": bioc.read_xml,
        "bioc-json": bioc.read_json,
        "pubtator": pubtator.read,
    }
    collection = readers[fmt](path, text)
    seen: dict[str, str] = {}
    for doc in collection.documents:
        if doc.id in seen:
            raise DataError(path, None, f"document id {doc.id!r} occurs twice ({seen[doc.id]} and {doc.where})")
        seen[doc.id] = doc.where
    return collection, fmt


def write_documents(collection: Collection, fmt: str) -> str:
    """The documents in the output format ``fmt``."""

    writers = {
        "text": plain.write_text,
        "jsonl": plain.write_jsonl,
        "bioc-xml": bioc.write_xml,
        "bioc-json": bioc.write_json,
        "pubtator": pubtator.write,
    }
    if fmt not in writers:
        raise BiomtlError(f"--format: unknown format '{fmt}'; choose {', '.join(FORMATS)}")
    return writers[fmt](collection)
