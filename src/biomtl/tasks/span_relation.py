"""Relations read from one encoding of the plain sentence: the two arguments are character spans, not masks.

A ``classification`` relation task (ChemProt, DDI as BLUE has them) reads a copy of the sentence per candidate
pair, with the two arguments replaced by ``@CHEMICAL$``/``@GENE$``: one encoder pass per pair. A
``span_relation`` task reads the sentence as it is, in the word windows a ``tagging`` head reads, and its
head pools each argument's sub-words from that encoding: ``biomtl annotate`` scores every candidate pair of a
sentence from the one encoder pass its NER heads already made.

A data row (``format: jsonl``) is ``{"text": ..., "entities": [{"start": s, "end": e}, {...}], "label": ...}``
(``columns: {text: text, entities: entities, label: label}``), the first entity of the first argument type.
"""

from __future__ import annotations

import bisect
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from biomtl.config import DatasetSpec
from biomtl.data.examples import Example
from biomtl.errors import DataError
from biomtl.lines import numbered_lines
from biomtl.tasks.base import (
    Batch,
    Feature,
    HeadSettings,
    InvalidLabel,
    labels_problems,
    mean_pool,
    pad_inputs,
)
from biomtl.tasks.classification import ClassificationTask
from biomtl.tasks.tagging import window_features, word_pieces, words_with_offsets

Span = tuple[int, int]


def argument_words(words: list[tuple[str, int, int]], span: Span) -> list[int]:
    """The indices of the words (:func:`~biomtl.tasks.tagging.words_with_offsets`) that overlap ``span``.

    >>> argument_words(words_with_offsets("IL-2 gene."), (0, 4))
    [0, 1, 2]
    """
    start, end = span
    i = bisect.bisect_right(words, start, key=lambda word: word[2])  # the first word that ends after start
    found = []
    while i < len(words) and words[i][1] < end:
        found.append(i)
        i += 1
    return found


def token_range(feature: Feature, words: list[int]) -> list[int]:
    """``[first, end)`` sub-word positions of ``words`` in a window feature: from the first word's first
    sub-word to the next word's (or ``[SEP]``). Words outside the window are left out; an argument with no
    word in it is read from the window's last sub-word."""
    first_word, n = feature["word_index"][0], len(feature["word_index"])  # a window's words are consecutive
    inside = [w - first_word for w in words if 0 <= w - first_word < n]
    sep = len(feature["input_ids"]) - 1
    if not inside:
        return [sep - 1, sep]
    first, last = min(inside), max(inside)
    positions = feature["positions"]
    return [positions[first], positions[last + 1] if last + 1 < len(positions) else sep]


def pair_feature(windows: list[Feature], arguments: tuple[list[int], list[int]]) -> Feature | None:
    """The first window that holds every word of both arguments, with the two arguments' ``spans``
    (:func:`token_range`) and its index among ``windows`` (``window``); ``None`` when no window holds both."""
    needed = [w for words in arguments for w in words]
    lo, hi = (min(needed), max(needed)) if needed else (windows[0]["word_index"][0], windows[0]["word_index"][0])
    for k, window in enumerate(windows):
        if window["word_index"][0] <= lo and hi <= window["word_index"][-1]:  # a window's words are consecutive
            return {**window, "spans": [token_range(window, words) for words in arguments], "window": k}
    return None


def own_window(
    pieces: list[list[int]], arguments: tuple[list[int], list[int]], max_length: int, cls_id: int, sep_id: int,
    example_index: int,
) -> Feature:
    """A window for a pair that no sentence window holds whole: the sentence's words from the earlier
    argument's first word on, as many as fit in ``max_length`` (the first window of that tail; an argument
    cut off is read from the last sub-word). It depends only on where the pair starts, so the pairs of a long
    sentence that start at the same word share it: ``annotate`` encodes it once for all of them."""
    lo = min(min(words) for words in arguments)
    window = window_features(pieces[lo:], max_length, cls_id, sep_id, example_index)[0]
    window = {**window, "word_index": [w + lo for w in window["word_index"]]}
    return {**window, "spans": [token_range(window, words) for words in arguments]}


@lru_cache(maxsize=4096)
def sentence_words(text: str) -> list[tuple[str, int, int]]:
    """The words a window is made of, as a tagging head reads them (a text without words reads as ``.``); cached,
    as ``annotate`` asks once per candidate pair of a sentence (the list is not to be changed)."""
    return words_with_offsets(text) or [(".", 0, 0)]


def parse_spans(text: str, raw: Any) -> tuple[Span, Span]:
    """Two argument spans ``[{"start", "end"}, {...}]`` of ``text``, each covering at least one word;
    raises :class:`~biomtl.tasks.base.InvalidLabel` naming what is wrong."""
    if not isinstance(raw, list) or len(raw) != 2:
        raise InvalidLabel("'entities' must list exactly two argument spans")
    spans = []
    for k, entity in enumerate(raw):
        if not isinstance(entity, dict) or type(entity.get("start")) is not int or type(entity.get("end")) is not int:
            raise InvalidLabel(f"entities[{k}]: expected integer 'start' and 'end'")
        start, end = entity["start"], entity["end"]
        if not 0 <= start < end <= len(text):
            raise InvalidLabel(f"entities[{k}]: offsets {start}-{end} are outside the text (length {len(text)})")
        if not argument_words(words_with_offsets(text), (start, end)):
            raise InvalidLabel(f"entities[{k}]: offsets {start}-{end} cover no word ({text[start:end]!r})")
        spans.append((start, end))
    return spans[0], spans[1]


class SpanPairHead(nn.Module):
    """The sentence vector ([CLS] or mean), each argument's mean sub-word state ``a``, ``b`` and ``a * b``
    → a tanh layer → one logit per label."""

    def __init__(self, hidden_size: int, n_out: int, settings: HeadSettings) -> None:
        super().__init__()
        self.pooling = settings.pooling
        self.dropout = nn.Dropout(settings.dropout)
        self.dense = nn.Linear(4 * hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, n_out)

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, spans: torch.Tensor, window: torch.Tensor | None = None
    ) -> torch.Tensor:
        # hidden (B, T, H), spans (B, 2, 2) of [start, end) sub-word positions → logits (B, n_out). With
        # ``window`` (B,), hidden is (W, T, H): each pair reads row window[b] (pairs of one window share its states).
        # One path for training, export and annotate: the same sums wherever a pair's states come from.
        sentence = mean_pool(hidden, attention_mask) if self.pooling == "mean" else hidden[:, 0]
        if window is None:
            window = torch.arange(hidden.shape[0], device=hidden.device)
        else:
            sentence = sentence[window]
        pooled = span_means(hidden, window, spans)
        a, b = pooled[:, 0], pooled[:, 1]
        features = torch.cat([sentence, a, b, a * b], dim=-1)
        return self.out(self.dropout(torch.tanh(self.dense(self.dropout(features)))))


def span_means(hidden: torch.Tensor, window: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """The mean state of each ``[start, end)`` span (``spans`` (B, 2, 2)) of row ``window[b]`` of ``hidden``
    (W, T, H), from running sums (in fp32), without a copy of the states per pair → (B, 2, H)."""
    sums = torch.cat([hidden.new_zeros(hidden.shape[0], 1, hidden.shape[2], dtype=torch.float32),
                      hidden.float().cumsum(1)], dim=1)  # (W, T + 1, H)
    start, end = spans[..., 0], spans[..., 1]  # (B, 2)
    rows = window.unsqueeze(1).expand_as(start)
    count = (end - start).clamp(min=1).unsqueeze(-1).to(torch.float32)
    return ((sums[rows, end] - sums[rows, start]) / count).to(hidden.dtype)


class SpanRelationTask(ClassificationTask):
    """Softmax over the declared labels of a pair of argument spans in one plain sentence."""

    @property
    def argument_input(self) -> str:
        return "spans"

    @classmethod
    def spec_problems(cls, spec: DatasetSpec) -> list[str]:
        problems = labels_problems(spec)
        if spec.markers:
            problems.append("markers: a span_relation task reads plain sentences (its arguments are spans, not masks)")
        if spec.format != "jsonl" or "entities" not in spec.columns:
            problems.append("columns: a span_relation task reads jsonl rows with an 'entities' field (columns.entities)")
        return problems

    def parse_entities(self, text: str, raw: Any) -> tuple[Span, Span]:
        return parse_spans(text, raw)

    def build_head(self, hidden_size: int, settings: HeadSettings) -> nn.Module:
        return SpanPairHead(hidden_size, len(self.spec.labels), settings)

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        """The sentence's window that holds both arguments (as ``annotate`` finds it among its NER windows), else
        a window of its own from the first argument on (:func:`own_window`)."""
        texts = list(dict.fromkeys(ex.text or "" for ex in examples))  # a sentence's pairs share its windows
        words = {text: sentence_words(text) for text in texts}
        pieces = dict(zip(texts, word_pieces([[w for w, _, _ in words[t]] for t in texts], tokenizer), strict=True))
        cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        windows = {text: window_features(pieces[text], max_length, cls_id, sep_id) for text in texts}
        features = []
        for i, ex in enumerate(examples):
            text, spans = ex.text or "", ex.meta["entities"]
            arguments = (argument_words(words[text], spans[0]), argument_words(words[text], spans[1]))
            feature = pair_feature(windows[text], arguments) or own_window(
                pieces[text], arguments, max_length, cls_id, sep_id, i
            )
            features.append(
                {"input_ids": feature["input_ids"], "example_index": i, "spans": feature["spans"], "target": self.target(ex)}
            )
        return features

    def pair_in_windows(self, windows: list[Feature], text: str, spans: tuple[Span, Span]) -> Feature | None:
        """The feature :meth:`encode` gives for ``spans`` of ``text`` when it is one of ``windows`` (the
        sentence's tagging windows, already encoded), with its ``spans`` and which of ``windows`` it is
        (``window``); else ``None``."""
        words = sentence_words(text)
        feature = pair_feature(windows, (argument_words(words, spans[0]), argument_words(words, spans[1])))
        if feature is None:
            return None
        return {"input_ids": feature["input_ids"], "example_index": 0, "spans": feature["spans"], "target": -100,
                "window": feature["window"]}

    def collate(self, features: list[Feature], pad_id: int) -> Batch:
        batch = pad_inputs(features, pad_id)
        batch["spans"] = torch.tensor([f["spans"] for f in features], dtype=torch.long)
        batch.update(self.collate_targets(features, batch["input_ids"].shape[1]))
        return batch

    def head_inputs(self, batch: Batch) -> Batch:
        return {"spans": batch["spans"]}

    @property
    def can_annotate(self) -> bool:
        return False

    def plain_text_inputs(self, text: str) -> list[tuple[int, str]]:
        return numbered_lines(text)

    def read_input(self, item: str | dict[str, Any], source: str, line: int) -> Example:
        """A JSON object with ``text`` and two ``entities`` spans (``id`` optional)."""
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or "entities" not in item:
            raise DataError(source, line, f"task {self.spec.name} reads a JSON object with 'text' and two 'entities' spans")
        try:
            spans = parse_spans(item["text"], item["entities"])
        except InvalidLabel as e:
            raise DataError(source, line, str(e)) from None
        return Example(id=str(item.get("id", line)), text=item["text"], source=f"{source}:{line}", meta={"entities": spans})
