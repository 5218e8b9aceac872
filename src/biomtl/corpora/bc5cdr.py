"""BC5CDR (BioCreative V CDR, PubTator) → BLUE NER files ``bc5cdr-chemical`` and ``bc5cdr-disease``.

The official corpus (``BC5CDR-original/CDR_*Set.PubTator.txt``) is converted directly, rather than copying the
IOB files of Crichton et al. 2017 (``BC5CDR-chemical|disease/*.tsv``), because the conversion keeps every
official mention exactly: the IOB files widen 15 chemical mentions to whole tokens (``5-HT6`` for ``5-HT``) and
cut two disease mentions in half at a sentence break (``St. | Anthony's fire``). Tokenisation and sentence
splitting follow the IOB files' style, so both outputs agree on >99.9 % of tokens (the manifest has the figures):

- tokens are maximal runs of letters/digits, every other non-space character is a token of its own
  (NERsuite style), and a token is also cut where a mention starts or ends inside it;
- title and abstract are split apart, each breaks after ``.``/``!``/``?`` plus whitespace unless a
  GeniaSS-style rule forbids it (inside brackets, before a lowercase word or a conjunction/preposition, after
  ``e.g.``/``i.v.``/``vs.``/initials, ...) or the break would fall inside a mention; a stray ``.`` joins the
  sentence before it.

Both tasks share the tokens and sentences; only the tags differ. Composite mentions (``cardiovascular, and
respiratory depression``) are one contiguous span in PubTator and stay one mention, as in BLUE's counts.
"""

from __future__ import annotations

import bisect
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from biomtl.corpora.files import read_lines, sha256
from biomtl.errors import BiomtlError, DataError

log = logging.getLogger(__name__)

ORIGINAL = "BC5CDR-original"
SPLIT_FILES = {
    "train": "CDR_TrainingSet.PubTator.txt",
    "dev": "CDR_DevelopmentSet.PubTator.txt",
    "test": "CDR_TestSet.PubTator.txt",
}
# The IOB conversion of Crichton et al. 2017 (MTL-Bioinformatics-2016), used only for the agreement report.
IOB_DIRS = {"Chemical": "BC5CDR-chemical", "Disease": "BC5CDR-disease"}
IOB_FILES = {"train": "train.tsv", "dev": "devel.tsv", "test": "test.tsv"}
# Mention counts in the BLUE README (Peng et al. 2019).
REFERENCE = {
    "Chemical": {"train": 5203, "dev": 5347, "test": 5385},
    "Disease": {"train": 4182, "dev": 4244, "test": 4424},
}

Span = tuple[int, int]


@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    text: str
    type: str
    ids: str  # MeSH id(s), ``|``-separated for a composite mention; ``-1`` if none
    parts: str = ""  # a composite mention's individual mentions, ``|``-separated


@dataclass(frozen=True)
class Document:
    pmid: str
    title: str
    abstract: str
    mentions: tuple[Mention, ...]

    @property
    def text(self) -> str:
        """Title and abstract joined by one space: the string that PubTator offsets index."""
        return f"{self.title} {self.abstract}"


def prepare_chemical(corpora: Path, out: Path) -> dict:
    """Write ``out/{train,dev,test}.conll`` tagged ``B-Chemical``/``I-Chemical``/``O``."""
    return _prepare(corpora, out, "Chemical")


def prepare_disease(corpora: Path, out: Path) -> dict:
    """Write ``out/{train,dev,test}.conll`` tagged ``B-Disease``/``I-Disease``/``O``."""
    return _prepare(corpora, out, "Disease")


# ---------------------------------------------------------------------------------------------------------
# PubTator


_TITLE_OR_ABSTRACT = re.compile(r"(\d+)\|([ta])\|(.*)")


def read_pubtator(path: Path) -> list[Document]:
    """Documents of a PubTator file, in file order; annotation offsets are checked against the text."""
    docs: list[Document] = []
    block: list[tuple[int, str]] = []
    for number, line in enumerate(read_lines(path), 1):
        if line.strip():
            block.append((number, line))
        elif block:
            docs.append(_parse_document(path, block))
            block = []
    if block:
        docs.append(_parse_document(path, block))
    if not docs:
        raise DataError(path, None, "no documents")
    return docs


def _parse_document(path: Path, block: list[tuple[int, str]]) -> Document:
    heads = [_TITLE_OR_ABSTRACT.fullmatch(line) for _, line in block[:2]]
    if len(heads) < 2 or not heads[0] or not heads[1] or (heads[0][2], heads[1][2]) != ("t", "a"):
        raise DataError(path, block[0][0], "expected 'PMID|t|title' then 'PMID|a|abstract'")
    pmid, title, abstract = heads[0][1], heads[0][3], heads[1][3]
    if heads[1][1] != pmid:
        raise DataError(path, block[1][0], f"abstract PMID {heads[1][1]} differs from title PMID {pmid}")
    text = f"{title} {abstract}"
    mentions = []
    for number, line in block[2:]:
        fields = line.split("\t")
        if fields[0] != pmid:
            raise DataError(path, number, f"PMID {fields[0]!r} inside the block of document {pmid}")
        if len(fields) >= 2 and fields[1] == "CID":
            continue  # chemical-induced-disease relation: not used for NER
        if len(fields) < 6 or not fields[1].isdigit() or not fields[2].isdigit():
            raise DataError(path, number, "expected 'PMID<TAB>start<TAB>end<TAB>mention<TAB>type<TAB>id'")
        start, end = int(fields[1]), int(fields[2])
        if not 0 <= start < end <= len(text) or text[start:end] != fields[3]:
            raise DataError(path, number, f"mention {fields[3]!r} does not match the text at {start}-{end}")
        parts = fields[6] if len(fields) > 6 else ""
        mentions.append(Mention(start, end, fields[3], fields[4], fields[5], parts))
    return Document(pmid, title, abstract, tuple(mentions))


# ---------------------------------------------------------------------------------------------------------
# Tokens and sentences


_TOKEN = re.compile(r"[^\W_]+|\S")  # a run of letters/digits, or any other single non-space character


def tokenize(text: str, start: int, end: int, cuts: list[int]) -> list[Span]:
    """Token spans of ``text[start:end]``, also cut at the sorted offsets ``cuts`` inside a token.

    >>> tokenize("5-HT6 receptor", 0, 14, [4])
    [(0, 1), (1, 2), (2, 4), (4, 5), (6, 14)]
    """
    spans = []
    for match in _TOKEN.finditer(text, start, end):
        s, e = match.span()
        i = bisect.bisect_right(cuts, s)
        while i < len(cuts) and cuts[i] < e:
            spans.append((s, cuts[i]))
            s = cuts[i]
            i += 1
        spans.append((s, e))
    return spans


_BREAK = re.compile(r"[.!?]+(?=\s+\S)")
# GeniaSS-style refinements, after the rules of Pyysalo's geniass post-processor. Each pattern is matched
# against "<end of the sentence so far>\n<start of the next>"; a match drops the break.
_NO_BREAK = re.compile(
    "|".join(
        [
            r"\.\n[a-z]{3}[a-z-]*[ .:,;]",  # a lowercase word continues the sentence
            r"\n(?:and|or|but|nor|yet|of|in|by|as|on|at|to|via|for|with|that|than|from|into|upon|after"
            r"|while|during|within|through|between|whereas|whether) ",  # a conjunction or preposition
            r"\b(?:e\. ?g|i\. ?e|i\. ?v|vs|cf|Dr|Mr|Ms|Mrs)\.\n",  # e.g. / i.v. / vs. / Dr.
            r"\b(?:e\.\ng|i\.\ne|i\.\nv)\.",  # e. g. / i. e. / i. v.
            r"\b[A-Z]\.\n[a-z]{3,}\b",  # S. cerevisiae
            r"\b(?:[A-Z]\.|[A-Z][a-z]{3,}) [A-Z]\.\n[A-Z][a-z]{3,}\b",  # A. P. Chekhov
            r"\b(?:[Aa]pprox|[Nn]o)\.\n\d",  # No. 5
        ]
    )
)
_CONTEXT = 40  # characters each side of a break that the rules may look at


def split_sentences(text: str, start: int, end: int, protected: list[Span]) -> list[Span]:
    """Sentence spans of ``text[start:end]`` (stripped of outer whitespace); no break inside ``protected``.

    >>> text = "Rats got 5 mg i.v. twice. Dose was e. g. low. Then (n = 3. A) died."
    >>> [text[s:e] for s, e in split_sentences(text, 0, len(text), [])]
    ['Rats got 5 mg i.v. twice.', 'Dose was e. g. low.', 'Then (n = 3. A) died.']
    """
    enclosed = _bracketed(text, start, end) + protected
    sentences: list[Span] = []
    begin = _skip_space(text, start, end)
    for match in _BREAK.finditer(text, start, end):
        stop = match.end()
        nxt = _skip_space(text, stop, end)
        if stop <= begin or any(s < stop and nxt < e for s, e in enclosed):
            continue
        window = text[max(begin, stop - _CONTEXT) : stop] + "\n" + text[nxt : min(end, nxt + _CONTEXT)]
        if _NO_BREAK.search(window):
            continue
        _append(sentences, text, begin, stop)
        begin = nxt
    stop = end
    while stop > begin and text[stop - 1].isspace():
        stop -= 1
    if stop > begin:
        _append(sentences, text, begin, stop)
    return sentences


def _append(sentences: list[Span], text: str, begin: int, stop: int) -> None:
    """Add a sentence; a stray ``.``/``!``/``?`` (as in ``CT. . CIN``) joins the sentence before it."""
    if sentences and not text[begin:stop].strip(".!?"):
        sentences[-1] = (sentences[-1][0], stop)
    else:
        sentences.append((begin, stop))


_BRACKET = re.compile(r"[()\[\]]")
_OPENING = {")": "(", "]": "["}


def _bracketed(text: str, start: int, end: int) -> list[Span]:
    """Spans of matched ``(...)`` and ``[...]`` pairs (each kind matched on its own)."""
    spans: list[Span] = []
    open_at: dict[str, list[int]] = {"(": [], "[": []}
    for match in _BRACKET.finditer(text, start, end):
        char = match[0]
        if char in open_at:
            open_at[char].append(match.start())
        elif open_at[_OPENING[char]]:
            spans.append((open_at[_OPENING[char]].pop(), match.end()))
    return spans


def _skip_space(text: str, i: int, end: int) -> int:
    while i < end and text[i].isspace():
        i += 1
    return i


def document_sentences(doc: Document) -> list[list[Span]]:
    """Token spans per sentence: the title, then the abstract's sentences; no token or sentence cuts a mention."""
    text = doc.text
    mentions = [(m.start, m.end) for m in doc.mentions]
    cuts = sorted({offset for span in mentions for offset in span})
    sentences = []
    for start, end in ((0, len(doc.title)), (len(doc.title) + 1, len(text))):
        for s, e in split_sentences(text, start, end, mentions):
            sentences.append(tokenize(text, s, e, cuts))
    return [tokens for tokens in sentences if tokens]


def tag_tokens(tokens: list[Span], mentions: list[Mention], entity: str) -> list[str]:
    """IOB2 tags of ``tokens`` for ``mentions`` (which must start and end on token boundaries)."""
    tags = ["O"] * len(tokens)
    starts = [s for s, _ in tokens]
    for m in mentions:
        i = bisect.bisect_left(starts, m.start)
        first = i
        while i < len(tokens) and tokens[i][1] <= m.end:
            tags[i] = "B-" + entity if i == first else "I-" + entity
            i += 1
    return tags


# ---------------------------------------------------------------------------------------------------------
# The task


Converted = list[tuple[Document, list[list[Span]], list[list[str]]]]  # (document, token spans, tags)


def _prepare(corpora: Path, out: Path, entity: str) -> dict:
    sources: list[dict] = []
    counts: dict[str, dict] = {}
    agreement: dict[str, dict | None] = {}
    differences: list[str] = []
    for split, name in SPLIT_FILES.items():
        path = corpora / ORIGINAL / name
        if not path.is_file():
            raise BiomtlError(f"BC5CDR file {path} not found (expected the official PubTator corpus)")
        sources.append({"path": f"{ORIGINAL}/{name}", "sha256": sha256(path)})
        docs = read_pubtator(path)
        converted, notes = convert(docs, entity)
        counts[split] = {"documents": len(docs), **_write_conll(out / f"{split}.conll", converted)}
        differences += [f"{split}: {note}" for note in notes]

        iob_path = corpora / IOB_DIRS[entity] / IOB_FILES[split]
        if iob_path.is_file():
            sources.append({"path": f"{IOB_DIRS[entity]}/{IOB_FILES[split]}", "sha256": sha256(iob_path)})
            agreement[split], notes = compare_with_iob(converted, read_iob(iob_path))
            differences += [f"{split}: IOB file: {note}" for note in notes]
        else:
            log.warning("%s not found: no agreement report against the IOB files", iob_path)
            agreement[split] = None
            differences.append(f"{split}: not compared with the IOB file ({iob_path.name} not found)")

    for split, reference in REFERENCE[entity].items():
        if counts[split]["mentions"] != reference:
            differences.append(
                f"{split}: {counts[split]['mentions']} {entity} mentions, BLUE README {reference}"
            )
    differences.append("documents keep the PubTator file order; the IOB files sort them by PMID as a string")
    return {
        "sources": sources,
        "format": f"CoNLL: token<TAB>IOB2 tag (B-{entity}, I-{entity}, O), blank line between sentences",
        "counts": counts,
        "reference": {"source": "BLUE README (Peng et al. 2019): mentions", **REFERENCE[entity]},
        "agreement_with_iob": agreement,
        "differences": differences,
    }


def convert(docs: list[Document], entity: str) -> tuple[Converted, list[str]]:
    """Token spans and IOB2 tags per document, and a note for every place where the conversion adjusted the text.

    The notes cover mentions of both types, because both shape the shared tokens and sentences.
    """
    converted: Converted = []
    notes: list[str] = []
    composite = []
    for doc in docs:
        mentions = sorted((m for m in doc.mentions if m.type == entity), key=lambda m: (m.start, -m.end))
        kept: list[Mention] = []
        for m in mentions:
            if kept and m.start < kept[-1].end:
                notes.append(
                    f"PMID {doc.pmid}: {entity} mention {m.text!r} ({m.start}-{m.end}) overlaps "
                    f"{kept[-1].text!r}; IOB2 cannot nest, so only the outer mention is tagged"
                )
                continue
            kept.append(m)
        sentences = document_sentences(doc)
        tags = [tag_tokens(tokens, kept, entity) for tokens in sentences]
        tagged = sum(tag.startswith("B-") for sent in tags for tag in sent)
        if tagged != len(kept):  # cannot happen: tokens and sentences never cut a mention
            raise BiomtlError(f"BC5CDR PMID {doc.pmid}: {len(kept)} {entity} mentions but {tagged} tagged")
        converted.append((doc, sentences, tags))
        composite += [m.text for m in kept if m.parts]
        notes += _adjustments(doc)
    if composite:
        notes.append(
            f"{len(composite)} composite {entity} mentions (e.g. {composite[0]!r}) are one contiguous span "
            "in PubTator and stay one mention, as in BLUE's counts; their parts are not tagged separately"
        )
    return converted, notes


def _adjustments(doc: Document) -> list[str]:
    """Notes for mentions that end inside a word (the token is cut) or span a would-be sentence break."""
    text, notes = doc.text, []
    breaks = {s for a, b in ((0, len(doc.title)), (len(doc.title) + 1, len(text)))
              for s, _ in split_sentences(text, a, b, [])}  # fmt: skip
    for m in doc.mentions:
        inside_word = [p for p in (m.start, m.end) if 0 < p < len(text) and _is_word(text, p)]
        if inside_word:
            word = _word_at(text, inside_word[0])
            notes.append(
                f"PMID {doc.pmid}: {m.type} mention {m.text!r} ({m.start}-{m.end}) ends inside the word "
                f"{word!r}, which is split there so that the tags keep the official span"
            )
        if any(m.start < b < m.end for b in breaks):
            notes.append(
                f"PMID {doc.pmid}: {m.type} mention {m.text!r} ({m.start}-{m.end}) contains a sentence break "
                "by the splitter's rules; the break is dropped so that the mention stays whole"
            )
    return notes


def _is_word(text: str, i: int) -> bool:
    """Whether offset ``i`` falls between two letters/digits (inside a token)."""
    return text[i - 1 : i + 1].isalnum()


def _word_at(text: str, i: int) -> str:
    start, end = i, i
    while start > 0 and text[start - 1].isalnum():
        start -= 1
    while end < len(text) and text[end].isalnum():
        end += 1
    return text[start:end]


def _write_conll(path: Path, converted: Converted) -> dict:
    sentences = tokens = mentions = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for doc, sents, tags in converted:
            text = doc.text
            for spans, labels in zip(sents, tags, strict=True):
                f.writelines(f"{text[s:e]}\t{label}\n" for (s, e), label in zip(spans, labels, strict=True))
                f.write("\n")
                sentences += 1
                tokens += len(spans)
                mentions += sum(label.startswith("B-") for label in labels)
    return {"sentences": sentences, "tokens": tokens, "mentions": mentions}


# ---------------------------------------------------------------------------------------------------------
# Agreement with the IOB files of Crichton et al. 2017


def read_iob(path: Path) -> list[list[tuple[str, str]]]:
    """Sentences of a ``token<TAB>tag`` file."""
    sentences: list[list[tuple[str, str]]] = [[]]
    for number, line in enumerate(read_lines(path), 1):
        if not line:
            if sentences[-1]:
                sentences.append([])
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0].strip() or not fields[1]:
            raise DataError(path, number, "expected 'token<TAB>tag'")
        sentences[-1].append((fields[0], fields[1]))
    return [s for s in sentences if s]


Tagged = list[tuple[int, Span, str]]  # (sentence number, token span, tag) for the tokens of one document


def compare_with_iob(converted: Converted, iob: list[list[tuple[str, str]]]) -> tuple[dict, list[str]]:
    """Sentence, token, tag and mention agreement with an IOB file, and a note for each disagreement.

    The IOB file has no document markers and another document order, but both tokenisations keep every
    non-space character, so each document is found in the IOB token stream by its characters.
    """
    flat = [(i, token, tag) for i, sent in enumerate(iob) for token, tag in sent]
    stream = "".join(token for _, token, _ in flat)
    token_at: dict[int, int] = {}  # offset in ``stream`` -> index in ``flat`` of the token starting there
    position = 0
    for index, (_, token, _) in enumerate(flat):
        token_at[position] = index
        position += len(token)

    n = dict.fromkeys(["sentences", "tokens", "mentions"], 0)
    iob_n, same = dict(n), dict(n)
    same_tags = 0
    notes = []
    for doc, sents, tags in converted:
        text = doc.text
        visible = [i for i, c in enumerate(text) if not c.isspace()]
        k = token_at.get(stream.find("".join(text[i] for i in visible)))
        if k is None:
            notes.append(f"PMID {doc.pmid} not found")
            continue
        theirs: Tagged = []
        consumed = 0
        while consumed < len(visible):
            sent, token, tag = flat[k]
            if consumed + len(token) > len(visible):
                break  # an IOB token runs past the document's text: compare what lines up
            theirs.append((sent, (visible[consumed], visible[consumed + len(token) - 1] + 1), tag))
            consumed += len(token)
            k += 1
        ours: Tagged = [(i, span, tag) for i, (spans, ts) in enumerate(zip(sents, tags, strict=True))
                        for span, tag in zip(spans, ts, strict=True)]  # fmt: skip

        their_tags = {span: tag for _, span, tag in theirs}
        common = [(span, tag) for _, span, tag in ours if span in their_tags]
        same_tags += sum(their_tags[span] == tag for span, tag in common)
        our_sents, their_sents = _sentence_spans(ours), _sentence_spans(theirs)
        our_mentions, their_mentions = _mention_spans(ours), _mention_spans(theirs)
        for key, ours_of_key, theirs_of_key in (
            ("tokens", {span for _, span, _ in ours}, set(their_tags)),
            ("sentences", our_sents, their_sents),
            ("mentions", our_mentions, their_mentions),
        ):
            n[key] += len(ours_of_key)
            iob_n[key] += len(theirs_of_key)
            same[key] += len(ours_of_key & theirs_of_key)

        for start in sorted({s for s, _ in our_sents} ^ {s for s, _ in their_sents}):
            who = "only we break" if start in {s for s, _ in our_sents} else "only the IOB file breaks"
            notes.append(
                f"PMID {doc.pmid}: {who} before offset {start}: "
                f"{text[max(0, start - 25) : start]!r} | {text[start : start + 25]!r}"
            )
        for s, e in sorted(our_mentions - their_mentions):
            parts = [f"{text[a:b]!r} ({a}-{b})" for a, b in sorted(their_mentions) if a < e and s < b]
            notes.append(
                f"PMID {doc.pmid}: official mention {text[s:e]!r} ({s}-{e}) is tagged as "
                f"{' + '.join(parts) or 'nothing'}"
            )
        for a, b in sorted(their_mentions - our_mentions):
            if not any(s < b and a < e for s, e in our_mentions):
                notes.append(f"PMID {doc.pmid}: tagged {text[a:b]!r} ({a}-{b}) is no official mention")

    counted = {key: {"ours": n[key], "iob": iob_n[key], "same": same[key]} for key in ("sentences", "tokens", "mentions")}
    counted["tokens"]["same_tag_on_same_token"] = same_tags
    stats = {
        **counted,
        "token_agreement": round(same["tokens"] / max(n["tokens"], 1), 5),
        "tag_agreement": round(same_tags / max(same["tokens"], 1), 5),
    }
    return stats, notes


def _sentence_spans(tokens: Tagged) -> set[Span]:
    spans: dict[int, Span] = {}
    for sent, (s, e), _ in tokens:
        spans[sent] = (spans[sent][0], e) if sent in spans else (s, e)
    return set(spans.values())


def _mention_spans(tokens: Tagged) -> set[Span]:
    """Mention spans from IOB2 tags; a mention ends at ``O``, ``B-`` or a sentence break."""
    mentions: set[Span] = set()
    current: Span | None = None
    last_sent = None
    for sent, (s, e), tag in tokens:
        if current and (tag == "O" or tag.startswith("B-") or sent != last_sent):
            mentions.add(current)
            current = None
        if tag != "O":
            current = (current[0], e) if current else (s, e)
        last_sent = sent
    if current:
        mentions.add(current)
    return mentions
