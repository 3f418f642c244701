"""Enrolment: a registration key in, the host's own token out; where the agent's calls go.

An agent enrols once with the registration key of its configuration and its
host id, and keeps the token it gets (``state_dir/host-token``, mode 0600).
A host id belongs to the host that enrolled it: enrolling it again takes that
host's current token (``Authorization: Bearer sht_...`` on the enrolment), or
an operator's action on the server.
"""

# No "from __future__ import annotations": TypedDict reads NotRequired off evaluated hints.

import re
from typing import Annotated, Literal, NotRequired, TypedDict

from suture.contract.checkin import HostId
from suture.contract.fields import Text

REGISTER_PATH = "/api/v1/register"
CHECKIN_PATH = "/api/v1/checkin"

HOST_TOKEN_PREFIX = "sht_"  # noqa: S105 - a prefix, not a secret
KEY_PREFIX = "srk_"
ADMIN_TOKEN_PREFIX = "sat_"  # noqa: S105
# What the server issues: a prefix and 32 random bytes, base64url (43 characters).
HOST_TOKEN = "^sht_[A-Za-z0-9_-]{43}$"  # noqa: S105
KEY = "^[!-~]{1,128}$"  # printable ASCII: a key that was never issued is refused, not malformed


class EnrolRequest(TypedDict):
    """What an agent sends to enrol."""

    format: NotRequired[Literal[1]]
    registration_key: Annotated[str, Text(128, KEY)]
    host_id: HostId


class EnrolAnswer(TypedDict):
    """What it gets back (the token is shown this once)."""

    format: Literal[1]
    ok: Literal[True]
    host_id: HostId
    host_token: Annotated[str, Text(47, HOST_TOKEN)]


def is_host_token(text: object) -> bool:
    """True for a host token as the server issues them (no spaces, no line breaks)."""
    return isinstance(text, str) and re.fullmatch(HOST_TOKEN, text) is not None
