"""Named-entity recognition: word-level IOB2 tags, predicted on each word's first sub-word.

Only first sub-words carry labels; continuation sub-words and the special tokens are ignored by the loss
(``-100``), so no ``X``/``CLS``/``SEP`` pseudo-labels exist anywhere. A sentence longer than the encoder
window is cut into overlapping windows of whole words; every word is predicted by the window in which it has
the most context on both sides, so every word gets exactly one prediction.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from biomtl.data.examples import Example
from biomtl.tasks.base import Batch, Feature, TaskType

IGNORE = -100


class TokenHead(nn.Module):
    """Dropout + linear layer on every token state."""

    def __init__(self, hidden_size: int, n_tags: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, n_tags)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(hidden))  # (B, T, H) → (B, T, n_tags)


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


class TaggingTask(TaskType):
    """Per-token softmax over ``O`` and ``B-``/``I-`` of each declared entity type."""

    name = "tagging"

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self.tags = ["O"] + [f"{p}-{t}" for t in spec.labels for p in ("B", "I")]
        self.tag_index = {t: i for i, t in enumerate(self.tags)}

    def build_head(self, hidden_size: int, dropout: float, pooling: str) -> nn.Module:
        return TokenHead(hidden_size, len(self.tags), dropout)

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        capacity = max_length - 2  # [CLS] ... [SEP]
        word_lists = [ex.tokens or [] for ex in examples]
        enc = tokenizer(word_lists, is_split_into_words=True, add_special_tokens=False)
        unk = tokenizer.unk_token_id
        features = []
        for i, ex in enumerate(examples):
            words = word_lists[i]
            pieces: list[list[int]] = [[] for _ in words]
            for token_id, w in zip(enc["input_ids"][i], enc.word_ids(i), strict=True):
                if w is not None:
                    pieces[w].append(token_id)
            for p in pieces:
                if not p:  # a word the tokenizer drops entirely (e.g. a zero-width space)
                    p.append(unk)
            lengths = [min(len(p), capacity) for p in pieces]
            windows = make_windows(lengths, capacity)
            owner = owners(windows, lengths)
            gold = ex.label if ex.label is not None else None
            for w, (s, e) in enumerate(windows):
                ids = [tokenizer.cls_token_id]
                positions, word_index, owned, labels = [], [], [], []
                for j in range(s, e):
                    positions.append(len(ids))
                    word_index.append(j)
                    owned.append(owner[j] == w)
                    labels.append(self.tag_index[gold[j]] if gold is not None else IGNORE)
                    ids.extend(pieces[j][:capacity])
                ids.append(tokenizer.sep_token_id)
                features.append(
                    {
                        "input_ids": ids,
                        "example_index": i,
                        "positions": positions,
                        "word_index": word_index,
                        "owned": owned,
                        "word_labels": labels,
                        "n_words": len(words),
                    }
                )
        return features

    def collate_targets(self, features: list[Feature], length: int) -> Batch:
        labels = torch.full((len(features), length), IGNORE, dtype=torch.long)
        for i, f in enumerate(features):
            labels[i, f["positions"]] = torch.tensor(f["word_labels"], dtype=torch.long)
        return {"labels": labels}

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE)

    def decode(self, logits: torch.Tensor, features: list[Feature]) -> list[Any]:
        probs = torch.softmax(logits.float(), dim=-1)
        best_p, best = probs.max(dim=-1)
        out = []
        for i, f in enumerate(features):
            pos = f["positions"]
            out.append(
                {
                    "word_index": f["word_index"],
                    "owned": f["owned"],
                    "tags": [self.tags[t] for t in best[i, pos].tolist()],
                    "probs": best_p[i, pos].tolist(),
                }
            )
        return out

    def merge(self, predictions: list[Any], features: list[Feature], n_examples: int) -> list[Any]:
        tags: list[list[str] | None] = [None] * n_examples
        probs: list[list[float] | None] = [None] * n_examples
        for pred, feat in zip(predictions, features, strict=True):
            i = feat["example_index"]
            if tags[i] is None:
                tags[i] = ["O"] * feat["n_words"]
                probs[i] = [0.0] * feat["n_words"]
            for j, own, tag, p in zip(pred["word_index"], pred["owned"], pred["tags"], pred["probs"], strict=True):
                if own:
                    tags[i][j] = tag
                    probs[i][j] = p
        merged = []
        for t, p in zip(tags, probs, strict=True):
            t = repair_iob2(t or [])
            merged.append({"tags": t, "probs": p or []})
        return merged

    def gold(self, example: Example) -> Any:
        return example.label

    def metric_value(self, prediction: Any) -> Any:
        return prediction["tags"]


def repair_iob2(tags: list[str]) -> list[str]:
    """An ``I-X`` that does not continue an ``X`` entity starts one (conlleval's reading), written ``B-X``."""
    out = []
    for tag in tags:
        if tag.startswith("I-") and (not out or out[-1] == "O" or out[-1][2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
    return out
