"""Sentence-pair similarity: a real-valued score for a text pair (BIOSSES, MedSTS).

Two named strategies (``similarity:`` in a run config, recorded in the model directory):

* ``cross`` (the paper's): both texts in one sequence, ``[CLS] a [SEP] b [SEP]``; a linear layer on the
  pooled sentence vector regresses the gold score (mean squared error).
* ``biencoder`` (sentence-transformers'): each text is encoded alone, its token states mean-pooled, and the
  score is the cosine of the two vectors, trained with the CoSENT loss. The head has no weights, so an
  untrained model scores what the encoder alone gives (zero-shot). The cosine is mapped linearly onto the
  spec's ``score_range`` (cosine 0 → low, 1 → high; clipped to the range). A batch holds each pair in one
  row (first and second texts side by side); the encoder runs on both texts' rows at once
  (:meth:`RegressionTask.encoder_batch`). Under DDP each rank's CoSENT ranks the pairs of its share of a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from biomtl.config import SIMILARITY, DatasetSpec
from biomtl.data.examples import Example
from biomtl.tasks.base import (
    DEFAULT_SETTINGS,
    Batch,
    Feature,
    HeadSettings,
    InvalidLabel,
    PooledHead,
    SentenceTask,
    mean_pool,
    pad_inputs,
)

COSENT_SCALE = 20.0  # sentence-transformers' CoSENTLoss default


@dataclass(frozen=True)
class ScorePrediction:
    """An unbounded real score (``cross``)."""

    score: float

    def to_json(self) -> dict[str, Any]:
        return {"score": self.score}


@dataclass(frozen=True)
class SimilarityPrediction:
    """The cosine of the two texts' vectors and the score it maps to in ``score_range`` (``biencoder``)."""

    score: float
    cosine: float

    def to_json(self) -> dict[str, Any]:
        return {"score": self.score, "cosine": self.cosine}


class CosineHead(nn.Module):
    """No weights: the two halves of a (2B, T, H) batch (first texts, then second texts) are mean-pooled and
    compared by cosine."""

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        a, b = mean_pool(hidden, attention_mask).float().chunk(2)  # (B, H) each
        return F.cosine_similarity(a, b, dim=-1).unsqueeze(-1)  # (B, 1)


def cosent_loss(cosines: torch.Tensor, gold: torch.Tensor, scale: float = COSENT_SCALE) -> torch.Tensor:
    """CoSENT (Su 2022; sentence-transformers' ``CoSENTLoss``): every pair of pairs (i, j) with gold_i < gold_j
    is penalised by how far cos_i exceeds cos_j: ``log(1 + Σ exp(scale · (cos_i − cos_j)))``. Only the order
    of the gold scores matters. A batch whose gold scores are all equal gives 0."""
    diff = scale * (cosines[:, None] - cosines[None, :])  # (B, B): scale · (cos_i − cos_j)
    wrong_way = diff[gold[:, None] < gold[None, :]]
    return torch.logsumexp(torch.cat([wrong_way.new_zeros(1), wrong_way]), dim=0)


class RegressionTask(SentenceTask):
    """A real-valued score for a text pair; every input is a pair. ``settings.similarity`` names the strategy
    (module docstring)."""

    pair_input = True

    def __init__(self, spec: DatasetSpec, settings: HeadSettings = DEFAULT_SETTINGS) -> None:
        super().__init__(spec, settings)
        if settings.similarity not in SIMILARITY:
            raise ValueError(f"similarity: unknown strategy '{settings.similarity}' (known: {', '.join(SIMILARITY)})")
        self.biencoder = settings.similarity == "biencoder"

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

    def target(self, example: Example) -> Any:
        return float(example.label) if example.label is not None else 0.0

    # -- model ----------------------------------------------------------------------------------------------
    def build_head(self, hidden_size: int, settings: HeadSettings) -> nn.Module:
        return CosineHead() if self.biencoder else PooledHead(hidden_size, 1, settings)

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        """``cross``: one sequence per pair. ``biencoder``: each text alone, ``input_ids`` and ``input_ids_b``."""
        if not self.biencoder:
            return super().encode(examples, tokenizer, max_length)
        kwargs = {"truncation": True, "max_length": max_length}
        first = tokenizer([ex.text or "" for ex in examples], **kwargs)["input_ids"]
        second = tokenizer([ex.text_b or "" for ex in examples], **kwargs)["input_ids"]
        return [
            {"input_ids": a, "input_ids_b": b, "example_index": i, "target": self.target(ex)}
            for i, (ex, a, b) in enumerate(zip(examples, first, second, strict=True))
        ]

    def collate(self, features: list[Feature], pad_id: int) -> Batch:
        """``biencoder``: the first texts as ``input_ids``/``attention_mask`` (B, T1), the second ones as
        ``input_ids_b``/``attention_mask_b`` (B, T2)."""
        if not self.biencoder:
            return super().collate(features, pad_id)
        batch = pad_inputs([{"input_ids": f["input_ids"]} for f in features], pad_id)
        second = pad_inputs([{"input_ids": f["input_ids_b"]} for f in features], pad_id)
        batch.update(input_ids_b=second["input_ids"], attention_mask_b=second["attention_mask"])
        batch.update(self.collate_targets(features, batch["input_ids"].shape[1]))
        return batch

    def encoder_batch(self, batch: Batch) -> Batch:
        """``biencoder``: the first texts' rows, then the second texts' rows, as one (2B, T) batch, so that the
        encoder runs once over both and :class:`CosineHead` compares the halves."""
        if not self.biencoder:
            return batch
        length = max(batch["input_ids"].shape[1], batch["input_ids_b"].shape[1])

        def widen(t: torch.Tensor) -> torch.Tensor:  # (B, T) → (B, length), zeros: masked out
            return F.pad(t, (0, length - t.shape[1]))

        return {
            "input_ids": torch.cat([widen(batch["input_ids"]), widen(batch["input_ids_b"])]),  # (2B, length)
            "attention_mask": torch.cat([widen(batch["attention_mask"]), widen(batch["attention_mask_b"])]),
        }

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.biencoder:
            return cosent_loss(logits.squeeze(-1).float(), batch["labels"])
        return F.mse_loss(logits.squeeze(-1).float(), batch["labels"])

    def decode(self, logits: torch.Tensor, features: list[Feature]) -> list[ScorePrediction] | list[SimilarityPrediction]:
        values = logits.squeeze(-1).float().tolist()
        if not self.biencoder:
            return [ScorePrediction(v) for v in values]
        return [SimilarityPrediction(self.cosine_to_score(c), c) for c in values]

    def cosine_to_score(self, cosine: float) -> float:
        """Cosine 0 → the low end of ``score_range``, 1 → the high end, clipped; the cosine without a range."""
        if not self.spec.score_range:
            return cosine
        low, high = self.spec.score_range
        return low + min(max(cosine, 0.0), 1.0) * (high - low)

    # -- metric -----------------------------------------------------------------------------------------
    def gold(self, example: Example) -> Any:
        return float(example.label)

    def metric_value(self, prediction: ScorePrediction | SimilarityPrediction) -> float:
        return prediction.score

    def saved_metric_value(self, row: dict[str, Any]) -> float:
        return float(row["score"])
