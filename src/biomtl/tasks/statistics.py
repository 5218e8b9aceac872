"""Additive statistics of the metrics, so that a resampled test set is scored without re-running the metric
(the study's bootstrap, :mod:`biomtl.experiments.bootstrap`).

A metric is *additive* over some unit (a sentence, an example, an abstract) when each unit contributes a fixed
row of numbers and the metric of any multiset of units is a function of the rows' column sums: entity F1 of
(true positives, predicted, gold) per sentence, micro-F1 of the same per example, Pearson of
(x, y, x², y², xy, 1) per pair, HoC's example-based F1 of (precision, recall, 1) per abstract. A bootstrap
replicate is then one product, ``counts (B, n_units) @ units (n_units, k)``, and one vectorised score.

On the full sample the score is the metric's own value: bit for bit for the count-based metrics (the same
float operations as :mod:`biomtl.metrics`), to rounding (1e-12) where the metric itself sums floats in another
order (``pearson`` through scipy, ``hoc_f1``'s means through ``math.fsum``). Metrics without such statistics
(``spearman``, macro averages) give ``None``.

>>> stats = score_statistics("entity_f1", "f1", [["B-Chem", "O"]], [["B-Chem", "O"]])
>>> stats.full_score(), stats.unit
(1.0, 'sentence')
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from biomtl.metrics import iob_chunks

Array = np.ndarray


@dataclass(frozen=True)
class ScoreStatistics:
    """One task's predictions as additive rows: any multiset of rows scores ``score(their column sums)``."""

    units: Array  # (n_units, k) float64, a row per resampling unit
    score: Callable[[Array], Array]  # column sums (..., k) → the main metric (...)
    unit: str  # what a row is: "sentence", "example", "abstract", "pair"

    def full_score(self) -> float:
        """The main metric of the whole sample (each unit once)."""
        return float(self.score(self.units.sum(axis=0)))


def _ratio(numerator: Array, denominator: Array) -> Array:
    """``numerator / denominator`` elementwise, 0.0 where the denominator is 0 (as ``metrics._ratio``)."""
    numerator, denominator = np.broadcast_arrays(np.asarray(numerator, float), np.asarray(denominator, float))
    return np.divide(numerator, denominator, out=np.zeros(numerator.shape), where=denominator != 0)


def _prf(key: str, sums: Array) -> Array:
    """``precision``, ``recall`` or ``f1`` from summed (true positives, predicted, gold): ``metrics._prf``."""
    precision = _ratio(sums[..., 0], sums[..., 1])
    recall = _ratio(sums[..., 0], sums[..., 2])
    values = {"precision": precision, "recall": recall, "f1": _ratio(2 * precision * recall, precision + recall)}
    return values[key]


def _counts(rows: Sequence[tuple[float, ...]], k: int) -> Array:
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), k)


# ----------------------------------------------------------------------------------------------------------
# One function per metric of biomtl.metrics: (gold, pred, main-metric key, the metric's arguments) → statistics


def entity_f1_statistics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], key: str) -> ScoreStatistics:
    """Per sentence: exact-span (type, start, end) matches, predicted and gold entities."""
    rows = []
    for gold_tags, pred_tags in zip(gold, pred, strict=True):
        gold_chunks, pred_chunks = iob_chunks(gold_tags), iob_chunks(pred_tags)
        rows.append((len(gold_chunks & pred_chunks), len(pred_chunks), len(gold_chunks)))
    return ScoreStatistics(_counts(rows, 3), partial(_prf, key), "sentence")


def _accuracy(sums: Array) -> Array:
    return _ratio(sums[..., 3], sums[..., 4])


def micro_statistics(
    gold: Sequence[str], pred: Sequence[str], key: str, exclude: Collection[str] = (), labels: Any = None
) -> ScoreStatistics | None:
    """Per example: (correct scored label, scored prediction, scored gold, correct, 1), scored = not in
    ``exclude``. Serves ``micro_f1``, ``accuracy`` and ``classification_f1``'s micro and accuracy keys."""
    micro = {"f1": "f1", "precision": "precision", "recall": "recall",
             "micro_f1": "f1", "micro_precision": "precision", "micro_recall": "recall"}
    if key != "accuracy" and key not in micro:
        return None  # macro averages are not additive
    excluded = set(exclude)
    rows = [(float(g == p and g not in excluded), float(p not in excluded), float(g not in excluded), float(g == p), 1.0)
            for g, p in zip(gold, pred, strict=True)]
    score = _accuracy if key == "accuracy" else partial(_prf, micro[key])
    return ScoreStatistics(_counts(rows, 5), score, "example")


def multilabel_f1_statistics(
    gold: Sequence[Collection[str]], pred: Sequence[Collection[str]], key: str
) -> ScoreStatistics:
    """Per example: |gold ∩ pred|, |pred|, |gold|."""
    rows = [(len(set(g) & set(p)), len(set(p)), len(set(g))) for g, p in zip(gold, pred, strict=True)]
    return ScoreStatistics(_counts(rows, 3), partial(_prf, key), "example")


def _hoc(key: str, sums: Array) -> Array:
    precision = _ratio(sums[..., 0], sums[..., 2])
    recall = _ratio(sums[..., 1], sums[..., 2])
    return {"precision": precision, "recall": recall, "f1": _ratio(2 * precision * recall, precision + recall)}[key]


def hoc_f1_statistics(
    gold: Sequence[Collection[str]], pred: Sequence[Collection[str]], key: str, doc_ids: Sequence[str] | None = None
) -> ScoreStatistics | None:
    """Per abstract (sentence labels unioned by ``doc_ids``, as ``metrics.hoc_f1``): its example-based
    precision and recall, and 1. ``None`` where an abstract has no gold label (the metric is undefined)."""
    ids = list(doc_ids) if doc_ids is not None else [str(i) for i in range(len(gold))]
    docs: dict[str, tuple[set[str], set[str]]] = {}
    for doc_id, gold_labels, pred_labels in zip(ids, gold, pred, strict=True):
        doc_gold, doc_pred = docs.setdefault(doc_id, (set(), set()))
        doc_gold.update(gold_labels)
        doc_pred.update(pred_labels)
    if any(not g for g, _ in docs.values()):
        return None
    rows = [(len(g & p) / len(p) if p else 0.0, len(g & p) / len(g), 1.0) for g, p in docs.values()]
    return ScoreStatistics(_counts(rows, 3), partial(_hoc, key), "abstract")


def _pearson(sums: Array) -> Array:
    """Pearson's r from (Σx, Σy, Σx², Σy², Σxy, n); 0.0 where n < 2 or a side is constant (``metrics.pearson``)."""
    sx, sy, sxx, syy, sxy, n = (sums[..., j] for j in range(6))
    mean_x, mean_y = _ratio(sx, n), _ratio(sy, n)
    var_x, var_y = sxx - sx * mean_x, syy - sy * mean_y
    cov = sxy - sx * mean_y
    # A constant side leaves only rounding in its variance: relative to its Σx², at the level of float error.
    defined = (n >= 2) & (var_x > 1e-12 * sxx) & (var_y > 1e-12 * syy)
    r = _ratio(cov, np.sqrt(np.where(defined, var_x * var_y, 0.0)))
    return np.clip(np.where(defined, r, 0.0), -1.0, 1.0)


def pearson_statistics(gold: Sequence[float], pred: Sequence[float], key: str) -> ScoreStatistics | None:
    """Per pair: x, y, x², y², xy and 1, with x and y centred on the sample's means (r does not change; the sums
    lose less to cancellation). ``spearman`` (ranks) is not additive: ``None``."""
    if key != "pearson":
        return None
    x = np.asarray(gold, dtype=np.float64)
    y = np.asarray(pred, dtype=np.float64)
    if len(x):
        x, y = x - x.mean(), y - y.mean()
    units = np.stack([x, y, x * x, y * y, x * y, np.ones_like(x)], axis=1)
    return ScoreStatistics(units, _pearson, "pair")


STATISTICS: dict[str, Callable[..., ScoreStatistics | None]] = {
    "entity_f1": entity_f1_statistics,
    "micro_f1": micro_statistics,
    "classification_f1": micro_statistics,
    "accuracy": micro_statistics,
    "multilabel_f1": multilabel_f1_statistics,
    "hoc_f1": hoc_f1_statistics,
    "pearson": pearson_statistics,
}
"""Additive statistics by metric name (:data:`biomtl.metrics.METRICS`); a metric missing here has none."""


def score_statistics(metric: str, key: str, gold: Sequence[Any], pred: Sequence[Any], **arguments: Any) -> ScoreStatistics | None:
    """The statistics of ``metric``'s score ``key`` on these predictions (``arguments``: the metric's own, as
    a task's ``metric_kwargs`` gives them), or ``None`` where that score is not additive."""
    make = STATISTICS.get(metric)
    return None if make is None else make(gold, pred, key, **arguments)
