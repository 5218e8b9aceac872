"""Any subset of the declared labels per sentence (HoC); scored per document when ``doc_id`` is given.

A label is predicted when its probability reaches that label's threshold: 0.5 until training chooses the
thresholds on dev (:meth:`MultilabelTask.fit_decision`); the model directory keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from biomtl import metrics
from biomtl.config import DatasetSpec
from biomtl.data.examples import Example
from biomtl.tasks.base import (
    DEFAULT_SETTINGS,
    Batch,
    Feature,
    HeadSettings,
    InvalidLabel,
    PooledHead,
    SentenceTask,
    labels_problems,
)

THRESHOLD = 0.5
CANDIDATES = [round(0.02 * k, 2) for k in range(1, 50)]  # thresholds tried per label: 0.02, 0.04, ..., 0.98


@dataclass(frozen=True)
class LabelSetPrediction:
    """The labels predicted (probability ≥ the label's threshold) and every label's probability."""

    labels: list[str]
    probabilities: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"labels": self.labels, "probabilities": self.probabilities}


class MultilabelTask(SentenceTask):
    """Independent sigmoid per label (binary cross-entropy); a threshold per label, chosen on dev."""

    def __init__(self, spec: DatasetSpec, settings: HeadSettings = DEFAULT_SETTINGS) -> None:
        super().__init__(spec, settings)
        self.thresholds = [THRESHOLD] * len(spec.labels)

    @classmethod
    def spec_problems(cls, spec: DatasetSpec) -> list[str]:
        return labels_problems(spec)

    def parse_label(self, raw: Any) -> list[str]:
        """Label names separated by ``label_separator`` (or a JSON list), or a 0/1 vector over the labels."""
        where = self.spec.config_path or self.spec.name
        if isinstance(raw, list) and all(isinstance(v, int) for v in raw):
            if len(raw) != len(self.spec.labels):
                raise InvalidLabel(f"label vector has {len(raw)} entries, {where} declares {len(self.spec.labels)} labels")
            return [name for name, flag in zip(self.spec.labels, raw, strict=True) if flag]
        names = raw if isinstance(raw, list) else [x.strip() for x in str(raw or "").split(self.spec.label_separator)]
        names = [n for n in names if n]
        bad = [n for n in names if n not in self.spec.labels]
        if bad:
            raise InvalidLabel(f"undeclared label '{bad[0]}' (add it to labels: in {where})")
        return names

    def build_head(self, hidden_size: int, settings: HeadSettings) -> nn.Module:
        return PooledHead(hidden_size, len(self.spec.labels), settings)

    def target(self, example: Example) -> Any:
        names = set(example.label or [])
        return [1.0 if name in names else 0.0 for name in self.spec.labels]

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), batch["labels"])

    def decode(self, logits: torch.Tensor, features: list[Feature]) -> list[LabelSetPrediction]:
        probs = torch.sigmoid(logits.float()).tolist()
        return [self._decide(dict(zip(self.spec.labels, row, strict=True)), self.thresholds) for row in probs]

    def _decide(self, probabilities: dict[str, float], thresholds: list[float]) -> LabelSetPrediction:
        labels = [name for name, t in zip(self.spec.labels, thresholds, strict=True) if probabilities[name] >= t]
        return LabelSetPrediction(labels, probabilities)

    def metric_value(self, prediction: LabelSetPrediction) -> list[str]:
        return prediction.labels

    def saved_metric_value(self, row: dict[str, Any]) -> list[str]:
        return list(row["labels"])

    # -- thresholds ---------------------------------------------------------------------------------------
    def fit_decision(self, examples: list[Example], predictions: Sequence[Any]) -> list[LabelSetPrediction]:
        """Each label's threshold is chosen from :data:`CANDIDATES` to maximise the task's main metric on
        ``examples`` (coordinate ascent from 0.5, label by label, two rounds; a threshold moves only for a
        strictly better score, so ties keep 0.5). Returns the predictions under the chosen thresholds."""
        probs = [p.probabilities for p in predictions]
        gold = [self.gold(ex) for ex in examples]
        kwargs = self.metric_kwargs(examples)

        def main_score(thresholds: list[float]) -> float:
            rules = list(zip(self.spec.labels, thresholds, strict=True))
            pred = [[name for name, t in rules if p[name] >= t] for p in probs]
            return metrics.compute(self.spec.metric.name, gold, pred, **kwargs)[self.spec.main_metric]

        thresholds = [THRESHOLD] * len(self.spec.labels)
        best = main_score(thresholds)
        for _ in range(2):
            for j in range(len(thresholds)):
                for t in CANDIDATES:
                    trial = [*thresholds[:j], t, *thresholds[j + 1 :]]
                    if (value := main_score(trial)) > best:
                        best, thresholds = value, trial
        self.thresholds = thresholds
        return [self._decide(p, thresholds) for p in probs]

    def decision(self) -> dict[str, Any]:
        return {"thresholds": dict(zip(self.spec.labels, self.thresholds, strict=True))}

    def set_decision(self, decision: dict[str, Any]) -> None:
        thresholds = decision.get("thresholds")
        if set(decision) != {"thresholds"} or not isinstance(thresholds, dict):
            raise ValueError("expected {'thresholds': {label: threshold}}")
        if set(thresholds) != set(self.spec.labels):
            raise ValueError(f"thresholds: expected one per label ({', '.join(self.spec.labels)})")
        bad = [k for k, v in thresholds.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1]
        if bad:
            raise ValueError(f"thresholds.{bad[0]}: expected a number in [0, 1], got {thresholds[bad[0]]!r}")
        self.thresholds = [float(thresholds[name]) for name in self.spec.labels]
