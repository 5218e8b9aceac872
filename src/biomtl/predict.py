"""Raw text (or documents) → typed predictions with character offsets.

``Predictor.load(model_dir)`` needs only the saved model directory. Inputs per task type:

* tagging: raw text of any length → ``entities`` with ``start``/``end`` offsets into that text;
* classification: a text (or ``text``/``text_b`` pair). For relation tasks the text carries the entity
  masks (``@CHEMICAL$ ... @GENE$``), or plain text plus two ``entities`` (offsets and type) that the
  predictor masks itself → ``label`` with every label's probability;
* regression: a ``text``/``text_b`` pair → ``score``;
* multilabel: a text → ``labels`` with probabilities.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from biomtl.data.examples import Example
from biomtl.errors import BiomtlError, DataError
from biomtl.metrics import iob_chunks
from biomtl.model import MultiTaskModel
from biomtl.train import autocast, predict_features

WORD = re.compile(r"\w+|[^\w\s]")


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run natively (AVX512-BF16/AMX on a CPU, Ampere or newer on a GPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def inference_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``None`` is fp32. ``auto`` is bf16 where the hardware has native bf16 (measured 2x faster on a 2-core
    AVX512-BF16 CPU with identical BC5CDR entities; BENCHMARKS.md), fp32 elsewhere."""
    if precision not in ("auto", "fp32", "bf16"):
        raise BiomtlError(f"--precision: unknown value '{precision}'; choose auto, fp32 or bf16")
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    return None


def words_with_offsets(text: str) -> list[tuple[str, int, int]]:
    """Split raw text into words and punctuation, the tokenisation of the BLUE NER files.

    >>> words_with_offsets("IL-2 gene.")
    [('IL', 0, 2), ('-', 2, 3), ('2', 3, 4), ('gene', 5, 9), ('.', 9, 10)]
    """
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


class Predictor:
    """Predictions from a saved model directory.

    >>> p = Predictor.load("runs/bc5cdr-chemical/best")  # doctest: +SKIP
    >>> p.predict("bc5cdr-chemical", ["Naloxone reverses the effect of clonidine."])[0]["entities"][0]  # doctest: +SKIP
    {'start': 0, 'end': 8, 'text': 'Naloxone', 'type': 'Chemical', 'score': 0.99}
    """

    def __init__(
        self, model: MultiTaskModel, device: str | torch.device = "cpu", batch_size: int = 64, precision: str = "auto"
    ) -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.dtype = inference_dtype(precision, self.device)

    @classmethod
    def load(
        cls, directory: str | Path, device: str = "cpu", batch_size: int = 64, precision: str = "auto"
    ) -> Predictor:
        return cls(MultiTaskModel.load(directory, device=device), device, batch_size, precision)

    @property
    def tasks(self) -> list[str]:
        return list(self.model.specs)

    def _check_task(self, task: str) -> None:
        if task not in self.model.specs:
            raise BiomtlError(f"--task: the model has no task '{task}' (it has {', '.join(self.model.specs)})")

    def predict(
        self, task: str, inputs: list[str | dict[str, Any]], source: str = "input", lines: list[int] | None = None
    ) -> list[dict[str, Any]]:
        """One prediction per input. A ``str`` is raw text; a ``dict`` may carry ``id``, ``text``,
        ``text_b`` and (relations) ``entities``. ``source`` and ``lines`` (each input's line, default its
        position) name an input in error messages."""
        self._check_task(task)
        spec = self.model.specs[task]
        lines = lines or list(range(1, len(inputs) + 1))
        records = [self._record(spec, item, source, line) for item, line in zip(inputs, lines, strict=True)]
        if spec.type == "tagging":
            return self._predict_entities(task, records)
        examples = [Example(id=r["id"], text=r["text"], text_b=r.get("text_b")) for r in records]
        features = self.model.tasks[task].encode(examples, self.model.tokenizer, self.model.max_length)
        preds = predict_features(self.model, task, features, len(examples), self.batch_size, self.device, self.dtype)
        return [{"id": r["id"], **p} for r, p in zip(records, preds, strict=True)]

    def _record(self, spec: Any, item: str | dict[str, Any], source: str, line: int) -> dict[str, Any]:
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise DataError(source, line, "expected a JSON object with a string field 'text'")
        record = {"id": str(item.get("id", line)), "text": item["text"]}
        if spec.type == "regression" or "text_b" in item:
            if not isinstance(item.get("text_b"), str):
                raise DataError(source, line, f"task {spec.name} compares two texts: give 'text' and 'text_b'")
            record["text_b"] = item["text_b"]
        if "entities" in item:
            record["text"] = mask_entities(spec, item["text"], item["entities"], source, line)
        if spec.markers and spec.type == "classification":
            check_masks(spec, record["text"], source, line)  # also catches a mask given twice
        return record

    def _predict_entities(self, task: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        spans = [words_with_offsets(r["text"]) for r in records]
        examples = [Example(id=r["id"], tokens=[w for w, _, _ in s]) for r, s in zip(records, spans, strict=True)]
        # Texts without any word still get an (empty) answer.
        keep = [i for i, ex in enumerate(examples) if ex.tokens]
        features = self.model.tasks[task].encode([examples[i] for i in keep], self.model.tokenizer, self.model.max_length)
        preds = predict_features(self.model, task, features, len(keep), self.batch_size, self.device, self.dtype)
        by_index = dict(zip(keep, preds, strict=True))
        out = []
        for i, record in enumerate(records):
            entities = _entities(record["text"], spans[i], by_index[i]) if i in by_index else []
            out.append({"id": record["id"], "entities": entities})
        return out


    def annotate_tasks(self) -> list[str]:
        """Tasks that can annotate plain text: tagging, multilabel and single-text classification."""
        return [
            t for t, s in self.model.specs.items()
            if s.type in ("tagging", "multilabel") or (s.type == "classification" and not s.markers and "text_b" not in s.columns)
        ]

    @torch.inference_mode()
    def annotate(self, texts: list[str], tasks: list[str] | None = None) -> list[dict[str, Any]]:
        """Annotate raw texts with several heads at once: the encoder runs once per window, and every
        head reads the same states. Tagging heads give ``entities``; sentence heads give their labels
        (probabilities averaged over a long text's windows).

        >>> Predictor.load("runs/mtl/best").annotate(["Cisplatin-induced nephrotoxicity."])  # doctest: +SKIP
        """
        from biomtl.config import DatasetSpec, MetricSpec
        from biomtl.tasks.tagging import TaggingTask

        self.model.eval()
        tasks = tasks or self.annotate_tasks()
        bad = [t for t in tasks if t not in self.annotate_tasks()]
        if bad:
            raise BiomtlError(f"--task: {', '.join(bad)} cannot annotate plain text (pairs or relation masks needed)")
        spans = [words_with_offsets(t) for t in texts]
        examples = [Example(id=str(i), tokens=[w for w, _, _ in s] or ["."]) for i, s in enumerate(spans, start=1)]
        # Word windows as the tagging heads see them; sentence heads read the [CLS] of the same windows.
        windowing = TaggingTask(DatasetSpec("windows", "tagging", "conll", {}, MetricSpec("entity_f1"), "f1", labels=["X"]))
        features = windowing.encode(examples, self.model.tokenizer, self.model.max_length)
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
        token_preds: dict[str, list[Any]] = {t: [None] * len(features) for t in tasks}
        pooled: dict[str, list[torch.Tensor | None]] = {t: [None] * len(features) for t in tasks}
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            feats = [features[i] for i in idx]
            batch = windowing.collate(feats, self.model.tokenizer.pad_token_id)
            batch = {k: v.to(self.device) for k, v in batch.items() if k != "labels"}
            with autocast(self.device, self.dtype):
                outputs = self.model.forward_all(batch, tasks)
            logits = {t: v.float().cpu() for t, v in outputs.items()}
            for t in tasks:
                if self.model.specs[t].type == "tagging":
                    for i, p in zip(idx, self.model.tasks[t].decode(logits[t], feats), strict=True):
                        token_preds[t][i] = p
                else:
                    for row, i in enumerate(idx):
                        pooled[t][i] = logits[t][row]
        results: list[dict[str, Any]] = [{"id": ex.id, "entities": [], "labels": {}} for ex in examples]
        for t in tasks:
            task = self.model.tasks[t]
            if self.model.specs[t].type == "tagging":
                merged = task.merge(token_preds[t], features, len(examples))
                for i, pred in enumerate(merged):
                    if spans[i]:
                        results[i]["entities"].extend(_entities(texts[i], spans[i], pred, task=t))
                continue
            by_example: dict[int, list[torch.Tensor]] = {}
            for f, logit in zip(features, pooled[t], strict=True):
                by_example.setdefault(f["example_index"], []).append(logit)
            for i, logits_list in by_example.items():
                mean = torch.stack(logits_list).mean(0, keepdim=True)
                (pred,) = task.decode(mean, [features[0]])
                results[i]["labels"][t] = pred
        for r in results:
            r["entities"].sort(key=lambda e: (e["start"], e["end"]))
        return results


def _entities(text: str, spans: list[tuple[str, int, int]], pred: dict[str, Any], task: str | None = None) -> list[dict[str, Any]]:
    """Entity chunks of one text's word tags, with character offsets into ``text``."""
    tags, probs = pred["tags"], pred["probs"]
    out = []
    for etype, s, e in sorted(iob_chunks(tags), key=lambda c: c[1]):
        start, end = spans[s][1], spans[e - 1][2]
        ent = {"start": start, "end": end, "text": text[start:end], "type": etype, "score": round(min(probs[s:e]), 4)}
        if task is not None:
            ent["task"] = task
        out.append(ent)
    return out


def check_masks(spec: Any, text: str, source: str, line: int) -> None:
    from biomtl.data.readers import mask_problem

    problem = mask_problem(spec, text)
    if problem:
        raise DataError(Path(source), line, problem)


def mask_entities(spec: Any, text: str, entities: Any, source: str, line: int) -> str:
    """Replace the two argument spans by the task's masks.

    Each entity is ``{"start", "end", "mask"}`` (``mask`` like ``"@CHEMICAL$"``) or, for tasks with one
    mask combination, in the order of that combination.
    """
    if not spec.markers:
        raise DataError(source, line, f"task {spec.name} takes no entities (it is not a relation task)")
    if not isinstance(entities, list) or len(entities) != 2:
        raise DataError(source, line, "'entities' must list exactly two argument spans")
    default = spec.markers[0]
    spans = []
    for k, ent in enumerate(entities):
        if not isinstance(ent, dict) or not isinstance(ent.get("start"), int) or not isinstance(ent.get("end"), int):
            raise DataError(source, line, f"entities[{k}]: expected integer 'start' and 'end'")
        start, end = ent["start"], ent["end"]
        if not 0 <= start < end <= len(text):
            raise DataError(source, line, f"entities[{k}]: offsets {start}-{end} are outside the text (length {len(text)})")
        mask = ent.get("mask", default[k] if len(default) == 2 else None)
        allowed = {m for option in spec.markers for m in option}
        if mask not in allowed:
            raise DataError(source, line, f"entities[{k}]: mask {mask!r} is not one of {', '.join(sorted(allowed))}")
        spans.append((start, end, mask))
    (s1, e1, _), (s2, e2, _) = sorted(spans)
    if s2 < e1:
        raise DataError(source, line, f"entities overlap or cross ({s1}-{e1} and {s2}-{e2})")
    for start, end, mask in sorted(spans, reverse=True):
        text = text[:start] + mask + text[end:]
    return text
