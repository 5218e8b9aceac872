"""BIOSSES (100 sentence pairs, similarity 0–4) → BLUE task files ``biosses``.

All three splits are taken from the 100-pair file with the five annotator scores
(``BIOSSES/original/annotation_pairs_scores.tsv``); the score is the annotators' mean, as in BLUE. The BLUE split
is fixed by the ``sentence_id`` lists below, because BLUE's own ``test.tsv`` is not available. The BLUE
``train.tsv``/``dev.tsv``, when present, are used only to verify pairs and scores.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from biomtl.corpora.files import read_lines, read_text, sha256, write_tsv
from biomtl.errors import BiomtlError, DataError

log = logging.getLogger(__name__)

PAIRS_FILE = "BIOSSES/original/annotation_pairs_scores.tsv"
BLUE_FILES = {"train": "BIOSSES/blue/train.tsv", "dev": "BIOSSES/blue/dev.tsv"}
ANNOTATORS = ("annotator_a", "annotator_b", "annotator_c", "annotator_d", "annotator_e")
HEADER = ("sentence_id", "sentence_1", "sentence_2", *ANNOTATORS)

# The BLUE/BLURB split by ``sentence_id``, in BLUE's row order: TRAIN_INDEXES, DEV_INDEXES and TEST_INDEXES of
# the BigBIO loader (bigscience-workshop/biomedical, bigbio/hub/hub_repos/biosses/biosses.py; see its issue
# #664). Train and dev are checked against BLUE's files by ``prepare``.
SPLIT_IDS = {
    "train": (
        78, 45, 35, 50, 27, 13, 87, 1, 58, 99, 55, 74, 66, 39, 44, 18, 84, 76, 19, 10, 75, 46, 15, 86, 60, 14,
        51, 79, 29, 34, 94, 28, 62, 42, 21, 30, 11, 53, 6, 12, 26, 48, 31, 32, 77, 37, 95, 85, 36, 56, 43, 61,
        16, 5, 67, 65, 54, 3, 73, 98, 17, 4, 92, 93,
    ),
    "dev": (88, 82, 8, 63, 47, 68, 40, 90, 100, 24, 41, 91, 80, 9, 72, 2),
    "test": (59, 96, 70, 22, 81, 38, 57, 23, 33, 89, 69, 49, 7, 71, 97, 25, 83, 64, 52, 20),
}  # fmt: skip
REFERENCE = {"train": 64, "dev": 16, "test": 20}  # pairs, BLUE README

Pair = tuple[int, str, str, float]  # (sentence_id, sentence 1, sentence 2, score)


def prepare(corpora: Path, out: Path) -> dict:
    """Write ``out/{train,dev,test}.tsv`` with header ``index sentence1 sentence2 score``.

    ``index`` is the BIOSSES ``sentence_id`` (1–100); sentences have their whitespace collapsed to single
    spaces (the original has trailing, double and no-break spaces, and one BLUE field holds tabs).
    """
    path = corpora / PAIRS_FILE
    if not path.is_file():
        raise BiomtlError(f"BIOSSES file {path} not found (expected the 100-pair annotation file)")
    pairs, respaced = read_pairs(path)
    sources = [{"path": PAIRS_FILE, "sha256": sha256(path)}]
    missing = sorted(set(i for ids in SPLIT_IDS.values() for i in ids) - set(pairs))
    if missing:
        raise DataError(path, None, f"sentence_id(s) {missing} of the BLUE split are missing")

    counts = {}
    for split, ids in SPLIT_IDS.items():
        rows = [pairs[i] for i in ids]
        _write(out / f"{split}.tsv", rows)
        scores = [score for *_, score in rows]
        counts[split] = {"pairs": len(rows), "score_min": min(scores), "score_max": max(scores)}

    differences = [
        f"{respaced} of the 200 sentences had runs of whitespace, no-break spaces or outer spaces, collapsed "
        "to single spaces",
        "index is the BIOSSES sentence_id (1-100), not the 0-based row number of BLUE's files",
        "BLUE's test.tsv is not available: test is the 20 sentence_ids of the BLUE split, scores are the "
        "annotator mean exactly as in BLUE's train/dev files",
    ]
    verification = {}
    for split, name in BLUE_FILES.items():
        blue = corpora / name
        if not blue.is_file():
            log.warning("%s not found: BIOSSES %s is not verified against BLUE", blue, split)
            differences.append(f"{split}: not verified ({name} not found)")
            continue
        sources.append({"path": name, "sha256": sha256(blue)})
        verification[split], notes = verify_against_blue(blue, [pairs[i] for i in SPLIT_IDS[split]])
        differences += [f"{split}: {note}" for note in notes]
    return {
        "sources": sources,
        "format": "TSV with header index, sentence1, sentence2, score (mean of the five annotators, 0-4)",
        "counts": counts,
        "reference": {"source": "BLUE README (Peng et al. 2019): sentence pairs", **REFERENCE},
        "verification_against_blue": verification,
        "differences": differences,
    }


def read_pairs(path: Path) -> tuple[dict[int, Pair], int]:
    """``{sentence_id: pair}`` with the annotators' mean score, and how many sentences had their spaces fixed."""
    pairs: dict[int, Pair] = {}
    respaced = 0
    lines = read_lines(path)
    if not lines or tuple(lines[0].split("\t")) != HEADER:
        raise DataError(path, 1, f"expected the header {' '.join(HEADER)!r}")
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(HEADER) or not fields[0].isdigit():
            raise DataError(path, number, f"expected {len(HEADER)} tab-separated fields starting with an id")
        try:
            scores = [int(x) for x in fields[3:]]
        except ValueError:
            raise DataError(path, number, f"annotator scores {fields[3:]} are not integers") from None
        if not all(0 <= s <= 4 for s in scores):
            raise DataError(path, number, f"annotator scores {scores} outside 0-4")
        sentence_id = int(fields[0])
        if sentence_id in pairs:
            raise DataError(path, number, f"duplicate sentence_id {sentence_id}")
        first, second = normalize_space(fields[1]), normalize_space(fields[2])
        if not first or not second:
            raise DataError(path, number, "empty sentence")
        respaced += (first != fields[1]) + (second != fields[2])
        pairs[sentence_id] = (sentence_id, first, second, round(sum(scores) / len(scores), 1))
    return pairs, respaced


def normalize_space(text: str) -> str:
    """Collapse every run of whitespace (tabs and no-break spaces included) to one space; strip the ends.

    >>> normalize_space(" a\\u00a0 b\\tc ")
    'a b c'
    """
    return " ".join(text.split())


def verify_against_blue(path: Path, rows: list[Pair]) -> tuple[dict, list[str]]:
    """Compare our pairs of one split with a BLUE file (CRLF, GLUE STS-B columns, a csv-quoted field)."""
    blue = list(csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter="\t"))
    if blue and not {"sentence1", "sentence2", "score"} <= set(blue[0]):
        raise DataError(path, 1, "expected the columns sentence1, sentence2 and score")
    ours = {(s1, s2): (sentence_id, score) for sentence_id, s1, s2, score in rows}
    notes = []
    same_pairs = same_scores = same_order = 0
    for position, row in enumerate(blue):
        key = (normalize_space(row["sentence1"]), normalize_space(row["sentence2"]))
        if key not in ours:
            notes.append(f"BLUE row {row.get('index', position)} is not a pair of this split")
            continue
        sentence_id, score = ours[key]
        same_pairs += 1
        same_order += position < len(rows) and rows[position][0] == sentence_id
        if abs(float(row["score"]) - score) < 1e-6:
            same_scores += 1
        else:
            notes.append(f"sentence_id {sentence_id}: BLUE score {row['score']}, annotator mean {score}")
    if len(blue) != len(rows):
        notes.append(f"BLUE has {len(blue)} pairs, the split {len(rows)}")
    if notes:
        log.warning("BIOSSES differs from %s: %s", path, "; ".join(notes))
    stats = {
        "blue_pairs": len(blue),
        "same_pairs": same_pairs,
        "same_scores": same_scores,
        "same_order": same_order,
    }
    return stats, notes


def _write(path: Path, rows: list[Pair]) -> None:
    write_tsv(path, ["index", "sentence1", "sentence2", "score"], rows)
