from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def corpora_dir() -> Path:
    """The public corpora: ``BIOMTL_CORPORA`` (CI sets it), else ``../shared/data`` beside the repo."""
    value = os.environ.get("BIOMTL_CORPORA")
    path = Path(value) if value else REPO.parent / "shared" / "data"
    if not path.is_dir():
        if value:
            pytest.fail(f"BIOMTL_CORPORA={value} does not exist")
        pytest.skip("public corpora not found; set BIOMTL_CORPORA")
    return path
