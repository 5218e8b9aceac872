"""Sentence-pair similarity: a real-valued score from the sentence vector (BIOSSES, MedSTS)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from biomtl.data.examples import Example
from biomtl.tasks.base import Batch, Feature, PooledHead, SentenceTask


class RegressionTask(SentenceTask):
    """Mean squared error on the gold score; predictions are unbounded floats."""

    name = "regression"

    def build_head(self, hidden_size: int, dropout: float, pooling: str) -> nn.Module:
        return PooledHead(hidden_size, 1, dropout, pooling)

    def target(self, example: Example) -> Any:
        return float(example.label) if example.label is not None else 0.0

    def collate_targets(self, features: list[Feature], length: int) -> Batch:
        return {"labels": torch.tensor([f["target"] for f in features], dtype=torch.float)}

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.mse_loss(logits.squeeze(-1).float(), batch["labels"])

    def decode(self, logits: torch.Tensor, features: list[Feature]) -> list[Any]:
        return [{"score": float(v)} for v in logits.squeeze(-1).float().tolist()]

    def gold(self, example: Example) -> Any:
        return float(example.label)

    def metric_value(self, prediction: Any) -> Any:
        return prediction["score"]
