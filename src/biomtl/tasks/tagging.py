"""Named-entity recognition: word-level IOB2 tags, predicted on each word's first sub-word.

Only first sub-words carry labels; continuation sub-words and the special tokens are ignored by the loss
(``-100``), so no ``X``/``CLS``/``SEP`` pseudo-labels exist anywhere. A sentence longer than the encoder
window is cut into overlapping windows of whole words (:func:`window_features`); every word is predicted by
the window in which it has the most context on both sides, so every word gets exactly one prediction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from biomtl.config import DatasetSpec
from biomtl.data.examples import Example
from biomtl.metrics import iob_chunks
from biomtl.tasks.base import (
    DEFAULT_SETTINGS,
    Batch,
    Feature,
    HeadSettings,
    InvalidLabel,
    TaskBase,
    labels_problems,
    text_input,
)

IGNORE = -100
WORD = re.compile(r"\w+|[^\w\s]")


def words_with_offsets(text: str) -> list[tuple[str, int, int]]:
    """Split raw text into words and punctuation, the tokenisation of the BLUE NER files.

    >>> words_with_offsets("IL-2 gene.")
    [('IL', 0, 2), ('-', 2, 3), ('2', 3, 4), ('gene', 5, 9), ('.', 9, 10)]
    """
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


# ----------------------------------------------------------------------------------------------------------
# Windows


def make_windows(lengths: list[int], capacity: int) -> list[tuple[int, int]]:
    """Overlapping windows ``[start, end)`` over words with ``lengths`` sub-words each.

    Each window holds at most ``capacity`` sub-words (a single longer word is truncated in its own window);
    consecutive windows overlap by about half a window.

    >>> make_windows([1] * 10, 4)
    [(0, 4), (2, 6), (4, 8), (6, 10)]
    """
    n = len(lengths)
    if sum(lengths) <= capacity:
        return [(0, n)]
    windows = []
    start = 0
    while True:
        end, used = start, 0
        while end < n and used + lengths[end] <= capacity:
            used += lengths[end]
            end += 1
        end = max(end, start + 1)  # a word longer than the window still gets one
        windows.append((start, end))
        if end >= n:
            return windows
        # Next window starts where the last half-window of this one begins.
        nxt, tail = end, 0
        while nxt - 1 > start and tail + lengths[nxt - 1] <= capacity // 2:
            nxt -= 1
            tail += lengths[nxt]
        start = max(nxt, start + 1)


def owners(windows: list[tuple[int, int]], lengths: list[int]) -> list[int]:
    """For each word, the window where it has the most context (sub-words to the nearer edge)."""
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    best: list[tuple[int, int]] = [(-1, -1)] * len(lengths)
    for w, (s, e) in enumerate(windows):
        for i in range(s, e):
            context = min(offsets[i] - offsets[s], offsets[e] - offsets[i + 1])
            if context > best[i][0]:
                best[i] = (context, w)
    return [w for _, w in best]


def word_pieces(sentences: list[list[str]], tokenizer: Any) -> list[list[list[int]]]:
    """The sub-word ids of every word of every sentence (no special tokens). A word the tokenizer drops
    entirely (e.g. a zero-width space) becomes ``[UNK]``, so that every word can carry a tag."""
    pieces: list[list[list[int]]] = [[] for _ in sentences]
    todo = [i for i, words in enumerate(sentences) if words]
    if not todo:
        return pieces
    enc = tokenizer([sentences[i] for i in todo], is_split_into_words=True, add_special_tokens=False)
    for k, i in enumerate(todo):
        words: list[list[int]] = [[] for _ in sentences[i]]
        for token_id, w in zip(enc["input_ids"][k], enc.word_ids(k), strict=True):
            if w is not None:
                words[w].append(token_id)
        pieces[i] = [p or [tokenizer.unk_token_id] for p in words]
    return pieces


def window_features(
    pieces: list[list[int]],
    max_length: int,
    cls_id: int,
    sep_id: int,
    example_index: int = 0,
    labels: list[int] | None = None,
) -> list[Feature]:
    """One sentence's words, given as their sub-word ids (:func:`word_pieces`), → encoder windows
    ``[CLS] words [SEP]`` of at most ``max_length`` sub-words.

    Windows overlap by about half a window (:func:`make_windows`); a word longer than a window is cut to
    fit its own. Each feature holds ``input_ids``, ``example_index``, and per word of the window its
    ``positions`` (its first sub-word), ``word_index`` (in the sentence), ``owned`` (this window predicts
    it: the one with most context, :func:`owners`) and ``word_labels`` (tag ids from ``labels``, else
    ``-100``); ``n_words`` is the sentence's length. A sentence without words gives no feature.

    >>> [f["input_ids"] for f in window_features([[5], [6, 7], [8]], max_length=4, cls_id=101, sep_id=102)]
    [[101, 5, 102], [101, 6, 7, 102], [101, 8, 102]]
    """
    capacity = max_length - 2  # [CLS] ... [SEP]
    if not pieces:
        return []
    lengths = [min(len(p), capacity) for p in pieces]
    windows = make_windows(lengths, capacity)
    owner = owners(windows, lengths)
    features = []
    for w, (s, e) in enumerate(windows):
        ids = [cls_id]
        positions, word_index, owned, word_labels = [], [], [], []
        for j in range(s, e):
            positions.append(len(ids))
            word_index.append(j)
            owned.append(owner[j] == w)
            word_labels.append(labels[j] if labels is not None else IGNORE)
            ids.extend(pieces[j][:capacity])
        ids.append(sep_id)
        features.append(
            {
                "input_ids": ids,
                "example_index": example_index,
                "positions": positions,
                "word_index": word_index,
                "owned": owned,
                "word_labels": word_labels,
                "n_words": len(pieces),
            }
        )
    return features


# ----------------------------------------------------------------------------------------------------------
# Predictions


@dataclass(frozen=True)
class WindowTags:
    """One window's tag for each of its words (in the order of the feature's ``word_index``)."""

    tags: list[str]
    probs: list[float]


@dataclass(frozen=True)
class TaggedWords:
    """A tag for every word of a sentence and that tag's probability."""

    tags: list[str]
    probs: list[float]

    def to_json(self) -> dict[str, Any]:
        """The tags; the probabilities only score entities (:func:`entities`)."""
        return {"tags": self.tags}


def entities(text: str, prediction: TaggedWords) -> list[dict[str, Any]]:
    """The entity chunks of a text's word tags (its words: :func:`words_with_offsets`), with character
    offsets into ``text`` and the lowest tag probability of the chunk as its score."""
    spans = words_with_offsets(text)
    if not spans:
        return []
    out = []
    for etype, s, e in sorted(iob_chunks(prediction.tags), key=lambda c: c[1]):
        start, end = spans[s][1], spans[e - 1][2]
        score = round(min(prediction.probs[s:e]), 4)
        out.append({"start": start, "end": end, "text": text[start:end], "type": etype, "score": score})
    return out


def repair_iob2(tags: list[str]) -> list[str]:
    """An ``I-X`` that does not continue an ``X`` entity starts one (conlleval's reading), written ``B-X``.

    >>> repair_iob2(["I-Chemical", "I-Chemical", "O", "I-Disease"])
    ['B-Chemical', 'I-Chemical', 'O', 'B-Disease']
    """
    out: list[str] = []
    for tag in tags:
        if tag.startswith("I-") and (not out or out[-1] == "O" or out[-1][2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
    return out


# ----------------------------------------------------------------------------------------------------------
# The task type


class TokenHead(nn.Module):
    """Dropout + linear layer on every token state."""

    def __init__(self, hidden_size: int, n_tags: int, settings: HeadSettings) -> None:
        super().__init__()
        self.dropout = nn.Dropout(settings.dropout)
        self.out = nn.Linear(hidden_size, n_tags)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(hidden))  # (B, T, H) → (B, T, n_tags)


class TaggingTask(TaskBase):
    """Per-token softmax over ``O`` and ``B-``/``I-`` of each declared entity type."""

    token_level = True
    can_annotate = True

    def __init__(self, spec: DatasetSpec, settings: HeadSettings = DEFAULT_SETTINGS) -> None:
        super().__init__(spec, settings)
        self.tags = ["O"] + [f"{p}-{t}" for t in spec.labels for p in ("B", "I")]
        self.tag_index = {t: i for i, t in enumerate(self.tags)}

    @classmethod
    def spec_problems(cls, spec: DatasetSpec) -> list[str]:
        problems = labels_problems(spec)
        if spec.format != "conll":
            problems.append("format: tagging tasks read the 'conll' format")
        return problems

    def parse_label(self, raw: Any) -> str:
        """One token's tag; a bare ``B``/``I`` is of the spec's ``bare_tag_type``."""
        tag = str(raw).strip()
        if self.spec.bare_tag_type and tag in ("B", "I"):
            tag = f"{tag}-{self.spec.bare_tag_type}"
        if tag not in self.tag_index:
            raise InvalidLabel(f"undeclared tag '{tag}' (entity types are listed under labels: in {self.spec.config_path})")
        return tag

    def build_head(self, hidden_size: int, settings: HeadSettings) -> nn.Module:
        return TokenHead(hidden_size, len(self.tags), settings)

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        pieces = word_pieces([ex.tokens or [] for ex in examples], tokenizer)
        features = []
        for i, (ex, words) in enumerate(zip(examples, pieces, strict=True)):
            labels = [self.tag_index[t] for t in ex.label] if ex.label is not None else None
            features += window_features(words, max_length, tokenizer.cls_token_id, tokenizer.sep_token_id, i, labels)
        return features

    def collate_targets(self, features: list[Feature], length: int) -> Batch:
        labels = torch.full((len(features), length), IGNORE, dtype=torch.long)
        for i, f in enumerate(features):
            labels[i, f["positions"]] = torch.tensor(f["word_labels"], dtype=torch.long)
        return {"labels": labels}

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE)

    def loss_units(self, batch: Batch) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def decode(self, logits: torch.Tensor, features: list[Feature]) -> list[WindowTags]:
        probs = torch.softmax(logits.float(), dim=-1)
        best_p, best = probs.max(dim=-1)
        out = []
        for i, f in enumerate(features):
            pos = f["positions"]
            out.append(WindowTags([self.tags[t] for t in best[i, pos].tolist()], best_p[i, pos].tolist()))
        return out

    def merge(self, predictions: list[WindowTags], features: list[Feature], n_examples: int) -> list[TaggedWords]:
        """Each word's tag from the window that owns it; an example without words gets no tags."""
        tags: list[list[str]] = [[] for _ in range(n_examples)]
        probs: list[list[float]] = [[] for _ in range(n_examples)]
        for pred, feat in zip(predictions, features, strict=True):
            i = feat["example_index"]
            if not tags[i]:
                tags[i] = ["O"] * feat["n_words"]
                probs[i] = [0.0] * feat["n_words"]
            for j, own, tag, p in zip(feat["word_index"], feat["owned"], pred.tags, pred.probs, strict=True):
                if own:
                    tags[i][j] = tag
                    probs[i][j] = p
        return [TaggedWords(repair_iob2(t), p) for t, p in zip(tags, probs, strict=True)]

    def metric_value(self, prediction: TaggedWords) -> list[str]:
        return prediction.tags

    def saved_metric_value(self, row: dict[str, Any]) -> list[str]:
        return list(row["tags"])

    def plain_text_inputs(self, text: str) -> list[tuple[int, str]]:
        """The whole text is one document; entity offsets index into it."""
        return [(1, text)]

    def read_input(self, item: str | dict[str, Any], source: str, line: int) -> Example:
        """Raw text of any length; its words are :func:`words_with_offsets`."""
        example = text_input(self.spec, item, source, line, pair=False)
        example.tokens = [w for w, _, _ in words_with_offsets(example.text or "")]
        return example

    def output_row(self, example: Example, prediction: TaggedWords) -> dict[str, Any]:
        return {"entities": entities(example.text or "", prediction)}
