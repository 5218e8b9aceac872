"""Example records (``examples``), file readers per format (``readers``), task batch samplers (``sampler``).

Only the example record is imported here: task types build on it, and the readers build on task types.
"""

from __future__ import annotations

from biomtl.data.examples import Example

__all__ = ["Example"]
