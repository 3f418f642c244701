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
from tests.unit.fakes import identity

RELEASE = "6.1.0-56-amd64"
BUILD = "0123456789abcdef0123456789abcdef01234567"
GOOD: dict[str, Any] = {
    "format": 1,
    "host_id": "4c4c4544003510",
    "hostname": "web-1.example.net",
    "kernel": {"release": RELEASE, "build_id": BUILD},
    "level": 2,
    "state": "patched",
    "last_error": None,
    "agent_version": "0.1.0",
    "patches": ["suture_fix_1"],
}

LIB = "ab" * 20
ROW: dict[str, Any] = {
    "soname": "libc.so.6",
    "build_id": LIB,
    "level": 1,
    "name": "glibc_fix",
    "cves": ["CVE-2026-5928"],
    "state": "partial",
    "processes": {"patched": 3, "unpatched": 1, "failed": 0, "refused": {"init": 1}},
}


def row(**change: Any) -> dict[str, Any]:
    """A format-3 check-in of GOOD with one userspace row, changed."""
    return {"format": 3, "userspace": [{**ROW, **change}]}


def counts(**change: Any) -> dict[str, Any]:
    return {**ROW["processes"], **change}


# (change to GOOD, the field refused): the same table the server's API test uses.
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"format": 4}, "format"),
    ({"format": 3}, "userspace"),  # format 3 is format 2 with the userspace rows
    ({"format": 2, "userspace": []}, "userspace"),
    ({"format": 3, "userspace": [ROW] * 33}, "userspace"),
    ({"format": 3, "userspace": [ROW, ROW]}, "userspace[1].build_id"),  # one row a build
    (row(soname="../lib"), "userspace[0].soname"),
    (row(build_id=""), "userspace[0].build_id"),
    (row(build_id="AB" * 20), "userspace[0].build_id"),
    (row(level=-1), "userspace[0].level"),
    (row(level=True), "userspace[0].level"),
    (row(name="bad name"), "userspace[0].name"),
    (row(cves=["CVE-1", 'CVE-"2"']), "userspace[0].cves[1]"),
    (row(cves=["CVE-1"] * 129), "userspace[0].cves"),
    (row(state="fixed"), "userspace[0].state"),
    (row(state="patched"), "userspace[0].state"),  # one process was not reached
    (row(state="unpatched"), "userspace[0].state"),  # three were
    (row(processes=counts(patched=-1)), "userspace[0].processes.patched"),
    (row(processes=counts(failed=5_000_000)), "userspace[0].processes.failed"),
    (row(processes=counts(refused={"in it": -1})), "userspace[0].processes.refused.in it"),
    (row(processes=counts(refused={"a/b": 1})), "userspace[0].processes.refused"),
    (
        row(processes=counts(refused={f"r{i}": 1 for i in range(17)})),
        "userspace[0].processes.refused",
    ),
    (row(processes=counts(refused=[])), "userspace[0].processes.refused"),
    (row(processes={"patched": 1, "unpatched": 0, "refused": {}}), "userspace[0].processes.failed"),
    (row(processes=counts(at="2026-01-01T00:00:00Z")), "userspace[0].processes.at"),
    (row(extra=1), "userspace[0].extra"),
    ({"format": 1, "uptime": 5}, "uptime"),  # a format-2 field in format 1
    ({"format": 2, "uptime": -1}, "uptime"),
    ({"format": 2, "functions": ["no-object"]}, "functions[0]"),
    ({"format": 2, "channel": "Stable!"}, "channel"),
    ({"format": 2, "attempted_level": "3"}, "attempted_level"),
    ({"format": "1"}, "format"),
    ({"format": True}, "format"),
    ({"level": "2"}, "level"),
    ({"level": -1}, "level"),
    ({"level": True}, "level"),
    ({"state": "happy"}, "state"),
    ({"host_id": ""}, "host_id"),
    ({"host_id": "a/b"}, "host_id"),
    ({"host_id": "abc\n"}, "host_id"),
    ({"hostname": "x" * 300}, "hostname"),
    ({"kernel": {"release": RELEASE}}, "kernel.build_id"),
    ({"kernel": {"release": RELEASE, "build_id": "XYZ"}}, "kernel.build_id"),
    ({"kernel": {"release": "../..", "build_id": BUILD}}, "kernel.release"),
    ({"kernel": {"release": RELEASE, "build_id": BUILD, "x": 1}}, "kernel.x"),
    ({"kernel": "6.1"}, "kernel"),
    ({"patches": "suture_fix_1"}, "patches"),
    ({"patches": ["a"] * 65}, "patches"),
    ({"patches": ["bad name"]}, "patches[0]"),
    ({"last_error": 5}, "last_error"),
    ({"last_error": "x" * 5000}, "last_error"),
    ({"last_error": "a\x1b[31mred"}, "last_error"),
    ({"agent_version": "0.1\n"}, "agent_version"),
    ({"extra": 1}, "extra"),
]


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
