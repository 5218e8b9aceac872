"""Tokenised features kept between the runs of one process.

A study trains every task many times with the same tokenizer and ``max_length``; each split is read and
tokenised once. Cached features are shared by the runs and never mutated after encoding.

>>> cache = FeatureCache(max_entries=2)
>>> cache.get(("a",), lambda: [1, 2])
[1, 2]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from biomtl.config import DatasetSpec
from biomtl.errors import BiomtlError

V = TypeVar("V")


class FeatureCache:
    """A bounded map from :func:`split_key` to what ``load()`` gave; the oldest entry goes first."""

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple, Any] = {}

    def get(self, key: tuple, load: Callable[[], V]) -> V:
        """The cached value of ``key``, computed with ``load()`` the first time."""
        if key not in self._entries:
            self._entries[key] = load()
            while len(self._entries) > self.max_entries:
                self._entries.pop(next(iter(self._entries)))
        return self._entries[key]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def split_key(spec: DatasetSpec, split: str, limit: int | None, tokenizer: Any, max_length: int) -> tuple:
    """What one split's features depend on: the task's spec, the split and its cap, the file its spec resolved
    (path, modification time, size), the tokenizer and ``max_length``."""
    try:
        path = spec.file(split if split in spec.files else "train").path
        assert path is not None  # spec.file raises for a path it could not resolve
        stamp: tuple = (str(path.resolve()), path.stat().st_mtime_ns, path.stat().st_size)
    except (OSError, BiomtlError):
        stamp = ("missing", split)
    vocab = (tokenizer.name_or_path, len(tokenizer), type(tokenizer).__name__)
    return (json.dumps(spec.to_dict(), sort_keys=True, default=str), split, limit, stamp, vocab, max_length)


# The process's cache, shared by the runs of a study.
FEATURES = FeatureCache()
