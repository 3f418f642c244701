"""What ships beside the code: the packaging folder and a reader of its systemd units (no tests)."""

from __future__ import annotations

import configparser
from pathlib import Path

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
UNITS = sorted((PACKAGING / "systemd").glob("*.service"))


def unit(path: Path) -> configparser.ConfigParser:
    """A systemd unit file, its keys as written (case kept, repeated keys: the last)."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser
