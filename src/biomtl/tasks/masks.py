"""Entity masks of relation tasks (``markers:`` in a dataset config).

A relation sentence names its two arguments by masks: ``@CHEMICAL$ inhibits @GENE$ .``. Data files must
hold one of the declared mask combinations; a prediction input may instead give plain text and the two
argument spans, which are masked here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from biomtl.config import DatasetSpec
from biomtl.errors import DataError


def mask_problem(spec: DatasetSpec, text: str) -> str | None:
    """Why a relation sentence's entity masks are wrong, or ``None``: it must hold one of the declared mask
    combinations, e.g. ``@CHEMICAL$`` and ``@GENE$`` once each, or ``@CHEM-GENE$`` once."""
    if not spec.markers:
        return None
    masks = sorted({m for option in spec.markers for m in option}, key=len, reverse=True)
    counts = {}
    rest = text
    for m in masks:  # longest first, so @CHEM-GENE$ is not also counted as something shorter
        counts[m] = rest.count(m)
        rest = rest.replace(m, " ")
    for option in spec.markers:
        want = {m: option.count(m) for m in option}
        if all(counts[m] == want.get(m, 0) for m in masks):
            return None
    expected = " or ".join("+".join(option) for option in spec.markers)
    found = ", ".join(f"{m}×{n}" for m, n in counts.items() if n) or "none"
    return f"entity masks do not match (expected {expected}; found {found})"


def check_masks(spec: DatasetSpec, text: str, source: str, line: int) -> None:
    """:func:`mask_problem` as a :class:`~biomtl.errors.DataError` naming ``source:line``."""
    problem = mask_problem(spec, text)
    if problem:
        raise DataError(Path(source), line, problem)


def mask_entities(spec: DatasetSpec, text: str, entities: Any, source: str, line: int) -> str:
    """Replace the two argument spans by the task's masks.

    Each entity is ``{"start", "end", "mask"}`` (``mask`` like ``"@CHEMICAL$"``) or, for tasks with one
    mask combination, in the order of that combination.

    >>> from biomtl.config import MetricSpec
    >>> spec = DatasetSpec("rel", "classification", "tsv", {}, MetricSpec("micro_f1"), "f1",
    ...                    labels=["yes", "no"], markers=[["@CHEMICAL$", "@GENE$"]])
    >>> mask_entities(spec, "aspirin inhibits COX-1", [{"start": 0, "end": 7}, {"start": 17, "end": 22}], "-", 1)
    '@CHEMICAL$ inhibits @GENE$'
    """
    if not spec.markers:
        raise DataError(source, line, f"task {spec.name} takes no entities (it is not a relation task)")
    if not isinstance(entities, list) or len(entities) != 2:
        raise DataError(source, line, "'entities' must list exactly two argument spans")
    default = spec.markers[0]
    spans = []
    for k, ent in enumerate(entities):
        if not isinstance(ent, dict) or not isinstance(ent.get("start"), int) or not isinstance(ent.get("end"), int):
            raise DataError(source, line, f"entities[{k}]: expected integer 'start' and 'end'")
        start, end = ent["start"], ent["end"]
        if not 0 <= start < end <= len(text):
            raise DataError(source, line, f"entities[{k}]: offsets {start}-{end} are outside the text (length {len(text)})")
        mask = ent.get("mask", default[k] if len(default) == 2 else None)
        allowed = {m for option in spec.markers for m in option}
        if not isinstance(mask, str) or mask not in allowed:
            raise DataError(source, line, f"entities[{k}]: mask {mask!r} is not one of {', '.join(sorted(allowed))}")
        spans.append((start, end, mask))
    (s1, e1, _), (s2, e2, _) = sorted(spans)
    if s2 < e1:
        raise DataError(source, line, f"entities overlap or cross ({s1}-{e1} and {s2}-{e2})")
    for start, end, mask in sorted(spans, reverse=True):
        text = text[:start] + mask + text[end:]
    return text
