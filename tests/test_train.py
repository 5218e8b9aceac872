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
    assert [x["split"] for x in lines] == ["dev", "dev", "test"]
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
