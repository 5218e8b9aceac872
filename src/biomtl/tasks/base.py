"""The task-type protocol, the settings every task type and head is built with, and the pieces the built-in
types share.

A task type is everything that differs between ``tagging``, ``classification``, ... : which spec fields it
needs, how a gold label is written in a data file, how an example becomes encoder inputs, its head and loss,
how logits become a typed prediction, what its metric compares, and how a raw prediction input is read and
its prediction written out, and any decision rule it tunes on dev. Everything else (readers, sampling, the training loop, saving, the predictor,
the CLI) asks the task type and never compares type names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from biomtl import metrics
from biomtl.config import DatasetSpec
from biomtl.data.examples import Example
from biomtl.errors import DataError
from biomtl.lines import numbered_lines
from biomtl.tasks.masks import mask_entities
from biomtl.tasks.statistics import ScoreStatistics, score_statistics

Feature = dict[str, Any]
"""Encoder inputs of one example (or one window of it): ``input_ids`` and ``example_index`` always,
``token_type_ids`` for pairs, plus whatever the task type's own ``collate``/``decode``/``merge`` read."""

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class HeadSettings:
    """The model's settings that every task type is built with and every head receives (``build_head``).
    A model directory records them (``biomtl.json``), so a loaded model encodes and decodes as it trained."""

    dropout: float = 0.1
    pooling: str = "cls"  # the sentence vector of pooled heads: "cls" (the paper) or "mean" of the tokens
    similarity: str = "cross"  # text-pair similarity, one of SIMILARITY (a run's "auto" is resolved before)


DEFAULT_SETTINGS = HeadSettings()


class InvalidLabel(ValueError):
    """A gold label that does not fit its task; the message says why (the reader adds ``file:line``)."""


class Prediction(Protocol):
    """A typed prediction for one example (``LabelPrediction``, ``TaggedWords``, ...)."""

    def to_json(self) -> dict[str, Any]:
        """The prediction's fields of an output row (``predictions/<task>.<split>.jsonl``, the predictor)."""
        ...


class TaskType(Protocol):
    """One task type bound to one task's spec (``TASK_TYPES[spec.type](spec)``).

    Register a new type with :func:`biomtl.tasks.register_task_type`; :class:`SentenceTask` implements
    most of this for one text or a text pair → one prediction.
    """

    spec: DatasetSpec
    settings: HeadSettings
    pair_input: bool  # every input is a text pair, scored as one value (the tasks ``serve``'s /similarity runs)

    def __init__(self, spec: DatasetSpec, settings: HeadSettings = DEFAULT_SETTINGS) -> None: ...

    # -- config and data files --------------------------------------------------------------------------
    @classmethod
    def spec_problems(cls, spec: DatasetSpec) -> list[str]:
        """Static problems of a spec of this type (``"labels: a tagging task must list its labels"``)."""
        ...

    def parse_label(self, raw: Any) -> Any:
        """A gold label as written in a data file (a token's tag for token-level types) → the value
        stored in ``Example.label``; raises :class:`InvalidLabel`."""
        ...

    def check_texts(self, text: str, text_b: str | None) -> str | None:
        """Why a data row's texts do not fit this type, or ``None``; ``text_b`` is ``None`` when the spec
        has no ``text_b`` column."""
        ...

    # -- model ----------------------------------------------------------------------------------------------
    @property
    def token_level(self) -> bool:
        """Whether the head scores every token (its windows are decoded one by one, then merged) rather
        than the sentence (logits of a long text's windows can be averaged)."""
        ...

    @property
    def argument_input(self) -> str:
        """How a relation task's two arguments reach its head: ``"masks"`` (replaced in a copy of the sentence per
        pair, ``markers:``), ``"spans"`` (character spans of the plain sentence, scored from its one encoding),
        or ``""`` (not a relation task)."""
        ...

    @property
    def reads_spans(self) -> bool:
        """Whether the head reads argument spans of the plain sentence (``argument_input == "spans"``): its
        pairs are scored from the encoder states of the sentence's windows, not one pass per pair. Such a
        head also takes ``window`` (B,): the row of ``hidden`` (W, T, H) each pair reads, so that the pairs of
        one window share its states (:meth:`biomtl.predict.Predictor.score_spans`)."""
        ...

    def parse_entities(self, text: str, raw: Any) -> Any:
        """A data row's ``entities`` field (``columns.entities``) → the value stored in
        ``Example.meta["entities"]``; raises :class:`InvalidLabel` (types that read no spans always do)."""
        ...

    def build_head(self, hidden_size: int, settings: HeadSettings) -> nn.Module:
        """``head(hidden (B, T, H), attention_mask (B, T), **head_inputs(batch)) → logits``."""
        ...

    def head_inputs(self, batch: Batch) -> Batch:
        """What the head reads from a collated batch besides the encoder states (``spans``); ``{}`` for most."""
        ...

    def pair_in_windows(self, windows: list[Feature], text: str, spans: tuple[tuple[int, int], tuple[int, int]]) -> Feature | None:
        """A span relation task: the feature of the argument ``spans`` of ``text`` when one of the sentence's
        tagging ``windows`` (already encoded by ``annotate``) holds both, else ``None``; other types: ``None``."""
        ...

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        """Features, each with ``input_ids`` and ``example_index`` (one example may give several)."""
        ...

    def collate(self, features: list[Feature], pad_id: int) -> Batch:
        """Pad features to one batch (dynamic padding to the longest), targets included. Every tensor has a
        row per feature (DDP shards batches by rows)."""
        ...

    def encoder_batch(self, batch: Batch) -> Batch:
        """What the encoder runs on for a collated batch (``input_ids``, ``attention_mask`` ...): the batch
        itself for most types; a bi-encoder stacks the rows of its two texts. Its head reads the result."""
        ...

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor: ...

    def loss_units(self, batch: Batch) -> int:
        """How many terms :meth:`loss` averages over in ``batch`` (its rows; labelled tokens for tagging):
        DDP weights each rank's slice of a batch by them (:mod:`biomtl.distributed`)."""
        ...

    def decode(self, logits: torch.Tensor, features: list[Feature]) -> list[Any]:
        """One prediction per feature (CPU logits in)."""
        ...

    def merge(self, predictions: list[Any], features: list[Feature], n_examples: int) -> Sequence[Prediction]:
        """Feature predictions → one typed prediction per example."""
        ...

    # -- metric -----------------------------------------------------------------------------------------
    def gold(self, example: Example) -> Any:
        """What the metric compares with :meth:`metric_value`."""
        ...

    def metric_value(self, prediction: Any) -> Any:
        """The part of this type's prediction (from :meth:`merge`) that the metric compares."""
        ...

    def metric_kwargs(self, examples: list[Example]) -> dict[str, Any]:
        """The metric's arguments: the configured ones plus any it takes from the examples."""
        ...

    def saved_metric_value(self, row: dict[str, Any]) -> Any:
        """What :meth:`metric_value` gives, read back from a run's saved prediction (a row of
        ``predictions/<task>.<split>.jsonl``: ``id``, ``gold``, the prediction's ``to_json`` fields)."""
        ...

    def score_statistics(self, examples: list[Example], pred: list[Any]) -> ScoreStatistics | None:
        """The main metric of these predictions (metric values) as additive per-unit statistics, for
        resampling (:mod:`biomtl.tasks.statistics`); ``None`` where the main metric has none."""
        ...

    # -- a decision rule chosen on dev (multilabel: a threshold per label) -------------------------------------
    def fit_decision(self, examples: list[Example], predictions: Sequence[Prediction]) -> Sequence[Prediction]:
        """Choose this type's decision rule on these (dev) examples and return their predictions under it;
        a type without one returns ``predictions``. Training calls it on dev only, never on test."""
        ...

    def decision(self) -> dict[str, Any]:
        """The decision rule in use, JSON-able (saved in the model directory); ``{}`` when the type has none."""
        ...

    def set_decision(self, decision: dict[str, Any]) -> None:
        """Use a rule saved by :meth:`decision`; raises ``ValueError`` naming what does not fit."""
        ...

    # -- raw inputs (the predictor and ``biomtl predict``) --------------------------------------------
    @property
    def can_annotate(self) -> bool:
        """Whether a plain text, with nothing else, is a complete input (``Predictor.annotate``)."""
        ...

    def plain_text_inputs(self, text: str) -> list[tuple[int, str]]:
        """A plain-text input file → ``(line, input)`` pairs: one per line, or the whole text as one."""
        ...

    def read_input(self, item: str | dict[str, Any], source: str, line: int) -> Example:
        """A raw text or a JSON object (``id``, ``text``, ``text_b``, ``entities``) → an example;
        a bad input raises :class:`~biomtl.errors.DataError` naming ``source:line``."""
        ...

    def output_row(self, example: Example, prediction: Any) -> dict[str, Any]:
        """The predictor's output fields for an input read by :meth:`read_input` and this type's prediction."""
        ...


# ----------------------------------------------------------------------------------------------------------
# Shared implementation


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of each sequence's token states (padding excluded): (B, T, H), (B, T) → (B, H)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def pad_inputs(features: list[Feature], pad_id: int) -> Batch:
    """``input_ids``, ``attention_mask`` (and ``token_type_ids``) padded to the longest feature."""
    lengths = [len(f["input_ids"]) for f in features]
    length = max(lengths)
    # one tensor from padded lists (a copy per row costs more on a batch of many short rows)
    input_ids = torch.tensor([[*f["input_ids"], *[pad_id] * (length - k)] for f, k in zip(features, lengths, strict=True)],
                             dtype=torch.long)
    attention_mask = (torch.arange(length) < torch.tensor(lengths).unsqueeze(1)).long()
    token_type_ids = None
    if "token_type_ids" in features[0]:
        token_type_ids = torch.tensor([[*f["token_type_ids"], *[0] * (length - k)] for f, k in zip(features, lengths, strict=True)],
                                      dtype=torch.long)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        batch["token_type_ids"] = token_type_ids
    return batch


def metric_arguments(spec: DatasetSpec, examples: list[Example]) -> dict[str, Any]:
    """A task's configured metric arguments, plus those its metric takes from the examples
    (:data:`biomtl.metrics.EXAMPLE_ARGUMENTS`): ``doc_ids`` is each example's document (itself if none)."""
    kwargs = dict(spec.metric.args)
    if "doc_ids" in metrics.EXAMPLE_ARGUMENTS.get(spec.metric.name, ()):
        kwargs["doc_ids"] = [ex.doc_id or ex.id for ex in examples]
    return kwargs


def labels_problems(spec: DatasetSpec) -> list[str]:
    """The spec check of every type that predicts among declared labels."""
    return [] if spec.labels else [f"labels: a {spec.type} task must list its labels"]


def text_input(spec: DatasetSpec, item: str | dict[str, Any], source: str, line: int, pair: bool) -> Example:
    """A raw text, or a JSON object with ``text`` (and ``id``, ``text_b``, ``entities``), → an example.

    ``text_b`` is required when ``pair`` and read when given. ``entities`` (two argument spans) are replaced by
    the task's masks; a task without masks refuses them. ``id`` defaults to the input's line.
    """
    if isinstance(item, str):
        item = {"text": item}
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        raise DataError(source, line, "expected a JSON object with a string field 'text'")
    text, text_b = item["text"], None
    if pair or "text_b" in item:
        if not isinstance(item.get("text_b"), str):
            raise DataError(source, line, f"task {spec.name} compares two texts: give 'text' and 'text_b'")
        text_b = item["text_b"]
    if "entities" in item:
        text = mask_entities(spec, text, item["entities"], source, line)
    return Example(id=str(item.get("id", line)), text=text, text_b=text_b, source=f"{source}:{line}")


class TaskBase:
    """What every built-in type shares: the bound spec and settings, no extra spec or text checks, padding +
    targets, gold labels as read, metric arguments from the metric's declared needs, no decision rule."""

    token_level = False
    pair_input = False

    def __init__(self, spec: DatasetSpec, settings: HeadSettings = DEFAULT_SETTINGS) -> None:
        self.spec = spec
        self.settings = settings

    @classmethod
    def spec_problems(cls, spec: DatasetSpec) -> list[str]:
        return []

    def check_texts(self, text: str, text_b: str | None) -> str | None:
        return None

    def collate(self, features: list[Feature], pad_id: int) -> Batch:
        batch = pad_inputs(features, pad_id)
        batch.update(self.collate_targets(features, batch["input_ids"].shape[1]))
        return batch

    def collate_targets(self, features: list[Feature], length: int) -> Batch:
        return {}

    def encoder_batch(self, batch: Batch) -> Batch:
        return batch

    @property
    def argument_input(self) -> str:
        return "masks" if self.spec.markers else ""

    @property
    def reads_spans(self) -> bool:
        return self.argument_input == "spans"

    def parse_entities(self, text: str, raw: Any) -> Any:
        raise InvalidLabel(f"a {self.spec.type} task reads no 'entities' column (remove columns.entities)")

    def head_inputs(self, batch: Batch) -> Batch:
        return {}

    def pair_in_windows(self, windows: list[Feature], text: str, spans: tuple[tuple[int, int], tuple[int, int]]) -> Feature | None:
        return None

    def gold(self, example: Example) -> Any:
        return example.label

    def metric_kwargs(self, examples: list[Example]) -> dict[str, Any]:
        return metric_arguments(self.spec, examples)

    def saved_metric_value(self, row: dict[str, Any]) -> Any:
        raise NotImplementedError(f"task type '{self.spec.type}' does not read back its saved predictions")

    def score_statistics(self, examples: list[Example], pred: list[Any]) -> ScoreStatistics | None:
        gold = [self.gold(ex) for ex in examples]
        return score_statistics(self.spec.metric.name, self.spec.main_metric, gold, pred, **self.metric_kwargs(examples))

    def fit_decision(self, examples: list[Example], predictions: Sequence[Prediction]) -> Sequence[Prediction]:
        return predictions

    def decision(self) -> dict[str, Any]:
        return {}

    def set_decision(self, decision: dict[str, Any]) -> None:
        if decision:
            raise ValueError(f"a {self.spec.type} task has no decision rule (got {', '.join(decision)})")

    def loss_units(self, batch: Batch) -> int:
        return len(batch["input_ids"])


class SentenceTask(TaskBase, ABC):
    """One text or a text pair, truncated to ``max_length`` sub-words → one prediction.

    A subclass gives :meth:`target` (and ``target_dtype``), ``parse_label``, ``build_head``, ``loss``,
    ``decode`` (to a dataclass with ``to_json``) and ``metric_value``.
    """

    target_dtype = torch.float

    @abstractmethod
    def target(self, example: Example) -> Any:
        """The training target of an example (unlabelled examples get a placeholder)."""

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        texts = [ex.text for ex in examples]
        pairs = [ex.text_b for ex in examples]
        kwargs = {"truncation": True, "max_length": max_length}
        if any(p is None for p in pairs) and any(p is not None for p in pairs):  # single texts and pairs mixed
            rows = [tokenizer(text, pair, **kwargs) for text, pair in zip(texts, pairs, strict=True)]
            enc = {key: [row[key] for row in rows] for key in rows[0]}
        else:
            enc = tokenizer(texts, pairs, **kwargs) if any(p is not None for p in pairs) else tokenizer(texts, **kwargs)
        features = []
        for i, ex in enumerate(examples):
            feat: Feature = {"input_ids": enc["input_ids"][i], "example_index": i}
            if "token_type_ids" in enc:
                feat["token_type_ids"] = enc["token_type_ids"][i]
            feat["target"] = self.target(ex)
            features.append(feat)
        return features

    def collate_targets(self, features: list[Feature], length: int) -> Batch:
        return {"labels": torch.tensor([f["target"] for f in features], dtype=self.target_dtype)}

    def merge(self, predictions: list[Any], features: list[Feature], n_examples: int) -> list[Any]:
        merged: list[Any] = [None] * n_examples
        for pred, feat in zip(predictions, features, strict=True):
            merged[feat["example_index"]] = pred
        return merged

    @property
    def can_annotate(self) -> bool:
        """A single text without entity masks."""
        return not self.pair_input and not self.spec.markers and "text_b" not in self.spec.columns

    def plain_text_inputs(self, text: str) -> list[tuple[int, str]]:
        """One input per non-empty line."""
        return numbered_lines(text)

    def read_input(self, item: str | dict[str, Any], source: str, line: int) -> Example:
        return text_input(self.spec, item, source, line, pair=self.pair_input)

    def output_row(self, example: Example, prediction: Prediction) -> dict[str, Any]:
        return prediction.to_json()


class PooledHead(nn.Module):
    """Dropout + linear layer over the sentence vector: [CLS] (the paper) or the mean of the tokens."""

    def __init__(self, hidden_size: int, n_out: int, settings: HeadSettings) -> None:
        super().__init__()
        self.pooling = settings.pooling
        self.dropout = nn.Dropout(settings.dropout)
        self.out = nn.Linear(hidden_size, n_out)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # hidden: (B, T, H) → logits (B, n_out)
        pooled = mean_pool(hidden, attention_mask) if self.pooling == "mean" else hidden[:, 0]
        return self.out(self.dropout(pooled))
