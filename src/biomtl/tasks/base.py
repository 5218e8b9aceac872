"""The task-type protocol and the pieces shared by the sentence-level types."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from biomtl.config import DatasetSpec
from biomtl.data.examples import Example

Feature = dict[str, Any]
Batch = dict[str, torch.Tensor]


class TaskType:
    """One task type (``tagging``, ``classification``, ...) bound to one task's spec.

    A task type turns examples into features (``encode``), builds the head that maps encoder states to
    logits (``build_head``), scores logits against a batch (``loss``) and turns logits back into predictions
    for whole examples (``decode``). ``metric_inputs`` shapes gold labels and predictions for the metric.
    """

    name: str = ""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec

    # -- model side -------------------------------------------------------------------------------------
    def build_head(self, hidden_size: int, dropout: float, pooling: str) -> nn.Module:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    # -- data side --------------------------------------------------------------------------------------
    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        """Features, each with ``input_ids`` and ``example_index`` (one example may give several)."""
        raise NotImplementedError

    def collate(self, features: list[Feature], pad_id: int) -> Batch:
        """Pad a list of features to one batch (dynamic padding to the longest)."""
        batch = pad_inputs(features, pad_id)
        batch.update(self.collate_targets(features, batch["input_ids"].shape[1]))
        return batch

    def collate_targets(self, features: list[Feature], length: int) -> Batch:
        raise NotImplementedError

    def decode(self, logits: torch.Tensor, features: list[Feature]) -> list[Any]:
        """One prediction per feature (CPU tensors in, Python values out)."""
        raise NotImplementedError

    def merge(self, predictions: list[Any], features: list[Feature], n_examples: int) -> list[Any]:
        """Feature predictions → one prediction per example (identity for one feature per example)."""
        merged: list[Any] = [None] * n_examples
        for pred, feat in zip(predictions, features, strict=True):
            merged[feat["example_index"]] = pred
        return merged

    def gold(self, example: Example) -> Any:
        return example.label

    def metric_value(self, prediction: Any) -> Any:
        """The part of a prediction that the metric compares with :meth:`gold`."""
        raise NotImplementedError

    def metric_kwargs(self, examples: list[Example]) -> dict[str, Any]:
        return dict(self.spec.metric.args)


def pad_inputs(features: list[Feature], pad_id: int) -> Batch:
    length = max(len(f["input_ids"]) for f in features)
    n = len(features)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, length), dtype=torch.long)
    has_types = "token_type_ids" in features[0]
    token_type_ids = torch.zeros((n, length), dtype=torch.long) if has_types else None
    for i, f in enumerate(features):
        k = len(f["input_ids"])
        input_ids[i, :k] = torch.tensor(f["input_ids"])
        attention_mask[i, :k] = 1
        if token_type_ids is not None:
            token_type_ids[i, :k] = torch.tensor(f["token_type_ids"])
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        batch["token_type_ids"] = token_type_ids
    return batch


class PooledHead(nn.Module):
    """Dropout + linear layer over the sentence vector: [CLS] (the paper) or the mean of the tokens."""

    def __init__(self, hidden_size: int, n_out: int, dropout: float, pooling: str) -> None:
        super().__init__()
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, n_out)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # hidden: (B, T, H) → logits (B, n_out)
        if self.pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:
            pooled = hidden[:, 0]
        return self.out(self.dropout(pooled))


class SentenceTask(TaskType):
    """Shared encoding for one text or a text pair, truncated to ``max_length`` sub-words."""

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        texts = [ex.text for ex in examples]
        pairs = [ex.text_b for ex in examples]
        kwargs = {"truncation": True, "max_length": max_length}
        enc = tokenizer(texts, pairs, **kwargs) if any(p is not None for p in pairs) else tokenizer(texts, **kwargs)
        features = []
        for i, ex in enumerate(examples):
            feat: Feature = {"input_ids": enc["input_ids"][i], "example_index": i}
            if "token_type_ids" in enc:
                feat["token_type_ids"] = enc["token_type_ids"][i]
            feat["target"] = self.target(ex)
            features.append(feat)
        return features

    def target(self, example: Example) -> Any:
        raise NotImplementedError
