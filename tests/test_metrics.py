from __future__ import annotations

import doctest
import math
import random
import re

import numpy as np
import pytest
from seqeval.metrics import sequence_labeling as seqeval
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from sklearn.preprocessing import MultiLabelBinarizer

from biomtl import metrics
from biomtl.errors import ConfigError
from biomtl.metrics import (
    METRICS,
    accuracy,
    classification_f1,
    compute,
    entity_f1,
    hoc_f1,
    iob_chunks,
    macro_f1,
    metric_problems,
    micro_f1,
    multilabel_f1,
    pearson,
)

N_RANDOM = 200

KEYS = {
    "pearson": {"pearson", "spearman"},
    "entity_f1": {"f1", "precision", "recall", "per_type"},
    "micro_f1": {"f1", "precision", "recall"},
    "macro_f1": {"f1", "precision", "recall"},
    "classification_f1": {"micro_f1", "macro_f1", "micro_precision", "micro_recall", "accuracy", "per_label"},
    "accuracy": {"accuracy"},
    "hoc_f1": {"f1", "precision", "recall"},
    "multilabel_f1": {"f1", "precision", "recall"},
}


def assert_breakdown(actual: dict, expected: dict) -> None:
    """Compare a per_type / per_label breakdown: label → {precision, recall, f1, support}."""
    assert actual.keys() == expected.keys()
    for label, scores in expected.items():
        assert actual[label] == pytest.approx(scores), label


def test_docstring_examples_run() -> None:
    result = doctest.testmod(metrics)
    assert result.attempted > 0
    assert result.failed == 0


# ------------------------------------------------------------------------------------------------------------
# pearson


def test_pearson_golden() -> None:
    # x - mean = (-1, 0, 1); y - mean(=13/3) = (-7/3, -1/3, 8/3)
    # r = (7/3 + 0 + 8/3) / (sqrt(2) * sqrt(114/9)) = 15 / sqrt(228); ranks identical → spearman 1.
    scores = pearson([1.0, 2.0, 3.0], [2.0, 4.0, 7.0])
    assert scores["pearson"] == pytest.approx(15 / math.sqrt(228))
    assert scores["spearman"] == pytest.approx(1.0)


def test_pearson_is_negative_for_reversed_predictions() -> None:
    # Correlations are the one score outside [0, 1]: a perfectly reversed ranking is -1.
    assert pearson([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx({"pearson": -1.0, "spearman": -1.0})


@pytest.mark.parametrize(
    ("gold", "pred"),
    [
        ([1.0, 2.0, 3.0], [2.5, 2.5, 2.5]),  # constant predictions (an untrained head)
        ([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]),  # constant gold
        ([1.0], [2.0]),  # one pair
        ([], []),
    ],
)
def test_pearson_degenerate_is_zero_not_nan(gold: list[float], pred: list[float]) -> None:
    with np.errstate(all="raise"):
        assert pearson(gold, pred) == {"pearson": 0.0, "spearman": 0.0}


# ------------------------------------------------------------------------------------------------------------
# iob_chunks and entity_f1


@pytest.mark.parametrize(
    ("tags", "chunks"),
    [
        (["B-C", "I-C", "O", "B-D"], {("C", 0, 2), ("D", 3, 4)}),  # IOB2
        (["I-C", "I-C", "O", "I-D"], {("C", 0, 2), ("D", 3, 4)}),  # IOB1 / ill-formed IOB2: I- opens a chunk
        (["I-C", "B-C", "I-C"], {("C", 0, 1), ("C", 1, 3)}),  # B- splits two adjacent same-type chunks
        (["B-C", "I-D", "I-D"], {("C", 0, 1), ("D", 1, 3)}),  # a type change ends the chunk
        (["B-C", "B-C"], {("C", 0, 1), ("C", 1, 2)}),
        (["O", "O"], set()),
        ([], set()),
        (["B", "I", "O", "I"], {("_", 0, 2), ("_", 3, 4)}),  # bare tags (JNLPBA, S800)
        (["S-C", "B-D", "I-D", "E-D", "E-D"], {("C", 0, 1), ("D", 1, 4), ("D", 4, 5)}),  # IOBES
    ],
)
def test_iob_chunks(tags: list[str], chunks: set[tuple[str, int, int]]) -> None:
    assert iob_chunks(tags) == chunks


@pytest.mark.parametrize("tag", ["X", "PER", "O-C", "b-C", ""])
def test_iob_chunks_rejects_unknown_tags(tag: str) -> None:
    with pytest.raises(
        ValueError, match=re.escape(f"tag {tag!r} at position 1 is not O or B-/I-/E-/S-<type>")
    ):
        iob_chunks(["O", tag])


def test_entity_f1_golden() -> None:
    gold = [["B-C", "I-C", "O", "B-D"], ["B-C", "O", "I-D"]]
    pred = [["B-C", "I-C", "O", "O"], ["B-C", "I-C", "B-D"]]
    # gold: C(0,0-2) D(0,3-4) C(1,0-1) D(1,2-3)       → 2 C, 2 D
    # pred: C(0,0-2) C(1,0-2) D(1,2-3)                → 2 C, 1 D
    # correct: C(0,0-2), D(1,2-3)                     → 2 of 3 predicted, 2 of 4 gold
    # P = 2/3, R = 1/2, F1 = 2 * (2/3 * 1/2) / (2/3 + 1/2) = 4/7
    # C: P = 1/2, R = 1/2, F1 = 1/2;  D: P = 1/1, R = 1/2, F1 = 2/3
    scores = entity_f1(gold, pred)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(1 / 2)
    assert scores["f1"] == pytest.approx(4 / 7)
    assert_breakdown(
        scores["per_type"],
        {
            "C": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
            "D": {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2},
        },
    )


def test_entity_f1_chunks_do_not_cross_sentences() -> None:
    # Each sentence ends its open chunk: I-C at the start of sentence 2 is a new entity.
    scores = entity_f1([["O", "B-C"], ["I-C", "O"]], [["O", "B-C"], ["I-C", "O"]])
    assert scores["per_type"]["C"]["support"] == 2
    assert scores["f1"] == 1.0


@pytest.mark.parametrize(
    ("gold", "pred", "expected"),
    [
        ([["O", "O"]], [["B-C", "O"]], (0.0, 0.0, 0.0)),  # no gold entities: R = 0/0 → 0, P = 0/1
        ([["B-C", "O"]], [["O", "O"]], (0.0, 0.0, 0.0)),  # no predictions: P = 0/0 → 0
        ([["O"]], [["O"]], (0.0, 0.0, 0.0)),  # nothing at all: 0, as seqeval and conlleval report
        ([], [], (0.0, 0.0, 0.0)),
    ],
)
def test_entity_f1_edges(
    gold: list[list[str]], pred: list[list[str]], expected: tuple[float, float, float]
) -> None:
    scores = entity_f1(gold, pred)
    assert (scores["f1"], scores["precision"], scores["recall"]) == expected


def test_entity_f1_rejects_misaligned_sentences() -> None:
    with pytest.raises(ValueError, match="entity_f1: sentence 0 has 2 gold tags but 1 predicted tags"):
        entity_f1([["O", "O"]], [["O"]])


IOB_TAGS = ["O", "O", "O", "B-C", "I-C", "B-D", "I-D", "B", "I"]
IOBES_TAGS = [*IOB_TAGS, "E-C", "S-C", "E-D", "S-D"]


def _random_tags(rng: random.Random, pool: list[str]) -> list[list[str]]:
    # Uniform draws make ill-formed sequences (I- after O, at the start, after another type) common.
    return [[rng.choice(pool) for _ in range(rng.randint(0, 10))] for _ in range(rng.randint(1, 6))]


@pytest.mark.parametrize("pool", [IOB_TAGS, IOBES_TAGS], ids=["iob", "iobes"])
def test_entity_f1_matches_seqeval(pool: list[str]) -> None:
    rng = random.Random(13)
    for _ in range(N_RANDOM):
        gold, pred = _random_tags(rng, pool), []
        for sentence in gold:
            pred.append([tag if rng.random() < 0.6 else rng.choice(pool) for tag in sentence])

        for sentence in gold + pred:
            expected_chunks = {(t, start, end + 1) for t, start, end in seqeval.get_entities(sentence)}
            assert iob_chunks(sentence) == expected_chunks, sentence

        scores = entity_f1(gold, pred)
        p, r, f, _ = seqeval.precision_recall_fscore_support(gold, pred, average="micro", zero_division=0)
        assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx((p, r, f)), (gold, pred)

        types = sorted({t for sent in gold + pred for t, _, _ in iob_chunks(sent)})
        if types:
            p, r, f, support = seqeval.precision_recall_fscore_support(
                gold, pred, average=None, zero_division=0
            )
            expected = {
                t: {"precision": p[i], "recall": r[i], "f1": f[i], "support": support[i]}
                for i, t in enumerate(types)
            }
            assert_breakdown(scores["per_type"], expected)
        else:
            assert scores["per_type"] == {}


# ------------------------------------------------------------------------------------------------------------
# single-label classification


def test_micro_f1_golden_chemprot_style() -> None:
    gold = ["CPR:3", "CPR:4", "false", "false", "CPR:9"]
    pred = ["CPR:3", "false", "CPR:4", "false", "CPR:4"]
    # excluding "false": TP = 1 (CPR:3); predicted positives = CPR:3, CPR:4, CPR:4 = 3;
    # gold positives = CPR:3, CPR:4, CPR:9 = 3 → P = R = F1 = 1/3
    assert micro_f1(gold, pred, exclude=["false"]) == pytest.approx(
        {"f1": 1 / 3, "precision": 1 / 3, "recall": 1 / 3}
    )
    # nothing excluded: TP = 2 ("false" counts too), 5 predicted, 5 gold → 2/5
    assert micro_f1(gold, pred)["f1"] == pytest.approx(2 / 5)


def test_macro_f1_golden_ddi_style() -> None:
    gold = ["int", "int", "advise", "effect", "false", "false"]
    pred = ["int", "false", "advise", "int", "false", "effect"]
    # int:    TP 1, predicted 2, gold 2 → P 1/2, R 1/2, F1 1/2
    # advise: TP 1, predicted 1, gold 1 → 1, 1, 1
    # effect: TP 0, predicted 1, gold 1 → 0, 0, 0
    # macro: P = R = F1 = (1/2 + 1 + 0) / 3 = 1/2
    assert macro_f1(gold, pred, exclude=["false"]) == pytest.approx(
        {"f1": 0.5, "precision": 0.5, "recall": 0.5}
    )
    # a declared label that never occurs ("mechanism") scores 0 and joins the mean: 1.5 / 4
    declared = ["advise", "effect", "int", "mechanism", "false"]
    assert macro_f1(gold, pred, exclude=["false"], labels=declared)["f1"] == pytest.approx(1.5 / 4)


def test_classification_f1_golden() -> None:
    gold = ["int", "int", "advise", "effect", "false", "false"]
    pred = ["int", "false", "advise", "int", "false", "effect"]
    # micro over {int, advise, effect}: TP 2 (int, advise); predicted 4 (int, advise, int, effect); gold 4
    # → P = R = F1 = 1/2.  accuracy counts "false" too: 3 of 6 correct.
    scores = classification_f1(gold, pred, exclude=["false"])
    assert set(scores) == KEYS["classification_f1"]
    assert scores["micro_f1"] == pytest.approx(0.5)
    assert scores["micro_precision"] == pytest.approx(0.5)
    assert scores["micro_recall"] == pytest.approx(0.5)
    assert scores["macro_f1"] == pytest.approx(0.5)
    assert scores["accuracy"] == pytest.approx(0.5)
    assert_breakdown(
        scores["per_label"],
        {
            "advise": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
            "effect": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
            "int": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
        },
    )


def test_accuracy_golden() -> None:
    # 3 of 4 match
    assert accuracy(["yes", "no", "maybe", "yes"], ["yes", "no", "yes", "yes"]) == {"accuracy": 0.75}
    assert accuracy([], []) == {"accuracy": 0.0}


@pytest.mark.parametrize("metric", [micro_f1, macro_f1])
def test_everything_excluded_scores_zero(metric) -> None:  # noqa: ANN001
    assert metric(["false", "false"], ["false", "false"], exclude=["false"]) == {
        "f1": 0.0,
        "precision": 0.0,
        "recall": 0.0,
    }


def test_classification_edges() -> None:
    everything_excluded = classification_f1(["false"], ["false"], exclude=["false"])
    assert everything_excluded["per_label"] == {}
    assert everything_excluded["accuracy"] == 1.0
    assert everything_excluded["micro_f1"] == everything_excluded["macro_f1"] == 0.0
    # no positive predictions at all: precision 0/0 → 0
    assert micro_f1(["a", "b"], ["false", "false"], exclude=["false"]) == {
        "f1": 0.0,
        "precision": 0.0,
        "recall": 0.0,
    }


CLASS_LABELS = ["a", "b", "c", "false"]


def _random_classification(rng: random.Random) -> tuple[list[str], list[str], list[str]]:
    n = rng.randint(1, 30)
    gold = [rng.choice(CLASS_LABELS) for _ in range(n)]
    pred = [g if rng.random() < 0.5 else rng.choice(CLASS_LABELS) for g in gold]
    exclude = rng.sample(CLASS_LABELS, rng.choice([0, 1, 1, 2]))
    return gold, pred, exclude


def test_micro_and_macro_f1_match_sklearn() -> None:
    rng = random.Random(7)
    for _ in range(N_RANDOM):
        gold, pred, exclude = _random_classification(rng)
        for labels in (None, CLASS_LABELS):
            scored = sorted((set(gold) | set(pred) if labels is None else set(labels)) - set(exclude))
            result = classification_f1(gold, pred, exclude=exclude, labels=labels)
            micro = micro_f1(gold, pred, exclude=exclude)
            macro = macro_f1(gold, pred, exclude=exclude, labels=labels)
            if not scored:
                assert micro == macro == {"f1": 0.0, "precision": 0.0, "recall": 0.0}
                continue
            kwargs = {"labels": scored, "zero_division": 0}
            p, r, f, _ = precision_recall_fscore_support(gold, pred, average="micro", **kwargs)
            assert (micro["precision"], micro["recall"], micro["f1"]) == pytest.approx((p, r, f))
            assert (result["micro_precision"], result["micro_recall"], result["micro_f1"]) == pytest.approx(
                (p, r, f)
            )
            p, r, f, _ = precision_recall_fscore_support(gold, pred, average="macro", **kwargs)
            assert (macro["precision"], macro["recall"], macro["f1"]) == pytest.approx((p, r, f))
            assert result["macro_f1"] == pytest.approx(f)
            p, r, f, support = precision_recall_fscore_support(gold, pred, average=None, **kwargs)
            assert_breakdown(
                result["per_label"],
                {
                    label: {"precision": p[i], "recall": r[i], "f1": f[i], "support": support[i]}
                    for i, label in enumerate(scored)
                },
            )
            assert result["accuracy"] == pytest.approx(accuracy_score(gold, pred))


# ------------------------------------------------------------------------------------------------------------
# multi-label: multilabel_f1 and hoc_f1


def test_multilabel_f1_golden() -> None:
    gold = [{"a", "b"}, {"c"}, set()]
    pred = [{"a"}, {"c", "d"}, {"e"}]
    # TP = |{a}| + |{c}| + 0 = 2; predicted = 1 + 2 + 1 = 4; gold = 2 + 1 + 0 = 3
    # P = 1/2, R = 2/3, F1 = 2 * (1/3) / (7/6) = 4/7
    assert multilabel_f1(gold, pred) == pytest.approx({"f1": 4 / 7, "precision": 1 / 2, "recall": 2 / 3})
    assert multilabel_f1([set()], [set()]) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}


HALLMARKS = ["angiogenesis", "immortality", "inflammation", "invasion", "proliferation"]


def _random_label_sets(rng: random.Random, n: int, min_size: int = 0) -> list[set[str]]:
    return [set(rng.sample(HALLMARKS, rng.randint(min_size, 3))) for _ in range(n)]


def test_multilabel_f1_matches_sklearn() -> None:
    rng = random.Random(11)
    binarizer = MultiLabelBinarizer(classes=HALLMARKS)
    for _ in range(N_RANDOM):
        n = rng.randint(1, 15)
        gold, pred = _random_label_sets(rng, n), _random_label_sets(rng, n)
        p, r, f, _ = precision_recall_fscore_support(
            binarizer.fit_transform(gold), binarizer.fit_transform(pred), average="micro", zero_division=0
        )
        assert multilabel_f1(gold, pred) == pytest.approx({"f1": f, "precision": p, "recall": r})


def test_hoc_f1_golden() -> None:
    # sentence labels, unioned per abstract:
    #   abstract 1: gold {angio, inflam}, pred {angio, invasion}  → P = 1/2, R = 1/2
    #   abstract 2: gold {immortality},   pred {immortality}      → P = 1,   R = 1
    #   abstract 3: gold {invasion},      pred {} (nothing)       → P = 0 (BLUE's guard), R = 0
    # mean P = mean R = 1/2 → F1 = 2 * 1/4 / 1 = 1/2
    gold = [{"angiogenesis"}, {"inflammation"}, set(), {"immortality"}, {"invasion"}]
    pred = [set(), {"angiogenesis", "invasion"}, {"immortality"}, set(), set()]
    doc_ids = ["1", "1", "2", "2", "3"]
    assert hoc_f1(gold, pred, doc_ids) == pytest.approx({"f1": 0.5, "precision": 0.5, "recall": 0.5})


def test_hoc_f1_is_f1_of_means_not_mean_of_f1s() -> None:
    # abstract 1: P = 1/2, R = 1 (F1 2/3); abstract 2: P = 1, R = 1/2 (F1 2/3)
    # mean P = mean R = 3/4 → F1 3/4, whereas the mean per-abstract F1 would be 2/3
    gold = [{"a"}, {"a", "b"}]
    pred = [{"a", "b"}, {"a"}]
    assert hoc_f1(gold, pred)["f1"] == pytest.approx(3 / 4)


def test_hoc_f1_no_predictions_scores_zero() -> None:
    assert hoc_f1([{"a"}, {"b"}], [set(), set()]) == {"f1": 0.0, "precision": 0.0, "recall": 0.0}


def test_hoc_f1_rejects_abstracts_without_gold_labels() -> None:
    message = (
        "metric.name: 'hoc_f1' is undefined for abstracts with no gold label ('2'); "
        "BLUE's eval_hoc.py divides by zero there. Use 'multilabel_f1' for this data."
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        hoc_f1([{"a"}, set(), set()], [{"a"}, {"a"}, set()], doc_ids=["1", "2", "2"])


def test_hoc_f1_matches_sklearn_example_based_averages() -> None:
    # BLUE's per-abstract precision and recall, averaged, are sklearn's average="samples" P and R
    # (zero_division=0 is BLUE's "prc = 0 when nothing is predicted"); F1 is then taken of the two means.
    rng = random.Random(5)
    binarizer = MultiLabelBinarizer(classes=HALLMARKS)
    for _ in range(N_RANDOM):
        n_docs = rng.randint(1, 8)
        doc_ids = sorted(str(rng.randrange(n_docs)) for _ in range(rng.randint(n_docs, 20)))
        gold, pred = _random_label_sets(rng, len(doc_ids)), _random_label_sets(rng, len(doc_ids))
        docs = sorted(set(doc_ids))
        doc_gold = [set().union(*(g for g, d in zip(gold, doc_ids, strict=True) if d == doc)) for doc in docs]
        doc_pred = [set().union(*(p for p, d in zip(pred, doc_ids, strict=True) if d == doc)) for doc in docs]
        if not all(doc_gold):
            with pytest.raises(ConfigError):
                hoc_f1(gold, pred, doc_ids)
            continue
        p, r, _, _ = precision_recall_fscore_support(
            binarizer.fit_transform(doc_gold),
            binarizer.fit_transform(doc_pred),
            average="samples",
            zero_division=0,
        )
        f = 2 * p * r / (p + r) if p + r else 0.0
        assert hoc_f1(gold, pred, doc_ids) == pytest.approx({"f1": f, "precision": p, "recall": r})


# ------------------------------------------------------------------------------------------------------------
# every metric: keys, range, input checks


def _random_call(name: str, rng: random.Random) -> dict:
    if name == "pearson":
        n = rng.randint(0, 10)
        return {"gold": [rng.uniform(0, 4) for _ in range(n)], "pred": [rng.uniform(0, 4) for _ in range(n)]}
    if name == "entity_f1":
        gold = _random_tags(rng, IOBES_TAGS)
        return {"gold": gold, "pred": [[rng.choice(IOBES_TAGS) for _ in s] for s in gold]}
    if name in ("multilabel_f1", "hoc_f1"):
        n = rng.randint(1, 8)
        return {"gold": _random_label_sets(rng, n, min_size=1), "pred": _random_label_sets(rng, n)}
    gold, pred, exclude = _random_classification(rng)
    return {"gold": gold, "pred": pred} | ({} if name == "accuracy" else {"exclude": exclude})


def _numbers(scores: dict) -> list[tuple[str, float]]:
    found = []
    for key, value in scores.items():
        if isinstance(value, dict):  # per_type / per_label: label → scores and a support count
            found += [
                (f"{key}.{label}.{k}", v)
                for label, s in value.items()
                for k, v in s.items()
                if k != "support"
            ]
        else:
            found.append((key, value))
    return found


@pytest.mark.parametrize("name", sorted(KEYS))
def test_keys_are_stable_and_scores_in_range(name: str) -> None:
    rng = random.Random(3)
    low = -1.0 if name == "pearson" else 0.0
    for _ in range(50):
        scores = compute(name, **_random_call(name, rng))
        assert set(scores) == KEYS[name]
        for key, value in _numbers(scores):
            assert isinstance(value, float) and low <= value <= 1.0, (key, value)


def test_registry_names() -> None:
    assert set(METRICS) == set(KEYS)


@pytest.mark.parametrize("name", sorted(KEYS))
def test_length_mismatch_is_an_error(name: str) -> None:
    call = _random_call(name, random.Random(1))
    with pytest.raises(ValueError, match=rf"{name}: \d+ gold items but \d+ pred items"):
        METRICS[name](call["gold"], [*call["pred"], call["pred"][0] if call["pred"] else 1.0])


def test_compute_passes_arguments() -> None:
    scores = compute("micro_f1", ["a", "false"], ["a", "a"], exclude=["false"])
    assert scores == {"f1": pytest.approx(2 / 3), "precision": 0.5, "recall": 1.0}


def test_compute_unknown_metric_suggests_a_name() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("metric.name: unknown metric 'micro-f1'; did you mean 'micro_f1'?")
    ):
        compute("micro-f1", [], [])


def test_compute_unknown_metric_without_a_close_name_lists_all() -> None:
    names = "accuracy, classification_f1, entity_f1, hoc_f1, macro_f1, micro_f1, multilabel_f1, pearson"
    with pytest.raises(
        ConfigError, match=re.escape(f"metric.name: unknown metric 'bleu'; known metrics: {names}")
    ):
        compute("bleu", [], [])


def test_compute_unknown_argument() -> None:
    message = "metric.exclude: metric 'pearson' takes no argument 'exclude'; it takes: none"
    with pytest.raises(ConfigError, match=re.escape(message)):
        compute("pearson", [1.0, 2.0], [1.0, 2.0], exclude=["false"])


def test_metric_problems_lists_every_problem() -> None:
    assert metric_problems("macro_f1", ["exclude", "labels", "average", "beta"]) == [
        "metric.average: metric 'macro_f1' takes no argument 'average'; it takes: exclude, labels",
        "metric.beta: metric 'macro_f1' takes no argument 'beta'; it takes: exclude, labels",
    ]
    assert metric_problems("hoc_f1", ["doc_ids"]) == []


def test_score_keys_match_what_each_metric_returns():
    from biomtl.metrics import METRICS, SCORE_KEYS, compute

    samples = {
        "pearson": ([0.0, 1.0, 2.0], [0.1, 0.9, 2.2], {}),
        "entity_f1": ([["B-X", "O"]], [["B-X", "O"]], {}),
        "micro_f1": (["a", "b"], ["a", "a"], {}),
        "macro_f1": (["a", "b"], ["a", "a"], {}),
        "classification_f1": (["a", "b"], ["a", "a"], {}),
        "accuracy": (["a", "b"], ["a", "a"], {}),
        "hoc_f1": ([["a"], ["b"]], [["a"], []], {"doc_ids": ["d1", "d2"]}),
        "multilabel_f1": ([["a"], ["b"]], [["a"], []], {}),
    }
    assert set(samples) == set(METRICS) == set(SCORE_KEYS)
    for name, (gold, pred, kwargs) in samples.items():
        scores = compute(name, gold, pred, **kwargs)
        floats = {k for k, v in scores.items() if isinstance(v, float)}
        assert floats == set(SCORE_KEYS[name]), name


def test_main_metric_must_be_a_score_of_the_metric(tmp_path):
    import pytest

    from biomtl.errors import ConfigError
    from biomtl.tasks import load_dataset_spec

    path = tmp_path / "x.yaml"
    path.write_text("name: x\ntype: regression\nformat: tsv\nfiles: {train: a.tsv, dev: b.tsv}\n"
                    "columns: {text: s, label: y}\nmetric: {name: pearson}\nmain_metric: pearsn\n")
    with pytest.raises(ConfigError, match=r"main_metric: 'pearsn' is not a score of metric 'pearson'; did you mean 'pearson'\?"):
        load_dataset_spec(path)
