"""Annotate documents end to end with a multi-task model: entities, relations between them, document labels.

1. Each passage is split into sentences with syntok (the rules the ChemProt conversion uses:
   :func:`biomtl.sentences.sentence_spans`; no boundary cuts an input mention).
2. Every NER head (token-level task) runs on every sentence, and every document-level head (a sentence head
   that reads plain text, e.g. HoC) on the same windows: the encoder runs once per window for all of them
   (:meth:`biomtl.predict.Predictor.annotate_groups`). A document head's label is decoded from the maximum of
   its sentences' logits: a label that any sentence has is the document's.
3. Each relation head (a task whose dataset YAML declares ``arguments`` and ``entity_types``) scores the
   candidate pairs its task defines: two mentions in one sentence whose entity types map to its two argument
   types (both orders impossible: the first argument is always of the first type; two arguments of the same
   type are paired once, in text order). The pair is masked as in training (``markers``: the first
   combination, or its one-mask form when the mentions overlap or touch) and all pairs are scored in batches.
   A pair whose label is the task's ``negative_label`` gives no relation.

Mentions of an entity type come from the NER heads that predict it; where no head predicts a type, or the
type is kept (``keep_input``), they come from the input's own annotations (PubTator, BioC, JSONL).

>>> collection, _ = read_documents(Path("abstracts.pubtator"))  # doctest: +SKIP
>>> annotate(Predictor.load("runs/chemprot-e2e/best"), collection, "abstracts.pubtator")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Collection as Set
from dataclasses import dataclass, replace

from biomtl.corpora.masking import mask_pair
from biomtl.errors import BiomtlError
from biomtl.formats import PREDICTED, Collection, Document, Mention, Relation
from biomtl.predict import Predictor, WindowStates
from biomtl.sentences import sentence_spans

log = logging.getLogger(__name__)

ALL = "*"
"""``keep_input`` value: keep every input annotation and run no NER head."""


@dataclass(frozen=True)
class Plan:
    """Which heads do what: NER heads to run, relation heads, document heads; and the tasks left out."""

    ner: list[str]
    relations: list[str]
    documents: list[str]
    skipped: list[str]


@dataclass(frozen=True)
class Sentence:
    """A sentence of a document: its text and where it starts in the document."""

    doc: int
    start: int
    text: str

    @property
    def end(self) -> int:
        return self.start + len(self.text)


def plan_tasks(predictor: Predictor, tasks: list[str] | None = None, keep_input: Set[str] = ()) -> Plan:
    """Sort the model's heads (or ``tasks``) by what they do with a document. A head that cannot read a
    document (a text pair, a relation task without ``arguments``) is skipped, or an error when named."""
    for t in tasks or []:
        predictor._check_task(t)
    names = tasks or predictor.tasks
    ner, relations, documents, skipped = [], [], [], []
    for name in names:
        task, spec = predictor.model.tasks[name], predictor.model.specs[name]
        if task.token_level:
            if ALL not in keep_input and not set(spec.labels) <= set(keep_input):
                ner.append(name)
        elif task.argument_input and spec.arguments:
            relations.append(name)
        elif task.can_annotate:
            documents.append(name)
        elif tasks:
            why = "declares no arguments: (add arguments: and entity_types: to its dataset YAML)" if task.argument_input else "needs text pairs"
            raise BiomtlError(f"--tasks: task {name} cannot annotate documents: it {why}")
        else:
            skipped.append(name)
    return Plan(ner, relations, documents, skipped)


def annotate(
    predictor: Predictor,
    collection: Collection,
    source: str,
    tasks: list[str] | None = None,
    keep_input: Set[str] = (),
    sentences: list[list[Sentence]] | None = None,
) -> Collection:
    """Add predicted mentions, relations and document labels to ``collection`` (in place; returned).

    ``keep_input`` lists entity types whose mentions are the input's instead of predicted (``ALL``: every
    type, and no NER head runs). ``source`` names the input in messages. ``sentences``: each document's
    sentences as :func:`split_sentences` gives them, where the caller has split them already.
    """
    plan = plan_tasks(predictor, tasks, keep_input)
    if plan.skipped:
        log.info("not run on documents: %s (pairs or relation tasks without arguments)", ", ".join(plan.skipped))
    if not (plan.ner or plan.relations or plan.documents):
        raise BiomtlError(f"{source}: the model has no head that annotates documents (tasks: {', '.join(predictor.tasks)})")
    predicted_types = {t for name in plan.ner for t in predictor.model.specs[name].labels if not _kept(t, keep_input)}
    input_types = {m.type for doc in collection.documents for m in doc.mentions}
    for name in plan.relations:
        _check_sources(predictor, name, predicted_types, input_types, source)

    span_heads = [name for name in plan.relations if predictor.model.tasks[name].reads_spans]
    # Span heads read the NER pass's encoder states again: documents go in parts of about STATES_SENTENCES
    # sentences, so that the states kept stay bounded whatever the input's size.
    split = sentences if sentences is not None else [split_sentences(doc, 0) for doc in collection.documents]
    for docs, part_sentences in _parts(collection.documents, split, STATES_SENTENCES if span_heads else None):
        _annotate_part(predictor, plan, docs, part_sentences, bool(span_heads), predicted_types, keep_input, source)
    return collection


STATES_SENTENCES = 2048
"""About how many sentences' encoder states ``annotate`` keeps at once for span relation heads."""


def _parts(
    docs: list[Document], split: list[list[Sentence]], sentences: int | None
) -> list[tuple[list[Document], list[Sentence]]]:
    """``docs`` in order, cut into parts of about ``sentences`` sentences (all in one part if ``None``), each
    with its sentences (``split``: each document's; ``Sentence.doc`` counts within the part)."""
    parts: list[tuple[list[Document], list[Sentence]]] = [([], [])]
    for doc, doc_sentences in zip(docs, split, strict=True):
        if parts[-1][0] and sentences is not None and len(parts[-1][1]) + len(doc_sentences) > sentences:
            parts.append(([], []))
        part_docs, part_sentences = parts[-1]
        part_sentences.extend(replace(s, doc=len(part_docs)) for s in doc_sentences)
        part_docs.append(doc)
    return parts


def _annotate_part(
    predictor: Predictor, plan: Plan, docs: list[Document], sentences: list[Sentence], spans: bool,
    predicted_types: set[str], keep_input: Set[str], source: str,
) -> None:
    """Entities, document labels and relations of ``docs`` (split into ``sentences``); ``spans``: keep the
    encoder states for span heads."""
    heads = plan.ner + plan.documents
    states = WindowStates() if spans else None  # the NER pass's encoder states, read again by span heads
    if (heads or spans) and sentences:
        found, labels = predictor.annotate_groups([s.text for s in sentences], [s.doc for s in sentences], heads, states)
        counters = [_Ids(doc, "p") for doc in docs]
        for sentence, entities in zip(sentences, found, strict=True):
            doc = docs[sentence.doc]
            for e in entities:
                if _kept(e["type"], keep_input):
                    continue
                start, end = sentence.start + e["start"], sentence.start + e["end"]
                doc.mentions.append(
                    Mention(counters[sentence.doc].next(), start, end, e["type"], e["text"], PREDICTED, e["task"], e["score"])
                )
        for i, doc_labels in enumerate(labels):
            docs[i].labels.update(doc_labels)
    for name in plan.relations:
        _relations(predictor, name, docs, sentences, predicted_types, keep_input, source, states)


def _kept(entity_type: str, keep_input: Set[str]) -> bool:
    return ALL in keep_input or entity_type in keep_input


def _check_sources(predictor: Predictor, task: str, predicted: set[str], in_input: set[str], source: str) -> None:
    """Every argument type of a relation task needs mentions: from a head, or from the input."""
    spec = predictor.model.specs[task]
    for argument in dict.fromkeys(spec.arguments):
        types = [t for t, a in spec.entity_types.items() if a == argument]
        if not any(t in predicted or t in in_input for t in types):
            raise BiomtlError(
                f"{source}: relation task {task} has no source for argument type '{argument}': no NER head predicts "
                f"{', '.join(types)} and the input has no annotation of those types (see entity_types: of {task})"
            )


def split_sentences(doc: Document, index: int) -> list[Sentence]:
    """The sentences of every passage, in document offsets; no boundary cuts one of the input's mentions."""
    out = []
    for p in doc.passages:
        spans = [(m.start - p.offset, m.end - p.offset) for m in doc.mentions if p.offset <= m.start and m.end <= p.end]
        for s, e in sentence_spans(p.text, spans):
            out.append(Sentence(index, p.offset + s, p.text[s:e]))
    return out


class _Ids:
    """Fresh ids within one document: ``p1``, ``p2``, ... skipping those the input uses."""

    def __init__(self, doc: Document, prefix: str) -> None:
        self.used = {m.id for m in doc.mentions} | {r.id for r in doc.relations}
        self.prefix = prefix
        self.n = 0

    def next(self) -> str:
        while True:
            self.n += 1
            ident = f"{self.prefix}{self.n}"
            if ident not in self.used:
                self.used.add(ident)
                return ident


@dataclass(frozen=True)
class _Pair:
    doc: int
    first: Mention
    second: Mention
    text: str  # the sentence with both arguments masked (span heads: the sentence as it is)


def _relations(
    predictor: Predictor,
    task: str,
    docs: list[Document],
    sentences: list[Sentence],
    predicted_types: set[str],
    keep_input: Set[str],
    source: str,
    states: WindowStates | None = None,
) -> None:
    """Score every candidate pair of ``task`` in one batched call and add the relations found: masked copies of
    the sentence, or (span relation heads) the argument spans read from the sentence's ``states``."""
    spec = predictor.model.specs[task]
    spans = predictor.model.tasks[task].reads_spans

    def usable(m: Mention) -> bool:
        """A mention of this task's arguments, from the source its type reads from."""
        if m.type not in spec.entity_types:
            return False
        from_heads = m.type in predicted_types and not _kept(m.type, keep_input)
        return (m.source == PREDICTED) == from_heads

    pairs = []
    span_pairs = []  # (sentence, first span, second span), offsets into the sentence
    for k, sentence in enumerate(sentences):
        inside = [
            m for m in docs[sentence.doc].mentions if sentence.start <= m.start and m.end <= sentence.end and usable(m)
        ]
        inside.sort(key=lambda m: (m.start, m.end))
        for first, second in candidate_pairs(inside, spec.arguments, spec.entity_types):
            if spans:
                for m in (first, second):
                    _check_words(task, m, sentence.text[m.start - sentence.start : m.end - sentence.start], source)
            text = sentence.text if spans else masked(sentence, first, second, spec.markers)
            if text is not None:
                pairs.append(_Pair(sentence.doc, first, second, text))
                span_pairs.append((k, _span(first, sentence), _span(second, sentence)))
    if not pairs:
        return
    if spans:
        rows = predictor.score_spans(task, [s.text for s in sentences], span_pairs, states or WindowStates())
    else:
        rows = predictor.predict(task, [p.text for p in pairs], source=f"{source} (masked candidate pairs of {task})")
    counters: dict[int, _Ids] = {}
    for pair, row in zip(pairs, rows, strict=True):
        if row["label"] == spec.negative_label:
            continue
        doc = docs[pair.doc]
        ids = counters.setdefault(pair.doc, _Ids(doc, "r"))
        arguments = [(spec.arguments[0], pair.first.id), (spec.arguments[1], pair.second.id)]
        doc.relations.append(
            Relation(ids.next(), row["label"], arguments, PREDICTED, task, row["probability"], row["probabilities"])
        )


def _span(mention: Mention, sentence: Sentence) -> tuple[int, int]:
    return mention.start - sentence.start, mention.end - sentence.start


def _check_words(task: str, mention: Mention, text: str, source: str) -> None:
    """A span head reads an argument from its words: a mention of no word (only spaces) cannot be one."""
    if not text.strip():
        raise BiomtlError(
            f"{source}: mention {mention.id} ({mention.start}-{mention.end}) holds no word; relation task {task} "
            "cannot read it as an argument"
        )


def candidate_pairs(
    mentions: list[Mention], arguments: list[str], entity_types: dict[str, str]
) -> list[tuple[Mention, Mention]]:
    """Pairs of one sentence's mentions (sorted by offset) whose types map to the two argument types: every
    first-type × second-type pair, or each unordered pair once (in text order) when both types are the same.
    Two mentions of the same span never pair."""
    first = [m for m in mentions if entity_types[m.type] == arguments[0]]
    if arguments[0] == arguments[1]:
        return [(a, b) for i, a in enumerate(first) for b in first[i + 1 :] if (a.start, a.end) != (b.start, b.end)]
    second = [m for m in mentions if entity_types[m.type] == arguments[1]]
    return [(a, b) for a in first for b in second if (a.start, a.end) != (b.start, b.end)]


def masked(sentence: Sentence, first: Mention, second: Mention, markers: list[list[str]]) -> str | None:
    """The sentence with ``first`` and ``second`` replaced by the masks of markers' first combination, as the
    corpus conversion masks training pairs (:func:`biomtl.corpora.masking.mask_pair`): mentions that overlap
    or touch become the one-mask combination (``@CHEM-GENE$``). ``None`` when they overlap and the task has
    no one-mask combination."""
    one_mask = next((option[0] for option in markers if len(option) == 1), None)
    a = (first.start - sentence.start, first.end - sentence.start, markers[0][0])
    b = (second.start - sentence.start, second.end - sentence.start, markers[0][1])
    (s1, e1, m1), (s2, e2, m2) = sorted([a, b])
    if one_mask is None:
        if s2 < e1:
            return None
        return sentence.text[:s1] + m1 + sentence.text[e1:s2] + m2 + sentence.text[e2:]
    return mask_pair(sentence.text, a, b, one_mask)
