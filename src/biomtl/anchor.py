"""Keeping the sentence-embedding geometry while other tasks train the encoder (``geometry_anchor``).

A similarity bi-encoder scores a pair by the cosine of the two texts' mean-pooled embeddings, so its score is
the shared encoder's geometry itself, and every other task's training reshapes that geometry: on the
``cpu-b16`` study one NER task alone takes the embedded encoder's BIOSSES test Pearson from 84.7 to 55.7
(BENCHMARKS.md, "Why BIOSSES loses in cpu-b16"). With ``geometry_anchor: w`` every training step adds
``w`` × the mean squared difference between the batch's pairwise cosines under the model's encoder and under
a frozen copy of the encoder the run started from. The space may move and turn and serve the other heads;
which texts are close to which is what the term holds.

``anchor_measure: embeddings`` holds each text's embedding instead: ``w`` × the mean of 1 − the cosine of the
model's and the frozen encoder's embedding of the same text (feature distillation, as in Learning without
Forgetting). It is stricter: every pair's cosine is kept, the close pairs a similarity score ranks as much as
the many unrelated pairs of a batch, which dominate the pairwise measure; the space may not turn.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from biomtl.tasks.base import mean_pool

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def geometry_loss(pooled: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the off-diagonal pairwise cosines of ``pooled`` and ``target`` (both (N, H));
    0 for fewer than two rows, and for any rotation or scaling of ``target``."""
    n = pooled.shape[0]
    if n < 2:
        return pooled.sum() * 0.0  # keeps the graph (and the device) of a real loss
    a, b = F.normalize(pooled.float(), dim=-1), F.normalize(target.float(), dim=-1)
    off = ~torch.eye(n, dtype=torch.bool, device=pooled.device)
    return ((a @ a.T - b @ b.T)[off] ** 2).mean()


def embedding_loss(pooled: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of 1 − the cosine of each row of ``pooled`` with the same row of ``target`` (both (N, H)):
    0 for the same directions, whatever the lengths; not for a rotation."""
    return (1.0 - F.cosine_similarity(pooled.float(), target.float(), dim=-1)).mean()


def mean_pooled(encoder: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mean-pooled last states of ``encoder`` (a Hugging Face encoder) on tokenised ``inputs``: (N, H)."""
    hidden = encoder(**{k: inputs[k] for k in ENCODER_INPUTS if k in inputs}).last_hidden_state
    return mean_pool(hidden, inputs["attention_mask"])


class GeometryAnchor:
    """A frozen copy of ``encoder`` as it is now (the run's start), the weight of the anchor term and what it
    holds (``measure``: the run key ``anchor_measure``, one of :data:`biomtl.config.ANCHOR_MEASURES`)."""

    def __init__(self, encoder: nn.Module, weight: float, measure: str = "cosines") -> None:
        self.teacher = copy.deepcopy(encoder).eval().requires_grad_(False)
        self.weight = weight
        self.measure = MEASURES[measure]

    @classmethod
    def of(cls, encoder: nn.Module, weight: float, measure: str = "cosines") -> GeometryAnchor | None:
        """The anchor of a run with ``geometry_anchor: weight``; ``None`` for 0 (no term, no frozen copy)."""
        return cls(encoder, weight, measure) if weight > 0 else None

    def loss(self, pooled: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The measure of the model's mean-pooled embeddings of ``inputs`` (the rows the encoder read) against
        the frozen encoder's."""
        with torch.no_grad():
            target = mean_pooled(self.teacher, inputs)
        return self.measure(pooled, target)


MEASURES = {"cosines": geometry_loss, "embeddings": embedding_loss}  # keys: biomtl.config.ANCHOR_MEASURES
