"""What ``biomtl validate`` reports about a dataset it has read, so that a user sees their data was read as
intended: examples per split (with the dev rows that ``dev_from_train`` holds out), the gold labels counted,
the entity masks found, and the longest example against ``max_length``.

>>> from biomtl.tasks import load_dataset_spec  # doctest: +SKIP
>>> spec = load_dataset_spec("my-ner.yaml")  # doctest: +SKIP
>>> print("\\n".join(dataset_summary(spec, read_dataset(spec, []), word_count, "words", 128)))  # doctest: +SKIP
train: 120 examples; labels: B-Disease 41, I-Disease 12, O 1310
...
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from biomtl.config import DatasetSpec
from biomtl.data.examples import Example


def word_count(example: Example) -> int:
    """An example's length in words: the measure when no tokenizer is at hand."""
    if example.tokens is not None:
        return len(example.tokens)
    return len((example.text or "").split()) + len((example.text_b or "").split())


def label_counts(examples: Iterable[Example]) -> str:
    """The gold labels of some examples, counted: each label (a list label, such as a tag sequence or a set of
    document labels, counts its items); numeric scores as their range and mean."""
    counts: Counter[str] = Counter()
    scores: list[float] = []
    for ex in examples:
        values: list[Any] = list(ex.label) if isinstance(ex.label, (list, tuple)) else [ex.label]
        for value in values:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                scores.append(float(value))
            else:
                counts[str(value)] += 1
    parts = [f"{label} {n}" for label, n in sorted(counts.items())]
    if scores:
        parts.append(f"scores {min(scores):g} to {max(scores):g}, mean {sum(scores) / len(scores):.2f}")
    return ", ".join(parts) or "none"


def marker_counts(spec: DatasetSpec, examples: Iterable[Example]) -> str:
    """How many examples carry each combination of ``markers`` (the first combination a text has counts)."""
    counts: Counter[int] = Counter()
    for ex in examples:
        for i, combination in enumerate(spec.markers):
            if all(mask in (ex.text or "") for mask in combination):
                counts[i] += 1
                break
    return ", ".join(f"{' + '.join(c)} in {counts[i]} examples" for i, c in enumerate(spec.markers))


def dataset_summary(
    spec: DatasetSpec, examples: dict[str, list[Example]], length: Callable[[Example], int], unit: str,
    max_length: int, max_length_note: str = "",
) -> list[str]:
    """Lines that say what was read: per split its examples and label counts, the markers found (relation
    tasks), and the longest example in ``unit`` (``length`` measures one) against ``max_length``
    (``max_length_note`` says where that value comes from)."""
    lines = []
    for split, exs in examples.items():
        held = " (held out from train by dev_from_train)" if split == "dev" and "dev" not in spec.files else ""
        lines.append(f"{split}: {len(exs)} examples{held}; labels: {label_counts(exs)}")
    every = [ex for exs in examples.values() for ex in exs]
    if spec.markers:
        lines.append(f"markers: {marker_counts(spec, every)}")
    if every:
        sizes = [length(ex) for ex in every]
        longest = max(range(len(every)), key=sizes.__getitem__)
        over = sum(size > max_length for size in sizes)
        fits = "every example fits" if not over else f"{over} examples are longer (split into windows or cut)"
        lines.append(f"longest example: {sizes[longest]} {unit}, {every[longest].source}; max_length "
                     f"{max_length}{max_length_note}: {fits}")
    return lines
