"""A reader of Prometheus text exposition (format 0.0.4), strict enough to catch bad output."""

from __future__ import annotations


def parse_exposition(text: str) -> dict[str, float]:
    """name{labels} -> value; every line a comment or a sample, each TYPE before its samples."""
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        base = name.split("{")[0]
        assert base in typed or base.rsplit("_", 1)[0] in typed, line
        samples[name] = float(value)
    return samples
