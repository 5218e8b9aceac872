from __future__ import annotations

import json
from pathlib import Path

import pytest

from biomtl.model import MultiTaskModel
from biomtl.train import train


def test_multitask_run_writes_everything(run_config):
    config = run_config()
    result = train(config, progress=False)
    out = Path(config.output_dir)
    assert set(result["tasks"]) == {"toy-ner", "toy-rel", "toy-sts", "toy-hoc"}
    assert (out / "result.json").is_file() and (out / "config.yaml").is_file()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(x["split"], x["epoch"]) for x in lines] == [("dev", 0), ("dev", 1), ("dev", 2), ("test", result["best_epoch"])]
    for task in result["tasks"]:
        assert (out / "predictions" / f"{task}.test.jsonl").is_file()
    model = MultiTaskModel.load(out / "best")
    assert set(model.heads) == set(result["tasks"])


def test_prefetch_keeps_order_and_reraises():
    from biomtl.train import prefetch

    assert list(prefetch(list(range(50)), lambda x: x * 2, depth=3)) == [x * 2 for x in range(50)]

    def boom(x):
        if x == 5:
            raise ValueError("bad batch")
        return x

    with pytest.raises(ValueError, match="bad batch"):
        list(prefetch(list(range(10)), boom))


def test_model_selection_never_looks_at_test(run_config, monkeypatch):
    """The untrained model (epoch 0) and every epoch are scored on dev; the best mean dev state is kept; test is
    scored once, at the end."""
    import biomtl.train as train_module

    calls = []
    real = train_module.evaluate

    def spy(model, data, split, *args, **kwargs):
        calls.append(split)
        return real(model, data, split, *args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", spy)
    config = run_config(epochs=3)
    result = train(config, progress=False)
    assert calls == ["dev", "dev", "dev", "dev", "test"]
    rows = [json.loads(x) for x in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()]
    dev = [r for r in rows if r["split"] == "dev"]
    best = max(dev, key=lambda r: r["mean_main"])  # first of equals, as the loop keeps the first
    assert result["best_epoch"] == best["epoch"]
    assert result["dev"] == best["scores"]
    assert [r["split"] for r in rows].count("test") == 1


@pytest.mark.parametrize("cap_test, test_rows", [(True, 3), (False, 8)])
def test_max_eval_examples_caps_test_unless_cap_test_is_false(run_config, cap_test, test_rows):
    """The `cpu` study profile selects on capped dev sets and scores every test example."""
    config = run_config(tasks=["toy-rel"], epochs=1, max_eval_examples=3, cap_test=cap_test)
    train(config, progress=False)
    out = Path(config.output_dir) / "predictions"
    assert len((out / "toy-rel.dev.jsonl").read_text().splitlines()) == 3
    assert len((out / "toy-rel.test.jsonl").read_text().splitlines()) == test_rows
