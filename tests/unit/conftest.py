"""Fixtures of every unit test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A cache folder of the test's own: no unit test reads or writes the user's cache.

    (Tests that need a particular folder set ``SUTURE_CACHE`` themselves; theirs wins.)
    """
    folder = tmp_path_factory.mktemp("suture-cache")
    monkeypatch.setenv("SUTURE_CACHE", str(folder))
    return folder
