"""The document records every format reads into and writes from: passages, mentions, relations, labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomtl.errors import DataError

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
