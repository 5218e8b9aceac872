"""Speed of ``biomtl annotate`` on ChemProt test abstracts (issue 12): all heads against one NER head and
against stock ``transformers`` pipelines doing the same work with the same weights.

The measurement for BENCHMARKS.md (an idle machine, 2 cores; the model that ``benchmarks/e2e_chemprot.py``
trained), over all 800 test abstracts:

    python benchmarks/annotate_speed.py --corpora ../shared/data --model /tmp/e2e-run/model/best \\
        --threads 2 --repeats 1 --json-out /tmp/e2e-run/annotate-speed.json

Expect one to two hours, nearly all of it in the stock pipelines at ``batch_size`` 1 (on the shared development
machine the token-classification pipeline took about 0.35 s a sentence at batch 1, 0.02 s at batch 20); with
``--abstracts 100 --repeats 3``, under an hour.

The texts are the official ChemProt test abstracts (``title + " " + abstract``, one passage each; all 800, or
the first ``--abstracts`` in PMID order), read raw: no input annotation. Each row is the median of
``--repeats`` passes over all of them, after one warm-up pass over three, with ``torch.set_num_threads``; the
passes go in rounds (each variant once per round), and the summary gives all heads / one NER head per round too:

* **biomtl, all heads**: :func:`biomtl.annotate.annotate` with the model's every head: the sentences (syntok),
  both NER heads (bc5cdr-chemical, bc2gm) in one encoder pass, the chemical × gene candidate pairs of each
  sentence masked as in training, and the ChemProt head on all of them;
* **biomtl, one NER head**: the same call with ``tasks=[bc5cdr-chemical]`` (sentences and that head only);
* **stock pipelines**: the model exported by ``biomtl export --format hf`` (same weights; logit parity checked
  by the export), one ``pipeline("token-classification", aggregation_strategy="first")`` per NER task over the
  same sentences, then ``pipeline("text-classification", trust_remote_code=True)`` on the ChemProt export over
  the candidate pairs built from the pipelines' entities, truncated at the model's ``max_length`` as biomtl
  truncates. Called as shipped (``batch_size`` 1) and with ``batch_size=--batch-size``.

Sentence splitting and the building of candidate pairs are biomtl's own code on both sides
(:func:`biomtl.annotate.split_sentences`, :func:`~biomtl.annotate.candidate_pairs`,
:func:`~biomtl.annotate.masked`) and are counted **in both** sides' times. Model loading and export are in
neither. "agreement" is the F1 of a row's relations (and entities) against biomtl all heads'
(PMID, spans, type): the sides differ only where a sentence is longer than the encoder window (biomtl reads
it in windows, the token-classification pipeline whole) and by float rounding.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, machine_line, markdown_table, write_json  # noqa: E402

from biomtl.annotate import annotate as biomtl_annotate  # noqa: E402
from biomtl.annotate import candidate_pairs, masked, split_sentences  # noqa: E402
from biomtl.corpora import chemprot  # noqa: E402
from biomtl.export import export_model  # noqa: E402
from biomtl.formats import PREDICTED, Collection, Document, Mention, Passage, Relation  # noqa: E402
from biomtl.predict import Predictor  # noqa: E402

NER = ["bc5cdr-chemical", "bc2gm"]
RELATIONS = "chemprot"
Key = tuple  # (PMID, start, end, type) for entities; (PMID, span, span, type) for relations


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpora", required=True, help="the official corpora (ChemProt/original/ChemProt.zip)")
    p.add_argument("--model", required=True, help="a biomtl model with bc5cdr-chemical, bc2gm and chemprot heads")
    p.add_argument("--abstracts", type=int, default=None, help="first N test abstracts in PMID order (all if unset)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64, help="biomtl's batch size and the batched pipelines'")
    p.add_argument("--precision", default="fp32", choices=["fp32", "auto"], help="biomtl's (the pipelines run fp32)")
    p.add_argument("--relation-task", default=RELATIONS,
                   help="the relation head of 'all heads' (chemprot: masked pairs; chemprot-spans: a span head)")
    p.add_argument("--stock-relation-task", default=None,
                   help="the masked relation head the stock side exports (default --relation-task; a span head has "
                        "no stock form): also timed in biomtl as its own row when it differs")
    p.add_argument("--skip-batch1", action="store_true", help="leave out the stock pipelines at batch_size 1 (slow)")
    p.add_argument("--json-out", default=None)
    return p.parse_args(argv)


def abstracts(corpora: Path, n: int | None) -> list[Document]:
    path = corpora / chemprot.ZIP
    with zipfile.ZipFile(path) as archive:
        docs = chemprot.read_split(archive, chemprot.MEMBERS["test"], str(path))[:n]
    return [Document(d.pmid, [Passage(0, d.text)]) for d in docs]


def fresh(docs: list[Document]) -> Collection:
    """Unannotated copies (annotate adds to its input)."""
    return Collection([Document(d.id, [Passage(p.offset, p.text) for p in d.passages]) for d in docs])


class StockPipelines:
    """The same work as biomtl all heads, done by stock pipelines on the exported checkpoints."""

    def __init__(self, exported: Path, predictor: Predictor, batch_size: int, relations: str = RELATIONS) -> None:
        from transformers import pipeline

        self.ner = [pipeline("token-classification", model=str(exported / t), aggregation_strategy="first", device=-1)
                    for t in NER]
        self.relations = pipeline("text-classification", model=str(exported / relations), trust_remote_code=True,
                                  device=-1)
        self.spec = predictor.model.specs[relations]  # arguments, entity types, masks: read, not computed
        self.max_length = predictor.model.max_length
        self.batch_size = batch_size
        self.pairs = 0  # candidate pairs of the last call

    def __call__(self, collection: Collection) -> Collection:
        docs = collection.documents
        sentences = [s for i, doc in enumerate(docs) for s in split_sentences(doc, i)]
        texts = [s.text for s in sentences]
        found: list[list[Mention]] = [[] for _ in sentences]
        for pipe in self.ner:
            for k, (sentence, entities) in enumerate(zip(sentences, pipe(texts, batch_size=self.batch_size), strict=True)):
                for e in entities:
                    start, end = sentence.start + e["start"], sentence.start + e["end"]
                    text = docs[sentence.doc].text[start:end]
                    found[k].append(Mention(f"p{k}.{len(found[k])}", start, end, e["entity_group"], text, PREDICTED))
        pairs = []
        for sentence, mentions in zip(sentences, found, strict=True):
            docs[sentence.doc].mentions.extend(mentions)
            inside = sorted((m for m in mentions if m.type in self.spec.entity_types), key=lambda m: (m.start, m.end))
            for first, second in candidate_pairs(inside, self.spec.arguments, self.spec.entity_types):
                text = masked(sentence, first, second, self.spec.markers)
                if text is not None:
                    pairs.append((sentence.doc, first, second, text))
        self.pairs = len(pairs)
        if pairs:
            rows = self.relations([p[3] for p in pairs], batch_size=self.batch_size, truncation=True,
                                  max_length=self.max_length)
            for (doc, first, second, _), row in zip(pairs, rows, strict=True):
                if row["label"] != self.spec.negative_label:
                    docs[doc].relations.append(_relation(row["label"], first, second, self.spec.arguments))
        return collection


def _relation(label: str, first: Mention, second: Mention, arguments: list[str]) -> Relation:
    return Relation(f"r{first.id}-{second.id}", label, [(arguments[0], first.id), (arguments[1], second.id)], PREDICTED)


def entity_keys(collection: Collection) -> set[Key]:
    return {(d.id, m.start, m.end, m.type) for d in collection.documents for m in d.mentions}


def relation_keys(collection: Collection) -> set[Key]:
    out = set()
    for d in collection.documents:
        spans = {m.id: (m.start, m.end) for m in d.mentions}
        out |= {(d.id, spans[r.arguments[0][1]], spans[r.arguments[1][1]], r.type) for r in d.relations}
    return out


def f1(reference: set, other: set) -> float:
    return 1.0 if not reference and not other else 2 * len(reference & other) / (len(reference) + len(other))


Variant = tuple[str, Callable[[Collection], Collection]]


def timed(variants: list[Variant], docs: list[Document], repeats: int) -> tuple[dict[str, list[float]], dict[str, Collection]]:
    """Each variant's seconds per pass over ``docs`` and its last output. The passes go round by round (every
    variant once per round), so that a slow spell of the machine falls on all variants alike."""
    for _, fn in variants:
        fn(fresh(docs[:3]))  # warm-up: allocator, first-call paths
    seconds: dict[str, list[float]] = {name: [] for name, _ in variants}
    outputs: dict[str, Collection] = {}
    for round_ in range(repeats):
        for name, fn in variants:
            collection = fresh(docs)
            start = time.perf_counter()
            outputs[name] = fn(collection)
            seconds[name].append(time.perf_counter() - start)
            print(f"  round {round_ + 1}, {name}: {seconds[name][-1]:.2f} s", file=sys.stderr, flush=True)
    return seconds, outputs


def run(args: argparse.Namespace) -> dict[str, Any]:
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    docs = abstracts(Path(args.corpora), args.abstracts)
    predictor = Predictor.load(args.model, batch_size=args.batch_size, precision=args.precision)
    stock_relations = args.stock_relation_task or args.relation_task
    missing = [t for t in dict.fromkeys([*NER, args.relation_task, stock_relations]) if t not in predictor.tasks]
    if missing:
        sys.exit(f"--model {args.model}: no {', '.join(missing)} head (it has {', '.join(predictor.tasks)})")
    n_sentences = sum(len(split_sentences(d, i)) for i, d in enumerate(docs))
    all_heads = f"biomtl annotate, all heads ({args.relation_task})"
    one_head = f"biomtl annotate, one NER head ({NER[0]})"
    variants: list[Variant] = [
        (all_heads, lambda c: biomtl_annotate(predictor, c, "chemprot-test", [*NER, args.relation_task]))
    ]
    if stock_relations != args.relation_task:
        variants.append((f"biomtl annotate, all heads ({stock_relations})",
                         lambda c: biomtl_annotate(predictor, c, "chemprot-test", [*NER, stock_relations])))
    variants.append((one_head, lambda c: biomtl_annotate(predictor, c, "chemprot-test", [NER[0]])))
    stock_batch1 = "stock pipelines, batch_size=1 (as shipped)"
    stock_batched = f"stock pipelines, batch_size={args.batch_size}"
    with tempfile.TemporaryDirectory(prefix="annotate-speed-") as tmp:
        export_model(args.model, "hf", Path(tmp) / "hf")
        if not args.skip_batch1:
            variants.append((stock_batch1, StockPipelines(Path(tmp) / "hf", predictor, 1, stock_relations)))
        stock = StockPipelines(Path(tmp) / "hf", predictor, args.batch_size, stock_relations)
        variants.append((stock_batched, stock))
        seconds, outputs = timed(variants, docs, args.repeats)
    rows: list[dict[str, Any]] = []
    for name, _ in variants:
        median = statistics.median(seconds[name])
        rows.append({"variant": name, "seconds": seconds[name], "median_s": median, "abstracts_per_s": len(docs) / median})

    reference = outputs[all_heads]
    for r in rows:
        out = outputs[r["variant"]]
        r["entities"] = len(entity_keys(out))
        r["relations"] = len(relation_keys(out))
        r["entity_agreement"] = f1(entity_keys(reference), entity_keys(out))
        r["relation_agreement"] = f1(relation_keys(reference), relation_keys(out))
    by_name = {r["variant"]: r for r in rows}
    summary = {
        "all_heads_vs_one_ner_head": by_name[all_heads]["median_s"] / by_name[one_head]["median_s"],
        "all_heads_vs_one_ner_head_per_round": [a / o for a, o in zip(seconds[all_heads], seconds[one_head], strict=True)],
        "speedup_vs_stock": by_name[stock_batch1]["median_s"] / by_name[all_heads]["median_s"] if stock_batch1 in by_name else None,
        "speedup_vs_stock_batched": by_name[f"stock pipelines, batch_size={args.batch_size}"]["median_s"]
        / by_name[all_heads]["median_s"],
    }
    return {"abstracts": len(docs), "sentences": n_sentences, "candidate_pairs": stock.pairs, "threads": args.threads, "batch_size": args.batch_size,
            "precision": args.precision, "rows": rows, "summary": summary}


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    r = run(args)
    info = machine()
    print(markdown_table(
        ["variant", "median s", "abstracts/s", "entities", "relations", "entity agreement", "relation agreement"],
        [[x["variant"], x["median_s"], x["abstracts_per_s"], x["entities"], x["relations"], x["entity_agreement"],
          x["relation_agreement"]] for x in r["rows"]],
    ))
    s = r["summary"]
    print(f"\n{r['abstracts']} abstracts, {r['sentences']} sentences, {r['candidate_pairs']} candidate pairs (stock "
          f"side), {r['threads']} threads, batch {r['batch_size']}, "
          f"biomtl precision {r['precision']}. All heads: "
          + (f"**{s['speedup_vs_stock']:.2f}×** the stock pipelines, " if s["speedup_vs_stock"] is not None else "")
          + f"**{s['speedup_vs_stock_batched']:.2f}×** the batched stock pipelines, "
          f"**{s['all_heads_vs_one_ner_head']:.2f}×** the time of one NER head (per round: "
          + ", ".join(f"{x:.2f}" for x in s["all_heads_vs_one_ner_head_per_round"]) + ").")
    print(f"machine: {machine_line(info)}\ncommand: {command_line()}")
    write_json(args.json_out, {"command": command_line(), "machine": info, "args": vars(args), "result": r})


if __name__ == "__main__":
    main()
