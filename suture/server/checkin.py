"""The check-in an agent sends: defined in :mod:`suture.contract.checkin`, read here."""

from __future__ import annotations

import re

from suture.contract import checkin as contract
from suture.contract.checkin import FORMAT, FORMATS, MAX_BODY, STATES, Checkin
from suture.contract.targets import RELEASE

__all__ = ["FORMAT", "FORMATS", "MAX_BODY", "STATES", "Checkin", "parse"]

MAX_PATCHES = contract.MAX_PATCHES
MAX_LEVEL = contract.MAX_LEVEL
MAX_ERROR = contract.MAX_ERROR
MAX_FUNCTIONS = contract.MAX_FUNCTIONS
MAX_UPTIME = contract.MAX_UPTIME
REQUIRED = frozenset(contract.Checkin1.__required_keys__)
HOST_ID = re.compile(contract.HOST_ID)
_HOSTNAME = re.compile(contract.HOSTNAME)
_RELEASE = re.compile(RELEASE)
_BUILD_ID = re.compile(contract.BUILD_ID_OR_NONE)
_AGENT_VERSION = re.compile(contract.AGENT_VERSION)
_PATCH = re.compile(contract.PATCH)
_CHANNEL = re.compile(contract.CHANNEL)
_FUNCTION = re.compile(contract.FUNCTION)


def parse(body: bytes) -> Checkin:
    """Decode and validate a check-in body (see :func:`suture.contract.checkin.parse_json`)."""
    return contract.parse_json(body)
