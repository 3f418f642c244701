"""suture.contract: the formats both sides speak, checked with the standard library alone."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from suture.agent import report, state
from suture.contract import checkin, directive, enrolment, targets
from suture.contract.checkin import Checkin
from suture.contract.directive import Directive, parse_directive
from suture.errors import CheckinError, UsageError
from tests.support.contract import BUILD, GOOD, REFUSED, RELEASE, ROW, row
from tests.support.kernel import identity


@pytest.mark.parametrize(("change", "field"), REFUSED)
def test_bad_checkins_are_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(CheckinError) as e:
        checkin.parse({**GOOD, **change})
    assert e.value.field == field


def test_good_checkins_parse_and_round_trip() -> None:
    one = checkin.parse(GOOD)
    assert (one.channel, one.uptime, one.attempted_level) == ("stable", None, 0)
    assert one.patches == ("suture_fix_1",)
    two = checkin.parse(
        {**GOOD, "format": 2, "channel": "testing", "uptime": 7, "functions": ["vmlinux:f"]}
    )
    assert (two.channel, two.uptime, two.functions) == ("testing", 7, ("vmlinux:f",))
    assert checkin.parse(two.to_document()) == two
    assert checkin.parse({k: v for k, v in GOOD.items() if k != "last_error"}) == one
    three = checkin.parse({**GOOD, **row()})
    assert [(u.soname, u.state, u.patched, u.left, u.refused) for u in three.userspace] == [
        ("libc.so.6", "partial", 3, 2, (("init", 1),))
    ]
    assert three.to_document()["format"] == 3
    assert checkin.parse(three.to_document()) == three
    tabbed = checkin.parse({**GOOD, "last_error": "line 1\n\tline 2"})
    assert tabbed.last_error == "line 1\n\tline 2"


def test_bodies_that_are_not_checkins() -> None:
    for body in (b"{", b"[]", b"\xff", b"null", b"[" * 60000):
        with pytest.raises(CheckinError):
            checkin.parse_json(body)
    with pytest.raises(CheckinError, match="larger"):
        checkin.parse_json(b" " * (checkin.MAX_BODY + 1))


def test_what_the_agent_sends_is_a_checkin_the_contract_takes() -> None:
    # The agent builds its body itself (suture.agent.report); it must pass the shared form.
    s = state.AgentState(last_result="error", last_error={"error": "FetchError", "message": "x"})
    for body in (
        report.checkin(identity(), s, {"suture_fix_1"}, functions=("vmlinux:f",), uptime=5),
        report.checkin(identity(), state.AgentState(), set(), channel="testing"),
        report.checkin(identity(livepatch=False), state.AgentState(), set()),
        report.with_userspace(report.checkin(identity(), s, set()), [ROW]),
    ):
        parsed = checkin.parse(json.loads(json.dumps(body)))
        assert parsed.host_id == body["host_id"]


def test_directives_are_read_leniently() -> None:
    good = directive.answer(Directive(3, unroll=True), "2026-12-01T00:00:00Z")
    assert parse_directive(good) == Directive(3, unroll=True)
    assert parse_directive({"directive": {"max_level": None}}) == Directive(None, unroll=False)
    for bad in (None, [], {}, {"directive": 1}, {"directive": {"max_level": True}}):
        assert parse_directive(bad) is None
    assert parse_directive({"directive": {"max_level": -1, "unroll": True}}) is None


def test_host_tokens_and_paths() -> None:
    assert enrolment.is_host_token("sht_" + "A" * 43)
    for bad in ("sht_" + "A" * 42, "sht_" + "A" * 42 + "\n", "sht_" + "A" * 41 + "\r\n", 5):
        assert not enrolment.is_host_token(bad)
    assert targets.index_path(RELEASE, BUILD, "stable") == f"{RELEASE}/{BUILD}/stable/index.json"
    for release, build in ((RELEASE + "\n", BUILD), ("../x", BUILD), (RELEASE, BUILD + "\n")):
        with pytest.raises(UsageError):
            targets.kernel_dir(release, build, "stable")


def test_the_contract_needs_only_the_standard_library() -> None:
    code = (
        "import sys, suture.contract.checkin, suture.contract.directive,"
        " suture.contract.enrolment, suture.contract.targets, suture.contract.index\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('suture'))))\n"
        "print(any(m.split('.')[0] in ('pydantic', 'starlette', 'tuf', 'psycopg')"
        " for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert set(out[0].split()) <= {
        "suture",
        "suture.contract",
        "suture.contract.checkin",
        "suture.contract.directive",
        "suture.contract.enrolment",
        "suture.contract.fields",
        "suture.contract.index",
        "suture.contract.targets",
        "suture.errors",
        "suture.jsontypes",
    }
    assert out[1] == "False"


def test_a_checkin_is_a_dataclass_of_the_form() -> None:
    fields = set(Checkin.__dataclass_fields__) - {"release", "build_id"}
    assert fields | {"kernel", "format"} == set(checkin.Checkin3.__annotations__) | {
        "host_id",
        "hostname",
        "kernel",
        "level",
        "state",
        "last_error",
        "agent_version",
        "patches",
    }
