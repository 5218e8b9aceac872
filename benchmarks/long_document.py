"""A long document as users annotate it: BC5CDR test sentences joined on one line, read as one text.

The predictor splits a text into sentences (:func:`biomtl.predict.sentence_pieces`) and windows only the
sentences longer than the encoder window, so the document should give the entities of its sentences read one
by one. This script times the document, records the peak memory, and counts entities both ways, plus the
entities that differ (the document's against the sentences', shifted into the document). ``--whole-text``
adds the reading before sentences were split (the whole text cut into windows), for comparison.

    python benchmarks/long_document.py --model /tmp/ld-run/best --prepared /tmp/prep-ld --sentences 1018
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    TASK,
    Timer,
    command_line,
    machine,
    machine_line,
    markdown_table,
    peak_memory_mib,
    prepared_dir,
    write_json,
)

import biomtl.predict  # noqa: E402
from biomtl.predict import Predictor  # noqa: E402


def corpus_sentences(prepared: Path, n: int) -> list[str]:
    """The first ``n`` sentences of the prepared test split, words joined by single spaces."""
    sentences, words = [], []
    for line in (prepared / TASK / "test.conll").read_text(encoding="utf-8").splitlines():
        if line.strip():
            words.append(line.split("\t")[0])
        elif words:
            sentences.append(" ".join(words))
            words = []
    if words:
        sentences.append(" ".join(words))
    return sentences[:n]


def spans(entities: list[dict[str, Any]], shift: int = 0) -> set[tuple[int, int, str]]:
    return {(e["start"] + shift, e["end"] + shift, e["type"]) for e in entities}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a saved model directory with a bc5cdr-chemical head")
    p.add_argument("--prepared", default=None, help="prepared task files (else $BIOMTL_DATA)")
    p.add_argument("--sentences", type=int, default=1018)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--whole-text", action="store_true", help="also read the document as one windowed text (the old way)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args()

    sentences = corpus_sentences(prepared_dir(args.prepared), args.sentences)
    document = " ".join(sentences)
    starts, pos = [], 0
    for s in sentences:
        starts.append(pos)
        pos += len(s) + 1
    predictor = Predictor.load(args.model, batch_size=args.batch_size, precision=args.precision)
    device = torch.device("cpu")
    n_words = sum(len(s.split(" ")) for s in sentences)
    n_pieces = len(biomtl.predict.sentence_pieces(document))

    with Timer() as as_document:
        (found,) = predictor.predict(TASK, [document])
    peak, peak_kind = peak_memory_mib(device)
    with Timer() as one_by_one:
        alone = predictor.predict(TASK, sentences)
    in_document = spans(found["entities"])
    in_sentences = set().union(*(spans(r["entities"], start) for r, start in zip(alone, starts, strict=True)))
    rows = [
        ["one text (sentences split first)", as_document.seconds, len(in_document), len(in_document ^ in_sentences)],
        ["one by one", one_by_one.seconds, len(in_sentences), 0],
    ]
    if args.whole_text:
        split = biomtl.predict.sentence_pieces
        biomtl.predict.sentence_pieces = lambda text: [(0, text)]  # the reading before sentences were split
        try:
            with Timer() as whole:
                (old,) = predictor.predict(TASK, [document])
        finally:
            biomtl.predict.sentence_pieces = split
        rows.append(["one text, whole text windowed (before)", whole.seconds, len(spans(old["entities"])),
                     len(spans(old["entities"]) ^ in_sentences)])

    info = machine()
    print(f"{machine_line(info)}\n`{command_line()}`\n")
    print(f"{len(sentences):,} sentences, {n_words:,} words, {len(document):,} characters on one line; "
          f"the splitter cuts the document into {n_pieces:,} sentences; {peak_kind} after the document: {peak:,.0f} MiB\n")
    print(markdown_table(["read as", "seconds", "entities", "differ from one by one"], rows))
    write_json(args.json_out, {
        "machine": info, "command": command_line(), "sentences": len(sentences), "words": n_words,
        "document_sentences": n_pieces, "peak_mib": peak, "peak_kind": peak_kind, "rows": rows,
    })


if __name__ == "__main__":
    main()
