"""Task batch schedules: MT-DNN proportional mixing, temperature, round robin; determinism per seed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from biomtl.data.sampler import TaskBatchSampler

SIZES = {"ner": 400, "rel": 100, "sts": 20}


def _sampler(strategy: str, seed: int = 0, **kwargs) -> TaskBatchSampler:
    rng = np.random.default_rng(123)
    lengths = {t: rng.integers(5, 120, n).tolist() for t, n in SIZES.items()}
    return TaskBatchSampler(lengths, batch_size=8, strategy=strategy, seed=seed, **kwargs)


def test_proportional_visits_every_example_once_per_epoch():
    s = _sampler("proportional")
    schedule = s.epoch(0)
    counts = Counter(task for task, _ in schedule)
    assert counts == {"ner": 50, "rel": 13, "sts": 3}  # ceil(n / 8): proportional to task size
    for task, n in SIZES.items():
        seen = sorted(i for t, idx in schedule if t == task for i in idx)
        assert seen == list(range(n))
    assert len(schedule) == s.steps_per_epoch()
    # Tasks are mixed, not visited one after the other.
    first_half = Counter(t for t, _ in schedule[: len(schedule) // 2])
    assert first_half["ner"] > 0 and first_half["rel"] > 0


def test_schedules_are_a_function_of_seed_and_epoch():
    for strategy in ("proportional", "temperature", "round_robin"):
        a, b = _sampler(strategy, seed=1), _sampler(strategy, seed=1)
        assert a.epoch(3) == b.epoch(3)
        assert a.epoch(3) != a.epoch(4)
        assert a.epoch(3) != _sampler(strategy, seed=2).epoch(3)


def test_temperature_flattens_task_probabilities():
    def share(temperature: float) -> dict[str, float]:
        s = _sampler("temperature", temperature=temperature)
        counts = Counter(t for e in range(20) for t, _ in s.epoch(e))
        total = sum(counts.values())
        return {t: counts[t] / total for t in SIZES}

    n = np.array(list(SIZES.values()), dtype=float)
    for temperature in (1.0, 3.0):
        p = n ** (1 / temperature)
        p /= p.sum()
        assert list(share(temperature).values()) == pytest.approx(p.tolist(), abs=0.03)
    assert share(100.0)["sts"] > 0.3  # near uniform


def test_round_robin_alternates_until_the_smallest_task_runs_out():
    schedule = _sampler("round_robin").epoch(0)
    assert [t for t, _ in schedule] == ["ner", "rel", "sts"] * 3


def test_length_grouping_reduces_padding():
    def padding(group: bool) -> int:
        s = _sampler("proportional", group_by_length=group)
        return sum(
            max(s.lengths[t][i] for i in idx) * len(idx) - sum(s.lengths[t][i] for i in idx)
            for t, idx in s.epoch(0)
        )

    assert padding(True) < 0.5 * padding(False)


def test_unknown_strategy_and_empty_task_are_refused():
    with pytest.raises(ValueError, match="unknown sampling strategy 'random'"):
        TaskBatchSampler({"a": [1]}, 2, strategy="random")
    with pytest.raises(ValueError, match="task\\(s\\) without training features: b"):
        TaskBatchSampler({"a": [1], "b": []}, 2)
