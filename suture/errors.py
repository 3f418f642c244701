"""The one error hierarchy of Suture.

Every error that leaves a Suture function is a :class:`SutureError`. Each
domain has its own subtree so that callers can branch on what went wrong,
and every error carries a ``hint``: what the operator should do next. The
CLI catches :class:`SutureError` once, prints the message and the hint, and
exits with :attr:`SutureError.exit_code`.

Foreign errors (``OSError``, ``subprocess.CalledProcessError``, pyelftools'
errors) are translated where they cross into Suture, with ``raise ... from``.
Each class has a stable ``code`` (kebab-case): the ``error`` field of JSON
output and of the agent's state and reports. Codes are a contract; class
names are not.
"""

from __future__ import annotations


class SutureError(Exception):
    """Base of every error Suture raises on purpose.

    Attributes:
        hint: what to do about it, one sentence, or "" when nothing helps.
        code: a stable name for this kind of error (``fetch``, ``preflight``), the
            ``error`` of its JSON form; it never changes when a class is renamed.
        exit_code: the CLI's exit status for this error (see README).
    """

    code = "error"
    exit_code = 10

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, str]:
        """The error as JSON-ready data, for ``--json`` output."""
        return {"error": self.code, "message": self.message, "hint": self.hint}


class UsageError(SutureError):
    """The command line or an input file is wrong."""

    code = "usage"
    exit_code = 64  # EX_USAGE


class FormatError(SutureError):
    """A document of a format the agent and the server share (suture.contract) is malformed.

    Attributes:
        field: the JSON field that was refused (``kernel.build_id``, ``patches[2]``),
            or "" for the whole document.
    """

    code = "format"

    def __init__(self, message: str, *, field: str = "", hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.field = field

    def to_dict(self) -> dict[str, str]:
        """Add the refused field to the JSON form."""
        return {**super().to_dict(), "field": self.field}


# --- the lab: kernel packages and QEMU guests ------------------------------


class LabError(SutureError):
    """Fetching a kernel or running a guest failed."""

    code = "lab"
    exit_code = 20


class KernelNotFoundError(LabError):
    """No package of that kernel release is in the package archive."""

    code = "kernel-not-found"


class DownloadError(LabError):
    """A package could not be downloaded or unpacked."""

    code = "download"


class SourceGoneError(DownloadError):
    """The exact source of a kernel build has left the package archive.

    A build is only ever compiled from the source package of its own version;
    a neighbouring version is never taken in its place.

    Attributes:
        release: the kernel build, e.g. ``6.1.0-51-amd64``.
        package: the source package, e.g. ``linux-source-6.1``.
        version: the version that is missing, e.g. ``6.1.177-1``.
    """

    code = "source-gone"

    def __init__(self, release: str, package: str = "", version: str = "") -> None:
        which = f"{release}, {package}={version}," if package else release
        super().__init__(
            f"the exact source of {which} is no longer in the package archive",
            hint="this build cannot be patched from its own source; 'suture lab list' shows "
            "which builds still can",
        )
        self.release = release
        self.package = package
        self.version = version

    def to_dict(self) -> dict[str, str]:
        """Add the build and the missing source version to the JSON form."""
        return {
            **super().to_dict(),
            "release": self.release,
            "package": self.package,
            "version": self.version,
        }


class ToolMissingError(LabError):
    """A host program the lab needs (qemu, busybox, apt-get) is missing."""

    code = "tool-missing"


class GuestError(LabError):
    """The guest panicked, oopsed, timed out or failed to start.

    Attributes:
        console_tail: the last lines the guest kernel printed.
    """

    code = "guest"

    def __init__(self, message: str, *, hint: str = "", console_tail: str = "") -> None:
        super().__init__(message, hint=hint)
        self.console_tail = console_tail

    def to_dict(self) -> dict[str, str]:
        """Add the console tail to the JSON form."""
        return {**super().to_dict(), "console_tail": self.console_tail}


class GuestTimeoutError(GuestError):
    """The guest command did not finish in time."""

    code = "guest-timeout"


class EmulatorFaultError(GuestError):
    """The guest died of a fault of QEMU, not of its kernel: it ran code already rewritten.

    A run again with round-robin TCG does not meet it (ADR 21).
    """

    code = "guest-emulator-fault"


# --- the builder --------------------------------------------------------------


class BuildError(SutureError):
    """Turning a source fix into a live patch failed."""

    code = "build"
    exit_code = 40


class KbuildError(BuildError):
    """kbuild failed to compile or link a module."""

    code = "kbuild"


class StaticKeyError(BuildError):
    """A module's changed code uses a static key its loader cannot resolve (retried as reads)."""

    code = "static-key"


class NoChangeError(BuildError):
    """The fix changes no code in this kernel build: nothing to patch (not a failure)."""

    code = "no-change"
    exit_code = 3


class AlreadyFixedError(NoChangeError):
    """The build's own source already contains the fix: fixed in this build, nothing to patch.

    Attributes:
        release: the kernel build that has the fix.
    """

    code = "already-fixed"

    def __init__(self, message: str, *, release: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.release = release

    def to_dict(self) -> dict[str, str]:
        """Add the build to the JSON form."""
        return {**super().to_dict(), "release": self.release}


class PortConflictError(BuildError):
    """The fix does not apply to the build's exact source (or is only partly in it already).

    Attributes:
        file: the file of the first hunk that does not apply.
        hunk: that hunk's text.
    """

    code = "port-conflict"

    def __init__(self, message: str, *, file: str, hunk: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.file = file
        self.hunk = hunk

    def to_dict(self) -> dict[str, str]:
        """Add the failing hunk to the JSON form."""
        return {**super().to_dict(), "file": self.file, "hunk": self.hunk}


# --- bundles ------------------------------------------------------------------


class BundleError(SutureError):
    """A patch bundle is malformed, incomplete or does not match its manifest."""

    code = "bundle"
    exit_code = 50


# --- the livepatch engine ---------------------------------------------------


class KernelError(SutureError):
    """Talking to the running kernel failed."""

    code = "kernel"
    exit_code = 30


class ModuleFormatError(KernelError):
    """A file is not a kernel module Suture can read."""

    code = "module-format"


class PreflightError(KernelError):
    """A check before loading refused the patch; nothing was loaded.

    Attributes:
        check: the name of the check that refused (e.g. ``vermagic``).
    """

    code = "preflight"
    exit_code = 31

    def __init__(self, message: str, *, check: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.check = check

    def to_dict(self) -> dict[str, str]:
        """Add the failed check to the JSON form."""
        return {**super().to_dict(), "check": self.check}


class PrematchError(PreflightError):
    """The patch's own check in the kernel found a function that is not the code it was built for.

    The check runs in the patch module's pre-patch callback, before any
    function is redirected: the kernel refuses the patch (at load, for
    vmlinux) or the module that is loading (for a module's part).

    Attributes:
        object: ``vmlinux`` or the module whose function differs.
        function: the function whose bytes are not the expected ones.
    """

    code = "pre-match"

    def __init__(self, message: str, *, obj: str, function: str, hint: str = "") -> None:
        super().__init__(message, check="pre-match", hint=hint)
        self.object = obj
        self.function = function

    def to_dict(self) -> dict[str, str]:
        """Add the object and the function to the JSON form."""
        return {**super().to_dict(), "object": self.object, "function": self.function}


class LoadError(KernelError):
    """The kernel refused to load or remove a module.

    Attributes:
        errno: the kernel's refusal (0 when not an errno).
    """

    code = "load"
    exit_code = 32
    errno = 0


class TransitionError(KernelError):
    """A livepatch transition did not finish and was backed out."""

    code = "transition"
    exit_code = 33


class NotLoadedError(KernelError):
    """The named live patch is not loaded."""

    code = "not-loaded"
    exit_code = 34


class SysfsError(KernelError):
    """The kernel refused a write to one of its control files (livepatch sysfs, /proc).

    Attributes:
        path: the file that was written.
        errno_name: the kernel's refusal, e.g. ``EBUSY`` ("" when not an errno).
    """

    code = "sysfs"

    def __init__(self, message: str, *, path: str, errno_name: str = "", hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.path = path
        self.errno_name = errno_name

    def to_dict(self) -> dict[str, str]:
        """Add the file and the errno to the JSON form."""
        return {**super().to_dict(), "path": self.path, "errno": self.errno_name}


# --- the repository: publishing bundles (suture.repo) -------------------------


class RepoError(SutureError):
    """A patch repository could not be created, read or changed."""

    code = "repo"
    exit_code = 60


class RepoExistsError(RepoError):
    """``repo init`` refused to overwrite a repository or a non-empty folder."""

    code = "repo-exists"


class NotARepoError(RepoError):
    """The folder is not a Suture repository, or its metadata cannot be read."""

    code = "not-a-repo"


class LevelError(RepoError):
    """A bundle's level is not above every level published for its build and channel.

    Attributes:
        level: the level that was refused.
        published: the highest level ever published there (yanked ones count).
    """

    code = "level"
    exit_code = 61

    def __init__(self, message: str, *, level: int, published: int, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.level = level
        self.published = published

    def to_dict(self) -> dict[str, str]:
        """Add the refused and the published level to the JSON form."""
        return {**super().to_dict(), "level": str(self.level), "published": str(self.published)}


class NotPublishedError(RepoError):
    """No such level is published for that build and channel (nothing to yank)."""

    code = "not-published"


class SigningKeyError(RepoError):
    """A role's private keys are missing, unusable, or fewer than its threshold."""

    code = "signing-key"


class UntestedError(RepoError):
    """``publish`` refused a bundle without a passing lab test on its own build.

    Attributes:
        result: what the bundle's manifest says: ``untested`` (no result),
            ``failed``, or ``other-build`` (a result for another kernel build).
    """

    code = "untested"
    exit_code = 62

    def __init__(self, message: str, *, result: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.result = result

    def to_dict(self) -> dict[str, str]:
        """Add what the manifest says about the test to the JSON form."""
        return {**super().to_dict(), "result": self.result}


# --- testing bundles in the lab before they are published (suture.tester) -----


class PatchTestError(SutureError):
    """``suture test`` could not test a bundle: wrong build, unusable script, missing tool."""

    code = "test"
    exit_code = 90


class PatchTestFailedError(PatchTestError):
    """A bundle failed its test in the lab; the failed result is written into its manifest."""

    code = "test-failed"
    exit_code = 91


# --- userspace live patches: running processes (suture.userspace) ------------


class UserspaceError(SutureError):
    """Patching a running process failed; the process runs its old code, untouched."""

    code = "userspace"
    exit_code = 35


class ProcessRefusedError(UserspaceError):
    """Suture will not touch this process (traced, Yama scope, PID 1, seccomp, gone).

    Attributes:
        pid: the process.
        reason: one word callers branch on (``traced``, ``yama``, ``init``,
            ``seccomp``, ``gone``, ``shadow-stack``, ``permission``).
    """

    code = "process-refused"
    exit_code = 36

    def __init__(self, message: str, *, pid: int, reason: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.pid = pid
        self.reason = reason

    def to_dict(self) -> dict[str, str]:
        """Add the process and the reason to the JSON form."""
        return {**super().to_dict(), "pid": str(self.pid), "reason": self.reason}


class OldCodeMismatchError(UserspaceError):
    """The code a patch would replace is not the code it was built against (another build)."""

    code = "old-code-mismatch"
    exit_code = 37


class SwitchTimeoutError(UserspaceError):
    """A thread stayed inside (or returning into) a replaced function until the time limit."""

    code = "switch-timeout"
    exit_code = 38


class NoSuchUserPatchError(UserspaceError):
    """No process has a userspace patch of that name."""

    code = "no-such-user-patch"
    exit_code = 34


class UserspaceBuildError(BuildError):
    """A userspace patch cannot be built, or the fix changes what a live patch cannot carry.

    Attributes:
        reason: ``data-layout``, ``tls``, ``ifunc``, ``not-reproducible``,
            ``symbol``, ``relocation`` or ``source``.
    """

    code = "userspace-build"

    def __init__(self, message: str, *, reason: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.reason = reason

    def to_dict(self) -> dict[str, str]:
        """Add the reason to the JSON form."""
        return {**super().to_dict(), "reason": self.reason}


# --- updates: fetching and verifying bundles (suture.agent.update) ------------


class UpdateError(SutureError):
    """Finding or fetching a bundle in a repository failed; nothing was installed."""

    code = "update"
    exit_code = 70


class FetchError(UpdateError):
    """The repository could not be reached or did not serve a file (retry later)."""

    code = "fetch"
    exit_code = 71


class VerificationError(UpdateError):
    """The repository's metadata or a bundle failed verification: do not apply, alert.

    Attributes:
        check: which check refused (``rollback``, ``expired``, ``signature``,
            ``integrity``, ``build``, ``metadata``, ``manifest``).
    """

    code = "verification"
    exit_code = 72
    check = "metadata"

    def __init__(self, message: str, *, hint: str = "", check: str = "") -> None:
        super().__init__(message, hint=hint)
        self.check = check or type(self).check

    def to_dict(self) -> dict[str, str]:
        """Add the failed check to the JSON form."""
        return {**super().to_dict(), "check": self.check}


class RollbackError(VerificationError):
    """A metadata version went backwards, or is not the one its signer pinned."""

    code = "rollback"

    check = "rollback"


class MetadataExpiredError(VerificationError):
    """Trusted metadata has expired: the repository is frozen or this host's clock is wrong."""

    code = "metadata-expired"

    check = "expired"


class SignatureError(VerificationError):
    """Metadata is not signed by a threshold of the keys this host's root trusts."""

    code = "signature"

    check = "signature"


class IntegrityError(VerificationError):
    """Bytes do not match the length and hashes signed for them (tampering, mix-and-match)."""

    code = "integrity"

    check = "integrity"


class WrongBuildError(VerificationError):
    """A signed bundle is for another kernel build than the one asked for.

    Attributes:
        expected: ``release/build_id`` that was asked for.
        found: ``release/build_id`` the bundle or its metadata names.
    """

    code = "wrong-build"

    check = "build"

    def __init__(self, message: str, *, expected: str, found: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.expected = expected
        self.found = found

    def to_dict(self) -> dict[str, str]:
        """Add both builds to the JSON form."""
        return {**super().to_dict(), "expected": self.expected, "found": self.found}


# --- the patch server: static repository, check-ins, fleet API (suture.server) --


class ServerError(SutureError):
    """The patch server could not start, or its database failed."""

    code = "server"
    exit_code = 80


class ListenError(ServerError):
    """The server could not listen on the address asked for (in use, not local, bad form)."""

    code = "listen"


class DatabaseError(ServerError):
    """The server's database could not be opened, migrated, read or written."""

    code = "database"


class RefusedError(ServerError):
    """The server understood a request and refuses it: a bad key, a taken host id, no such host.

    Attributes:
        reason: a short code the HTTP layer answers with (``bad_key``, ``taken``,
            ``not_found``, ``forbidden``...).
    """

    code = "refused"

    def __init__(self, message: str, *, reason: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.reason = reason

    def to_dict(self) -> dict[str, str]:
        """Add the reason to the JSON form."""
        return {**super().to_dict(), "reason": self.reason}


class RateLimitedError(RefusedError):
    """Too many requests (or failures) from one host or address: try again later.

    Attributes:
        retry_after: seconds until the limit lets it through.
    """

    code = "rate-limited"

    def __init__(self, message: str, *, retry_after: float, hint: str = "") -> None:
        super().__init__(message, reason="rate_limited", hint=hint)
        self.retry_after = retry_after


class CheckinError(FormatError):
    """An agent's check-in is malformed; the server answers 400 and stores nothing."""

    code = "checkin"
    exit_code = 80


class FleetError(SutureError):
    """A fleet API call failed: the server cannot be reached, or refused it."""

    code = "fleet"
    exit_code = 81


# --- the agent: its configuration and state (suture.agent) --------------------


class ConfigError(UsageError):
    """The agent's configuration (file, environment or option) holds a bad value.

    Attributes:
        key: the setting that was refused (``channel``), or "" for the whole file.
    """

    code = "config"

    def __init__(self, message: str, *, key: str = "", hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.key = key

    def to_dict(self) -> dict[str, str]:
        """Add the refused setting to the JSON form."""
        return {**super().to_dict(), "key": self.key}


class AgentStateError(SutureError):
    """The agent's state file cannot be read or written."""

    code = "agent-state"


class InternalError(SutureError):
    """Something Suture did not expect (a bug): recorded and reported like any error."""

    code = "internal"
