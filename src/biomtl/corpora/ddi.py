"""DDI-2013 (official XML) → BLUE relation-classification files for the ``ddi`` task.

Every ``<pair>`` of a sentence is one example: ``index`` is the pair id, ``sentence`` the sentence with both
drugs replaced by ``@DRUG$``, ``label`` one of :data:`LABELS`. Masking follows BLUE's ``create_ddi_bert.py``
(ncbi-nlp/BLUE_Benchmark) and the released BLUE files, which it matches on every test pair:

- an entity spans ``a``..``b`` inclusive; a discontinuous ``a-b;c-d`` spans from ``a`` to ``d``, the whole
  stretch, as the released files show (``@DRUG$s`` for *aluminum ... hydroxides*);
- two mentions that overlap (or touch) become one ``@DRUG-DRUG$`` covering both;
- every entity type (drug, brand, group, drug_n) becomes ``DRUG``;
- ``\\r``/``\\n`` become spaces and the sentence is stripped.

BLUE carved its dev set out of the official training part by sentence, with no published rule, so the dev
set is the pairs named in BLUE's ``dev.tsv``; train is every other training pair, except the five sentences
of which BLUE kept no pair at all (see :func:`prepare` and the manifest's ``differences``).

The ``ddi-spans`` task (:func:`prepare_spans`) has the same pairs unmasked: the sentence and the two drugs'
character offsets in it, as JSONL.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from biomtl.corpora.files import read_lines, sha256, utf8, write_jsonl, write_tsv
from biomtl.corpora.masking import mask_pair
from biomtl.errors import BiomtlError, DataError

log = logging.getLogger(__name__)

ZIP = "DDI/original/DDICorpus-2013.zip"
BLUE_DEV = "DDI/blue/dev.tsv"
BLUE_TRAIN_POSITIVES = "DDI/blue/ftrain.tsv"
BLUE_TEST = "DDI/blue/test.tsv"
TRAIN_PARTS = ("DDICorpus/Train/DrugBank/", "DDICorpus/Train/MedLine/")
TEST_PARTS = (
    "DDICorpus/Test/Test for DDI Extraction task/DrugBank/",
    "DDICorpus/Test/Test for DDI Extraction task/MedLine/",
)
NER_TEST_PART = "DDICorpus/Test/Test for DrugNER task/"
ENTITY_TYPES = ("drug", "brand", "group", "drug_n")
FALSE = "DDI-false"
LABELS = ("DDI-advise", "DDI-effect", "DDI-int", "DDI-mechanism", FALSE)
MASK = "@DRUG$"
OVERLAP_MASK = "@DRUG-DRUG$"
# Positive pairs in the BLUE README (Peng et al. 2019).
REFERENCE = {"train": 2937, "dev": 1004, "test": 979}
SPLITS = ("train", "dev", "test")

Span = tuple[int, int]  # half-open character offsets into the sentence text
_OFFSET = re.compile(r"\d+-\d+(;\d+-\d+)*")
_ID_NUMBERS = re.compile(r"\.[dsp](\d+)")


@dataclass(frozen=True)
class Pair:
    """One candidate drug pair: the sentence (cleaned, not masked) and the spans of ``e1`` and ``e2`` in it.
    Both task files are written from these fields: ``ddi`` masks the drugs (:attr:`sentence`), ``ddi-spans``
    keeps the text (:meth:`record`)."""

    id: str
    sentence_id: str
    text: str
    first: Span
    second: Span
    types: tuple[str, str]  # of e1 and e2: drug, brand, group or drug_n
    label: str | None  # None: ddi="true" without a type (BLUE's script would write ``DDI-None``)
    source: str  # ``zip:member``, for error messages
    line: int | None

    @property
    def sentence(self) -> str:
        """The sentence with both drugs masked, as the ``ddi`` task has it."""
        return mask(self.text, self.first, self.second)

    def record(self) -> dict:
        """The pair as ``ddi-spans`` has it: ``e1`` first, then ``e2``."""
        entities = [(*self.first, self.types[0]), (*self.second, self.types[1])]
        return {
            "id": self.id,
            "text": self.text,
            "entities": [{"start": start, "end": end, "type": kind} for start, end, kind in entities],
            "label": self.label,
        }


def entity_span(char_offset: str) -> Span:
    """Half-open span of a ``charOffset``; a discontinuous mention covers its whole stretch.

    >>> entity_span("4-9;20-27")
    (4, 28)
    """
    if not _OFFSET.fullmatch(char_offset):
        raise ValueError(f"bad charOffset {char_offset!r}")
    bounds = [int(x) for part in char_offset.split(";") for x in part.split("-")]
    return min(bounds), max(bounds) + 1


def mask(text: str, first: Span, second: Span) -> str:
    """Replace both mentions by ``@DRUG$``, or overlapping ones by a single ``@DRUG-DRUG$``.

    As in BLUE, mentions whose closed intervals meet count as overlapping.

    >>> mask("Aspirin and warfarin interact.", (0, 7), (12, 20))
    '@DRUG$ and @DRUG$ interact.'
    >>> mask("R- and S-warfarin levels", (0, 17), (7, 17))
    '@DRUG-DRUG$ levels'
    """
    return mask_pair(text, (*first, MASK), (*second, MASK), OVERLAP_MASK)


def clean(text: str) -> tuple[str, int]:
    """One line of text: CR, LF and tab become spaces (one each); surrounding whitespace goes. Returns the
    line and how many characters went from the start (an offset into ``text`` moves back by as many).

    >>> clean(" Aspirin\\r\\nand warfarin.\\n")
    ('Aspirin  and warfarin.', 1)
    """
    line = text.translate({ord("\r"): " ", ord("\n"): " ", ord("\t"): " "})
    stripped = line.lstrip()
    return stripped.rstrip(), len(line) - len(stripped)


def parse_document(data: bytes, where: str) -> list[Pair]:
    """All pairs of one DDI XML document; ``where`` names the file in error messages."""
    utf8(data, where)  # the corpus is UTF-8: a bad byte is reported as such, with its line and column
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise DataError(where, e.position[0], f"malformed XML: {e}") from None
    pairs = []
    for sentence in root.iter("sentence"):
        text = _required(sentence, "text", data, where)
        line_text, shift = clean(text)
        sentence_id = _required(sentence, "id", data, where)
        spans: dict[str, Span] = {}  # into line_text
        types: dict[str, str] = {}
        for entity in sentence.findall("entity"):
            entity_id = _required(entity, "id", data, where)
            try:
                start, end = entity_span(_required(entity, "charOffset", data, where))
            except ValueError as e:
                raise DataError(where, _line_of(data, entity_id), f"entity {entity_id}: {e}") from None
            if end > len(text):
                raise DataError(
                    where, _line_of(data, entity_id), f"entity {entity_id} ends at {end}, after the sentence"
                )
            spans[entity_id] = start - shift, end - shift
            if not 0 <= start - shift < end - shift <= len(line_text):
                raise DataError(
                    where, _line_of(data, entity_id), f"entity {entity_id} lies in the space around the sentence"
                )
            types[entity_id] = _required(entity, "type", data, where)
            if types[entity_id] not in ENTITY_TYPES:
                raise DataError(
                    where,
                    _line_of(data, entity_id),
                    f"entity {entity_id} has type {types[entity_id]!r}; expected one of {', '.join(ENTITY_TYPES)}",
                )
        for pair in sentence.findall("pair"):
            pair_id = _required(pair, "id", data, where)
            line = _line_of(data, pair_id)
            e1, e2 = _required(pair, "e1", data, where), _required(pair, "e2", data, where)
            unknown = [e for e in (e1, e2) if e not in spans]
            if unknown:
                raise DataError(where, line, f"pair {pair_id} names unknown entity {unknown[0]}")
            ddi = pair.get("ddi")
            if ddi not in ("true", "false"):
                raise DataError(where, line, f"pair {pair_id} has ddi={ddi!r}; expected 'true' or 'false'")
            label = FALSE if ddi == "false" else (f"DDI-{pair.get('type')}" if pair.get("type") else None)
            if label is not None and label not in LABELS:
                raise DataError(where, line, f"pair {pair_id} has unknown type {pair.get('type')!r}")
            pair_types = types[e1], types[e2]
            pairs.append(Pair(pair_id, sentence_id, line_text, spans[e1], spans[e2], pair_types, label, where, line))
    return pairs


def _required(element: ET.Element, name: str, data: bytes, where: str) -> str:
    value = element.get(name)
    if value is None:
        ident = element.get("id")
        what = f"<{element.tag} id={ident!r}>" if ident else f"a <{element.tag}>"
        raise DataError(where, _line_of(data, ident) if ident else None, f"{what} has no {name} attribute")
    return value


def _line_of(data: bytes, ident: str) -> int | None:
    """Line of the element whose ``id`` is ``ident`` (ElementTree keeps no line numbers)."""
    index = data.find(f'id="{ident}"'.encode())
    return data.count(b"\n", 0, index) + 1 if index >= 0 else None


def read_pairs(zip_path: Path, parts: tuple[str, ...]) -> list[Pair]:
    """Pairs of every ``.xml`` member under ``parts`` of the corpus zip, in id order."""
    pairs = []
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = sorted(n for n in archive.namelist() if n.startswith(parts) and n.endswith(".xml"))
            if not members:
                raise BiomtlError(f"{zip_path} has no XML files under {', '.join(parts)}")
            for member in members:
                pairs += parse_document(archive.read(member), f"{zip_path}:{member}")
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise BiomtlError(f"{zip_path} is not a readable zip file: {e}") from None
    if not pairs:
        raise BiomtlError(f"{zip_path} has no sentence pairs under {', '.join(parts)}")
    seen = Counter(p.id for p in pairs)
    duplicated = [i for i, n in seen.items() if n > 1]
    if duplicated:
        raise BiomtlError(f"{zip_path}: pair id {duplicated[0]} occurs {seen[duplicated[0]]} times")
    return sorted(pairs, key=lambda p: _id_key(p.id))


def _id_key(pair_id: str) -> tuple[str, tuple[int, ...]]:
    """``DDI-DrugBank.d12.s3.p4`` → ``("DDI-DrugBank", (12, 3, 4))``: documents in numeric order."""
    return pair_id.split(".", 1)[0], tuple(int(n) for n in _ID_NUMBERS.findall(pair_id))


def read_blue(path: Path) -> dict[str, tuple[str, str]]:
    """A BLUE TSV (no header, no quoting): ``{id: (sentence, label)}``."""
    rows = {}
    for number, line in enumerate(read_lines(path), start=1):
        row = line.split("\t")
        if len(row) != 3:
            raise DataError(path, number, f"expected 3 tab-separated columns, found {len(row)}")
        rows[row[0]] = (row[1], row[2])
    return rows


# ---------------------------------------------------------------------------------------------------------
# The task


@dataclass(frozen=True)
class Splits:
    """The pairs of each split and what they were made from."""

    sources: list[dict]  # path and sha256 of every file read
    blue: dict[str, dict[str, tuple[str, str]]]  # BLUE's dev, train positives and (if present) test files
    pool: list[Pair]  # every official training pair
    omitted: dict[str, list[Pair]]  # training sentences left out: {sentence id: pairs}
    pairs: dict[str, list[Pair]]  # {split: pairs}


def prepare(corpora: Path, out: Path) -> dict:
    """Write ``out/{train,dev,test}.tsv`` (header ``index sentence label``) and return the manifest part.

    Test is the official *Test for DDI Extraction task*. Dev is the training pairs named in BLUE's
    ``dev.tsv``. Train is the other training pairs, less the sentences with positive pairs none of which is
    in BLUE's train positives (``ftrain.tsv``): BLUE kept no pair of these five sentences.

    >>> prepare(Path("../shared/data"), Path("/tmp/ddi"))["counts"]["test"]["positives"]  # doctest: +SKIP
    979
    """
    made = read_splits(corpora)
    blue, splits = made.blue, made.pairs
    counts = {split: _write(out / f"{split}.tsv", pairs) for split, pairs in splits.items()}
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    agreement = {
        "train_positives": _agreement([p for p in train if p.label != FALSE], blue["train"]),
        "dev": _agreement(dev, blue["dev"]),
        "test": _agreement(test, blue["test"]) if "test" in blue else None,
    }
    return {
        "sources": made.sources,
        "format": "TSV with header index<TAB>sentence<TAB>label; drugs masked as @DRUG$ (@DRUG-DRUG$ if overlapping)",
        "labels": list(LABELS),
        "split_rule": _SPLIT_RULE,
        "counts": counts,
        "reference": {"source": "BLUE README (Peng et al. 2019), positive pairs", **REFERENCE},
        "differences": _differences(corpora / ZIP, made.pool, splits, made.omitted, blue),
        "blue_agreement": agreement,
    }


def prepare_spans(corpora: Path, out: Path) -> dict:
    """Write ``out/{train,dev,test}.jsonl`` for ``ddi-spans`` and return the manifest part.

    The pairs of :func:`prepare`, in its order, with its ids, labels and splits, but with the sentence not
    masked and the two drugs given as character offsets into it (``e1`` first, then ``e2``), so that one
    encoder pass over a sentence serves all its pairs. Masking ``text`` at the two spans gives the ``ddi``
    sentence.

    >>> prepare_spans(Path("../shared/data"), Path("/tmp/ddi-spans"))["counts"]["test"]["rows"]  # doctest: +SKIP
    5716
    """
    made = read_splits(corpora)
    counts = {}
    for split, pairs in made.pairs.items():
        counts[split] = _counts(pairs)  # before writing: it refuses a typeless positive pair
        write_jsonl(out / f"{split}.jsonl", (pair.record() for pair in pairs))
    return {
        "sources": made.sources,
        "format": (
            'JSONL, one object per row of the ddi task (same order, ids and labels): {"id": the pair id, "text": '
            'the sentence (CR, LF and tab as spaces, stripped), not masked, "entities": [e1, e2] as {"start", '
            '"end", "type"} (character offsets into text, end exclusive, a discontinuous mention covering its '
            'whole stretch; type drug, brand, group or drug_n; overlapping mentions kept as they are), "label"}'
        ),
        "labels": list(LABELS),
        "split_rule": _SPLIT_RULE,
        "counts": counts,
        "reference": {"source": "BLUE README (Peng et al. 2019), positive pairs", **REFERENCE},
        "differences": "the pairs of the ddi task; its manifest explains how they differ from BLUE's",
    }


def read_splits(corpora: Path) -> Splits:
    """The pairs of train, dev and test (see :func:`prepare` for the rule), from the corpus zip and BLUE's files."""
    zip_path = corpora / ZIP
    if not zip_path.is_file():
        raise BiomtlError(f"DDI corpus {zip_path} not found (expected the official DDICorpus-2013.zip)")
    train_pool, test = read_pairs(zip_path, TRAIN_PARTS), read_pairs(zip_path, TEST_PARTS)
    sources = [{"path": ZIP, "sha256": sha256(zip_path)}]
    blue = {}
    for split, name in (("dev", BLUE_DEV), ("train", BLUE_TRAIN_POSITIVES), ("test", BLUE_TEST)):
        path = corpora / name
        if path.is_file():
            sources.append({"path": name, "sha256": sha256(path)})
            blue[split] = read_blue(path)
        elif split != "test":
            raise BiomtlError(f"BLUE file {path} not found: it defines the DDI {split} split")
        else:
            log.warning("%s not found: skipping the agreement report for test", path)

    unknown = sorted(set(blue["dev"]) - {p.id for p in train_pool}, key=_id_key)
    if unknown:
        raise BiomtlError(
            f"{corpora / BLUE_DEV}: {len(unknown)} pair ids, e.g. {unknown[0]}, are not in {zip_path}"
        )
    dev = [p for p in train_pool if p.id in blue["dev"]]
    omitted = _omitted_sentences(train_pool, blue["dev"], blue["train"])
    train = [p for p in train_pool if p.id not in blue["dev"] and p.sentence_id not in omitted]
    return Splits(sources, blue, train_pool, omitted, {"train": train, "dev": dev, "test": test})


_SPLIT_RULE = (
    "test: every pair of the official 'Test for DDI Extraction task' (DrugBank + MedLine). "
    "dev: the official training pairs whose ids are in BLUE's dev.tsv. BLUE drew its dev set from the official "
    "training part by sentence (all pairs of a sentence go together, with one exception listed in differences), "
    "not by document, and published no rule; no rule derived from the data reproduces it (hashes of sentence "
    "ids or texts modulo 2-20 were tried), so BLUE's ids are the rule. train: the other official training "
    "pairs, except the sentences that have positive pairs none of which is among BLUE's train positives "
    "(ftrain.tsv): BLUE kept no pair of those sentences (see differences)."
)


def _omitted_sentences(
    pool: list[Pair], dev_ids: dict[str, tuple[str, str]], train_positive_ids: dict[str, tuple[str, str]]
) -> dict[str, list[Pair]]:
    """Non-dev sentences with positive pairs of which BLUE's train keeps none: ``{sentence id: pairs}``."""
    by_sentence: dict[str, list[Pair]] = defaultdict(list)
    for pair in pool:
        if pair.id not in dev_ids:
            by_sentence[pair.sentence_id].append(pair)
    return {
        sentence: pairs
        for sentence, pairs in by_sentence.items()
        if any(p.label != FALSE for p in pairs) and not any(p.id in train_positive_ids for p in pairs)
    }


def _write(path: Path, pairs: list[Pair]) -> dict:
    """Write one split; returns its counts."""
    counts = _counts(pairs)
    write_tsv(path, ["index", "sentence", "label"], [(pair.id, pair.sentence, pair.label) for pair in pairs])
    return counts


def _counts(pairs: list[Pair]) -> dict:
    """The counts of one split. A typeless positive pair cannot be written."""
    typeless = next((pair for pair in pairs if pair.label is None), None)
    if typeless is not None:
        raise DataError(typeless.source, typeless.line, f'pair {typeless.id} has ddi="true" but no type')
    labels = Counter(pair.label for pair in pairs)
    return {
        "rows": len(pairs),
        "positives": len(pairs) - labels[FALSE],
        "labels": {label: labels[label] for label in LABELS},
    }


def _agreement(pairs: list[Pair], blue: dict[str, tuple[str, str]]) -> dict:
    """How far ``pairs`` agree with a BLUE file: ids, then labels and masked text of the shared ids."""
    ours = {p.id: p for p in pairs}
    shared = [i for i in ours if i in blue]
    text_differs = [i for i in shared if ours[i].sentence != blue[i][0]]
    return {
        "rows": len(ours),
        "blue_rows": len(blue),
        "shared_ids": len(shared),
        "only_here": len(ours) - len(shared),
        "only_blue": len(blue) - len(shared),
        "same_label": sum(ours[i].label == blue[i][1] for i in shared),
        "same_sentence": len(shared) - len(text_differs),
        "sentence_differs_examples": [
            {"index": i, "here": ours[i].sentence, "blue": blue[i][0]} for i in text_differs[:3]
        ],
    }


def _differences(
    zip_path: Path,
    pool: list[Pair],
    splits: dict[str, list[Pair]],
    omitted: dict[str, list[Pair]],
    blue: dict[str, dict[str, tuple[str, str]]],
) -> list[dict]:
    """Every known way in which these files differ from the official corpus or from BLUE, with counts."""
    differences = [
        _omitted_training(pool, splits, omitted, blue),
        _dev_sentences_split(pool, splits, blue),
        _dev_documents_in_train(splits),
    ]
    if "test" in blue:
        differences.append(_extra_test_rows(zip_path, splits, blue))
    differences.append(_texts_differ(splits, blue))
    return differences


def _omitted_training(
    pool: list[Pair], splits: dict[str, list[Pair]], omitted: dict[str, list[Pair]], blue: dict[str, dict[str, tuple[str, str]]]
) -> dict:
    omitted_pairs = [p for pairs in omitted.values() for p in pairs]
    official = sum(p.label != FALSE for p in pool)
    dev_positives = sum(p.label != FALSE for p in splits["dev"])
    omitted_positives = sum(p.label != FALSE for p in omitted_pairs)
    return {
        "what": "official training sentences left out (BLUE kept none of their pairs)",
        "sentences": len(omitted),
        "pairs": len(omitted_pairs),
        "positives": omitted_positives,
        "positives_per_label": dict(
            Counter(p.label or "ddi=true without type" for p in omitted_pairs if p.label != FALSE)
        ),
        "examples": [
            {"sentence": s, "pairs": len(ps), "positives": sum(p.label != FALSE for p in ps)}
            for s, ps in omitted.items()
        ],
        "why": (
            f"These are all the official training positives that BLUE lacks ({official} official = "
            f"{len(blue['train'])} BLUE train + {dev_positives} BLUE dev + {omitted_positives}). BLUE has none "
            "of their pairs; they are not duplicates of kept sentences, not test sentences, and not all long "
            "(three have one pair), so these files do not show why. Most likely BLUE's copy of the corpus "
            "differed there: this zip last changed in 2020, after BLUE, and BLUE's text differs from it "
            'elsewhere too (see below). They hold the one pair with ddi="true" and no type, which BLUE\'s '
            "script would have labelled DDI-None."
        ),
        "typeless_positive_pairs": [p.id for p in pool if p.label is None],
    }


def _dev_sentences_split(pool: list[Pair], splits: dict[str, list[Pair]], blue: dict[str, dict[str, tuple[str, str]]]) -> dict:
    dev_sentences = {p.sentence_id for p in splits["dev"]}
    split_sentence = [p for p in pool if p.sentence_id in dev_sentences and p.id not in blue["dev"]]
    return {
        "what": "pairs of a BLUE dev sentence that are not in BLUE's dev.tsv; written to train",
        "count": len(split_sentence),
        "labels": dict(Counter(p.label for p in split_sentence)),
        "examples": [p.id for p in split_sentence[:5]],
    }


def _dev_documents_in_train(splits: dict[str, list[Pair]]) -> dict:
    dev_docs = {_document_of(p.id) for p in splits["dev"]}
    return {
        "what": "dev is not document-disjoint from train (BLUE split by sentence)",
        "dev_documents": len(dev_docs),
        "dev_documents_also_in_train": len(dev_docs & {_document_of(p.id) for p in splits["train"]}),
    }


def _extra_test_rows(zip_path: Path, splits: dict[str, list[Pair]], blue: dict[str, dict[str, tuple[str, str]]]) -> dict:
    test_ids = {p.id for p in splits["test"]}
    extra = sorted((i for i in blue["test"] if i not in test_ids), key=_id_key)
    ner = {p.sentence: p.id for p in read_pairs(zip_path, (NER_TEST_PART,))}
    return {
        "what": "BLUE test rows not in the official DDI Extraction test set; not written",
        "count": len(extra),
        "labels": dict(Counter(blue["test"][i][1] for i in extra)),
        "masked_sentence_equals_a_DrugNER_test_pair": sum(blue["test"][i][0] in ner for i in extra),
        "examples": extra[:3],
        "why": (
            "BLUE's test has the pairs of a 'Test for DrugNER task' document (21928724.xml, DDI-MedLine.d206 "
            f"here) under the ids DrugDDI.d21928724.*; the official DDI Extraction test set (and BLURB) has "
            f"{len(test_ids)} pairs without it."
        ),
    }


def _texts_differ(splits: dict[str, list[Pair]], blue: dict[str, dict[str, tuple[str, str]]]) -> dict:
    text_differs = [
        p
        for split, pairs in splits.items()
        for p in pairs
        if p.id in blue.get(split, {}) and p.sentence != blue[split][p.id][0]
    ]
    return {
        "what": "rows whose masked sentence differs from BLUE's (same id and label)",
        "count": len(text_differs),
        "sentences": sorted({p.sentence_id for p in text_differs}, key=_id_key),
        "why": (
            "BLUE's corpus copy has two spaces where this zip has one (after the bracketed MedLine title, "
            "'...neuroleptics]  It has'); the masks are in the same places."
        ),
    }


def _document_of(pair_id: str) -> str:
    return pair_id.split(".s", 1)[0]
