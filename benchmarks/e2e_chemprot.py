"""End-to-end ChemProt (issue 12): one encoder with a chemical NER head (bc5cdr-chemical), a gene NER head (bc2gm)
and the ChemProt relation head; the official ChemProt test abstracts annotated from raw text and scored.

    biomtl data prepare --corpora ../shared/data --out /tmp/e2e-run/prepared
    nice python benchmarks/e2e_chemprot.py --corpora ../shared/data --prepared /tmp/e2e-run/prepared \\
        --out /tmp/e2e-run/model --max-train-examples 2000 --max-eval-examples 500 --epochs 2 --show 10 \\
        --json-out /tmp/e2e-run/e2e-chemprot.json

Training: one multi-task run (:func:`biomtl.train.train`) with the CPU settings of the quick study profile
(encoder LR 1e-4, head LR 1e-3, mean pooling, fp32), a seeded subset of ``--max-train-examples`` per task, dev
capped at ``--max-eval-examples`` per task for the choice of epoch (epoch 0 included); test is never read by
training. An existing ``--out/best`` is reused.

Annotation (:func:`biomtl.annotate.annotate`) of every test abstract (``--abstracts`` caps it, for trials),
its text ``title + " " + abstract`` as the official offsets count it, as one passage:

* **gold entities**: the abstract with its official CHEMICAL/GENE-Y/GENE-N mentions, ``keep_input`` every
  type, the ChemProt head alone: every chemical × gene pair of one sentence is scored (the usual ChemProt
  setting, on the sentences ``annotate`` splits);
* **predicted entities** (end to end): the raw text only; both NER heads, then ChemProt on their pairs.

Scoring: a relation is (PMID, chemical span, gene span, CPR group), exact character spans; gold relations are
the official test file's evaluated ones (CPR:3/4/5/6/9, flag Y), each once. Micro precision, recall and F1
over the five groups. All gold relations count, also those no sentence-level system can find (arguments in
two sentences; a pair with two groups, where a head gives one label); "reachable" says how many of them have
both gold arguments in one sentence. NER: exact-span F1 of the Chemical mentions (bc5cdr-chemical head)
against ChemProt's CHEMICAL, and of the GENE mentions (bc2gm head) against GENE-Y ∪ GENE-N. Both NER corpora
annotate by other guidelines than ChemProt, so these are transfer figures.

With ``--reference`` the script also scores the selected model with :func:`biomtl.evaluate.evaluate` on the prepared
test files: ChemProt's BLUE pair-level micro-F1 (the masked test sentences of ``biomtl data prepare``, text
folded to ASCII as BLUE folds it) and each NER head on its own corpus's test split.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, command_line, machine, machine_line, markdown_table, write_json  # noqa: E402

from biomtl.annotate import ALL, annotate, split_sentences  # noqa: E402
from biomtl.config import RunConfig  # noqa: E402
from biomtl.corpora import chemprot  # noqa: E402
from biomtl.datadirs import DataDirs  # noqa: E402
from biomtl.evaluate import evaluate  # noqa: E402
from biomtl.formats import PREDICTED, Collection, Document, Mention, Passage  # noqa: E402
from biomtl.predict import Predictor  # noqa: E402
from biomtl.train import train  # noqa: E402

CHEMICAL_NER, GENE_NER, RELATIONS = "bc5cdr-chemical", "bc2gm", "chemprot"
# entity type scored → (type the NER head predicts, ChemProt's gold types)
NER_TYPES = {"Chemical": ("Chemical", (chemprot.CHEMICAL,)), "Gene": ("GENE", chemprot.GENES)}

Span = tuple[int, int]
RelationKey = tuple[str, Span, Span, str]  # (PMID, chemical span, gene span, CPR group)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpora", required=True, help="the official corpora (ChemProt.zip, BC2GM)")
    p.add_argument("--prepared", required=True, help="`biomtl data prepare` output (bc5cdr-chemical, chemprot)")
    p.add_argument("--out", required=True, help="the training run's directory (its best/ is reused if present)")
    p.add_argument("--max-train-examples", type=int, default=2000)
    p.add_argument("--max-eval-examples", type=int, default=500)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--abstracts", type=int, default=None, help="first N test abstracts in PMID order (all if unset)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reference", action="store_true", help="also score each head on its prepared test file")
    p.add_argument("--show", type=int, default=0, help="print N correct end-to-end relations with their text")
    p.add_argument("--relation-tasks", default=RELATIONS,
                   help="comma-separated relation heads trained beside the two NER heads and scored each "
                        "(chemprot: masked pairs, BLUE's form; chemprot-spans: a span_relation head on the plain sentence)")
    p.add_argument("--json-out", default=None)
    return p.parse_args(argv)


def relation_tasks(args: argparse.Namespace) -> list[str]:
    return [t.strip() for t in args.relation_tasks.split(",") if t.strip()]


def train_model(args: argparse.Namespace, dirs: DataDirs) -> tuple[Path, float | None]:
    """The selected model directory, trained unless it exists; and the training seconds (None when reused)."""
    best = Path(args.out) / "best"
    if best.is_dir():
        return best, None
    config = RunConfig(
        tasks=[CHEMICAL_NER, GENE_NER, *relation_tasks(args)], output_dir=args.out, seed=args.seed, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, head_lr=args.head_lr, pooling="mean", max_length=args.max_length,
        max_train_examples=args.max_train_examples, max_eval_examples=args.max_eval_examples,
        num_threads=args.threads, device="cpu", precision="fp32", save_predictions=False, evaluate_test=False,
    )
    with Timer() as t:
        train(config, dirs, progress=False)
    return best, t.seconds


def test_documents(corpora: Path, n: int | None) -> list[chemprot.Document]:
    path = corpora / chemprot.ZIP
    with zipfile.ZipFile(path) as archive:
        return chemprot.read_split(archive, chemprot.MEMBERS["test"], str(path))[:n]


def as_collection(docs: list[chemprot.Document], gold_mentions: bool) -> Collection:
    """The abstracts as one passage each; with their official mentions (ids T1, T2, ...) or bare."""
    out = []
    for d in docs:
        doc = Document(d.pmid, [Passage(0, d.text)])
        if gold_mentions:
            doc.mentions = [Mention(m.id, m.start, m.end, m.type, d.text[m.start : m.end]) for m in d.mentions.values()]
        out.append(doc)
    return Collection(out)


def gold_relations(docs: list[chemprot.Document]) -> set[RelationKey]:
    return {
        (d.pmid, _span(d.mentions[r.chemical]), _span(d.mentions[r.gene]), r.label) for d in docs for r in d.relations
    }


def reachable(docs: list[chemprot.Document], gold: set[RelationKey]) -> int:
    """Gold relations whose two gold arguments lie in one of the sentences ``annotate`` splits the text into."""
    sentences = {
        d.pmid: [(s.start, s.end) for s in split_sentences(doc, i)]
        for i, (d, doc) in enumerate(zip(docs, as_collection(docs, True).documents, strict=True))
    }

    def together(pmid: str, a: Span, b: Span) -> bool:
        return any(s <= min(a[0], b[0]) and max(a[1], b[1]) <= e for s, e in sentences[pmid])

    return sum(together(pmid, chem, gene) for pmid, chem, gene, _ in gold)


def predicted_relations(collection: Collection) -> set[RelationKey]:
    found = set()
    for doc in collection.documents:
        spans = {m.id: (m.start, m.end) for m in doc.mentions}
        for r in doc.relations:
            if r.source == PREDICTED:
                (_, chem), (_, gene) = r.arguments
                found.add((doc.id, spans[chem], spans[gene], r.type))
    return found


def prf(gold: set, predicted: set) -> dict[str, Any]:
    tp = len(gold & predicted)
    p = tp / len(predicted) if predicted else 0.0
    r = tp / len(gold) if gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "correct": tp,
            "gold": len(gold), "predicted": len(predicted)}


def ner_scores(docs: list[chemprot.Document], annotated: Collection) -> dict[str, dict[str, Any]]:
    scores = {}
    for name, (predicted_type, gold_types) in NER_TYPES.items():
        gold = {(d.pmid, _span(m)) for d in docs for m in d.mentions.values() if m.type in gold_types}
        found = {(doc.id, (m.start, m.end)) for doc in annotated.documents for m in doc.mentions
                 if m.source == PREDICTED and m.type == predicted_type}
        scores[name] = prf(gold, found)
    return scores


def _span(m: chemprot.Mention) -> Span:
    return (m.start, m.end)


def show_correct(docs: list[chemprot.Document], correct: set[RelationKey], n: int) -> None:
    """Print ``n`` correctly found relations with the mention texts, to check the matching by eye."""
    text = {d.pmid: d.text for d in docs}
    for pmid, (cs, ce), (gs, ge), label in sorted(correct)[:n]:
        print(f"  {pmid} {label}: chemical {text[pmid][cs:ce]!r} ({cs}-{ce}), gene {text[pmid][gs:ge]!r} ({gs}-{ge})")


def reference_scores(model_dir: Path, dirs: DataDirs) -> dict[str, dict[str, float]]:
    """Each head on its own prepared test file (BLUE ChemProt pairs, BC5CDR-chemical, BC2GM)."""
    return {e.task: e.scores for e in evaluate(str(model_dir), split="test", data_dirs=dirs)}


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    corpora = Path(args.corpora)
    dirs = DataDirs.from_env(corpora, args.prepared)
    model_dir, train_s = train_model(args, dirs)
    run_result = json.loads((Path(args.out) / "result.json").read_text())

    docs = test_documents(corpora, args.abstracts)
    gold = gold_relations(docs)
    predictor = Predictor.load(model_dir, precision="fp32")
    relations, seconds = {}, {}
    for task in relation_tasks(args):
        with Timer() as gold_t:
            with_gold = annotate(predictor, as_collection(docs, True), "chemprot-test", [task], {ALL})
        with Timer() as e2e_t:
            raw = annotate(predictor, as_collection(docs, False), "chemprot-test", [CHEMICAL_NER, GENE_NER, task])
        relations[f"{task}, gold entities"] = prf(gold, predicted_relations(with_gold))
        relations[f"{task}, predicted entities (end to end)"] = prf(gold, predicted_relations(raw))
        seconds[task] = {"gold_entities": gold_t.seconds, "end_to_end": e2e_t.seconds}
    ner = ner_scores(docs, raw)
    n_sentences = sum(len(split_sentences(doc, i)) for i, doc in enumerate(as_collection(docs, False).documents))
    reference = reference_scores(model_dir, dirs) if args.reference else None

    info = machine()
    print(f"{machine_line(info)}\n`{command_line()}`\n")
    train_what = f"{train_s / 60:.1f} min" if train_s is not None else "reused"
    print(f"training: {train_what}; best epoch {run_result['best_epoch']} of {args.epochs}, dev (capped at "
          f"{args.max_eval_examples}): " + ", ".join(
              f"{t} {s[run_result['main_metric'][t]]:.3f}" for t, s in run_result["dev"].items()))
    print(f"{len(docs)} test abstracts, {n_sentences} sentences, {len(gold)} gold relations, "
          f"{reachable(docs, gold)} with both arguments in one sentence\n")
    print(markdown_table(
        ["relations with", "precision", "recall", "F1", "correct", "gold", "predicted"],
        [[k, v["precision"], v["recall"], v["f1"], v["correct"], v["gold"], v["predicted"]] for k, v in relations.items()],
    ))
    print()
    print(markdown_table(
        ["entities (end to end)", "precision", "recall", "F1", "correct", "gold", "predicted"],
        [[k, v["precision"], v["recall"], v["f1"], v["correct"], v["gold"], v["predicted"]] for k, v in ner.items()],
    ))
    for task, t in seconds.items():
        print(f"annotation with {task}: gold entities {t['gold_entities']:.1f} s, end to end {t['end_to_end']:.1f} s "
              f"({len(docs) / t['end_to_end']:.2f} abstracts/s)")
    if reference is not None:
        print("prepared test files: " + ", ".join(f"{t} {json.dumps({k: round(v, 4) for k, v in s.items()})}"
                                                  for t, s in reference.items()))
    if args.show:
        print("correct end-to-end relations:")
        show_correct(docs, gold & predicted_relations(raw), args.show)
    write_json(args.json_out, {
        "machine": info, "command": command_line(), "args": vars(args), "train_seconds": train_s,
        "run": run_result, "abstracts": len(docs), "sentences": n_sentences, "gold_relations": len(gold),
        "reachable_gold_relations": reachable(docs, gold), "relations": relations, "ner": ner,
        "annotate_seconds": seconds,
        "reference_test_scores": reference,
    })


if __name__ == "__main__":
    main()
