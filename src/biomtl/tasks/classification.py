"""One label per text or text pair: relations with masked arguments (ChemProt, DDI), inference (MedNLI),
yes/no questions."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from biomtl.data.examples import Example
from biomtl.tasks.base import Batch, Feature, PooledHead, SentenceTask


class ClassificationTask(SentenceTask):
    """Softmax over the declared labels; predictions carry every label's probability."""

    name = "classification"

    def build_head(self, hidden_size: int, dropout: float, pooling: str) -> nn.Module:
        return PooledHead(hidden_size, len(self.spec.labels), dropout, pooling)

    def target(self, example: Example) -> Any:
        return self.spec.labels.index(example.label) if example.label is not None else -100

    def collate_targets(self, features: list[Feature], length: int) -> Batch:
        return {"labels": torch.tensor([f["target"] for f in features], dtype=torch.long)}

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])

    def decode(self, logits: torch.Tensor, features: list[Feature]) -> list[Any]:
        probs = torch.softmax(logits.float(), dim=-1)
        out = []
        for row in probs.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            out.append(
                {
                    "label": self.spec.labels[best],
                    "probability": row[best],
                    "probabilities": dict(zip(self.spec.labels, row, strict=True)),
                }
            )
        return out

    def metric_value(self, prediction: Any) -> Any:
        return prediction["label"]
