"""Raw text (or documents) → typed predictions with character offsets.

``Predictor.load(model_dir)`` needs only the saved model directory. Each task's type reads its inputs and
writes its outputs (``read_input``/``output_row``); for the built-in types:

* tagging: raw text of any length → ``entities`` with ``start``/``end`` offsets into that text;
* classification: a text (or ``text``/``text_b`` pair). For relation tasks the text carries the entity
  masks (``@CHEMICAL$ ... @GENE$``), or plain text plus two ``entities`` (offsets and type) that the
  predictor masks itself → ``label`` with every label's probability;
* regression: a ``text``/``text_b`` pair → ``score``;
* multilabel: a text → ``labels`` with probabilities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from biomtl.data.examples import Example
from biomtl.errors import BiomtlError
from biomtl.inference import autocast, autocast_dtype, predict_features
from biomtl.model import MultiTaskModel
from biomtl.tasks.base import pad_inputs
from biomtl.tasks.tagging import window_features, word_pieces, words_with_offsets


def inference_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The predictor's ``--precision`` (auto, fp32 or bf16) as :func:`biomtl.inference.autocast_dtype` resolves
    it; ``auto`` is bf16 where the hardware computes it natively (2x faster on a 2-core AVX512-BF16 CPU with
    identical BC5CDR entities; BENCHMARKS.md), fp32 elsewhere."""
    if precision not in ("auto", "fp32", "bf16"):
        raise BiomtlError(f"--precision: unknown value '{precision}'; choose auto, fp32 or bf16")
    return autocast_dtype(precision, device)


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
        """One prediction per input: a ``str`` is raw text; a ``dict`` may carry ``id``, ``text``, ``text_b``
        and (relations) ``entities``, as the task's type reads them. ``source`` and ``lines`` (each input's
        line, default its position) name an input in error messages."""
        self._check_task(task)
        task_type = self.model.tasks[task]
        lines = lines or list(range(1, len(inputs) + 1))
        examples = [task_type.read_input(item, source, line) for item, line in zip(inputs, lines, strict=True)]
        features = task_type.encode(examples, self.model.tokenizer, self.model.max_length)
        preds = predict_features(self.model, task, features, len(examples), self.batch_size, self.device, self.dtype)
        return [{"id": ex.id, **task_type.output_row(ex, p)} for ex, p in zip(examples, preds, strict=True)]

    def annotate_tasks(self) -> list[str]:
        """Tasks that can annotate plain text (tagging, multilabel and single-text classification)."""
        return [name for name, task in self.model.tasks.items() if task.can_annotate]

    @torch.inference_mode()
    def annotate(self, texts: list[str], tasks: list[str] | None = None) -> list[dict[str, Any]]:
        """Annotate raw texts with several heads at once: the encoder runs once per window, and every
        head reads the same states. Token-level heads give ``entities``; sentence heads give their labels
        (probabilities averaged over a long text's windows).

        >>> Predictor.load("runs/mtl/best").annotate(["Cisplatin-induced nephrotoxicity."])  # doctest: +SKIP
        """
        self.model.eval()
        tasks = tasks or self.annotate_tasks()
        bad = [t for t in tasks if t not in self.annotate_tasks()]
        if bad:
            raise BiomtlError(f"--task: {', '.join(bad)} cannot annotate plain text (pairs or relation masks needed)")
        # Word windows as token-level heads see them (a text without words reads as "."); sentence heads
        # read the [CLS] of the same windows.
        examples = [Example(id=str(i), text=t) for i, t in enumerate(texts, start=1)]
        words = [[w for w, _, _ in words_with_offsets(t)] or ["."] for t in texts]
        tokenizer = self.model.tokenizer
        features = [
            feature
            for i, pieces in enumerate(word_pieces(words, tokenizer))
            for feature in window_features(pieces, self.model.max_length, tokenizer.cls_token_id, tokenizer.sep_token_id, i)
        ]
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
        window_preds: dict[str, list[Any]] = {t: [None] * len(features) for t in tasks}
        pooled: dict[str, list[tuple[int, torch.Tensor]]] = {t: [] for t in tasks}  # (feature, logits)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            feats = [features[i] for i in idx]
            batch = {k: v.to(self.device) for k, v in pad_inputs(feats, tokenizer.pad_token_id).items()}
            with autocast(self.device, self.dtype):
                outputs = self.model.forward_all(batch, tasks)
            for t in tasks:
                logits = outputs[t].float().cpu()
                if self.model.tasks[t].token_level:
                    for i, p in zip(idx, self.model.tasks[t].decode(logits, feats), strict=True):
                        window_preds[t][i] = p
                else:
                    pooled[t].extend(zip(idx, logits, strict=True))
        results: list[dict[str, Any]] = [{"id": ex.id, "entities": [], "labels": {}} for ex in examples]
        for t in tasks:
            task = self.model.tasks[t]
            if task.token_level:
                for i, pred in enumerate(task.merge(window_preds[t], features, len(examples))):
                    row = task.output_row(examples[i], pred)
                    results[i]["entities"].extend({**entity, "task": t} for entity in row["entities"])
                continue
            by_example: dict[int, list[torch.Tensor]] = {}
            for i, logit in sorted(pooled[t], key=lambda item: item[0]):
                by_example.setdefault(features[i]["example_index"], []).append(logit)
            for i, window_logits in by_example.items():
                mean = torch.stack(window_logits).mean(0, keepdim=True)
                (pred,) = task.decode(mean, [features[0]])
                results[i]["labels"][t] = task.output_row(examples[i], pred)
        for r in results:
            r["entities"].sort(key=lambda e: (e["start"], e["end"]))
        return results
