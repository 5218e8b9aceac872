"""Sentences of raw text: syntok's segmenter with the rules of BLUE's ChemProt files.

One splitter for every place that cuts text into sentences: the ChemProt conversion
(:mod:`biomtl.corpora.chemprot`, whose docstring and ``MEASURED_SPLITTERS`` explain the rules), document
annotation (:mod:`biomtl.annotate`) and the predictor's long texts (:mod:`biomtl.predict`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from syntok import segmenter

Span = tuple[int, int]  # half-open character offsets


def _split(text: str) -> Iterator[Span]:
    """syntok's sentences as spans of ``text``.

    syntok cuts ``...in rats]. OBJECTIVE: ...`` (PubMed's bracketed translated title) before the period, and
    the next piece would be glued back; spaCy ended the sentence after the period, so it moves back there
    when a capital follows.
    """
    previous: Span | None = None
    for paragraph in segmenter.analyze(text):
        for sentence in paragraph:
            start, end = sentence[0].offset, sentence[-1].offset + len(sentence[-1].value)
            if previous and text.startswith("].", start - 1) and _CAPITAL_NEXT.match(text, start + 1):
                previous, start = (previous[0], start + 1), start + 1
            if previous:
                yield previous
            previous = (start, end)
    if previous:
        yield previous


_CAPITAL_NEXT = re.compile(r"\s+[A-Z]")
_LIST_NUMBER = re.compile(r"\d{1,2}\.(?=\s+[A-Z])")


def sentence_spans(text: str, mentions: Iterable[Span] = ()) -> list[Span]:
    """Sentences of ``text`` as spans without surrounding whitespace, with BLUE's rules (module docstring).

    No sentence boundary cuts one of ``mentions``.

    >>> text = "Aspirin blocks COX-1. 2. It is cheap. Its dose is 10 mg i.v. daily."
    >>> [text[s:e] for s, e in sentence_spans(text)]
    ['Aspirin blocks COX-1. 2.', 'It is cheap.', 'Its dose is 10 mg i.v. daily.']
    """
    spans: list[Span] = []
    for start, end in _split(text):
        start, end = _strip(text, start, end)
        if start == end:
            continue
        number = _LIST_NUMBER.match(text, start)
        if spans and number:  # "... assay. 1." | "The ...": spaCy left list numbers behind
            spans[-1] = (spans[-1][0], number.end())
            start = _strip(text, number.end(), end)[0]
        last = spans[-1][1] if spans else 0
        if spans and (text[last - 1] not in ".?!" or text[last - 4 : last] == "i.v."):
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return keep_mentions_whole(spans, mentions)


def _strip(text: str, start: int, end: int) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def keep_mentions_whole(spans: list[Span], mentions: Iterable[Span]) -> list[Span]:
    """Join neighbouring sentences wherever a mention crosses the boundary between them."""
    mentions = list(mentions)
    joined: list[Span] = []
    for start, end in spans:
        if joined and any(s < start and e > joined[-1][1] for s, e in mentions):
            joined[-1] = (joined[-1][0], end)
        else:
            joined.append((start, end))
    return joined
