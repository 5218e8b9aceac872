"""Example records, file readers per format, and task batch samplers."""

from __future__ import annotations

from biomtl.data.examples import Example
from biomtl.data.readers import read_split, validate_dataset

__all__ = ["Example", "read_split", "validate_dataset"]
