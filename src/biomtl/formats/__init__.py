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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomtl.errors import BiomtlError, DataError

FORMATS = ("text", "jsonl", "bioc-xml", "bioc-json", "pubtator")
INPUT = "input"
PREDICTED = "predicted"


@dataclass
class Passage:
    """A piece of a document's text (a title, an abstract) starting at ``offset`` in the document."""

    offset: int
    text: str
    infons: dict[str, str] = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.offset + len(self.text)


@dataclass
class Mention:
    """An entity mention ``[start, end)`` in document offsets. ``infons`` keeps what the input said besides
    (BioC infons; PubTator's identifier and further columns) so that it is written back unchanged."""

    id: str
    start: int
    end: int
    type: str
    text: str
    source: str = INPUT
    task: str | None = None
    score: float | None = None
    infons: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"id": self.id, "start": self.start, "end": self.end, "text": self.text, "type": self.type}
        row["source"] = self.source
        if self.task is not None:
            row["task"] = self.task
        if self.score is not None:
            row["score"] = self.score
        if self.infons:
            row["infons"] = self.infons
        return row


@dataclass
class Relation:
    """A relation between mentions: ``arguments`` are ``(role, mention id)`` in the task's argument order."""

    id: str
    type: str
    arguments: list[tuple[str, str]]
    source: str = INPUT
    task: str | None = None
    probability: float | None = None
    probabilities: dict[str, float] | None = None
    infons: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"id": self.id, "type": self.type, "arguments": [list(a) for a in self.arguments]}
        row["source"] = self.source
        for key in ("task", "probability", "probabilities"):
            if getattr(self, key) is not None:
                row[key] = getattr(self, key)
        if self.infons:
            row["infons"] = self.infons
        return row


@dataclass
class Document:
    """One document; ``where`` names it in messages (``file:line``), ``raw_lines`` are input lines kept
    verbatim (PubTator relation lines)."""

    id: str
    passages: list[Passage]
    mentions: list[Mention] = field(default_factory=list)
    relations: list[Relation] = field(default_factory=list)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    infons: dict[str, str] = field(default_factory=dict)
    raw_lines: list[str] = field(default_factory=list)
    where: str = ""

    @property
    def text(self) -> str:
        """The passages at their offsets (gaps filled with spaces), so that ``text[m.start:m.end]`` is a mention."""
        out = ""
        for p in sorted(self.passages, key=lambda p: p.offset):
            out += " " * max(0, p.offset - len(out)) + p.text
        return out

    def new_id(self, prefix: str) -> str:
        """An id not yet used by a mention or relation of this document (``p1``, ``p2``, ...)."""
        used = {m.id for m in self.mentions} | {r.id for r in self.relations}
        n = 1
        while f"{prefix}{n}" in used:
            n += 1
        return f"{prefix}{n}"


@dataclass
class Collection:
    """Documents plus what a BioC collection says about itself (``source``, ``date``, ``key``, infons)."""

    documents: list[Document]
    source: str = ""
    date: str = ""
    key: str = ""
    infons: dict[str, str] = field(default_factory=dict)


def check_mention(doc: Document, mention: Mention, path: Path | str, line: int | None, what: str) -> None:
    """A mention must lie inside one passage and, where the input gives its text, match it."""
    passage = next((p for p in doc.passages if p.offset <= mention.start and mention.end <= p.end), None)
    if not 0 <= mention.start < mention.end or passage is None:
        spans = ", ".join(f"{p.offset}-{p.end}" for p in doc.passages)
        raise DataError(path, line, f"{what}: offsets {mention.start}-{mention.end} are outside the text (passages {spans})")
    found = passage.text[mention.start - passage.offset : mention.end - passage.offset]
    if mention.text and found != mention.text:
        raise DataError(path, line, f"{what}: the text at {mention.start}-{mention.end} is {found!r}, not {mention.text!r}")


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
    from biomtl.formats import bioc, plain, pubtator

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
    from biomtl.formats import bioc, plain, pubtator

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
