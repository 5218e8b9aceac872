"""One label per text or text pair: relations with masked arguments (ChemProt, DDI), inference (MedNLI),
yes/no questions."""

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
from biomtl.tasks.masks import check_masks


@dataclass(frozen=True)
class LabelPrediction:
    """The most probable label, its probability, and every label's probability."""

    label: str
    probability: float
    probabilities: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "probability": self.probability, "probabilities": self.probabilities}


class ClassificationTask(SentenceTask):
    """Softmax over the declared labels."""

    target_dtype = torch.long

    @classmethod
    def spec_problems(cls, spec: DatasetSpec) -> list[str]:
        return labels_problems(spec)

    def parse_label(self, raw: Any) -> str:
        label = str(raw)
        if label not in self.spec.labels:
            raise InvalidLabel(f"undeclared label '{label}' (add it to labels: in {self.spec.config_path or self.spec.name})")
        return label

    def check_texts(self, text: str, text_b: str | None) -> str | None:
        if text_b is not None and not text_b.strip():
            return "empty second text (text_b)"
        return None

    def build_head(self, hidden_size: int, settings: HeadSettings) -> nn.Module:
        return PooledHead(hidden_size, len(self.spec.labels), settings)

    def target(self, example: Example) -> Any:
        return self.spec.labels.index(example.label) if example.label is not None else -100

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])

    def decode(self, logits: torch.Tensor, features: list[Feature]) -> list[LabelPrediction]:
        probs = torch.softmax(logits.float(), dim=-1)
        out = []
        for row in probs.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            out.append(LabelPrediction(self.spec.labels[best], row[best], dict(zip(self.spec.labels, row, strict=True))))
        return out

    def metric_value(self, prediction: LabelPrediction) -> str:
        return prediction.label

    def saved_metric_value(self, row: dict[str, Any]) -> str:
        return str(row["label"])

    def read_input(self, item: str | dict[str, Any], source: str, line: int) -> Example:
        """A text (relation tasks: with its masks, or plain text plus two ``entities``), or a pair."""
        example = super().read_input(item, source, line)
        check_masks(self.spec, example.text or "", source, line)  # also catches a mask given twice
        return example
