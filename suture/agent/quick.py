"""The cheap answer to "anything new?": the repository's timestamp, byte for byte as last verified.

Almost every check-in of a fleet finds nothing new. In TUF, nothing in a
repository changes without a new ``timestamp.json``. So when the server
serves exactly the bytes of the timestamp python-tuf verified and stored at
the last full check, the answer is the same as then, and the agent does not
need to load the TUF client at all. That saves most of a no-change update's
CPU (bench/update.py).

It is no weaker than the full check:
- Identical bytes mean no rollback and no mix-and-match: those are the bytes
  already trusted.
- A freeze is bounded the same way. The trusted timestamp and root must not
  have expired, which is what python-tuf would check for the same bytes.
- Anything else falls through to the full TUF refresh: another answer, an
  error, a changed configuration or fleet directive, another kernel, a level
  not live, an interrupted run, a held level.

A new root with unchanged timestamp bytes is found at the next timestamp
change. The trusted root's expiry is still checked here.
"""

from __future__ import annotations

import json

from suture import timefmt
from suture.agent import http
from suture.agent.config import AgentConfig
from suture.agent.state import AgentState, Offered
from suture.kernel.identity import KernelIdentity

MAX_TIMESTAMP = 64 << 10  # bytes; a timestamp.json is well under 2 KiB
TRUSTED = "metadata"  # python-tuf's trusted metadata folder under state_dir


def offered_key(config: AgentConfig, ident: KernelIdentity, cap: int | None) -> tuple[str, ...]:
    """What an offer depends on besides the repository: server, channel, cap, kernel build.

    ``cap`` is the highest level allowed (the sticky level, the fleet server's directive).
    """
    return (config.server, config.channel, str(cap), ident.release, ident.build_id)


def unchanged(  # noqa: PLR0917 - each is one condition of the answer
    config: AgentConfig,
    state: AgentState,
    ident: KernelIdentity,
    cap: int | None,
    live_level: int,
    now: float,
) -> Offered | None:
    """The last offer, when it still holds without a TUF refresh; None to do the full check."""
    memo = state.offered
    if (
        memo is None
        or memo.key != offered_key(config, ident, cap)
        or state.last_result not in ("up-to-date", "applied")
        or state.in_progress is not None
        or state.held is not None
        or memo.level != live_level
    ):
        return None
    folder = config.state_dir / TRUSTED
    try:
        trusted = (folder / "timestamp.json").read_bytes()
        if not (
            _valid_until(trusted) > now and _valid_until((folder / "root.json").read_bytes()) > now
        ):
            return None
        served = _fetch(config, f"{config.server.rstrip('/')}/metadata/timestamp.json")
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the full check will say what is wrong
    return memo if served == trusted else None


def _valid_until(metadata: bytes) -> float:
    return timefmt.parse(json.loads(metadata)["signed"]["expires"])


def _fetch(config: AgentConfig, url: str) -> bytes:
    try:
        answer = http.request(
            url, timeout=config.timeout, limit=MAX_TIMESTAMP, proxy=config.proxy, redirects=True
        )
    except http.RequestError as e:
        raise OSError(str(e)) from e  # the full check says what is wrong
    return answer.body
