"""docs/dataset-keys.md is generated from the config records; it must match them (issue 15)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from biomtl.config import DatasetSpec
from biomtl.reference import NOT_KEYS, dataset_keys_markdown, field_docs

PAGE = Path(__file__).resolve().parents[1] / "docs" / "dataset-keys.md"


def test_the_dataset_keys_page_is_generated_from_the_code():
    assert PAGE.read_text(encoding="utf-8") == dataset_keys_markdown(), (
        "docs/dataset-keys.md is out of date: python -m biomtl.reference > docs/dataset-keys.md"
    )


def test_every_dataset_key_is_documented_with_an_example():
    docs = field_docs(DatasetSpec)
    keys = [f.name for f in dataclasses.fields(DatasetSpec) if not f.name.startswith("_") and f.name not in NOT_KEYS]
    assert [k for k in keys if " Example: " not in docs.get(k, "")] == []
    for key in keys:
        assert f"| `{key}` |" in dataset_keys_markdown()
