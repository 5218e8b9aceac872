"""Plain text and JSONL documents.

* text in: one document per non-empty line (its id is the line number). Out: per document a ``# id`` line, then
  brat-like standoff lines, tab-separated: ``T1  Chemical 0 8  Naloxone  predicted bc5cdr-chemical 0.99``,
  ``R1  CPR:4 Chemical:T1 Gene:T2  predicted chemprot 0.91`` and ``L  hoc  {labels as JSON}``.
* JSONL in: ``{"id": ..., "text": ..., "entities": [{"start", "end", "type", "id"?, "text"?}]}`` per line
  (``entities`` optional; ``relations`` as written out). Out: ``{"id", "text", "entities", "relations", "labels"}`` per document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from biomtl.errors import DataError
from biomtl.formats.documents import Collection, Document, Mention, Passage, Relation, check_mention
from biomtl.lines import numbered_lines


def read_text(path: Path, text: str) -> Collection:
    docs = [
        Document(id=str(n), passages=[Passage(0, line)], where=f"{path}:{n}")
        for n, line in numbered_lines(text)
    ]
    return Collection(docs)


def read_jsonl(path: Path, text: str) -> Collection:
    docs = []
    for n, line in numbered_lines(text):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, n, f"invalid JSON ({e.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise DataError(path, n, "expected a JSON object with a string field 'text'")
        try:
            json.dumps(item, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(path, n, "a string holds an unpaired surrogate (half of a UTF-16 pair, not text)") from None
        doc = Document(id=str(item.get("id", n)), passages=[Passage(0, item["text"])], where=f"{path}:{n}")
        entities = item.get("entities", [])
        if not isinstance(entities, list):
            raise DataError(path, n, "'entities' must be a list")
        for k, ent in enumerate(entities):
            doc.mentions.append(_mention(doc, ent, path, n, k))
        for k, rel in enumerate(item.get("relations", [])):
            doc.relations.append(_relation(doc, rel, path, n, k))
        docs.append(doc)
    return Collection(docs)


def _mention(doc: Document, ent: Any, path: Path, line: int, k: int) -> Mention:
    what = f"entities[{k}]"
    if not isinstance(ent, dict):
        raise DataError(path, line, f"{what}: expected an object with 'start', 'end' and 'type'")
    start, end, etype = ent.get("start"), ent.get("end"), ent.get("type")
    if not isinstance(start, int) or not isinstance(end, int) or isinstance(start, bool) or isinstance(end, bool):
        raise DataError(path, line, f"{what}: expected integer 'start' and 'end'")
    if not isinstance(etype, str) or not etype:
        raise DataError(path, line, f"{what}: expected a string 'type'")
    mention = Mention(str(ent.get("id", f"T{k + 1}")), start, end, etype, str(ent.get("text", "")))
    check_mention(doc, mention, path, line, what)
    mention.text = doc.passages[0].text[start:end]
    return mention


def _relation(doc: Document, rel: Any, path: Path, line: int, k: int) -> Relation:
    """A relation as :func:`write_jsonl` writes it: ``{"id", "type", "arguments": [[role, id], ...]}``; an
    id names an entity of the document, or a concept (PubTator's relation lines)."""
    what = f"relations[{k}]"
    args = rel.get("arguments") if isinstance(rel, dict) else None
    if not isinstance(args, list) or not all(isinstance(a, list) and len(a) == 2 for a in args):
        raise DataError(path, line, f"{what}: expected 'arguments' as [role, entity id] pairs")
    return Relation(str(rel.get("id", f"R{k + 1}")), str(rel.get("type", "")), [(str(r), str(i)) for r, i in args])


def write_jsonl(collection: Collection) -> str:
    return "".join(json.dumps(document_row(doc), ensure_ascii=False) + "\n" for doc in collection.documents)


def document_row(doc: Document) -> dict[str, Any]:
    """One document as a line of JSONL (and as ``biomtl serve``'s JSON answers) has it."""
    return {
        "id": doc.id,
        "text": doc.text,
        "entities": [m.to_json() for m in sorted(doc.mentions, key=lambda m: (m.start, m.end))],
        "relations": [r.to_json() for r in doc.relations],
        "labels": doc.labels,
    }


def write_text(collection: Collection) -> str:
    lines = []
    for doc in collection.documents:
        lines.append(f"# {doc.id}")
        for m in sorted(doc.mentions, key=lambda m: (m.start, m.end)):
            lines.append(f"{m.id}\t{m.type} {m.start} {m.end}\t{m.text}\t{_provenance(m.source, m.task, m.score)}")
        for r in doc.relations:
            args = " ".join(f"{role}:{ident}" for role, ident in r.arguments)
            lines.append(f"{r.id}\t{r.type} {args}\t{_provenance(r.source, r.task, r.probability)}")
        for task, label in doc.labels.items():
            lines.append(f"L\t{task}\t{json.dumps(label, ensure_ascii=False)}")
    return "".join(line + "\n" for line in lines)


def _provenance(source: str, task: str | None, score: float | None) -> str:
    return " ".join(str(x) for x in (source, task, None if score is None else round(score, 4)) if x is not None)
