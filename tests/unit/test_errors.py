"""suture.errors: every error has a stable code; JSON carries it, not the class name."""

from __future__ import annotations

import re

import pytest

from suture import errors
from suture.errors import FetchError, PrematchError, SutureError, SysfsError

# The contract: these names appear in JSON output, the agent's state and its check-ins.
CODES = {
    "SutureError": "error",
    "UsageError": "usage",
    "FormatError": "format",
    "ConfigError": "config",
    "LabError": "lab",
    "KernelNotFoundError": "kernel-not-found",
    "DownloadError": "download",
    "SourceGoneError": "source-gone",
    "ToolMissingError": "tool-missing",
    "GuestError": "guest",
    "GuestTimeoutError": "guest-timeout",
    "EmulatorFaultError": "guest-emulator-fault",
    "BuildError": "build",
    "KbuildError": "kbuild",
    "StaticKeyError": "static-key",
    "NoChangeError": "no-change",
    "AlreadyFixedError": "already-fixed",
    "PortConflictError": "port-conflict",
    "BundleError": "bundle",
    "KernelError": "kernel",
    "ModuleFormatError": "module-format",
    "PreflightError": "preflight",
    "PrematchError": "pre-match",
    "LoadError": "load",
    "TransitionError": "transition",
    "NotLoadedError": "not-loaded",
    "SysfsError": "sysfs",
    "RepoError": "repo",
    "RepoExistsError": "repo-exists",
    "NotARepoError": "not-a-repo",
    "LevelError": "level",
    "NotPublishedError": "not-published",
    "SigningKeyError": "signing-key",
    "UntestedError": "untested",
    "PatchTestError": "test",
    "PatchTestFailedError": "test-failed",
    "UserspaceError": "userspace",
    "ProcessRefusedError": "process-refused",
    "OldCodeMismatchError": "old-code-mismatch",
    "SwitchTimeoutError": "switch-timeout",
    "NoSuchUserPatchError": "no-such-user-patch",
    "UserspaceBuildError": "userspace-build",
    "UpdateError": "update",
    "FetchError": "fetch",
    "VerificationError": "verification",
    "RollbackError": "rollback",
    "MetadataExpiredError": "metadata-expired",
    "SignatureError": "signature",
    "IntegrityError": "integrity",
    "WrongBuildError": "wrong-build",
    "ServerError": "server",
    "ListenError": "listen",
    "DatabaseError": "database",
    "RefusedError": "refused",
    "RateLimitedError": "rate-limited",
    "CheckinError": "checkin",
    "FleetError": "fleet",
    "AgentStateError": "agent-state",
    "InternalError": "internal",
}


def _classes() -> dict[str, type[SutureError]]:
    return {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, SutureError)
    }


def test_every_error_has_its_own_stable_code() -> None:
    found = {name: cls.__dict__.get("code") for name, cls in _classes().items()}
    assert found == CODES
    assert len(set(CODES.values())) == len(CODES)
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", code) for code in CODES.values())


def test_json_carries_the_code_not_the_class_name() -> None:
    assert FetchError("down", hint="later").to_dict() == {
        "error": "fetch",
        "message": "down",
        "hint": "later",
    }
    e = PrematchError("no", obj="vmlinux", function="cmdline_proc_show")
    assert (e.exit_code, e.check) == (31, "pre-match")
    assert e.to_dict() | {"hint": ""} == {
        "error": "pre-match",
        "message": "no",
        "hint": "",
        "check": "pre-match",
        "object": "vmlinux",
        "function": "cmdline_proc_show",
    }
    s = SysfsError("refused", path="/sys/kernel/livepatch/x/enabled", errno_name="EBUSY")
    assert (s.to_dict()["error"], s.to_dict()["errno"], s.exit_code) == ("sysfs", "EBUSY", 30)


@pytest.mark.parametrize("cls", sorted(_classes().values(), key=lambda c: c.__name__))
def test_every_error_exits_with_a_documented_code(cls: type[SutureError]) -> None:
    assert cls.exit_code in {3, 10, 20, 30, 31, 32, 33, 34, 35, 36, 37, 38, 40, 50, 60, 61, 62,
                             64, 70, 71, 72, 80, 81, 90, 91}  # fmt: skip


def test_readme_lists_every_exit_code_once_as_the_help_does() -> None:
    from pathlib import Path  # noqa: PLC0415

    from suture.cli.helptext import EXIT_STATUS  # noqa: PLC0415

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    codes = [int(m) for m in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)]
    assert len(codes) == len(set(codes)), sorted(c for c in codes if codes.count(c) > 1)
    assert set(codes) == set(EXIT_STATUS)
    assert {cls.exit_code for cls in _classes().values()} <= set(codes)
