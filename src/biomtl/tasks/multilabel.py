"""Any subset of the declared labels per sentence (HoC); scored per document when ``doc_id`` is given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from biomtl.config import DatasetSpec
from biomtl.data.examples import Example
from biomtl.tasks.base import (
    Batch,
    Feature,
    HeadSettings,
    InvalidLabel,
    PooledHead,
    SentenceTask,
    labels_problems,
)

THRESHOLD = 0.5


@dataclass(frozen=True)
class LabelSetPrediction:
    """The labels predicted (probability ≥ 0.5) and every label's probability."""

    labels: list[str]
    probabilities: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"labels": self.labels, "probabilities": self.probabilities}


class MultilabelTask(SentenceTask):
    """Independent sigmoid per label (binary cross-entropy)."""

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
        return [
            LabelSetPrediction(
                labels=[name for name, p in zip(self.spec.labels, row, strict=True) if p >= THRESHOLD],
                probabilities=dict(zip(self.spec.labels, row, strict=True)),
            )
            for row in probs
        ]

    def metric_value(self, prediction: LabelSetPrediction) -> list[str]:
        return prediction.labels
