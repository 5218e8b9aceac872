"""The one record every reader produces and every task type consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Example:
    """One unit of a task: a sentence, a sentence pair, or a tokenised sentence.

    ``label`` is a ``str`` (classification), ``float`` (regression), ``list[str]`` of label names
    (multilabel) or of IOB2 tags, one per token (tagging). ``source`` is ``"file:line"`` for messages.
    """

    id: str
    text: str | None = None
    text_b: str | None = None
    tokens: list[str] | None = None
    label: Any = None
    doc_id: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
