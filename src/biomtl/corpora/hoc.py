"""HoC (Hallmarks of Cancer) → BLUE task files ``hoc``.

The BLUE release is sentence-level (``HoC/blue/{split}.tsv``: ``<PMID>_s<k>``, tokenised sentence, that
sentence's hallmarks) and is evaluated per abstract, by the union of its sentences' labels. This keeps the
sentences and adds the PMID as ``doc_id`` so that the union needs no parsing of ``index``. The split is
defined by ``{split}_docid.txt``; the abstracts in each TSV must be exactly those.

The TSVs are read and written as plain tab-separated lines, not with a CSV parser: two train sentences start
with a ``"`` token (``" Reactive " or activated stroma ...``), which a CSV parser would take for quoting and drop.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from biomtl.corpora.files import read_lines, sha256, write_tsv
from biomtl.errors import BiomtlError, DataError

FOLDER = "HoC/blue"
SPLITS = ("train", "dev", "test")
LABELS = (
    "activating invasion and metastasis",
    "avoiding immune destruction",
    "cellular energetics",
    "enabling replicative immortality",
    "evading growth suppressors",
    "genomic instability and mutation",
    "inducing angiogenesis",
    "resisting cell death",
    "sustaining proliferative signaling",
    "tumor promoting inflammation",
)
REFERENCE = {"train": 1108, "dev": 157, "test": 315}  # abstracts, BLUE README

_INDEX = re.compile(r"(\d+)_s(\d+)")

Row = tuple[str, str, str, str]  # (index, doc_id, sentence, labels)


def prepare(corpora: Path, out: Path) -> dict:
    """Write ``out/{train,dev,test}.tsv`` with header ``index doc_id sentence labels``."""
    sources, counts = [], {}
    quoted, repaired = 0, {}
    seen: dict[str, str] = {}  # PMID -> split, to catch an abstract in two splits
    for split in SPLITS:
        tsv, docids = corpora / FOLDER / f"{split}.tsv", corpora / FOLDER / f"{split}_docid.txt"
        for path in (tsv, docids):
            if not path.is_file():
                raise BiomtlError(f"HoC file {path} not found (expected the BLUE release of HoC)")
            sources.append({"path": f"{FOLDER}/{path.name}", "sha256": sha256(path)})
        rows, repaired[split] = read_sentences(tsv)
        check_doc_ids(tsv, docids, rows)
        for pmid in dict.fromkeys(doc_id for _, doc_id, _, _ in rows):
            if pmid in seen:
                raise DataError(tsv, None, f"PMID {pmid} is in both {seen[pmid]} and {split}")
            seen[pmid] = split
        _write(out / f"{split}.tsv", rows)
        counts[split] = _count(rows)
        quoted += sum(sentence.startswith('"') for _, _, sentence, _ in rows)

    differences = [
        f"{quoted} sentences start with a '\"' token; the BLUE files are read and the output is written as plain "
        "tab-separated lines, without CSV quoting (a CSV parser would drop those quotes)",
        "labels stay per sentence as in BLUE; the task label of an abstract is the union over its doc_id",
        f"mojibake (UTF-8 read as Latin-1, e.g. 'Î±' for 'α', 'Â±' for '±') repaired in {repaired['train']} / "
        f"{repaired['dev']} / {repaired['test']} train/dev/test sentences; BLUE's files keep it",
    ]
    for split, reference in REFERENCE.items():
        if counts[split]["abstracts"] != reference:
            differences.append(f"{split}: {counts[split]['abstracts']} abstracts, BLUE README {reference}")
    return {
        "sources": sources,
        "format": "TSV with header index, doc_id (PMID), sentence, labels (comma-separated hallmarks, may be empty)",
        "counts": counts,
        "reference": {"source": "BLUE README (Peng et al. 2019): abstracts", **REFERENCE},
        "differences": differences,
    }


def read_sentences(path: Path) -> tuple[list[Row], int]:
    """Rows of a BLUE HoC file, and how many sentences had mojibake repaired.

    The PMID is split off ``index``; labels are checked against :data:`LABELS` and sorted.
    """
    lines = read_lines(path)  # split on "\n" only: str.splitlines() would also break at the U+0085 of mojibake
    if not lines or lines[0].split("\t") != ["index", "sentence", "labels"]:
        raise DataError(path, 1, "expected the header 'index<TAB>sentence<TAB>labels'")
    rows, repaired = [], 0
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise DataError(path, number, f"expected 3 tab-separated fields, found {len(fields)}")
        index, sentence, labels = fields
        match = _INDEX.fullmatch(index)
        if not match:
            raise DataError(path, number, f"index {index!r} is not '<PMID>_s<number>'")
        if not sentence.strip():
            raise DataError(path, number, "empty sentence")
        names = sorted(set(labels.split(","))) if labels else []
        unknown = [name for name in names if name not in LABELS]
        if unknown:
            raise DataError(path, number, f"unknown hallmark(s) {unknown}; known: {', '.join(LABELS)}")
        text = repair_mojibake(sentence.strip())
        repaired += text != sentence.strip()
        rows.append((index, match[1], text, ",".join(names)))
    if not rows:
        raise DataError(path, None, "no sentences")
    return rows, repaired


_LATIN1_RUN = re.compile(r"[\u0080-\u00ff]+")


def repair_mojibake(text: str) -> str:
    """Undo UTF-8 text that was decoded as Latin-1 (``Î±`` for ``α``), run by run; other text is kept.

    >>> repair_mojibake("TNF-Î± and 5 Â± 2 °C")
    'TNF-α and 5 ± 2 °C'
    """

    def decode(match: re.Match[str]) -> str:
        try:
            return match[0].encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            return match[0]

    return _LATIN1_RUN.sub(decode, text)


def check_doc_ids(tsv: Path, docids: Path, rows: list[Row]) -> None:
    """Raise unless the abstracts in ``rows`` are exactly the PMIDs listed in ``docids`` (once each)."""
    listed = [line.strip() for line in read_lines(docids) if line.strip()]
    duplicates = sorted(pmid for pmid, n in Counter(listed).items() if n > 1)
    if duplicates:
        raise DataError(docids, None, f"PMID(s) listed twice: {', '.join(duplicates[:10])}")
    present = {doc_id for _, doc_id, _, _ in rows}
    missing, extra = sorted(set(listed) - present), sorted(present - set(listed))
    if missing:
        raise DataError(
            tsv, None, f"{len(missing)} PMID(s) of {docids.name} have no sentences: {missing[:10]}"
        )
    if extra:
        raise DataError(tsv, None, f"{len(extra)} PMID(s) are not in {docids.name}: {extra[:10]}")


def _count(rows: list[Row]) -> dict:
    by_abstract: dict[str, set[str]] = {}
    for _, doc_id, _, labels in rows:
        by_abstract.setdefault(doc_id, set()).update(labels.split(",") if labels else [])
    per_label = Counter(label for labels in by_abstract.values() for label in labels)
    return {
        "sentences": len(rows),
        "abstracts": len(by_abstract),
        "sentences_with_labels": sum(bool(labels) for *_, labels in rows),
        "abstracts_with_labels": sum(bool(labels) for labels in by_abstract.values()),
        "abstracts_per_label": {label: per_label[label] for label in LABELS},
    }


def _write(path: Path, rows: list[Row]) -> None:
    write_tsv(path, ["index", "doc_id", "sentence", "labels"], rows)
