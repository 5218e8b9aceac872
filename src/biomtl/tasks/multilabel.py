"""Any subset of the declared labels per sentence (HoC); scored per document when ``doc_id`` is given."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from biomtl.data.examples import Example
from biomtl.tasks.base import Batch, Feature, PooledHead, SentenceTask

THRESHOLD = 0.5


class MultilabelTask(SentenceTask):
    """Independent sigmoid per label (binary cross-entropy); a label is predicted at probability ≥ 0.5."""

    name = "multilabel"

    def build_head(self, hidden_size: int, dropout: float, pooling: str) -> nn.Module:
        return PooledHead(hidden_size, len(self.spec.labels), dropout, pooling)

    def target(self, example: Example) -> Any:
        names = set(example.label or [])
        return [1.0 if name in names else 0.0 for name in self.spec.labels]

    def collate_targets(self, features: list[Feature], length: int) -> Batch:
        return {"labels": torch.tensor([f["target"] for f in features], dtype=torch.float)}

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), batch["labels"])

    def decode(self, logits: torch.Tensor, features: list[Feature]) -> list[Any]:
        probs = torch.sigmoid(logits.float()).tolist()
        return [
            {
                "labels": [name for name, p in zip(self.spec.labels, row, strict=True) if p >= THRESHOLD],
                "probabilities": dict(zip(self.spec.labels, row, strict=True)),
            }
            for row in probs
        ]

    def metric_kwargs(self, examples: list[Example]) -> dict[str, Any]:
        kwargs = dict(self.spec.metric.args)
        if self.spec.metric.name == "hoc_f1":
            kwargs["doc_ids"] = [ex.doc_id or ex.id for ex in examples]
        return kwargs

    def metric_value(self, prediction: Any) -> Any:
        return prediction["labels"]
