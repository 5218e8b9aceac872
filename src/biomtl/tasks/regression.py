"""Sentence-pair similarity: a real-valued score from the sentence vector (BIOSSES, MedSTS)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from biomtl.data.examples import Example
from biomtl.tasks.base import Batch, Feature, HeadSettings, InvalidLabel, PooledHead, SentenceTask


@dataclass(frozen=True)
class ScorePrediction:
    """An unbounded real score."""

    score: float

    def to_json(self) -> dict[str, Any]:
        return {"score": self.score}


class RegressionTask(SentenceTask):
    """Mean squared error on the gold score; every input is a text pair."""

    pair_input = True

    def parse_label(self, raw: Any) -> float:
        """A finite number, inside ``score_range`` when the spec declares one."""
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise InvalidLabel(f"score {raw!r} is not a number") from None
        if not math.isfinite(value):
            raise InvalidLabel(f"score {raw!r} is not finite")
        if self.spec.score_range and not self.spec.score_range[0] <= value <= self.spec.score_range[1]:
            low, high = self.spec.score_range
            where = self.spec.config_path or self.spec.name
            raise InvalidLabel(f"score {value} is outside score_range [{low}, {high}] declared in {where}")
        return value

    def build_head(self, hidden_size: int, settings: HeadSettings) -> nn.Module:
        return PooledHead(hidden_size, 1, settings)

    def target(self, example: Example) -> Any:
        return float(example.label) if example.label is not None else 0.0

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.mse_loss(logits.squeeze(-1).float(), batch["labels"])

    def decode(self, logits: torch.Tensor, features: list[Feature]) -> list[ScorePrediction]:
        return [ScorePrediction(float(v)) for v in logits.squeeze(-1).float().tolist()]

    def gold(self, example: Example) -> Any:
        return float(example.label)

    def metric_value(self, prediction: ScorePrediction) -> float:
        return prediction.score
