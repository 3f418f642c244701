"""The server's answer to a check-in: the fleet's *directive* for that host.

``{"max_level": N, "unroll": bool}``: the highest level the host may run (a
staged rollout, a halt, a sticky level for its tags; ``null`` when its build
has no levels and the server has no opinion), and whether to go back down to
it. The agent takes it as a cap on top of its own configuration; the levels
themselves still come through TUF, so a directive can only choose among
signed levels.
"""

# No "from __future__ import annotations": TypedDict reads NotRequired off evaluated hints.

from dataclasses import dataclass
from typing import Annotated, Literal, TypedDict

from suture.contract.checkin import MAX_LEVEL
from suture.contract.fields import Text, Whole

ANSWER_FORMAT: Literal[1] = 1
TIME = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"  # ISO 8601, UTC, seconds


class DirectiveForm(TypedDict):
    """The directive as sent."""

    max_level: Annotated[int, Whole(0, MAX_LEVEL)] | None
    unroll: bool


class CheckinAnswer(TypedDict):
    """The whole answer to an accepted check-in."""

    format: Literal[1]
    ok: Literal[True]
    server_time: Annotated[str, Text(20, TIME)]
    directive: DirectiveForm


@dataclass(frozen=True)
class Directive:
    """The fleet server's word on a host: a cap on its level, and whether to go down to it."""

    max_level: int | None
    unroll: bool

    def to_form(self) -> DirectiveForm:
        """As sent."""
        return {"max_level": self.max_level, "unroll": self.unroll}


def answer(directive: Directive, server_time: str) -> CheckinAnswer:
    """The answer to an accepted check-in."""
    return {
        "format": ANSWER_FORMAT,
        "ok": True,
        "server_time": server_time,
        "directive": directive.to_form(),
    }


def parse_directive(answer: object) -> Directive | None:
    """The directive in a check-in answer; None when there is none or it is malformed.

    Lenient on purpose: an answer the agent cannot read changes nothing, and
    the last directive stays in force.
    """
    data = answer.get("directive") if isinstance(answer, dict) else None
    if not isinstance(data, dict):
        return None
    cap = data.get("max_level")
    if cap is not None and (type(cap) is not int or not 0 <= cap <= MAX_LEVEL):
        return None
    return Directive(cap, data.get("unroll") is True)
