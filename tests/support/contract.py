"""Check-ins the contract takes and refuses: shared by its tests and the server's (no tests)."""

from __future__ import annotations

from typing import Any

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
