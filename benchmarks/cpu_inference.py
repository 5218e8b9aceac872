"""CPU inference: biomtl's Predictor against ``transformers.pipeline("token-classification")``.

Both sides run the same weights on the same texts with the same thread count (``torch.set_num_threads``):

* the model is a 3-head :class:`~biomtl.model.MultiTaskModel` on the embedded encoder: bc5cdr-chemical and
  bc5cdr-disease (tagging) and hoc (multilabel). With ``--model DIR`` (a trained biomtl model with a
  bc5cdr-chemical head, e.g. from ``biomtl_train.py --save-model``) its encoder and heads are used; otherwise
  the heads are random (speed does not depend on the weights);
* the encoder and the bc5cdr-chemical head are exported as a ``BertForTokenClassification`` directory, which
  the pipeline loads (``aggregation_strategy="first"``, ``device=-1``); the largest logit difference between
  the two models on the texts is printed as a check;
* the texts are ``--sentences`` bc5cdr-chemical test sentences (a seeded sample), words joined by spaces.

Rows: the pipeline as called stock (``batch_size`` 1) and batched; ``Predictor.predict`` (batches sorted by
length, ``torch.inference_mode``); the same with int8 dynamic quantisation of every ``nn.Linear``; the same
with the forward pass in ONNX Runtime (fp32, and int8 via ``onnxruntime.quantization``), when installed;
``Predictor.annotate`` with one head and with all three. Times are the median of ``--repeats`` passes over
all texts after one warm-up pass over a few. Tokens are the texts' sub-words with [CLS]/[SEP], counted once.
"agreement" is the entity F1 of a row's entities against fp32 ``Predictor.predict`` (1 = identical spans
and types); "F1 vs gold" is their entity F1 against the test annotations (meaningful with a trained
``--model`` only).

    python benchmarks/cpu_inference.py --sentences 1000 --threads 2 --json-out /tmp/inference.json
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TASK, command_line, machine, machine_line, markdown_table, prepared_dir, write_json  # noqa: E402

OTHER_TASKS = ["bc5cdr-disease", "hoc"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sentences", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64, help="Predictor batch size and the batched pipeline's")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default=None, help="a trained biomtl model directory with a bc5cdr-chemical head")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prepared", default=None, help="prepared task files (else $BIOMTL_DATA)")
    p.add_argument("--json-out", default=None)
    return p.parse_args(argv)


def build_model(model_dir: str | None) -> Any:
    from biomtl.model import MultiTaskModel
    from biomtl.tasks import load_dataset_spec

    specs = {t: load_dataset_spec(t) for t in [TASK, *OTHER_TASKS]}
    if model_dir is None:
        return MultiTaskModel.from_encoder(None, specs).eval()
    source = MultiTaskModel.load(model_dir)
    if TASK not in source.heads:
        sys.exit(f"--model {model_dir}: no {TASK} head (it has {', '.join(source.heads)})")
    model = MultiTaskModel(source.encoder, source.tokenizer, specs, max_length=source.max_length,
                           encoder_name=source.encoder_name)
    for t in specs:
        if t in source.heads:
            model.heads[t].load_state_dict(source.heads[t].state_dict())
    return model.eval()


def export_hf(model: Any, directory: Path) -> None:
    """The encoder and the bc5cdr-chemical head as a ``BertForTokenClassification`` directory."""
    from transformers import AutoConfig, AutoModelForTokenClassification

    tags = model.tasks[TASK].tags
    config = AutoConfig.for_model(**{**model.encoder.config.to_dict(), "num_labels": len(tags),
                                     "id2label": dict(enumerate(tags)), "label2id": {t: i for i, t in enumerate(tags)}})
    hf = AutoModelForTokenClassification.from_config(config)
    state = {f"{hf.base_model_prefix}.{k}": v for k, v in model.encoder.state_dict().items()}
    state["classifier.weight"] = model.heads[TASK].out.weight
    state["classifier.bias"] = model.heads[TASK].out.bias
    result = hf.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"HF export does not match: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    hf.save_pretrained(directory)
    model.tokenizer.save_pretrained(directory)


@torch.inference_mode()
def logit_difference(model: Any, pipe: Any, texts: list[str]) -> float:
    """Largest |logit| difference between biomtl's chemical head and the exported HF model."""
    enc = model.tokenizer(texts[:16], padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    ours = model(TASK, batch)
    theirs = pipe.model(**enc).logits
    return float((ours - theirs).abs().max())


def hf_entities(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"start": e["start"], "end": e["end"], "type": e["entity_group"]} for e in output]


def gold_entities(examples: list[Any]) -> list[list[dict[str, Any]]]:
    """Gold entities of the test sentences as character spans of the space-joined text."""
    from biomtl.metrics import iob_chunks

    out = []
    for ex in examples:
        starts, pos = [], 0
        for token in ex.tokens:
            starts.append(pos)
            pos += len(token) + 1
        out.append([{"start": starts[s], "end": starts[e - 1] + len(ex.tokens[e - 1]), "type": t}
                    for t, s, e in sorted(iob_chunks(ex.label), key=lambda c: c[1])])
    return out


def agreement(reference: list[list[dict[str, Any]]], other: list[list[dict[str, Any]]]) -> float:
    """Entity F1 of ``other`` against ``reference`` (exact character spans and type)."""
    ref = {(i, e["start"], e["end"], e["type"]) for i, ents in enumerate(reference) for e in ents}
    got = {(i, e["start"], e["end"], e["type"]) for i, ents in enumerate(other) for e in ents}
    if not ref and not got:
        return 1.0
    return 2 * len(ref & got) / (len(ref) + len(got))


def timed(fn: Callable[[list[str]], Any], texts: list[str], repeats: int) -> tuple[list[float], Any]:
    fn(texts[:16])  # warm-up: allocator, first-call paths
    seconds, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(texts)
        seconds.append(time.perf_counter() - start)
    return seconds, out


class OrtModel(torch.nn.Module):
    """A stand-in for MultiTaskModel in :class:`~biomtl.predict.Predictor` whose forward pass (encoder and the
    bc5cdr-chemical head) runs in ONNX Runtime; tokenisation, batching and decoding stay biomtl's."""

    def __init__(self, base: Any, session: Any) -> None:
        super().__init__()
        self.tokenizer, self.max_length, self.session = base.tokenizer, base.max_length, session
        self.specs, self.tasks = {TASK: base.specs[TASK]}, {TASK: base.tasks[TASK]}

    def forward(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feeds = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
        return torch.from_numpy(self.session.run(None, feeds)[0])


class _OneHead(torch.nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(TASK, {"input_ids": input_ids, "attention_mask": attention_mask})


def onnx_sessions(model: Any, directory: Path, threads: int) -> dict[str, Any]:
    """ONNX Runtime sessions for the fp32 export and its int8 dynamic quantisation; raises ImportError when
    onnx/onnxruntime are not installed."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, pre, int8 = directory / "model.onnx", directory / "model.pre.onnx", directory / "model.int8.onnx"
    enc = model.tokenizer(["Naloxone reverses the antihypertensive effect of clonidine ."] * 2, return_tensors="pt")
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer warnings
        warnings.simplefilter("ignore")
        # eval(): the exporter puts the wrapper's train/eval mode back on every module inside it afterwards.
        torch.onnx.export(
            _OneHead(model).eval(), (enc["input_ids"], enc["attention_mask"]), str(fp32), dynamo=False,
            input_names=["input_ids", "attention_mask"], output_names=["logits"], opset_version=17,
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                          "logits": {0: "batch", 1: "seq"}},
        )
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)  # ONNX Runtime's advice before quantising
    quantize_dynamic(str(pre), str(int8), weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for name, path in (("fp32", fp32), ("int8", int8))}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import transformers
    from transformers import pipeline

    from biomtl.data.readers import read_split
    from biomtl.datadirs import DataDirs
    from biomtl.predict import Predictor
    from biomtl.tasks import load_dataset_spec

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    prepared = prepared_dir(args.prepared)
    examples = read_split(load_dataset_spec(TASK, DataDirs.from_env(prepared=prepared)), "test", limit=args.sentences)
    texts = [" ".join(ex.tokens) for ex in examples]

    model = build_model(args.model)
    n_tokens = sum(len(ids) for ids in model.tokenizer(texts)["input_ids"])
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}

    def add(name: str, fn: Callable[[list[str]], Any], to_entities: Callable[[Any], list[list[dict]]]) -> None:
        seconds, out = timed(fn, texts, args.repeats)
        median = statistics.median(seconds)
        rows.append({"variant": name, "seconds": seconds, "median_s": median, "sentences_per_s": len(texts) / median,
                     "tokens_per_s": n_tokens / median, "entities": to_entities(out)})
        print(f"  {name}: {median:.2f} s", file=sys.stderr, flush=True)

    def entities(out: list[dict[str, Any]]) -> list[list[dict]]:
        return [[{k: e[k] for k in ("start", "end", "type")} for e in r["entities"]] for r in out]

    def chem_entities(out: list[dict[str, Any]]) -> list[list[dict]]:
        return [[{k: e[k] for k in ("start", "end", "type")} for e in r["entities"] if e["task"] == TASK] for r in out]

    with tempfile.TemporaryDirectory(prefix="cpu-inference-") as tmp:
        hf_dir = Path(tmp) / "hf"
        export_hf(model, hf_dir)
        pipe = pipeline("token-classification", model=str(hf_dir), tokenizer=str(hf_dir),
                        aggregation_strategy="first", device=-1)
        max_diff = logit_difference(model, pipe, texts)

        add("HF pipeline, stock (batch_size=1)", lambda t: pipe(t), lambda o: [hf_entities(x) for x in o])
        add(f"HF pipeline, batch_size={args.batch_size}", lambda t: pipe(t, batch_size=args.batch_size),
            lambda o: [hf_entities(x) for x in o])
        predictor = Predictor(model, batch_size=args.batch_size, precision="fp32")
        add("biomtl Predictor.predict", lambda t: predictor.predict(TASK, t), entities)
        auto = Predictor(model, batch_size=args.batch_size, precision="auto")
        auto_name = "bf16 autocast" if auto.dtype is not None else "fp32 (no native bf16 here)"
        add(f"biomtl predict, precision auto = {auto_name}", lambda t: auto.predict(TASK, t), entities)
        with warnings.catch_warnings():  # torch.ao.quantization is deprecated (torchao replaces it)
            warnings.simplefilter("ignore")
            quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
        q_predictor = Predictor(quantized, batch_size=args.batch_size, precision="fp32")
        add("biomtl predict, int8 dynamic (torch)", lambda t: q_predictor.predict(TASK, t), entities)
        if args.no_onnx:
            skipped["onnxruntime"] = "--no-onnx"
        else:
            try:
                sessions = onnx_sessions(model, Path(tmp), args.threads)
            except ImportError as e:
                skipped["onnxruntime"] = f"not installed ({e.name}): pip install onnx onnxruntime"
            else:
                for kind, session in sessions.items():
                    ort_predictor = Predictor(OrtModel(model, session), batch_size=args.batch_size, precision="fp32")
                    add(f"biomtl predict, ONNX Runtime {kind}", lambda t, p=ort_predictor: p.predict(TASK, t), entities)
        add("biomtl Predictor.annotate, 1 head", lambda t: predictor.annotate(t, tasks=[TASK]), chem_entities)
        add(f"biomtl Predictor.annotate, {len(model.heads)} heads", lambda t: predictor.annotate(t), chem_entities)
        add(f"biomtl annotate, {len(model.heads)} heads, precision auto", lambda t: auto.annotate(t), chem_entities)

    gold = gold_entities(examples)
    by_name = {r["variant"]: r for r in rows}
    reference = by_name["biomtl Predictor.predict"]
    stock = by_name["HF pipeline, stock (batch_size=1)"]
    for r in rows:
        r["vs_hf_stock"] = r["sentences_per_s"] / stock["sentences_per_s"]
        r["agreement"] = agreement(reference["entities"], r["entities"])
        r["gold_f1"] = agreement(gold, r["entities"])
    one = by_name["biomtl Predictor.annotate, 1 head"]
    every = by_name[f"biomtl Predictor.annotate, {len(model.heads)} heads"]
    batched = by_name[f"HF pipeline, batch_size={args.batch_size}"]
    summary = {
        "predict_vs_hf_stock": reference["sentences_per_s"] / stock["sentences_per_s"],
        "predict_auto_vs_hf_stock": by_name[f"biomtl predict, precision auto = {auto_name}"]["sentences_per_s"]
        / stock["sentences_per_s"],
        "predict_vs_hf_batched": reference["sentences_per_s"] / batched["sentences_per_s"],
        "all_heads_vs_one_head_annotate": every["median_s"] / one["median_s"],
        "all_heads_annotate_vs_predict": every["median_s"] / reference["median_s"],
    }
    for r in rows:
        r.pop("entities")
    return {"sentences": len(texts), "tokens": n_tokens, "threads": args.threads, "batch_size": args.batch_size,
            "weights": f"trained ({args.model})" if args.model else "random heads", "max_logit_difference": max_diff,
            "rows": rows, "summary": summary, "skipped": skipped}


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    r = run(args)
    info = machine()
    print(markdown_table(
        ["variant", "median s", "sentences/s", "tokens/s", "× HF stock", "agreement", "F1 vs gold"],
        [[x["variant"], x["median_s"], x["sentences_per_s"], x["tokens_per_s"], f"{x['vs_hf_stock']:.2f}×",
          x["agreement"], x["gold_f1"]] for x in r["rows"]],
    ))
    s = r["summary"]
    print(f"\n{r['sentences']} sentences, {r['tokens']:,} tokens, {r['threads']} threads, batch {r['batch_size']}, "
          f"{r['weights']}; max |logit difference| biomtl vs HF export: {r['max_logit_difference']:.2e}")
    print(f"Predictor.predict (precision auto) vs HF pipeline stock: **{s['predict_auto_vs_hf_stock']:.2f}×**.")
    print(f"Predictor.predict (fp32) vs HF pipeline: **{s['predict_vs_hf_stock']:.2f}×** stock, "
          f"{s['predict_vs_hf_batched']:.2f}× batched. All-heads annotate: "
          f"**{s['all_heads_vs_one_head_annotate']:.2f}×** the one-head annotate, "
          f"{s['all_heads_annotate_vs_predict']:.2f}× one-head predict.")
    for what, why in r["skipped"].items():
        print(f"skipped {what}: {why}")
    print(f"machine: {machine_line(info)}\ncommand: {command_line()}")
    write_json(args.json_out, {"command": command_line(), "machine": info, "args": vars(args), "result": r})


if __name__ == "__main__":
    main()
