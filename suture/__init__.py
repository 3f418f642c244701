"""Suture: rebootless live patching for Linux fleets."""

__version__ = "0.1.0"
