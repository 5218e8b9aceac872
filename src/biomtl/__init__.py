"""biomtl: one shared BERT-family encoder, one small head per biomedical text-mining task."""

from __future__ import annotations

__version__ = "0.1.0"
