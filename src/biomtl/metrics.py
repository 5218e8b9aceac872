"""Evaluation metrics: pure functions from gold and predicted labels to a dict of scores.

Every metric takes ``(gold, pred, **arguments)`` and returns a dict whose keys are fixed per metric (listed in
each docstring); a dataset config names one of them as its main metric. Scores are floats in [0, 1], with one
exception: ``pearson`` and ``spearman`` are correlations in [-1, 1]. Breakdowns (``per_type``, ``per_label``)
map a label to ``{"precision", "recall", "f1", "support"}``, where ``support`` is a gold count. A ratio whose
denominator is zero is 0.0, as with scikit-learn's ``zero_division=0``.

Each metric is checked against the scorer it stands in for (``tests/test_metrics.py``): seqeval/conlleval for
``entity_f1``, scikit-learn for the classification metrics, BLUE's ``eval_hoc.py`` for ``hoc_f1``.

Configs name metrics through :data:`METRICS`; :func:`compute` looks them up and :func:`metric_problems` lets
config validation report a bad name or argument before any work starts.
"""

from __future__ import annotations

import inspect
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from biomtl.errors import ConfigError, did_you_mean

Scores = dict[str, Any]
"""A metric's result: stable top-level keys with float values, plus an optional per-label breakdown."""

Chunk = tuple[str, int, int]
"""An entity span ``(type, start, end)`` over token positions, ``end`` exclusive."""

UNTYPED = "_"
"""Entity type of bare ``B``/``I``/``E``/``S`` tags (JNLPBA, S800); seqeval uses the same name."""


def _check_lengths(metric: str, gold: Sequence[Any], pred: Sequence[Any], **others: Sequence[Any]) -> None:
    for name, values in {"pred": pred, **others}.items():
        if len(values) != len(gold):
            raise ValueError(f"{metric}: {len(gold)} gold items but {len(values)} {name} items")


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _prf(true_positives: int, n_pred: int, n_gold: int) -> dict[str, float]:
    precision = _ratio(true_positives, n_pred)
    recall = _ratio(true_positives, n_gold)
    return {
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
    }


# --------------------------------------------------------------------------------------------------------------
# Regression


def pearson(gold: Sequence[float], pred: Sequence[float]) -> Scores:
    """Pearson and Spearman correlation (BIOSSES).

    Keys: ``pearson``, ``spearman``, both in [-1, 1]. When either side is constant, or there are fewer than two
    pairs, the correlation is undefined (scipy returns NaN); it is reported as 0.0 ("no linear relation") so that
    checkpoint selection and averaging across tasks never see NaN. An untrained regression head that predicts
    one value therefore scores 0.0.

    >>> pearson([1.0, 2.0, 3.0], [2.0, 4.0, 7.0])["pearson"]
    0.9933992677987828
    """
    _check_lengths("pearson", gold, pred)
    x = np.asarray(gold, dtype=np.float64)
    y = np.asarray(pred, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"pearson": 0.0, "spearman": 0.0}
    return {"pearson": float(stats.pearsonr(x, y)[0]), "spearman": float(stats.spearmanr(x, y)[0])}


# --------------------------------------------------------------------------------------------------------------
# Tagging


def _split_tag(tag: str, position: int) -> tuple[str, str]:
    """``"B-Chemical"`` → ``("B", "Chemical")``; ``"O"`` → ``("O", "")``; ``"I"`` → ``("I", "_")``."""
    if tag == "O":
        return "O", ""
    prefix, _, type_ = tag.partition("-")
    if prefix not in ("B", "I", "E", "S"):
        raise ValueError(f"tag {tag!r} at position {position} is not O or B-/I-/E-/S-<type>")
    return prefix, type_ or UNTYPED


def _chunk_ends(prev: str, prev_type: str, tag: str, type_: str) -> bool:
    """conlleval's endOfChunk: does the chunk holding the previous token end before this one?"""
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev != "O" and type_ != prev_type


def _chunk_starts(prev: str, prev_type: str, tag: str, type_: str) -> bool:
    """conlleval's startOfChunk: does a chunk start at this token?"""
    if tag in ("B", "S"):
        return True
    if tag in ("I", "E") and prev in ("O", "E", "S"):
        return True
    return tag != "O" and type_ != prev_type


def iob_chunks(tags: Sequence[str]) -> set[Chunk]:
    """Entity spans ``(type, start, end)`` of one sentence's tags, ``end`` exclusive, by conlleval's rules.

    IOB2 and IOB1 are read alike: an ``I-X`` after ``O``, or after a tag of another type, starts a new chunk
    (so an ill-formed IOB2 sequence that opens with ``I-X`` still yields an entity); ``B-X`` always starts one.
    ``E-``/``S-`` (IOBES) tags follow conlleval too. Bare ``B``/``I`` tags have type ``"_"``. Any other tag
    raises ``ValueError``.

    >>> sorted(iob_chunks(["B-Chem", "I-Chem", "O", "I-Dis", "I-Chem", "B-Chem"]))
    [('Chem', 0, 2), ('Chem', 4, 5), ('Chem', 5, 6), ('Dis', 3, 4)]
    """
    chunks: set[Chunk] = set()
    prev, prev_type, start = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):  # the sentinel "O" closes a chunk open at the end
        cur, type_ = _split_tag(tag, i)
        if _chunk_ends(prev, prev_type, cur, type_):
            chunks.add((prev_type, start, i))
        if _chunk_starts(prev, prev_type, cur, type_):
            start = i
        prev, prev_type = cur, type_
    return chunks


def entity_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Scores:
    """Exact-span entity precision, recall and F1 over sentences of tags (conlleval; seqeval's default mode).

    An entity counts as found only if a predicted chunk has the same type, start and end. Scores are micro
    averages over all entities. Keys: ``f1``, ``precision``, ``recall``, ``per_type`` (entity type →
    ``{"precision", "recall", "f1", "support"}``).

    >>> gold = [["B-Chem", "I-Chem", "O", "B-Dis"]]
    >>> pred = [["B-Chem", "I-Chem", "O", "O"]]
    >>> {k: v for k, v in entity_f1(gold, pred).items() if k != "per_type"}
    {'f1': 0.6666666666666666, 'precision': 1.0, 'recall': 0.5}
    """
    _check_lengths("entity_f1", gold, pred)
    gold_chunks: dict[str, set[tuple[int, int, int]]] = defaultdict(set)
    pred_chunks: dict[str, set[tuple[int, int, int]]] = defaultdict(set)
    for sentence, (gold_tags, pred_tags) in enumerate(zip(gold, pred, strict=True)):
        if len(gold_tags) != len(pred_tags):
            raise ValueError(
                f"entity_f1: sentence {sentence} has {len(gold_tags)} gold tags but {len(pred_tags)} predicted tags"
            )
        for type_, start, end in iob_chunks(gold_tags):
            gold_chunks[type_].add((sentence, start, end))
        for type_, start, end in iob_chunks(pred_tags):
            pred_chunks[type_].add((sentence, start, end))

    per_type: dict[str, dict[str, float]] = {}
    totals = Counter[str]()
    for type_ in sorted(gold_chunks.keys() | pred_chunks.keys()):
        tp = len(gold_chunks[type_] & pred_chunks[type_])
        n_pred, n_gold = len(pred_chunks[type_]), len(gold_chunks[type_])
        per_type[type_] = {**_prf(tp, n_pred, n_gold), "support": n_gold}
        totals.update(tp=tp, pred=n_pred, gold=n_gold)
    overall = _prf(totals["tp"], totals["pred"], totals["gold"])
    return {
        "f1": overall["f1"],
        "precision": overall["precision"],
        "recall": overall["recall"],
        "per_type": per_type,
    }


# --------------------------------------------------------------------------------------------------------------
# Single-label classification


def _per_label(
    gold: Sequence[str], pred: Sequence[str], exclude: Collection[str], labels: Iterable[str] | None
) -> dict[str, dict[str, float]]:
    """Precision/recall/F1/support for every scored label: ``labels`` (or those seen) minus ``exclude``."""
    seen = set(gold) | set(pred) if labels is None else set(labels)
    scored = sorted(seen - set(exclude))
    n_gold, n_pred = Counter(gold), Counter(pred)
    n_correct = Counter(g for g, p in zip(gold, pred, strict=True) if g == p)
    return {
        label: {**_prf(n_correct[label], n_pred[label], n_gold[label]), "support": n_gold[label]}
        for label in scored
    }


def micro_f1(gold: Sequence[str], pred: Sequence[str], exclude: Sequence[str] = ()) -> Scores:
    """Micro-averaged precision, recall and F1 over the labels not in ``exclude`` (ChemProt: ``["false"]``).

    A true positive is a correct prediction of a scored label; predicted positives are predictions of a scored
    label; gold positives are gold items with a scored label. This is BLUE's ``eval_rel.py``/``eval_ddi.py``
    (micro over the positive classes) and scikit-learn's ``average="micro", labels=<scored labels>``.
    Keys: ``f1``, ``precision``, ``recall``.

    >>> micro_f1(["CPR:3", "false", "CPR:4"], ["CPR:3", "CPR:4", "false"], exclude=["false"])["f1"]
    0.5
    """
    _check_lengths("micro_f1", gold, pred)
    excluded = set(exclude)
    tp = sum(g == p and g not in excluded for g, p in zip(gold, pred, strict=True))
    n_pred = sum(p not in excluded for p in pred)
    n_gold = sum(g not in excluded for g in gold)
    return _prf(tp, n_pred, n_gold)


def macro_f1(
    gold: Sequence[str],
    pred: Sequence[str],
    exclude: Sequence[str] = (),
    labels: Sequence[str] | None = None,
) -> Scores:
    """Macro-averaged precision, recall and F1: the unweighted mean over the scored labels (DDI's four types).

    Scored labels are ``labels`` (the dataset's declared labels; default: those seen in gold or pred) minus
    ``exclude``. A declared label that never occurs scores 0.0 and still counts in the mean, as in
    scikit-learn's ``average="macro", labels=..., zero_division=0``. Keys: ``f1``, ``precision``, ``recall``.

    >>> macro_f1(["int", "int", "advise", "false"], ["int", "false", "advise", "int"], exclude=["false"])["f1"]
    0.75
    """
    _check_lengths("macro_f1", gold, pred)
    return _macro(_per_label(gold, pred, exclude, labels))


def _macro(per_label: dict[str, dict[str, float]]) -> dict[str, float]:
    return {
        key: _mean([scores[key] for scores in per_label.values()]) for key in ("f1", "precision", "recall")
    }


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def accuracy(gold: Sequence[str], pred: Sequence[str]) -> Scores:
    """Fraction of exact matches (PubMedQA, BioASQ). Keys: ``accuracy``.

    >>> accuracy(["yes", "no", "maybe", "yes"], ["yes", "no", "yes", "yes"])
    {'accuracy': 0.75}
    """
    _check_lengths("accuracy", gold, pred)
    return {"accuracy": _ratio(sum(g == p for g, p in zip(gold, pred, strict=True)), len(gold))}


def classification_f1(
    gold: Sequence[str],
    pred: Sequence[str],
    exclude: Sequence[str] = (),
    labels: Sequence[str] | None = None,
) -> Scores:
    """Micro and macro scores over the labels not in ``exclude``, plus accuracy and a per-label breakdown.

    One call for datasets reported both ways. DDI: BLUE's ``eval_ddi.py`` prints micro-F1 over the four DDI
    types (``micro_f1`` with ``exclude=["DDI-false"]``); macro-F1 over the same types is also reported.
    ``accuracy`` counts every item, excluded labels included. Keys: ``micro_f1``, ``macro_f1``,
    ``micro_precision``, ``micro_recall``, ``accuracy``, ``per_label`` (label → ``{"precision", "recall",
    "f1", "support"}``, scored labels only).

    >>> scores = classification_f1(["int", "advise", "false"], ["int", "false", "false"], exclude=["false"])
    >>> scores["micro_f1"], scores["macro_f1"], scores["accuracy"]
    (0.6666666666666666, 0.5, 0.6666666666666666)
    """
    _check_lengths("classification_f1", gold, pred)
    micro = micro_f1(gold, pred, exclude)
    per_label = _per_label(gold, pred, exclude, labels)
    return {
        "micro_f1": micro["f1"],
        "macro_f1": _macro(per_label)["f1"],
        "micro_precision": micro["precision"],
        "micro_recall": micro["recall"],
        "accuracy": accuracy(gold, pred)["accuracy"],
        "per_label": per_label,
    }


# --------------------------------------------------------------------------------------------------------------
# Multi-label classification


def multilabel_f1(gold: Sequence[Collection[str]], pred: Sequence[Collection[str]]) -> Scores:
    """Micro precision, recall and F1 over (item, label) pairs (BLURB's HoC metric).

    Equals scikit-learn's ``average="micro"`` on binarised label matrices. Keys: ``f1``, ``precision``,
    ``recall``.

    >>> multilabel_f1([{"a", "b"}, {"c"}], [{"a"}, {"c", "d"}])["f1"]
    0.6666666666666666
    """
    _check_lengths("multilabel_f1", gold, pred)
    tp = sum(len(set(g) & set(p)) for g, p in zip(gold, pred, strict=True))
    return _prf(tp, sum(len(set(p)) for p in pred), sum(len(set(g)) for g in gold))


def hoc_f1(
    gold: Sequence[Collection[str]],
    pred: Sequence[Collection[str]],
    doc_ids: Sequence[str] | None = None,
) -> Scores:
    """BLUE's HoC score: example-based precision and recall per abstract, averaged, then F1 of the averages.

    Sentence label sets are first unioned per ``doc_ids`` entry (default: each item is its own document).
    For an abstract with gold set G and predicted set P: precision = |G ∩ P| / |P| (0.0 when P is empty) and
    recall = |G ∩ P| / |G|. ``precision`` and ``recall`` are means over abstracts and
    ``f1 = 2 * precision * recall / (precision + recall)`` (0.0 when both are 0). Keys: ``f1``, ``precision``,
    ``recall``.

    An abstract with no gold label has no recall; BLUE's script divides by zero there (its 1108 / 157 / 315
    abstracts all have at least one label), so it raises ``ConfigError`` naming the abstracts: use
    ``multilabel_f1`` for such data.

    >>> gold = [{"angiogenesis"}, set(), {"immortality"}]
    >>> pred = [{"angiogenesis"}, {"inflammation"}, set()]
    >>> hoc_f1(gold, pred, doc_ids=["1", "1", "2"])
    {'f1': 0.3333333333333333, 'precision': 0.25, 'recall': 0.5}
    """
    # Replicates get_p_r_f_arrary() and eval_hoc() in ncbi-nlp/BLUE_Benchmark: blue/eval_hoc.py and
    # blue/hoc/eval_hoc.py (read at commits 2b3dc247 and a9cce47a). What it does, and how we match it:
    # - Document key = the `index` column up to the first "_" (11872299_s0 → 11872299); sentence labels are
    #   unioned per document. Callers pass that key as doc_ids.
    # - Per abstract: prc = tt / |pred| (set to 0 if pred is empty), rec = tt / |gold| with no guard, so an
    #   empty gold set raises ZeroDivisionError (and so does an abstract empty on both sides, at `acc`).
    #   Per-abstract accuracy and F1 are computed but never reported.
    # - Means over abstracts, then F1 = divide(2PR, P + R) with divide() giving 0 where P + R == 0.
    # - The script prints the two means swapped: get_p_r_f_arrary() returns (mean_prc, mean_rec, f) but the
    #   caller unpacks `r, p, f1 = ...`, so its "Precision" line is the mean recall and vice versa. F1 is
    #   symmetric and unaffected; the keys here are the true quantities.
    if doc_ids is None:
        doc_ids = [str(i) for i in range(len(gold))]
    _check_lengths("hoc_f1", gold, pred, doc_ids=doc_ids)
    docs: dict[str, tuple[set[str], set[str]]] = {}
    for doc_id, gold_labels, pred_labels in zip(doc_ids, gold, pred, strict=True):
        doc_gold, doc_pred = docs.setdefault(doc_id, (set(), set()))
        doc_gold.update(gold_labels)
        doc_pred.update(pred_labels)

    no_gold = [doc_id for doc_id, (doc_gold, _) in docs.items() if not doc_gold]
    if no_gold:
        shown = ", ".join(repr(d) for d in no_gold[:5]) + (
            f" and {len(no_gold) - 5} more" if len(no_gold) > 5 else ""
        )
        raise ConfigError(
            f"metric.name: 'hoc_f1' is undefined for abstracts with no gold label ({shown}); "
            "BLUE's eval_hoc.py divides by zero there. Use 'multilabel_f1' for this data."
        )
    precisions = [_ratio(len(g & p), len(p)) for g, p in docs.values()]
    recalls = [len(g & p) / len(g) for g, p in docs.values()]
    precision, recall = _mean(precisions), _mean(recalls)
    return {
        "f1": _ratio(2 * precision * recall, precision + recall),
        "precision": precision,
        "recall": recall,
    }


# --------------------------------------------------------------------------------------------------------------
# Registry

METRICS: dict[str, Callable[..., Scores]] = {
    "pearson": pearson,
    "entity_f1": entity_f1,
    "micro_f1": micro_f1,
    "macro_f1": macro_f1,
    "classification_f1": classification_f1,
    "accuracy": accuracy,
    "hoc_f1": hoc_f1,
    "multilabel_f1": multilabel_f1,
}
"""Metric functions by the name a dataset config uses (``metric: {name: micro_f1, exclude: ["false"]}``)."""

_PRF = ("f1", "precision", "recall")
SCORE_KEYS: dict[str, tuple[str, ...]] = {
    "pearson": ("pearson", "spearman"),
    "entity_f1": _PRF,
    "micro_f1": _PRF,
    "macro_f1": _PRF,
    "classification_f1": ("micro_f1", "macro_f1", "micro_precision", "micro_recall", "accuracy"),
    "accuracy": ("accuracy",),
    "hoc_f1": _PRF,
    "multilabel_f1": _PRF,
}
"""The scalar scores each metric returns: a config's ``main_metric`` must be one of them."""

EXAMPLE_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "hoc_f1": ("doc_ids",),
}
"""Arguments a metric takes from the examples, not from its config: ``doc_ids`` is each item's document
(task types fill them in; :func:`biomtl.tasks.base.metric_arguments`)."""


def _arguments(name: str) -> list[str]:
    """The keyword arguments a metric takes besides gold and pred."""
    return list(inspect.signature(METRICS[name]).parameters)[2:]


def metric_problems(name: str, arguments: Iterable[str] = ()) -> list[str]:
    """Every problem with a metric name and its argument names, one line each; empty when all is well.

    >>> metric_problems("micro_f", ["exclude"])
    ["metric.name: unknown metric 'micro_f'; did you mean 'micro_f1'?"]
    """
    if name not in METRICS:
        return [f"metric.name: unknown metric '{name}'{did_you_mean(name, METRICS, 'metrics')}"]
    accepted = _arguments(name)
    return [
        f"metric.{argument}: metric '{name}' takes no argument '{argument}'; "
        f"it takes: {', '.join(accepted) if accepted else 'none'}"
        for argument in arguments
        if argument not in accepted
    ]


def compute(name: str, gold: Sequence[Any], pred: Sequence[Any], **kwargs: Any) -> Scores:
    """Run the metric registered as ``name``; raises ``ConfigError`` for an unknown name or argument.

    >>> compute("accuracy", ["a", "b"], ["a", "a"])
    {'accuracy': 0.5}
    """
    problems = metric_problems(name, kwargs)
    if problems:
        raise ConfigError(problems)
    return METRICS[name](gold, pred, **kwargs)
