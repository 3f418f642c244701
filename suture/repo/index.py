"""The level index, from :mod:`suture.contract.index` (where both sides read it)."""

from __future__ import annotations

from suture.contract.index import FORMAT_VERSION, BuildIndex, Level

__all__ = ["FORMAT_VERSION", "BuildIndex", "Level"]
