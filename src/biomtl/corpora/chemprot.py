"""ChemProt (BioCreative VI, official TSVs) → BLUE relation-classification files for the ``chemprot`` task.

Every chemical × gene pair of mentions that lie in one sentence is one example: ``index`` is
``PMID.T<chemical>.T<gene>``, ``sentence`` the sentence with the chemical replaced by ``@CHEMICAL$`` and the
gene by ``@GENE$``, ``label`` one of :data:`LABELS` (a pair with two evaluated relations gives two rows).
This follows BLUE's ``create_chemprot_bert.py`` (ncbi-nlp/BLUE_Benchmark) and the released BLUE files:

- the text is ``title + " " + abstract``, folded to ASCII as BLUE folds it (Greek letters spelled out with
  their first Latin letter(s), ``±`` → ``+``, ...; see :func:`fold_ascii`);
- sentences come from syntok (BLUE used spaCy's ``en_core_web_sm``; :data:`MEASURED_SPLITTERS` compares),
  then a piece is glued to the previous one unless that ends with ``.``, ``?`` or ``!`` (not ``i.v.``), and a
  leading list number (``2. The ...``) stays with the previous sentence, as spaCy left it in BLUE's files;
- a boundary that would cut a mention is removed (BLUE silently dropped such mentions);
- the positive labels are the evaluated groups CPR:3, 4, 5, 6 and 9 (flag ``Y``); a relation listed twice
  is written once (BLUE's counts have each once); every other pair is ``false``;
- two mentions that overlap (or touch) become one ``@CHEM-GENE$`` covering both.

The ``chemprot-spans`` task (:func:`prepare_spans`) has the same rows unmasked: the sentence and the two
mentions' character offsets in it, as JSONL.

Unlike BLUE's script, the masks name the right mentions: BLUE swapped the offsets of the two mentions when
the gene came first but not their types, so its ``@CHEMICAL$`` is always the *earlier* mention (the
agreement report counts both ways). BLUE also placed masks in its ASCII-folded text using the unfolded
offsets; here the offsets are mapped.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import re
import unicodedata
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from biomtl.corpora.files import decode, read_text, sha256, write_jsonl, write_tsv
from biomtl.corpora.masking import mask_pair
from biomtl.errors import BiomtlError, DataError
from biomtl.sentences import Span, keep_mentions_whole, sentence_spans

log = logging.getLogger(__name__)

ZIP = "ChemProt/original/ChemProt.zip"
# BLUE's files: dev is complete; train and test hold the positive pairs only.
BLUE_FILES = {
    "train": "ChemProt/blue/ndtrain.tsv",
    "dev": "ChemProt/blue/dev.tsv",
    "test": "ChemProt/blue/ftest.tsv",
}
MEMBERS = {
    "train": (
        "chemprot_training_abstracts.tsv",
        "chemprot_training_entities.tsv",
        "chemprot_training_relations.tsv",
    ),
    "dev": (
        "chemprot_development_abstracts.tsv",
        "chemprot_development_entities.tsv",
        "chemprot_development_relations.tsv",
    ),
    "test": (
        "chemprot_test_abstracts_gs.tsv",
        "chemprot_test_entities_gs.tsv",
        "chemprot_test_relations_gs.tsv",
    ),
}
SPLITS = ("train", "dev", "test")
FALSE = "false"
EVALUATED = ("CPR:3", "CPR:4", "CPR:5", "CPR:6", "CPR:9")
LABELS = (*EVALUATED, FALSE)
CHEMICAL = "CHEMICAL"
GENES = ("GENE-Y", "GENE-N")
CHEMICAL_MASK, GENE_MASK, OVERLAP_MASK = "@CHEMICAL$", "@GENE$", "@CHEM-GENE$"
# Positive pairs in the BLUE README (Peng et al. 2019).
REFERENCE = {"train": 4154, "dev": 2416, "test": 3458}

# Sentence splitters tried in place of spaCy, each inside the same rules (ASCII folding, gluing, list numbers,
# whole mentions). positives: train/dev/test; dev_pairs: the dev pair ids compared with BLUE's complete
# dev.tsv (11,816 distinct ids); dev_same_sentence: shared pairs whose masked sentence equals BLUE's once the
# masks are put in BLUE's order; seconds: converting the three splits on 2 cores.
MEASURED_SPLITTERS = {
    "syntok 1.4.4 + bracketed-title rule (used)": {
        "positives": [4154, 2416, 3458],
        "dev_pairs": {"shared": 11468, "only_here": 220, "only_blue": 348},
        "dev_same_sentence": 10754,
        "seconds": 5,
    },
    "syntok 1.4.4": {
        "positives": [4154, 2416, 3458],
        "dev_pairs": {"shared": 11468, "only_here": 269, "only_blue": 348},
        "dev_same_sentence": 10698,
        "seconds": 6,
    },
    "pysbd 0.3.4": {
        "positives": [4151, 2416, 3458],
        "dev_pairs": {"shared": 11354, "only_here": 70, "only_blue": 462},
        "dev_same_sentence": 10617,
        "seconds": 31,
    },
    "segtok 1.5.11": {
        "positives": [4155, 2416, 3458],
        "dev_pairs": {"shared": 11304, "only_here": 9, "only_blue": 512},
        "dev_same_sentence": 10496,
        "seconds": 5,
    },
    "blingfire 0.1.8": {
        "positives": [4157, 2416, 3458],
        "dev_pairs": {"shared": 11422, "only_here": 250, "only_blue": 394},
        "dev_same_sentence": 10592,
        "seconds": 2,
    },
    "sentence-splitter 1.4": {
        "positives": [4157, 2416, 3458],
        "dev_pairs": {"shared": 11422, "only_here": 215, "only_blue": 394},
        "dev_same_sentence": 10710,
        "seconds": 14,
    },
    "sentencex 1.0.32": {
        "positives": [4152, 2416, 3458],
        "dev_pairs": {"shared": 11390, "only_here": 723, "only_blue": 426},
        "dev_same_sentence": 10602,
        "seconds": 1,
    },
}
SPLITTER_CHOICE = (
    "syntok is the only splitter whose positive pairs are exactly BLUE's in all three splits (the same 4154 / "
    "2416 / 3458 ids; like spaCy it splits 'disease.The drugs', which loses the 3 train relations BLUE lost "
    "too), it shares the most dev pairs with BLUE, and it is fast. With one added rule (end a sentence after a "
    "bracketed title, '...rats]. OBJECTIVE', as spaCy did) it also has the most dev sentences equal to BLUE's. "
    "The dev pairs that still differ come from spaCy's own choices: it sometimes misses a plain boundary "
    "('... metabolism. Food intake ...', titles) and splits after 'ref.' or before lowercase-initial "
    "sentences ('t-Hcys was ...'); a rule for the latter helped dev but hurt train and test, so it is not used."
)


# ---------------------------------------------------------------------------------------------------------
# Reading the official files


@dataclass(frozen=True)
class Mention:
    """One entity mention; ``start``/``end`` index into the document text (title + " " + abstract)."""

    id: str
    type: str
    start: int
    end: int

    @property
    def is_chemical(self) -> bool:
        return self.type == CHEMICAL


@dataclass(frozen=True)
class Relation:
    """One evaluated relation (flag ``Y``) between a chemical (Arg1) and a gene (Arg2)."""

    chemical: str
    gene: str
    label: str
    line: int


@dataclass
class Document:
    """An abstract with its mentions (by id) and evaluated relations."""

    pmid: str
    text: str
    mentions: dict[str, Mention] = field(default_factory=dict)
    relations: list[Relation] = field(default_factory=list)


_PMID = re.compile(r"\d+")
_MENTION_ID = re.compile(r"T\d+")
_GROUP = re.compile(r"CPR:\d+")
_ARGS = re.compile(r"Arg1:(T\d+) Arg2:(T\d+)")


def read_split(archive: zipfile.ZipFile, members: Sequence[str], where: str) -> list[Document]:
    """The documents of one split from its abstracts, entities and relations members, in PMID order.

    ``where`` names the zip in error messages (``where:member:line: message``).
    """
    abstracts, entities, relations = (_lines(archive, name, where) for name in members)
    docs: dict[str, Document] = {}
    for path, line, fields in abstracts:
        pmid, title, abstract = _fields(fields, 3, path, line)
        _check(_PMID.fullmatch(pmid), path, line, f"PMID {pmid!r} is not a number")
        _check(pmid not in docs, path, line, f"PMID {pmid} occurs twice")
        docs[pmid] = Document(pmid, f"{title} {abstract}")
    if not docs:
        raise BiomtlError(f"{where}: {members[0]} holds no abstracts")
    for path, line, fields in entities:
        pmid, ident, kind, start, end, text = _fields(fields, 6, path, line)
        doc = _document(docs, pmid, path, line)
        _check(_MENTION_ID.fullmatch(ident), path, line, f"entity id {ident!r} is not T<number>")
        _check(ident not in doc.mentions, path, line, f"entity {ident} of {pmid} occurs twice")
        _check(
            kind in (CHEMICAL, *GENES),
            path,
            line,
            f"entity type {kind!r} is not one of CHEMICAL, GENE-Y, GENE-N",
        )
        _check(start.isdigit() and end.isdigit(), path, line, f"offsets {start!r}-{end!r} are not numbers")
        mention = Mention(ident, kind, int(start), int(end))
        _check(
            mention.start < mention.end <= len(doc.text),
            path,
            line,
            f"offsets {start}-{end} are out of range",
        )
        found = doc.text[mention.start : mention.end]
        _check(found == text, path, line, f"entity {ident} is {text!r} but the abstract has {found!r} there")
        doc.mentions[ident] = mention
    for path, line, fields in relations:
        pmid, group, flag, _, arg1, arg2 = (f.strip() for f in _fields(fields, 6, path, line))
        doc = _document(docs, pmid, path, line)
        _check(_GROUP.fullmatch(group), path, line, f"relation group {group!r} is not CPR:<number>")
        _check(flag in ("Y", "N"), path, line, f"evaluation flag {flag!r} is not Y or N")
        _check(
            (flag == "Y") == (group in EVALUATED),
            path,
            line,
            f"{group} is flagged {flag}; only {', '.join(EVALUATED)} are evaluated (Y)",
        )
        args = _ARGS.fullmatch(f"{arg1} {arg2}")
        if args is None:
            raise DataError(path, line, f"arguments {arg1!r} {arg2!r} are not Arg1:T<number> Arg2:T<number>")
        chemical, gene = args.groups()
        for ident in (chemical, gene):
            _check(ident in doc.mentions, path, line, f"relation names unknown entity {ident} of {pmid}")
        if flag == "Y":
            doc.relations.append(Relation(chemical, gene, group, line))
    return [docs[pmid] for pmid in sorted(docs, key=int)]


def _lines(archive: zipfile.ZipFile, name: str, where: str) -> Iterable[tuple[str, int, list[str]]]:
    """``(path, line number, fields)`` of each non-blank line of the member named ``name``.

    The member may sit in a folder (the official release has ``chemprot_training/...``); macOS ``__MACOSX``
    copies are ignored.
    """
    found = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == name and not n.startswith("__MACOSX/")]
    if len(found) != 1:
        raise BiomtlError(f"{where} has {len(found) or 'no'} member(s) named {name}; expected one")
    path = f"{where}:{found[0]}"
    try:
        raw = archive.read(found[0])
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise BiomtlError(f"{path}: cannot unpack ({e})") from None
    text = decode(raw, path)
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            yield path, number, line.split("\t")


def _fields(fields: list[str], n: int, path: str, line: int) -> list[str]:
    _check(len(fields) == n, path, line, f"expected {n} tab-separated fields, found {len(fields)}")
    return fields


def _document(docs: dict[str, Document], pmid: str, path: str, line: int) -> Document:
    _check(pmid in docs, path, line, f"PMID {pmid} is not in the abstracts file")
    return docs[pmid]


def _check(ok: object, path: str, line: int, message: str) -> None:
    if not ok:
        raise DataError(path, line, message)


# ---------------------------------------------------------------------------------------------------------
# Text: ASCII folding, sentences, masks

# BLUE folds the text to ASCII before splitting (its ``pstring.printable(greeklish=True)``): Greek letters
# take their first Latin transliteration, a few symbols get a look-alike, and characters it does not know
# are dropped. These are its choices for the characters NFKD does not bring to ASCII by itself.
_GREEK = dict(zip("αβγδεζηικλμνξοπρσςτυφχω", "abgdezhiklmnxoprsstyfxw", strict=True))
_GREEK |= dict(zip("ΑΒΓΔΕΖΗΙΚΛΜΝΞΟΠΡΣΤΥΦΧΩ", "ABGDEZHIKLMNXOPRSTYFXw", strict=True))
_GREEK |= {"θ": "th", "Θ": "TH", "ψ": "ps", "Ψ": "PS"}
_LOOKALIKES = {
    "+": "±⁺",
    "-": "⁻",
    "*": "·°×⋅∗•\uf8ff",
    "~": "∼∞\u0303",
    "=": "≈≃═",
    ">": "≥⩾≫→",
    "<": "≤⩽≪↔↓",
    '"': "″‴",
    "'": "´",
    ".": "…",
    "(": "〈",
    ")": "〉",
    "m": "µø",
    "b": "ß",
    "c": "©",
    "r": "®",
    "T": "™",
    "e": "ɛ",
    "k": "к",
    "E": "∑",
    "f": "ƒ",
    "o": "œ",
    "x": "\ue232\ue2f6",
}
_FOLD = _GREEK | {char: look for look, chars in _LOOKALIKES.items() for char in chars}


def fold_ascii(text: str) -> tuple[str, list[int]]:
    """``text`` in ASCII as BLUE folds it, and where each offset of ``text`` lands in the result.

    ``positions`` has ``len(text) + 1`` entries, so a span ``(s, e)`` maps to ``(positions[s], positions[e])``.
    Whitespace becomes a space; a character with no ASCII form is dropped.

    >>> fold_ascii("TNF-α ± 5\u00a0μM θ")
    ('TNF-a + 5 mM th', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15])
    """
    out: list[str] = []
    positions = [0]
    length = 0
    for char in text:
        if char.isascii():
            folded = " " if char.isspace() else char
        elif char.isspace():
            folded = " "
        elif char in _FOLD:
            folded = _FOLD[char]
        else:
            folded = "".join(c for c in unicodedata.normalize("NFKD", char) if c.isascii())
        out.append(folded)
        length += len(folded)
        positions.append(length)
    return "".join(out), positions


def mask(text: str, chemical: Span, gene: Span) -> str:
    """Replace the chemical by ``@CHEMICAL$`` and the gene by ``@GENE$``, or both by one ``@CHEM-GENE$``.

    As in BLUE, mentions whose closed intervals meet count as overlapping.

    >>> mask("Aspirin inhibits COX-1.", (0, 7), (17, 22))
    '@CHEMICAL$ inhibits @GENE$.'
    >>> mask("COX-1 is inhibited by aspirin.", (22, 29), (0, 5))
    '@GENE$ is inhibited by @CHEMICAL$.'
    >>> mask("the GABA receptor", (4, 8), (4, 17))
    'the @CHEM-GENE$'
    """
    return mask_pair(text, (*chemical, CHEMICAL_MASK), (*gene, GENE_MASK), OVERLAP_MASK)


# ---------------------------------------------------------------------------------------------------------
# Pairs


@dataclass(frozen=True)
class Row:
    """One output row: a chemical × gene pair of one sentence. ``text`` is the sentence (folded to ASCII, not
    masked); the spans are the two mentions' offsets into it. Both task files are written from these fields:
    ``chemprot`` masks the mentions (:attr:`sentence`), ``chemprot-spans`` keeps the text (:meth:`record`)."""

    pmid: str
    chemical: str
    gene: str
    text: str
    chemical_span: Span
    gene_span: Span
    gene_type: str  # GENE-Y or GENE-N
    label: str

    @property
    def index(self) -> str:
        return f"{self.pmid}.{self.chemical}.{self.gene}"

    @property
    def sentence(self) -> str:
        """The sentence with both mentions masked, as the ``chemprot`` task has it."""
        return mask(self.text, self.chemical_span, self.gene_span)

    def record(self) -> dict:
        """The row as ``chemprot-spans`` has it: the chemical first, then the gene.

        >>> Row("1", "T1", "T2", "COX binds aspirin.", (10, 17), (0, 3), "GENE-N", "CPR:4").record()["entities"]
        [{'start': 10, 'end': 17, 'type': 'CHEMICAL'}, {'start': 0, 'end': 3, 'type': 'GENE-N'}]
        """
        entities = [(*self.chemical_span, CHEMICAL), (*self.gene_span, self.gene_type)]
        return {
            "id": self.index,
            "text": self.text,
            "entities": [{"start": start, "end": end, "type": kind} for start, end, kind in entities],
            "label": self.label,
        }

    def key(self) -> tuple[int, int, int, str]:
        return int(self.pmid), int(self.chemical[1:]), int(self.gene[1:]), self.label


@dataclass
class Converted:
    """The rows of some documents and what became of their evaluated relations."""

    rows: list[Row] = field(default_factory=list)
    lost: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    joined_for_mentions: int = 0  # sentence boundaries removed because they cut a mention


def convert(docs: Iterable[Document]) -> Converted:
    """Every chemical × gene pair of every sentence, labelled; lost relations are reported, not dropped silently."""
    result = Converted()
    for doc in docs:
        text, positions = fold_ascii(doc.text)
        mentions = {i: (positions[m.start], positions[m.end]) for i, m in doc.mentions.items()}
        plain = sentence_spans(text)
        sentences = keep_mentions_whole(plain, mentions.values())
        result.joined_for_mentions += len(plain) - len(sentences)
        sentence_of = {i: _sentence_of(span, sentences) for i, span in mentions.items()}

        labels: dict[tuple[str, str], list[str]] = defaultdict(list)
        for rel in doc.relations:
            pair = labels[rel.chemical, rel.gene]
            if rel.label in pair:
                result.duplicates.append(
                    _describe(doc.pmid, rel, "listed twice in the official file; written once")
                )
                continue
            pair.append(rel.label)
            reason = _why_lost(doc, rel, sentence_of)
            if reason:
                result.lost.append(_describe(doc.pmid, rel, reason))

        by_sentence: dict[int, list[str]] = defaultdict(list)
        for ident in doc.mentions:
            by_sentence[sentence_of[ident]].append(ident)
        for number, idents in by_sentence.items():
            start, end = sentences[number]
            chemicals = [i for i in idents if doc.mentions[i].is_chemical]
            genes = [i for i in idents if not doc.mentions[i].is_chemical]
            sentence = text[start:end]
            for chem, gene in itertools.product(chemicals, genes):
                c, g = mentions[chem], mentions[gene]
                spans = (c[0] - start, c[1] - start), (g[0] - start, g[1] - start)
                for label in labels.get((chem, gene)) or [FALSE]:
                    result.rows.append(Row(doc.pmid, chem, gene, sentence, *spans, doc.mentions[gene].type, label))
    result.rows.sort(key=Row.key)
    return result


def _sentence_of(span: Span, sentences: list[Span]) -> int:
    for number, (start, end) in enumerate(sentences):
        if start <= span[0] and span[1] <= end:
            return number
    raise AssertionError(f"mention {span} lies in no sentence")  # the sentences cover every mention


def _why_lost(doc: Document, rel: Relation, sentence_of: dict[str, int]) -> str | None:
    chemical, gene = doc.mentions[rel.chemical], doc.mentions[rel.gene]
    if not chemical.is_chemical or gene.is_chemical:
        return f"Arg1 is {chemical.type} and Arg2 is {gene.type}; pairs are CHEMICAL × GENE"
    if sentence_of[rel.chemical] != sentence_of[rel.gene]:
        return "arguments in different sentences"
    return None


def _describe(pmid: str, rel: Relation, reason: str) -> dict:
    return {
        "pmid": pmid,
        "chemical": rel.chemical,
        "gene": rel.gene,
        "label": rel.label,
        "line": rel.line,
        "reason": reason,
    }


# ---------------------------------------------------------------------------------------------------------
# Comparing with BLUE's files


def read_blue(path: Path) -> dict[str, tuple[str, list[str]]]:
    """A BLUE TSV (no header, CSV-quoted fields): ``{index: (sentence, labels)}``; an index may have two labels."""
    rows: dict[str, tuple[str, list[str]]] = {}
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter="\t")
    for row in reader:
        if len(row) != 3:
            raise DataError(path, reader.line_num, f"expected 3 tab-separated columns, found {len(row)}")
        index, sentence, label = row
        rows.setdefault(index, (sentence, []))[1].append(label)
    return rows


def in_blue_marker_order(sentence: str) -> str:
    """The masks as BLUE's script writes them: ``@CHEMICAL$`` on the earlier mention, ``@GENE$`` on the later.

    >>> in_blue_marker_order("@GENE$ is inhibited by @CHEMICAL$.")
    '@CHEMICAL$ is inhibited by @GENE$.'
    """
    chem, gene = sentence.find(CHEMICAL_MASK), sentence.find(GENE_MASK)
    if not 0 <= gene < chem:
        return sentence
    middle = sentence[gene + len(GENE_MASK) : chem]
    return sentence[:gene] + CHEMICAL_MASK + middle + GENE_MASK + sentence[chem + len(CHEMICAL_MASK) :]


def agreement(rows: Iterable[Row], blue: dict[str, tuple[str, list[str]]]) -> dict:
    """How far ``rows`` agree with a BLUE file, by pair index: labels, then the masked sentences."""
    ours: dict[str, tuple[str, list[str]]] = {}
    for row in rows:
        ours.setdefault(row.index, (row.sentence, []))[1].append(row.label)
    shared = sorted(ours.keys() & blue.keys())
    mismatched = [i for i in shared if sorted(ours[i][1]) != sorted(blue[i][1])]
    same_text = [i for i in shared if ours[i][0] == blue[i][0]]
    same_text_blue_order = [i for i in shared if in_blue_marker_order(ours[i][0]) == blue[i][0]]
    differing = [i for i in shared if in_blue_marker_order(ours[i][0]) != blue[i][0]]
    return {
        "pairs_here": len(ours),
        "pairs_blue": len(blue),
        "shared_pairs": len(shared),
        "shared_same_label": len(shared) - len(mismatched),
        "label_mismatches": [{"index": i, "here": ours[i][1], "blue": blue[i][1]} for i in mismatched],
        "only_here": len(ours.keys() - blue.keys()),
        "only_blue": len(blue.keys() - ours.keys()),
        "same_sentence": len(same_text),
        "same_sentence_rate": round(len(same_text) / len(shared), 4) if shared else None,
        "same_sentence_in_blue_marker_order": len(same_text_blue_order),
        "same_sentence_in_blue_marker_order_rate": (
            round(len(same_text_blue_order) / len(shared), 4) if shared else None
        ),
        "sentence_differs_examples": [
            {"index": i, "here": ours[i][0], "blue": blue[i][0]} for i in differing[:3]
        ],
    }


# ---------------------------------------------------------------------------------------------------------
# The task


def prepare(corpora: Path, out: Path) -> dict:
    """Write ``out/{train,dev,test}.tsv`` (header ``index sentence label``) and return the manifest part.

    Train, dev and test are the official training, development and test (``_gs``) parts. BLUE's files, where
    present under ``corpora``, are only compared with, never read for the output.

    >>> prepare(Path("../shared/data"), Path("/tmp/chemprot"))["counts"]["dev"]["positives"]  # doctest: +SKIP
    2416
    """
    docs = _documents(corpora)
    sources = [{"path": ZIP, "sha256": sha256(corpora / ZIP)}]
    blue = {}
    for split, name in BLUE_FILES.items():
        path = corpora / name
        if path.is_file():
            sources.append({"path": name, "sha256": sha256(path)})
            blue[split] = read_blue(path)
        else:
            log.warning("%s not found: no comparison with BLUE's %s file", path, split)

    converted = {split: convert(docs[split]) for split in SPLITS}
    counts = {split: _write(out / f"{split}.tsv", converted[split].rows) for split in SPLITS}
    return {
        "sources": sources,
        "format": (
            "TSV with header index<TAB>sentence<TAB>label; index PMID.T<chemical>.T<gene>; chemical masked as "
            "@CHEMICAL$, gene as @GENE$, overlapping mentions as one @CHEM-GENE$; text folded to ASCII as BLUE"
        ),
        "labels": list(LABELS),
        "splitter": {
            "name": "syntok",
            "version": metadata.version("syntok"),
            "rules": (
                "a piece is glued to the previous one unless that ends with . ? or ! (not i.v.); a leading list "
                "number stays with the previous sentence; a sentence also ends after a bracketed title ('].'); "
                "no boundary cuts a mention"
            ),
            "why": SPLITTER_CHOICE,
            "measured": MEASURED_SPLITTERS,
        },
        "counts": counts,
        "reference": {"source": "BLUE README (Peng et al. 2019), positive pairs", **REFERENCE},
        "differences": {
            split: _differences(docs[split], converted[split], blue.get(split)) for split in SPLITS
        },
        "blue_dev_agreement": agreement(converted["dev"].rows, blue["dev"]) if "dev" in blue else None,
        "blue_marker_order": (
            "BLUE's script writes @CHEMICAL$ on whichever mention comes first (it swaps the offsets, not the "
            "types); here each mask names its own mention, so 'same_sentence' counts exact equality and "
            "'same_sentence_in_blue_marker_order' equality after putting the masks in BLUE's order"
        ),
    }


def prepare_spans(corpora: Path, out: Path) -> dict:
    """Write ``out/{train,dev,test}.jsonl`` for ``chemprot-spans`` and return the manifest part.

    The rows of :func:`prepare`, in its order, with its ids and labels, but with the sentence not masked and
    the two mentions given as character offsets into it (the chemical first, then the gene), so that one
    encoder pass over a sentence serves all its pairs. Masking ``text`` at the two spans gives the
    ``chemprot`` sentence.

    >>> prepare_spans(Path("../shared/data"), Path("/tmp/chemprot-spans"))["counts"]["dev"]["rows"]  # doctest: +SKIP
    11692
    """
    docs = _documents(corpora)
    counts = {}
    for split in SPLITS:
        rows = convert(docs[split]).rows
        write_jsonl(out / f"{split}.jsonl", (row.record() for row in rows))
        counts[split] = _counts(rows)
    return {
        "sources": [{"path": ZIP, "sha256": sha256(corpora / ZIP)}],
        "format": (
            'JSONL, one object per row of the chemprot task (same order, ids and labels): {"id": '
            '"PMID.T<chemical>.T<gene>", "text": the sentence folded to ASCII, not masked, "entities": [chemical, '
            'gene] as {"start", "end", "type"} (character offsets into text, end exclusive; type CHEMICAL, GENE-Y '
            'or GENE-N; overlapping mentions kept as they are), "label"}'
        ),
        "labels": list(LABELS),
        "counts": counts,
        "reference": {"source": "BLUE README (Peng et al. 2019), positive pairs", **REFERENCE},
        "differences": "the pairs of the chemprot task; its manifest explains how they differ from BLUE's",
    }


def _documents(corpora: Path) -> dict[str, list[Document]]:
    """The documents of each split, read from the official zip."""
    zip_path = corpora / ZIP
    if not zip_path.is_file():
        raise BiomtlError(
            f"ChemProt corpus {zip_path} not found (expected the official BioCreative VI ChemProt.zip)"
        )
    try:
        with zipfile.ZipFile(zip_path) as archive:
            return {split: read_split(archive, MEMBERS[split], str(zip_path)) for split in SPLITS}
    except zipfile.BadZipFile as e:
        raise BiomtlError(f"{zip_path} is not a readable zip file: {e}") from None


def _write(path: Path, rows: list[Row]) -> dict:
    """Write one split; returns its counts."""
    write_tsv(path, ["index", "sentence", "label"], [(row.index, row.sentence, row.label) for row in rows])
    return _counts(rows)


def _counts(rows: list[Row]) -> dict:
    labels = Counter(row.label for row in rows)
    return {
        "rows": len(rows),
        "positives": len(rows) - labels[FALSE],
        "labels": {label: labels[label] for label in LABELS},
    }


def _differences(
    docs: list[Document], converted: Converted, blue: dict[str, tuple[str, list[str]]] | None
) -> dict:
    """What became of each evaluated relation of one split, and how its positives compare with BLUE's."""
    positives = Counter((row.index, row.label) for row in converted.rows if row.label != FALSE)
    differences = {
        "official_positive_lines": sum(len(doc.relations) for doc in docs),
        "written_positives": sum(positives.values()),
        "duplicate_lines": converted.duplicates,
        "lost": converted.lost,
        "sentence_boundaries_removed_to_keep_mentions_whole": converted.joined_for_mentions,
        "vs_blue": None,
    }
    if blue is not None:
        theirs = Counter(
            (index, label) for index, (_, labels) in blue.items() for label in labels if label != FALSE
        )
        lost = {(f"{r['pmid']}.{r['chemical']}.{r['gene']}", r["label"]): r["reason"] for r in converted.lost}
        differences["vs_blue"] = {
            "blue_positives": sum(theirs.values()),
            "here_not_in_blue": [{"index": i, "label": label} for i, label in sorted(positives - theirs)],
            "in_blue_not_here": [
                {
                    "index": i,
                    "label": label,
                    "reason": lost.get((i, label), "not a chemical-gene pair of one sentence here"),
                }
                for i, label in sorted(theirs - positives)
            ],
            "positive_pairs": agreement(
                (row for row in converted.rows if row.label != FALSE),
                {i: (sentence, labels) for i, (sentence, labels) in blue.items() if set(labels) - {FALSE}},
            ),
        }
    return differences
