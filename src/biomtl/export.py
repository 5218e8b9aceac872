"""``biomtl export``: a saved multi-task model as ordinary models other tools load.

* ``hf``: one Hugging Face checkpoint per task, loaded by plain ``transformers``, with ``id2label``/``label2id``
  and a README each. An NER head (dropout + linear on every token state) is exactly
  ``AutoModelForTokenClassification``. A sentence head (dropout + linear on the [CLS] state or the mean of the
  tokens: relation / classification, multilabel, cross-encoder regression) has no stock class, since every stock
  ``…ForSequenceClassification`` of a BERT-family encoder puts a pooler (dense + tanh) or a dense layer
  first; it is exported with its own small model file (:mod:`biomtl.export_templates.modeling_biomtl`, copied
  into the folder; it imports only torch and transformers) and loads with
  ``AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)``. The bi-encoder
  similarity head has no weights: it is exported as the encoder (``AutoModel``) with sentence-transformers'
  files (mean pooling); its score is the cosine.
* ``onnx``: the encoder and every head as one ONNX graph (dynamic batch and length) for ONNX Runtime:
  inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids``), one output per task, named after it.

Every exported model is checked before the directory appears: its logits on :data:`PARITY_SENTENCES` (masked
for relation tasks, paired for pair tasks) must match PyTorch's within :data:`TOLERANCE`, else nothing is
written. A Hugging Face checkpoint is checked as users load it, from the folder written.

>>> export_model("runs/mtl/best", "hf", "exported/mtl")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from biomtl.atomic import atomic_dir
from biomtl.data.examples import Example
from biomtl.errors import BiomtlError
from biomtl.model import MultiTaskModel
from biomtl.tasks.base import PooledHead, pad_inputs
from biomtl.tasks.classification import ClassificationTask
from biomtl.tasks.multilabel import MultilabelTask
from biomtl.tasks.regression import CosineHead, RegressionTask
from biomtl.tasks.span_relation import SpanPairHead
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

MODELING_FILE = "modeling_biomtl.py"
SEQUENCE_CONFIG = "BiomtlSequenceClassifierConfig"
SEQUENCE_MODEL = "BiomtlForSequenceClassification"
SPAN_MODEL = "BiomtlForSpanRelation"
PARITY_ARGUMENTS = [("Naloxone", "clonidine"), ("Cisplatin", "magnesium"), ("Aspirin", "COX-1")]
"""The two arguments of each of :data:`PARITY_SENTENCES`, replaced by a relation task's masks."""
PROBLEM_TYPES: dict[type, str] = {
    ClassificationTask: "single_label_classification",
    MultilabelTask: "multi_label_classification",
    RegressionTask: "regression",
}
"""Task type → the ``problem_type`` of its pooled head (which loss, and what ``pipeline`` applies to the logits)."""


@dataclass(frozen=True)
class Exported:
    """One task's checkpoint: how to load it and its max |logit difference| against biomtl."""

    loads_with: str
    worst: float


class NotExportable(Exception):
    """A head that no Hugging Face checkpoint computes; the message says why."""


def export_hf(model: MultiTaskModel, out: Path, source: str) -> list[str]:
    lines, done, refused = [], {}, {}
    for name, head in model.heads.items():
        exporter = HF_EXPORTS.get(type(head))
        try:
            if exporter is None:
                raise NotExportable(f"biomtl has no Hugging Face form of its {type(head).__name__}")
            done[name] = exporter(model, name, out / name, source)
        except NotExportable as e:
            refused[name] = str(e)
            lines.append(f"{name}: not exported ({e}; use --format onnx)")
            continue
        lines.append(f"{name}: {name}/ ({done[name].loads_with}; max |logit difference| {done[name].worst:.1e})")
    if not done:
        why = "; ".join(f"{t}: {r}" for t, r in refused.items())
        raise BiomtlError(f"{source}: no task can be exported as a Hugging Face checkpoint ({why}); use --format onnx")
    (out / "README.md").write_text(_hf_index(model, source, done, refused))
    return lines


def export_token_classification(model: MultiTaskModel, task: str, out: Path, source: str) -> Exported:
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
    (out / "README.md").write_text(_token_readme(model, task, source))
    reloaded = AutoModelForTokenClassification.from_pretrained(out).eval()
    batch = parity_batch(model)
    with torch.inference_mode():
        ours = model(task, batch)
        theirs = reloaded(**batch).logits
    return Exported("AutoModelForTokenClassification", _check_parity(task, ours, theirs, batch["attention_mask"]))


def export_sequence_classification(model: MultiTaskModel, task: str, out: Path, source: str) -> Exported:
    """A pooled sentence head (relation / classification, multilabel, cross-encoder regression) as
    ``BiomtlForSequenceClassification``, the ``transformers`` model of :mod:`biomtl.export_templates.modeling_biomtl`:
    the same encoder (no pooler), [CLS] or mean pooling as the head, dropout, the head's linear layer. The file
    is copied into the folder and ``config.json`` maps ``AutoModelForSequenceClassification`` to it, so plain
    ``transformers`` loads the folder with ``trust_remote_code=True``; the parity check loads it that way."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from biomtl.export_templates import modeling_biomtl

    spec, head = model.specs[task], model.heads[task]
    problem_type = _problem_type(model, task)
    labels = _sequence_labels(model, task)
    thresholds = model.tasks[task].decision().get("thresholds") if problem_type == "multi_label_classification" else None
    encoder_config: Any = model.encoder.config  # a module attribute, typed Tensor | Module
    config = modeling_biomtl.BiomtlSequenceClassifierConfig(
        encoder_config=copy.deepcopy(encoder_config),
        pooling=getattr(head, "pooling", "cls"),
        classifier_dropout=model.dropout,
        thresholds=thresholds,
        entity_markers=spec.markers or None,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type=problem_type,
    )
    config.architectures = [SEQUENCE_MODEL]
    config.auto_map = {
        "AutoConfig": f"{Path(MODELING_FILE).stem}.{SEQUENCE_CONFIG}",
        "AutoModelForSequenceClassification": f"{Path(MODELING_FILE).stem}.{SEQUENCE_MODEL}",
    }
    hf = modeling_biomtl.BiomtlForSequenceClassification(config)
    hf.encoder.load_state_dict(model.encoder.state_dict())
    linear: Any = getattr(head, "out", None)
    if not isinstance(linear, nn.Linear) or hf.classifier.weight.shape != linear.weight.shape:
        raise NotExportable(f"its {type(head).__name__} has no linear layer of {len(labels)} outputs")
    hf.classifier.load_state_dict(linear.state_dict())
    out.mkdir(parents=True)
    hf.eval().save_pretrained(out)
    _save_tokenizer(model, out)
    (out / MODELING_FILE).write_text(modeling_source())
    (out / "README.md").write_text(_sequence_readme(model, task, source, problem_type, labels, thresholds))

    examples = parity_examples(model, task)
    ours = _biomtl_outputs(model, task, examples)
    reloaded = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    texts = [ex.text or "" for ex in examples]
    pairs = [ex.text_b or "" for ex in examples] if examples[0].text_b is not None else None
    enc = tokenizer(texts, pairs, padding=True, truncation=True, return_tensors="pt")  # at max_length (_save_tokenizer)
    with torch.inference_mode():
        theirs = reloaded(**enc).logits
    loads_with = "AutoModelForSequenceClassification, trust_remote_code=True"
    return Exported(loads_with, _check_parity(task, ours, theirs, enc["attention_mask"]))


def export_sentence_embedding(model: MultiTaskModel, task: str, out: Path, source: str) -> Exported:
    """The bi-encoder similarity head (mean-pooled token states of each text, compared by cosine; it has no
    weights) as the plain encoder, loaded by ``AutoModel``, plus sentence-transformers' files (mean pooling):
    the score is the cosine of the two texts' mean-pooled states."""
    from transformers import AutoModel, AutoTokenizer

    encoder: Any = copy.deepcopy(model.encoder)
    load_kwargs = _encoder_load_kwargs(encoder)
    out.mkdir(parents=True)
    encoder.save_pretrained(out)
    _save_tokenizer(model, out)
    hidden = encoder.config.hidden_size
    files = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
        "sentence_bert_config.json": {"max_seq_length": model.max_length, "do_lower_case": False, "model_args": load_kwargs},
        "1_Pooling/config.json": {
            "word_embedding_dimension": hidden, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
        },
        "config_sentence_transformers.json": {"similarity_fn_name": "cosine"},
    }
    (out / "1_Pooling").mkdir()
    for name, content in files.items():
        (out / name).write_text(json.dumps(content, indent=2) + "\n")
    (out / "README.md").write_text(_embedding_readme(model, task, source, load_kwargs))

    examples = parity_examples(model, task)
    ours = _biomtl_outputs(model, task, examples)
    reloaded = AutoModel.from_pretrained(out, **load_kwargs).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)

    def embed(texts: list[str]) -> torch.Tensor:  # (B, H): the mean of each text's token states
        enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        states = reloaded(**enc).last_hidden_state  # (B, T, H)
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    with torch.inference_mode():
        a, b = embed([ex.text or "" for ex in examples]), embed([ex.text_b or "" for ex in examples])
        theirs = torch.nn.functional.cosine_similarity(a, b, dim=-1).unsqueeze(-1)  # (B, 1)
    worst = _check_parity(task, ours, theirs, torch.ones_like(theirs))
    return Exported("AutoModel + mean pooling + cosine, or SentenceTransformer", worst)


def export_span_relation(model: MultiTaskModel, task: str, out: Path, source: str) -> Exported:
    """A span relation head as ``BiomtlForSpanRelation`` (:mod:`biomtl.export_templates.modeling_biomtl`): no
    ``transformers`` class reads argument spans, so ``config.json`` maps ``AutoModel`` to it and the folder loads
    with ``trust_remote_code=True``; inputs ``input_ids``, ``attention_mask`` and ``spans``."""
    from transformers import AutoModel

    from biomtl.export_templates import modeling_biomtl

    head: Any = model.heads[task]
    labels = _sequence_labels(model, task)
    encoder_config: Any = model.encoder.config
    config = modeling_biomtl.BiomtlSequenceClassifierConfig(
        encoder_config=copy.deepcopy(encoder_config), pooling=head.pooling, classifier_dropout=model.dropout,
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
        problem_type="single_label_classification",
    )
    config.architectures = [SPAN_MODEL]
    config.auto_map = {
        "AutoConfig": f"{Path(MODELING_FILE).stem}.{SEQUENCE_CONFIG}",
        "AutoModel": f"{Path(MODELING_FILE).stem}.{SPAN_MODEL}",
    }
    hf = modeling_biomtl.BiomtlForSpanRelation(config)
    hf.encoder.load_state_dict(model.encoder.state_dict())
    hf.dense.load_state_dict(head.dense.state_dict())
    hf.classifier.load_state_dict(head.out.state_dict())
    out.mkdir(parents=True)
    hf.eval().save_pretrained(out)
    _save_tokenizer(model, out)
    (out / MODELING_FILE).write_text(modeling_source())
    (out / "README.md").write_text(_span_readme(model, task, source, labels))

    examples = span_parity_examples()
    tasktype = model.tasks[task]
    batch = tasktype.collate(tasktype.encode(examples, model.tokenizer, model.max_length), model.tokenizer.pad_token_id)
    reloaded = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    with torch.inference_mode():
        ours = model(task, batch)
        theirs = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], spans=batch["spans"]).logits
    return Exported("AutoModel, trust_remote_code=True (inputs: input_ids, attention_mask, spans)",
                    _check_parity(task, ours, theirs, batch["attention_mask"]))


def span_parity_examples() -> list[Example]:
    """:data:`PARITY_SENTENCES` with their two :data:`PARITY_ARGUMENTS` as character spans."""
    examples = []
    for i, (text, arguments) in enumerate(zip(PARITY_SENTENCES, PARITY_ARGUMENTS, strict=True)):
        spans = tuple((text.index(a), text.index(a) + len(a)) for a in arguments)
        examples.append(Example(id=str(i), text=text, meta={"entities": spans}))
    return examples


def _span_readme(model: MultiTaskModel, task: str, source: str, labels: list[str]) -> str:
    pooled = "the mean of the token states" if getattr(model.heads[task], "pooling", "cls") == "mean" else "the [CLS] state"
    return f"""# {task}: relation between two argument spans of a sentence

{_about(model, task, source)}
- Labels (`config.id2label`): {', '.join(labels)}.
- Head: [{pooled}; a; b; a * b] → dropout → dense → tanh → dropout → linear, where `a` and `b` are the means
  of each argument's sub-word states (max |logit difference| against biomtl < {TOLERANCE}, checked at export).

The sentence is read as it is (no masks); `spans` `(batch, 2, 2)` gives, per row, the `[start, end)` sub-word
positions of the two arguments (first argument of type {model.specs[task].arguments[0] if model.specs[task].arguments else 'one'}
first). biomtl reads the sentence as words (`\\w+` runs and single punctuation marks) and an argument from the first
sub-word of its first word to the first sub-word after its last word:

```python
import re, torch
from transformers import AutoModel, AutoTokenizer
model = AutoModel.from_pretrained("{task}", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("{task}")
text, arguments = "Aspirin irreversibly inhibits COX-1.", [(0, 7), (30, 35)]
words = [(m.start(), m.end()) for m in re.finditer(r"\\w+|[^\\w\\s]", text)]
enc = tokenizer([text[s:e] for s, e in words], is_split_into_words=True, return_tensors="pt")
ids = enc.word_ids()
first = {{w: k for k, w in reversed(list(enumerate(ids))) if w is not None}}

def span(start, end):
    inside = [w for w, (s, e) in enumerate(words) if s < end and e > start]
    after = first.get(inside[-1] + 1, len(ids) - 1)
    return [first[inside[0]], after]

spans = torch.tensor([[span(*a) for a in arguments]])
logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], spans=spans).logits
```
{_citation(model, task)}"""


HF_EXPORTS: dict[type[nn.Module], Callable[[MultiTaskModel, str, Path, str], Exported]] = {
    TokenHead: export_token_classification,
    PooledHead: export_sequence_classification,
    CosineHead: export_sentence_embedding,
    SpanPairHead: export_span_relation,
}
"""Head class → the exporter of its Hugging Face form; a head not listed is refused."""


def modeling_source() -> str:
    """The text of ``modeling_biomtl.py`` as shipped in every sentence task's folder."""
    return resources.files("biomtl.export_templates").joinpath(MODELING_FILE).read_text(encoding="utf-8")


def parity_examples(model: MultiTaskModel, task: str) -> list[Example]:
    """:data:`PARITY_SENTENCES` as inputs of ``task``: with their arguments masked for a relation task (masks
    of its first two-mask combination), each paired with the next sentence for a pair task."""
    spec, n = model.specs[task], len(PARITY_SENTENCES)
    masks = next((option for option in spec.markers if len(option) == 2), spec.markers[0] if spec.markers else [])
    pair = model.tasks[task].pair_input or "text_b" in spec.columns
    examples = []
    for i, (text, arguments) in enumerate(zip(PARITY_SENTENCES, PARITY_ARGUMENTS, strict=True)):
        for argument, mask in zip(arguments, masks, strict=False):
            text = text.replace(argument, mask, 1)
        examples.append(Example(id=str(i), text=text, text_b=PARITY_SENTENCES[(i + 1) % n] if pair else None))
    return examples


def _biomtl_outputs(model: MultiTaskModel, task: str, examples: list[Example]) -> torch.Tensor:
    """biomtl's logits for ``examples``, encoded and batched by the task type as in training and prediction."""
    tasktype = model.tasks[task]
    features = tasktype.encode(examples, model.tokenizer, model.max_length)
    batch = tasktype.collate(features, model.tokenizer.pad_token_id)
    with torch.inference_mode():
        return model(task, batch)


def _problem_type(model: MultiTaskModel, task: str) -> str:
    tasktype = model.tasks[task]
    problem = next((p for cls, p in PROBLEM_TYPES.items() if isinstance(tasktype, cls)), None)
    if problem is None:
        raise NotExportable(f"its task type '{model.specs[task].type}' has no Hugging Face problem_type")
    return problem


def _sequence_labels(model: MultiTaskModel, task: str) -> list[str]:
    """What each logit means: the declared labels, or ``score`` for a regression's one output."""
    return list(model.specs[task].labels) or ["score"]


def _encoder_load_kwargs(encoder: nn.Module) -> dict[str, Any]:
    """What ``AutoModel.from_pretrained`` needs to rebuild ``encoder`` as it is: BERT-family encoders build a
    pooler unless told not to, and biomtl's have none (``pooler`` is ``None``)."""
    return {"add_pooling_layer": False} if getattr(encoder, "pooler", "absent") is None else {}


def _save_tokenizer(model: MultiTaskModel, out: Path) -> None:
    """The tokenizer, truncating at biomtl's ``max_length`` (``truncation=True``, a pipeline's too) as biomtl did."""
    tokenizer = copy.deepcopy(model.tokenizer)
    tokenizer.model_max_length = model.max_length
    tokenizer.save_pretrained(out)


def _check_parity(task: str, ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor) -> float:
    """Max |logit difference| over the real (unpadded) positions; above :data:`TOLERANCE` is an error."""
    if ours.shape != theirs.shape:
        raise BiomtlError(f"{task}: the exported model's logits have shape {list(theirs.shape)}, biomtl's {list(ours.shape)}; nothing written")
    diff = (ours.float() - theirs.float()).abs()
    if diff.dim() == 3:  # token logits: padded positions are not outputs
        diff = diff[mask.bool()]
    worst = float(diff.max()) if diff.numel() else 0.0
    if not worst < TOLERANCE:
        raise BiomtlError(f"{task}: exported logits differ from PyTorch's by {worst:.2e} (tolerance {TOLERANCE}); nothing written")
    return worst


def _about(model: MultiTaskModel, task: str, source: str) -> str:
    """The lines every task README opens with: where the checkpoint comes from, and its encoder."""
    spec = model.specs[task]
    return f"""Exported by `biomtl export --format hf` from the multi-task model `{source}` (task `{task}`, one of
{', '.join(model.specs)}). {spec.description}

- Encoder: `{model.encoder_name or 'all-MiniLM-L6-v2 (embedded default)'}`, fine-tuned jointly on all the tasks above."""


def _citation(model: MultiTaskModel, task: str) -> str:
    citation = model.specs[task].citation
    return f"\nCitation: {citation}\n" if citation else ""


def _token_readme(model: MultiTaskModel, task: str, source: str) -> str:
    tags = model.tasks[task].tags  # type: ignore[attr-defined]
    return f"""# {task}: token classification (NER)

{_about(model, task, source)}
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
{_citation(model, task)}"""


SEQUENCE_KINDS = {
    "single_label_classification": "classification (softmax over the labels)",
    "multi_label_classification": "multilabel classification (a sigmoid per label)",
    "regression": "regression (one real score)",
}


def _sequence_readme(
    model: MultiTaskModel, task: str, source: str, problem_type: str, labels: list[str], thresholds: dict[str, float] | None
) -> str:
    spec, head = model.specs[task], model.heads[task]
    pair = model.tasks[task].pair_input or "text_b" in spec.columns
    kind = ("relation " if spec.markers else "text-pair " if pair else "") + SEQUENCE_KINDS[problem_type]
    pooled = "the mean of the token states (padding excluded)" if getattr(head, "pooling", "cls") == "mean" else "the [CLS] state"
    example = parity_examples(model, task)[2]
    call = f'{{"text": {example.text!r}, "text_pair": {example.text_b!r}}}' if pair else repr(example.text)
    tokenized = f"{example.text!r}, {example.text_b!r}" if pair else repr(example.text)
    lines = [f"# {task}: {kind}", "", _about(model, task, source)]
    if problem_type == "regression":
        lines.append("- Output: one score (`logits[:, 0]`), trained with mean squared error"
                     + (f" on gold scores in [{spec.score_range[0]}, {spec.score_range[1]}]." if spec.score_range else "."))
    else:
        lines.append(f"- Labels (`config.id2label`): {', '.join(labels)}.")
    lines += [
        f"- Head: {pooled} → dropout → linear, with no pooler in between (max |logit difference| against",
        f"  biomtl < {TOLERANCE} on real sentences, checked at export).",
        "",
        "```python",
        "import torch",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline",
        f'model = AutoModelForSequenceClassification.from_pretrained("{task}", trust_remote_code=True)',
        f'tokenizer = AutoTokenizer.from_pretrained("{task}", trust_remote_code=True)',
        f"logits = model(**tokenizer([{tokenized}], truncation=True, return_tensors=\"pt\")).logits",
        f'classifier = pipeline("text-classification", model="{task}", trust_remote_code=True)',
        f"classifier({call}, top_k=None, truncation=True)",
        "```",
    ]
    if pair:
        lines += ["", "Each input is a pair of texts, encoded as one sequence (`[CLS] text [SEP] text_pair [SEP]`)."]
    if spec.markers:
        lines += _masks_section(model, task)
    if thresholds:
        rows = "\n".join(f"| {label} | {t} |" for label, t in thresholds.items())
        lines += [
            "",
            "## Decision thresholds",
            "",
            "biomtl predicts a label when its sigmoid reaches the label's threshold (`config.thresholds`; training",
            "chooses them on dev, 0.5 is the default):",
            "",
            "| label | threshold |",
            "|---|---|",
            rows,
            "",
            "```python",
            "probs = torch.sigmoid(logits)",
            "predicted = [[label for label, t in model.config.thresholds.items() if row[model.config.label2id[label]] >= t]",
            "             for row in probs]",
            "```",
        ]
    n_lines = len(modeling_source().splitlines())
    lines += [
        "",
        "## Why `trust_remote_code=True`",
        "",
        "No stock `transformers` class computes this head: every BERT-family `…ForSequenceClassification` puts a",
        "pooler (dense + tanh) or a dense layer between the encoder and the classifier, and biomtl's head has none.",
        f"`{MODELING_FILE}` ({n_lines} lines, in this folder; it imports only torch and transformers) defines",
        f"`{SEQUENCE_MODEL}`: `AutoModel` built from `config.encoder_config`, the pooling above, dropout and a",
        "linear classifier; `config.json`'s `auto_map` points `AutoConfig` and `AutoModelForSequenceClassification`",
        "to it. Read it before you trust it. With `labels` the model also returns the loss of `config.problem_type`.",
    ]
    return "\n".join(lines) + "\n" + _citation(model, task)


def _masks_section(model: MultiTaskModel, task: str) -> list[str]:
    """A relation task README's section on its input: the arguments masked as in training."""
    spec = model.specs[task]
    options = " or ".join(" + ".join(f"`{m}`" for m in option) for option in spec.markers)
    first = spec.markers[0]
    order = (f" ({', '.join(f'`{m}` = {a}' for m, a in zip(first, spec.arguments, strict=False))})" if spec.arguments else "")
    lines = [
        "",
        "## Input: the two arguments masked",
        "",
        "As in training, each candidate pair is one sentence in which the two argument mentions are replaced, span",
        f"and all, by plain-text masks: one of the combinations {options}{order} per sentence, nothing else masked.",
        f"For example `{PARITY_SENTENCES[2]}` with the pair ({PARITY_ARGUMENTS[2][0]}, {PARITY_ARGUMENTS[2][1]})",
        f"becomes `{parity_examples(model, task)[2].text}`.",
    ]
    if any(len(option) == 1 for option in spec.markers):
        one = next(option[0] for option in spec.markers if len(option) == 1)
        lines += [f"Two mentions that overlap or touch become the one mask `{one}` (covering both spans)."]
    lines += ["The masks are not special tokens: the tokenizer splits them (`@`, word pieces, `$`) as it did in training."]
    return lines


def _embedding_readme(model: MultiTaskModel, task: str, source: str, load_kwargs: dict[str, Any]) -> str:
    spec = model.specs[task]
    kwargs = "".join(f", {k}={v!r}" for k, v in load_kwargs.items())
    mapping = (
        f"biomtl reports the cosine and a score mapped onto [{spec.score_range[0]}, {spec.score_range[1]}]:\n"
        f"  `score = {spec.score_range[0]} + clip(cosine, 0, 1) * ({spec.score_range[1]} - {spec.score_range[0]})`."
        if spec.score_range else "biomtl's score is the cosine."
    )
    a, b = PARITY_SENTENCES[0], PARITY_SENTENCES[1]
    return f"""# {task}: sentence similarity (bi-encoder)

{_about(model, task, source)}
- Head: none. Each text is encoded alone, its token states are mean-pooled (padding excluded), and the
  similarity is the cosine of the two vectors (max |cosine difference| against biomtl < {TOLERANCE} on real
  sentence pairs, checked at export).
- {mapping}

```python
import torch
from transformers import AutoModel, AutoTokenizer
model = AutoModel.from_pretrained("{task}"{kwargs})
tokenizer = AutoTokenizer.from_pretrained("{task}")

def embed(texts):
    enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    states = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)

cosine = torch.nn.functional.cosine_similarity(embed([{a!r}]), embed([{b!r}]))
```

The folder is also a sentence-transformers model (`modules.json`: Transformer, then mean pooling):

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("{task}")
embeddings = model.encode([{a!r}, {b!r}])
cosine = model.similarity(embeddings[:1], embeddings[1:])
```
{_citation(model, task)}"""


def _hf_index(model: MultiTaskModel, source: str, done: dict[str, Exported], refused: dict[str, str]) -> str:
    lines = [f"# Hugging Face export of `{source}`", "", "One checkpoint per task (a folder each, with its own README):", ""]
    lines += ["| folder | task type | loads with |", "|---|---|---|"]
    lines += [f"| `{t}/` | {model.specs[t].type} | {e.loads_with} |" for t, e in done.items()]
    if any(e.loads_with.startswith("AutoModelForSequenceClassification") for e in done.values()):
        lines += [
            "",
            "Sentence heads (dropout + linear on the [CLS] state or the mean of the tokens) have no stock",
            "`transformers` class: every stock BERT-family `…ForSequenceClassification` adds a pooler (dense + tanh)",
            f"first. Their folders ship `{MODELING_FILE}` (imports only torch and transformers), loaded with",
            "`trust_remote_code=True`.",
        ]
    if refused:
        lines += ["", "Not exported (`biomtl export --format onnx` exports every head that scores inputs on their own):", ""]
        lines += [f"- `{t}`: {why}." for t, why in refused.items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------
# ONNX: the encoder and every head, one graph


class AllHeads(nn.Module):
    """The shared encoder once, then every head: the inputs named ``names`` (``input_ids``, ``attention_mask``
    [, ``token_type_ids``][, ``spans``]) → logits per task. ``spans`` ``(batch, 2, 2)``: each row's two argument
    sub-word ranges ``[start, end)``, read by span relation heads."""

    def __init__(self, model: MultiTaskModel, tasks: list[str], names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.tasks = tasks
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = _all_outputs(self.model, dict(zip(self.names, inputs, strict=True)), self.tasks)
        return tuple(outputs[t] for t in self.tasks)


def _all_outputs(model: MultiTaskModel, batch: dict[str, torch.Tensor], tasks: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Every head's logits (or ``tasks``') on one encoder pass; span relation heads read ``batch["spans"]``."""
    hidden = model.encode(batch)
    names = list(model.heads) if tasks is None else tasks
    span_heads = [t for t in names if model.tasks[t].reads_spans]
    outputs = model.run_heads(hidden, batch, [t for t in names if t not in span_heads])
    for t in span_heads:
        outputs[t] = model.heads[t](hidden, batch["attention_mask"], spans=batch["spans"])
    return {t: outputs[t] for t in names}


def parity_spans(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Argument ranges for span heads in a parity batch: the first and the last real sub-word of each row."""
    last = batch["attention_mask"].sum(1) - 2  # the last sub-word before [SEP]
    first = torch.ones_like(last)
    return torch.stack([torch.stack([first, first + 1], -1), torch.stack([last, last + 1], -1)], 1)


def export_onnx(model: MultiTaskModel, out: Path, source: str) -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        raise BiomtlError("--format onnx needs onnx and onnxruntime: pip install 'biomtl[onnx]'") from None
    batch = parity_batch(model)
    has_spans = any(task.reads_spans for task in model.tasks.values())
    if has_spans:
        batch["spans"] = parity_spans(batch)
    lines, tasks = [], []
    with torch.inference_mode():
        outputs = _all_outputs(model, batch)
    for name, logits in outputs.items():
        if logits.shape[0] != batch["input_ids"].shape[0]:
            lines.append(f"{name}: not exported (its head does not score each input on its own: it compares parts of a batch)")
        else:
            tasks.append(name)
    if not tasks:
        raise BiomtlError(f"{source}: no head scores each input on its own; nothing to export")
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in batch else [])
    names += ["spans"] if has_spans and any(model.tasks[t].reads_spans for t in tasks) else []
    inputs = tuple(batch[n] for n in names)
    axes = {n: {0: "batch", 1: "length"} for n in names}
    if "spans" in axes:
        axes["spans"] = {0: "batch"}
    for t in tasks:
        axes[t] = {0: "batch", 1: "length"} if outputs[t].dim() == 3 else {0: "batch"}
    # The TorchScript exporter (dynamo=False) needs no onnxscript; its tracer warnings are about Python-side
    # shape checks that the parity check below covers for other batch sizes and lengths (tests/test_export.py).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            AllHeads(model, tasks, names).eval(), inputs, str(out / ONNX_FILE), input_names=names, output_names=tasks,
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


SPANS_NOTE = """ Span relation outputs (`type: span_relation`) read the plain sentence
and the `spans` input, int64 `(batch, 2, 2)`: for each row, the `[start, end)` sub-word positions of its two
arguments (from the first sub-word of an argument's first word to the first sub-word after its last word); one
candidate pair per row, so a sentence with several pairs is several rows. Rows of other outputs may give any
in-range spans."""


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
expect their masked sentences (`@CHEMICAL$ ... @GENE$`).{SPANS_NOTE if "spans" in inputs else ""}

```python
import onnxruntime, numpy as np
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained("tokenizer")
session = onnxruntime.InferenceSession("{ONNX_FILE}")
enc = tok(["Naloxone reverses the effect of clonidine."], return_tensors="np")
outputs = session.run(None, {{k: enc[k].astype(np.int64) for k in {inputs!r}}})
```
"""
