"""``biomtl export``: a saved multi-task model as ordinary models other tools load.

* ``hf``: one standard Hugging Face checkpoint per task that has an exact stock equivalent, loaded by plain
  ``transformers`` with the matching ``AutoModelFor…`` class. An NER head (dropout + linear on every token
  state) is exactly ``AutoModelForTokenClassification``. Sentence heads (dropout + linear on the [CLS] state
  or the mean of the tokens) are not: every stock ``…ForSequenceClassification`` of a BERT-family encoder puts
  a pooler (dense + tanh) or a dense layer between the encoder and the classifier, so such a task is refused
  with one line, and the export's README says why.
* ``onnx``: the encoder and every head as one ONNX graph (dynamic batch and length) for ONNX Runtime:
  inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids``), one output per task, named after it.

Every exported model is checked before the directory appears: its logits on :data:`PARITY_SENTENCES` must
match PyTorch's within :data:`TOLERANCE`, else nothing is written.

>>> export_model("runs/mtl/best", "hf", "exported/mtl")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from biomtl.atomic import atomic_dir
from biomtl.errors import BiomtlError
from biomtl.model import MultiTaskModel
from biomtl.tasks.base import pad_inputs
from biomtl.tasks.tagging import TokenHead

log = logging.getLogger(__name__)

FORMATS = ("hf", "onnx")
TOLERANCE = 1e-4
PARITY_SENTENCES = [
    "Naloxone reverses the antihypertensive effect of clonidine.",
    "Cisplatin-induced nephrotoxicity was reduced by co-administration of magnesium in rats.",
    "Aspirin irreversibly inhibits COX-1 and modifies the enzymatic activity of COX-2.",
]
ONNX_FILE = "model.onnx"
ONNX_MANIFEST = "biomtl-onnx.json"
OPSET = 17


def parity_batch(model: MultiTaskModel, sentences: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Encoder inputs of real sentences (padded: the shorter ones exercise the attention mask)."""
    tok = model.tokenizer
    enc = tok(sentences or PARITY_SENTENCES, truncation=True, max_length=model.max_length)
    features = [{"input_ids": ids} for ids in enc["input_ids"]]
    if "token_type_ids" in enc:
        for f, types in zip(features, enc["token_type_ids"], strict=True):
            f["token_type_ids"] = types
    return pad_inputs(features, tok.pad_token_id)


def export_model(model_dir: str | Path, fmt: str, output: str | Path, overwrite: bool = False) -> list[str]:
    """Export the model in ``model_dir`` to ``output`` (written atomically); returns one line per task saying
    what became of it."""
    if fmt not in FORMATS:
        raise BiomtlError(f"--format: unknown format '{fmt}'; choose {', '.join(FORMATS)}")
    output = Path(output)
    if output.exists() and not overwrite:
        raise BiomtlError(f"{output} exists; pass --overwrite to replace it")
    if not output.absolute().parent.is_dir():
        raise BiomtlError(f"--output: {output.absolute().parent} does not exist")
    model = MultiTaskModel.load(model_dir).float().eval()
    exporter = export_hf if fmt == "hf" else export_onnx
    lines: list[str] = []
    atomic_dir(output, lambda tmp: lines.extend(exporter(model, tmp, str(model_dir))))
    return lines


# ----------------------------------------------------------------------------------------------------------
# Hugging Face: one checkpoint per task


def export_hf(model: MultiTaskModel, out: Path, source: str) -> list[str]:
    lines, refused = [], []
    for name, head in model.heads.items():
        exporter = HF_EXPORTS.get(type(head))
        if exporter is None:
            why = (
                f"no stock AutoModelFor… class computes its {type(head).__name__}: biomtl's sentence heads read the "
                "[CLS] state or the token mean directly, stock sequence classifiers add a pooler or dense layer "
                "first; use --format onnx"
            )
            refused.append((name, why))
            lines.append(f"{name}: not exported ({why})")
            continue
        exporter(model, name, out / name, source)
        lines.append(f"{name}: {out.name}/{name} (AutoModelForTokenClassification, parity < {TOLERANCE})")
    if len(refused) == len(model.heads):
        raise BiomtlError(f"{source}: no task has an exact stock Hugging Face equivalent ({', '.join(model.heads)}); use --format onnx")
    (out / "README.md").write_text(_hf_index(model, source, refused))
    return lines


def export_token_classification(model: MultiTaskModel, task: str, out: Path, source: str) -> None:
    """An NER head as ``AutoModelForTokenClassification``: the same encoder, ``classifier`` = the head's linear
    layer (both apply dropout, then the linear layer, to every token state)."""
    from transformers import AutoModelForTokenClassification

    tags = model.tasks[task].tags  # type: ignore[attr-defined]
    encoder_config: Any = model.encoder.config  # a module attribute, typed Tensor | Module
    config = copy.deepcopy(encoder_config)
    config.architectures = None
    config.id2label = dict(enumerate(tags))
    config.label2id = {t: i for i, t in enumerate(tags)}
    config.classifier_dropout = model.dropout
    hf = AutoModelForTokenClassification.from_config(config)
    classifier = getattr(hf, "classifier", None)
    head: Any = model.heads[task].out
    if not isinstance(classifier, nn.Linear) or classifier.weight.shape != head.weight.shape:
        raise BiomtlError(f"{task}: {type(hf).__name__} has no classifier of the head's shape; not exported")
    missing = getattr(hf, hf.base_model_prefix).load_state_dict(model.encoder.state_dict(), strict=False)
    if missing.missing_keys or missing.unexpected_keys:
        raise BiomtlError(f"{task}: the encoder's weights do not fit {type(hf).__name__} (e.g. {(missing.missing_keys or missing.unexpected_keys)[0]})")
    classifier.load_state_dict(head.state_dict())
    hf.eval()
    out.mkdir(parents=True)
    hf.save_pretrained(out)
    model.tokenizer.save_pretrained(out)
    (out / "README.md").write_text(_task_readme(model, task, source))
    reloaded = AutoModelForTokenClassification.from_pretrained(out).eval()
    batch = parity_batch(model)
    with torch.inference_mode():
        ours = model(task, batch)
        theirs = reloaded(**batch).logits
    _check_parity(task, ours, theirs, batch["attention_mask"])


HF_EXPORTS: dict[type[nn.Module], Callable[[MultiTaskModel, str, Path, str], None]] = {
    TokenHead: export_token_classification,
}
"""Head class → the exporter of its exact stock equivalent; a head not listed is refused."""


def _check_parity(task: str, ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor) -> float:
    """Max |logit difference| over the real (unpadded) positions; above :data:`TOLERANCE` is an error."""
    diff = (ours.float() - theirs.float()).abs()
    if diff.dim() == 3:  # token logits: padded positions are not outputs
        diff = diff[mask.bool()]
    worst = float(diff.max()) if diff.numel() else 0.0
    if not worst < TOLERANCE:
        raise BiomtlError(f"{task}: exported logits differ from PyTorch's by {worst:.2e} (tolerance {TOLERANCE}); nothing written")
    return worst


def _task_readme(model: MultiTaskModel, task: str, source: str) -> str:
    spec = model.specs[task]
    tags = model.tasks[task].tags  # type: ignore[attr-defined]
    return f"""# {task}: token classification (NER)

Exported by `biomtl export --format hf` from the multi-task model `{source}` (task `{task}`, one of
{', '.join(model.specs)}). {spec.description}

- Encoder: `{model.encoder_name or 'all-MiniLM-L6-v2 (embedded default)'}`, fine-tuned jointly on all the tasks above.
- Labels (IOB2): {', '.join(tags)}.
- Head: dropout + linear on every token state, exactly `AutoModelForTokenClassification`'s `classifier`
  (max |logit difference| against biomtl < {TOLERANCE} on real sentences, checked at export).

```python
from transformers import AutoModelForTokenClassification, AutoTokenizer
model = AutoModelForTokenClassification.from_pretrained("{task}")
tokenizer = AutoTokenizer.from_pretrained("{task}")
```

biomtl trains and predicts each word's tag on its **first sub-word**; read the tags there (a
`pipeline("token-classification", aggregation_strategy="first")` does). biomtl splits text into words with
`\\w+|[^\\w\\s]` and cuts long sentences into windows of at most {model.max_length} sub-words.
{('Citation: ' + spec.citation) if spec.citation else ''}
"""


def _hf_index(model: MultiTaskModel, source: str, refused: list[tuple[str, str]]) -> str:
    lines = [f"# Hugging Face export of `{source}`", "", "One checkpoint per task (a folder each):", ""]
    lines += [f"- `{t}/`" for t in model.heads if t not in dict(refused)]
    if refused:
        lines += ["", "Not exported, because no stock `transformers` class computes what the head does:", ""]
        lines += [f"- `{t}`: {why}." for t, why in refused]
        lines += [
            "",
            "biomtl's sentence heads read the encoder's [CLS] state (or the mean of the tokens) directly. A stock",
            "BERT `…ForSequenceClassification` passes it through a pooler (dense + tanh) first; exporting the head",
            "into it would compute something else, and a pooler made to approximate the identity would be a",
            "numerical trick, not the same model. `biomtl export --format onnx` exports these heads exactly.",
        ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------
# ONNX: the encoder and every head, one graph


class AllHeads(nn.Module):
    """The shared encoder once, then every head: ``(input_ids, attention_mask[, token_type_ids]) → logits per task``."""

    def __init__(self, model: MultiTaskModel, tasks: list[str]) -> None:
        super().__init__()
        self.model = model
        self.tasks = tasks

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        outputs = self.model.forward_all(batch, self.tasks)
        return tuple(outputs[t] for t in self.tasks)


def export_onnx(model: MultiTaskModel, out: Path, source: str) -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        raise BiomtlError("--format onnx needs onnx and onnxruntime: pip install 'biomtl[onnx]'") from None
    batch = parity_batch(model)
    lines, tasks = [], []
    with torch.inference_mode():
        outputs = model.forward_all(batch)
    for name, logits in outputs.items():
        if logits.shape[0] != batch["input_ids"].shape[0]:
            lines.append(f"{name}: not exported (its head does not score each input on its own: it compares parts of a batch)")
        else:
            tasks.append(name)
    if not tasks:
        raise BiomtlError(f"{source}: no head scores each input on its own; nothing to export")
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in batch else [])
    inputs = tuple(batch[n] for n in names)
    axes = {n: {0: "batch", 1: "length"} for n in names}
    for t in tasks:
        axes[t] = {0: "batch", 1: "length"} if outputs[t].dim() == 3 else {0: "batch"}
    # The TorchScript exporter (dynamo=False) needs no onnxscript; its tracer warnings are about Python-side
    # shape checks that the parity check below covers for other batch sizes and lengths (tests/test_export.py).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            AllHeads(model, tasks).eval(), inputs, str(out / ONNX_FILE), input_names=names, output_names=tasks,
            dynamic_axes=axes, opset_version=OPSET, dynamo=False,
        )
    session = onnxruntime.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    got = session.run(tasks, {n: batch[n].numpy() for n in names})
    worst = {t: _check_parity(t, outputs[t], torch.from_numpy(g), batch["attention_mask"]) for t, g in zip(tasks, got, strict=True)}
    model.tokenizer.save_pretrained(out / "tokenizer")
    manifest: dict[str, Any] = {
        "source": source,
        "file": ONNX_FILE,
        "inputs": names,
        "max_length": model.max_length,
        "tasks": {t: {"type": model.specs[t].type, "output": t, "labels": _output_labels(model, t)} for t in tasks},
    }
    (out / ONNX_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "README.md").write_text(_onnx_readme(model, source, tasks, names))
    for t in tasks:
        shape = f"(batch, length, {outputs[t].shape[-1]})" if outputs[t].dim() == 3 else f"(batch, {outputs[t].shape[-1]})"
        lines.append(f"{t}: output '{t}' {shape}, max |logit difference| {worst[t]:.1e}")
    return lines


def _output_labels(model: MultiTaskModel, task: str) -> list[str]:
    """What each logit of a task's output means: tags for NER, labels for classification, none for a score."""
    tags = getattr(model.tasks[task], "tags", None)
    return list(tags) if tags is not None else list(model.specs[task].labels)


def _onnx_readme(model: MultiTaskModel, source: str, tasks: list[str], inputs: list[str]) -> str:
    rows = "\n".join(f"| `{t}` | {model.specs[t].type} | {', '.join(_output_labels(model, t)) or 'a score'} |" for t in tasks)
    return f"""# ONNX export of `{source}`

`{ONNX_FILE}`: the shared encoder runs once and every head reads its states. Inputs ({', '.join(inputs)}) are
int64 `(batch, length)`, both dynamic; the tokenizer is in `tokenizer/`. `{ONNX_MANIFEST}` lists each output's
labels. Logits match PyTorch within {TOLERANCE} (checked at export, on real sentences).

| output | type | logits |
|---|---|---|
{rows}

NER outputs are `(batch, length, tags)`: read each word's tag on its first sub-word. Sentence outputs are
`(batch, n)`: softmax (classification), sigmoid (multilabel) or the score itself (regression). Relation tasks
expect their masked sentences (`@CHEMICAL$ ... @GENE$`).

```python
import onnxruntime, numpy as np
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained("tokenizer")
session = onnxruntime.InferenceSession("{ONNX_FILE}")
enc = tok(["Naloxone reverses the effect of clonidine."], return_tensors="np")
outputs = session.run(None, {{k: enc[k].astype(np.int64) for k in {inputs!r}}})
```
"""
