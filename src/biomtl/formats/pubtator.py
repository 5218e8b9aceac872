"""PubTator: ``PMID|t|title``, ``PMID|a|abstract``, then tab-separated lines, one blank line between documents.

* a mention line is ``PMID  start  end  text  type`` with optional further columns (the concept identifier,
  ...), kept as they are. The title is a passage at offset 0, the abstract one at ``len(title) + 1``.
* any other tab-separated line (``PMID  CID  D008750  D004409``) is a relation line, kept verbatim.

What biomtl adds is marked by a last column ``predicted:<task>:<probability>``: a mention gets ``-`` as its
identifier column, a relation names its arguments by their spans: ``PMID  CPR:4  0-8  20-25  predicted:chemprot:0.91``.
"""

from __future__ import annotations

import re
from pathlib import Path

from biomtl.errors import DataError
from biomtl.formats.documents import (
    PREDICTED,
    Collection,
    Document,
    Mention,
    Passage,
    Relation,
    check_mention,
)

_HEADER = re.compile(r"([^|\t]+)\|([ta])\|(.*)")
IDENTIFIER = "identifier"  # BioC's name for PubTator's concept column
EXTRA = "pubtator_columns"  # columns after the identifier, tab-joined
RAW = "pubtator_line"  # a relation line as read


def read(path: Path, text: str) -> Collection:
    docs: list[Document] = []
    doc: Document | None = None
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            doc = None
            continue
        header = _HEADER.fullmatch(line)
        if header:
            pmid, kind, content = header.groups()
            if kind == "t":
                doc = Document(id=pmid, passages=[Passage(0, content, {"type": "title"})], where=f"{path}:{number}")
                docs.append(doc)
                continue
            if doc is None or doc.id != pmid or len(doc.passages) != 1 or doc.mentions or doc.relations:
                raise DataError(path, number, f"abstract line of {pmid} does not follow its title line 'PMID|t|title'")
            doc.passages.append(Passage(len(doc.passages[0].text) + 1, content, {"type": "abstract"}))
            continue
        fields = line.split("\t")
        if doc is None or len(fields) < 4:
            raise DataError(path, number, "expected 'PMID|t|title', 'PMID|a|abstract' or a tab-separated annotation line")
        if fields[0] != doc.id:
            raise DataError(path, number, f"PMID {fields[0]!r} does not match its document's {doc.id!r}")
        if len(fields) >= 5 and fields[1].lstrip("-").isdigit() and fields[2].lstrip("-").isdigit():
            mention = Mention(f"T{len(doc.mentions) + 1}", int(fields[1]), int(fields[2]), fields[4], fields[3])
            if len(fields) > 5:
                mention.infons[IDENTIFIER] = fields[5]
            if len(fields) > 6:
                mention.infons[EXTRA] = "\t".join(fields[6:])
            if not fields[4]:
                raise DataError(path, number, "the mention has no type (5th column)")
            check_mention(doc, mention, path, number, f"mention {fields[3]!r}")
            doc.mentions.append(mention)
        elif fields[1].isdigit() or fields[2].isdigit():
            raise DataError(path, number, f"mention offsets {fields[1]!r}-{fields[2]!r} are not whole numbers, or the line has fewer than 5 columns")
        else:
            args = [("Arg1", fields[2]), ("Arg2", fields[3])]
            doc.relations.append(Relation(f"R{len(doc.relations) + 1}", fields[1], args, infons={RAW: line}))
    return Collection(docs)


def write(collection: Collection) -> str:
    out = []
    for doc in collection.documents:
        passages = sorted(doc.passages, key=lambda p: p.offset)
        title = passages[0].text if passages else ""
        abstract = doc.text[len(title) + 1 :] if len(passages) > 1 else ""
        out.append(f"{doc.id}|t|{title}")
        out.append(f"{doc.id}|a|{abstract}")
        spans = {m.id: f"{m.start}-{m.end}" for m in doc.mentions}
        for m in sorted(doc.mentions, key=lambda m: (m.start, m.end)):
            fields = [doc.id, str(m.start), str(m.end), m.text, m.type]
            if m.source == PREDICTED:
                fields += ["-", _mark(m.task, m.score)]
            else:
                fields += [m.infons[IDENTIFIER]] if IDENTIFIER in m.infons else []
                fields += [m.infons[EXTRA]] if EXTRA in m.infons else []
            out.append("\t".join(fields))
        for r in doc.relations:
            if RAW in r.infons:
                out.append(r.infons[RAW])
                continue
            args = [spans.get(ident, ident) if r.source == PREDICTED else ident for _, ident in r.arguments]
            mark = [_mark(r.task, r.probability)] if r.source == PREDICTED else []
            out.append("\t".join([doc.id, r.type, *args, *mark]))
        out.append("")
    return "".join(line + "\n" for line in out)


def _mark(task: str | None, p: float | None) -> str:
    return f"{PREDICTED}:{task}:{'' if p is None else round(p, 4)}"
