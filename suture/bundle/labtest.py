"""The result of ``suture test``, as a bundle's manifest carries it (its ``test`` field).

Format 1, JSON::

    {"format": 1, "result": "passed",
     "kernel": {"release": "6.1.0-57-amd64", "build_id": "<hex>"},
     "at": "2026-12-03T10:00:00Z", "tester": "suture 0.1.0", "seconds": 61.2,
     "script": {"name": "check.sh", "sha256": "<hex>"},
     "load": "stress-ng --cpu 1 ...; modprobe/rmmod crc8/crc7/crc_itu_t",
     "steps": [{"name": "before", "ok": true, "expect": "fail", "exit": 1,
                "seconds": 0.4, "detail": ""}, ...],
     "kernel_log": {"sha256": "<hex>", "lines": ["..."], "taint": "OEK"},
     "reason": ""}

``script`` is null when no test script ran. ``kernel_log.sha256`` is the
digest of the whole kernel log of the test (kept beside the bundle as
``<name>.kernel.log``); ``lines`` are the lines worth reading (failures, the
livepatch core's and taint messages). ``reason`` says why a failed test
failed. A result counts only for the kernel build it names: publish checks
that it is the manifest's own build.

The field has its own format number, so readers that know only an older one
(an agent, which never needs it) ignore it instead of refusing the bundle.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from suture.errors import BundleError

FORMAT_VERSION = 1

# What a test concluded, and what signed metadata says of a level that has no result.
PASSED, FAILED, UNTESTED = "passed", "failed", "untested"
RESULTS = (PASSED, FAILED)

_HEX64 = re.compile(r"[0-9a-f]{64}")  # matched whole


@dataclass(frozen=True)
class LabStep:
    """One step of a bundle's test in the guest.

    Attributes:
        name: ``before``, ``apply``, ``modules``, ``patched``, ``unload``,
            ``after`` (the script's runs are ``before``, ``patched``, ``after``),
            ``load`` or ``kernel-log``.
        ok: the step did what it had to.
        expect: for the script's runs, ``pass`` or ``fail``; "" otherwise.
        exit: the script's exit status (None: not a script, or killed at its time limit).
        seconds: how long the step took.
        detail: why it is not ok, or the tail of the script's output.
    """

    name: str
    ok: bool
    expect: str = ""
    exit: int | None = None
    seconds: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class LabTest:
    """The outcome of testing one bundle in a guest of one kernel build."""

    result: str  # PASSED or FAILED
    release: str
    build_id: str
    at: str  # UTC, e.g. 2026-12-03T10:00:00Z
    tester: str  # "suture <version>"
    steps: tuple[LabStep, ...]
    seconds: float = 0.0
    script: str = ""  # the test script's file name ("": none ran)
    script_sha256: str = ""
    load: str = ""  # the load that ran during the test
    kernel_log_sha256: str = ""
    kernel_log: tuple[str, ...] = ()  # the interesting lines
    taint: str = ""  # the kernel's taint letters when the test ended
    reason: str = ""  # why it failed ("" when it passed)

    @property
    def passed(self) -> bool:
        """True when the test passed."""
        return self.result == PASSED

    def holds_for(self, release: str, build_id: str) -> bool:
        """True when this is a pass on exactly that kernel build."""
        return self.passed and (self.release, self.build_id) == (release, build_id)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (format 1)."""
        return {
            "format": FORMAT_VERSION,
            "result": self.result,
            "kernel": {"release": self.release, "build_id": self.build_id},
            "at": self.at,
            "tester": self.tester,
            "seconds": self.seconds,
            "script": {"name": self.script, "sha256": self.script_sha256} if self.script else None,
            "load": self.load,
            "steps": [asdict(s) for s in self.steps],
            "kernel_log": {
                "sha256": self.kernel_log_sha256,
                "lines": list(self.kernel_log),
                "taint": self.taint,
            },
            "reason": self.reason,
        }

    def summary(self) -> dict[str, Any]:
        """What the signed target metadata says of the test: small, every agent downloads it."""
        return {
            "format": FORMAT_VERSION,
            "result": self.result,
            "at": self.at,
            "tester": self.tester,
            "script": self.script or None,
            "steps": {s.name: s.ok for s in self.steps},
            "kernel_log_sha256": self.kernel_log_sha256,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabTest:
        """Parse and validate format 1.

        Raises:
            BundleError: a field is missing or wrong.
        """
        try:
            kernel, log = data["kernel"], data["kernel_log"]
            script = data.get("script") or {}
            test = cls(
                result=str(data["result"]),
                release=str(kernel["release"]),
                build_id=str(kernel["build_id"]),
                at=str(data["at"]),
                tester=str(data["tester"]),
                seconds=float(data.get("seconds", 0.0)),
                script=str(script.get("name", "")),
                script_sha256=str(script.get("sha256", "")),
                load=str(data.get("load", "")),
                steps=tuple(_step(s) for s in data["steps"]),
                kernel_log_sha256=str(log["sha256"]),
                kernel_log=tuple(str(line) for line in log.get("lines", [])),
                taint=str(log.get("taint", "")),
                reason=str(data.get("reason", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BundleError(f"the manifest's test result is malformed: {e!r}") from e
        test.validate()
        return test

    def validate(self) -> None:
        """Check the fields publish relies on.

        Raises:
            BundleError: naming what is wrong.
        """
        problems = []
        if self.result not in RESULTS:
            problems.append(f"result {self.result!r} is not one of {', '.join(RESULTS)}")
        if not self.release or not self.build_id:
            problems.append("it names no kernel build")
        if self.kernel_log_sha256 and not _HEX64.fullmatch(self.kernel_log_sha256):
            problems.append("the kernel log's sha256 is not 64 hex digits")
        if self.passed and (self.reason or not all(s.ok for s in self.steps)):
            problems.append("it says passed, but a step failed")
        if problems:
            raise BundleError("invalid test result in the manifest: " + "; ".join(problems))


def _step(data: dict[str, Any]) -> LabStep:
    code = data.get("exit")
    return LabStep(
        name=str(data["name"]),
        ok=bool(data["ok"]),
        expect=str(data.get("expect", "")),
        exit=None if code is None else int(code),
        seconds=float(data.get("seconds", 0.0)),
        detail=str(data.get("detail", "")),
    )


def parse(data: object) -> LabTest | None:
    """The manifest's ``test`` field: None when absent or of a format this Suture does not read.

    Raises:
        BundleError: a format 1 result is malformed.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        return None
    return LabTest.from_dict(data)


def signed_result(summary: object) -> str:
    """The result a level's signed ``custom["test"]`` gives: passed, failed, or untested.

    Levels signed before tests were recorded, and anything unreadable, count as untested.
    """
    result = summary.get("result") if isinstance(summary, dict) else None
    return result if isinstance(result, str) and result in RESULTS else UNTESTED
