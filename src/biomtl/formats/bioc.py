"""BioC XML and BioC JSON, read and written with the ``bioc`` package.

Mentions are annotations with an infon ``type`` and one location (several locations, a discontinuous mention,
read as the span from the first to the last); relations are relations whose nodes name annotations. What
biomtl adds carries the infons ``source: predicted``, ``task`` and ``probability``; a document-level head's
prediction is the document infon ``biomtl:<task>`` (its JSON).
"""

from __future__ import annotations

import json
from pathlib import Path

import bioc
from bioc import biocjson, biocxml
from lxml import etree

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

LABELS_PREFIX = "biomtl:"


def read_xml(path: Path, text: str) -> Collection:
    try:
        collection = biocxml.loads(text)
    except etree.XMLSyntaxError as e:
        raise DataError(path, e.lineno, f"malformed BioC XML ({e.msg})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(path, None, f"not a BioC collection ({type(e).__name__}: {e})") from None
    return _from_bioc(path, collection)


def read_json(path: Path, text: str) -> Collection:
    try:
        collection = biocjson.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, f"malformed BioC JSON ({e.msg})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(path, None, f"not a BioC JSON collection (missing or bad field {e})") from None
    return _from_bioc(path, collection)


def _from_bioc(path: Path, collection: bioc.BioCCollection) -> Collection:
    docs = []
    for d in collection.documents:
        where = f"document {d.id}"
        passages = []
        for p in d.passages:
            if p.text is None:
                raise DataError(path, None, f"{where}: the passage at offset {p.offset} has no text (sentence-level BioC is not read)")
            passages.append(Passage(int(p.offset), p.text, dict(p.infons)))
        doc = Document(id=str(d.id), passages=passages, infons=dict(d.infons), where=f"{path}: {where}")
        for annotation in [a for p in d.passages for a in p.annotations] + list(d.annotations):
            doc.mentions.append(_mention(path, doc, annotation, where))
        for relation in [r for p in d.passages for r in p.relations] + list(d.relations):
            args = [(node.role, node.refid) for node in relation.nodes]
            infons = dict(relation.infons)
            doc.relations.append(Relation(str(relation.id), infons.pop("type", ""), args, infons=infons))
        docs.append(doc)
    return Collection(docs, collection.source or "", collection.date or "", collection.key or "", dict(collection.infons))


def _mention(path: Path, doc: Document, annotation: bioc.BioCAnnotation, where: str) -> Mention:
    what = f"{where}, annotation {annotation.id}"
    infons = dict(annotation.infons)
    etype = infons.pop("type", None)
    if not etype:
        raise DataError(path, None, f"{what}: no 'type' infon")
    if not annotation.locations:
        raise DataError(path, None, f"{what}: no location")
    start = min(loc.offset for loc in annotation.locations)
    end = max(loc.offset + loc.length for loc in annotation.locations)
    text = annotation.text if len(annotation.locations) == 1 else ""
    mention = Mention(str(annotation.id), int(start), int(end), etype, text or "", infons=infons)
    check_mention(doc, mention, path, None, what)
    mention.text = annotation.text or doc.text[start:end]
    mention.infons["locations"] = json.dumps([[loc.offset, loc.length] for loc in annotation.locations])
    return mention


def _to_bioc(collection: Collection) -> bioc.BioCCollection:
    out = bioc.BioCCollection()
    out.source, out.date, out.key = collection.source, collection.date, collection.key
    out.infons.update(collection.infons)
    for doc in collection.documents:
        d = bioc.BioCDocument()
        d.id = doc.id
        d.infons.update(doc.infons)
        for task, label in doc.labels.items():
            d.infons[f"{LABELS_PREFIX}{task}"] = json.dumps(label, ensure_ascii=False)
        passages = []
        for p in sorted(doc.passages, key=lambda p: p.offset):
            passage = bioc.BioCPassage()
            passage.offset, passage.text = p.offset, p.text
            passage.infons.update(p.infons)
            d.add_passage(passage)
            passages.append((p, passage))
        in_passage: dict[str, bioc.BioCPassage] = {}
        for m in sorted(doc.mentions, key=lambda m: (m.start, m.end)):
            home = next(bp for p, bp in passages if p.offset <= m.start and m.end <= p.end)
            home.add_annotation(_annotation(m))
            in_passage[m.id] = home
        for r in doc.relations:
            relation = bioc.BioCRelation()
            relation.id = r.id
            relation.infons["type"] = r.type
            relation.infons.update(r.infons)
            if r.source == PREDICTED:
                relation.infons.update(_provenance(r.task, r.probability))
            for role, ident in r.arguments:
                relation.add_node(bioc.BioCNode(ident, role))
            homes = {id(in_passage.get(ident)) for _, ident in r.arguments}
            target = in_passage.get(r.arguments[0][1]) if len(homes) == 1 and r.arguments else None
            (target or d).add_relation(relation)
        out.add_document(d)
    return out


def _annotation(m: Mention) -> bioc.BioCAnnotation:
    a = bioc.BioCAnnotation()
    a.id = m.id
    a.infons["type"] = m.type
    infons = dict(m.infons)
    locations = json.loads(infons.pop("locations", "null")) or [[m.start, m.end - m.start]]
    a.infons.update(infons)
    if m.source == PREDICTED:
        a.infons.update(_provenance(m.task, m.score))
    for offset, length in locations:
        a.add_location(bioc.BioCLocation(offset, length))
    a.text = m.text
    return a


def _provenance(task: str | None, p: float | None) -> dict[str, str]:
    out = {"source": PREDICTED, "task": task or ""}
    if p is not None:
        out["probability"] = str(round(p, 4))
    return out


def write_xml(collection: Collection) -> str:
    return biocxml.dumps(_to_bioc(collection))


def write_json(collection: Collection) -> str:
    return biocjson.dumps(_to_bioc(collection), indent=1) + "\n"
