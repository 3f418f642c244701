"""The one error hierarchy of Suture.

Every error that leaves a Suture function is a :class:`SutureError`. Each
domain has its own subtree so that callers can branch on what went wrong,
and every error carries a ``hint``: what the operator should do next. The
CLI catches :class:`SutureError` once, prints the message and the hint, and
exits with :attr:`SutureError.exit_code`.

Foreign errors (``OSError``, ``subprocess.CalledProcessError``, pyelftools'
errors) are translated where they cross into Suture, with ``raise ... from``.
"""

from __future__ import annotations


class SutureError(Exception):
    """Base of every error Suture raises on purpose.

    Attributes:
        hint: what to do about it, one sentence, or "" when nothing helps.
        exit_code: the CLI's exit status for this error (see README).
    """

    exit_code = 10

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, str]:
        """The error as JSON-ready data, for ``--json`` output."""
        return {"error": type(self).__name__, "message": self.message, "hint": self.hint}


class UsageError(SutureError):
    """The command line or an input file is wrong."""

    exit_code = 64  # EX_USAGE


# --- the lab: kernel packages and QEMU guests ------------------------------


class LabError(SutureError):
    """Fetching a kernel or running a guest failed."""

    exit_code = 20


class KernelNotFoundError(LabError):
    """No package of that kernel release is in the package archive."""


class DownloadError(LabError):
    """A package could not be downloaded or unpacked."""


class ToolMissingError(LabError):
    """A host program the lab needs (qemu, busybox, apt-get) is missing."""


class GuestError(LabError):
    """The guest panicked, oopsed, timed out or failed to start.

    Attributes:
        console_tail: the last lines the guest kernel printed.
    """

    def __init__(self, message: str, *, hint: str = "", console_tail: str = "") -> None:
        super().__init__(message, hint=hint)
        self.console_tail = console_tail

    def to_dict(self) -> dict[str, str]:
        """Add the console tail to the JSON form."""
        return {**super().to_dict(), "console_tail": self.console_tail}


class GuestTimeoutError(GuestError):
    """The guest command did not finish in time."""


# --- the builder --------------------------------------------------------------


class BuildError(SutureError):
    """Turning a source fix into a live patch failed."""

    exit_code = 40


class KbuildError(BuildError):
    """kbuild failed to compile or link a module."""


# --- bundles ------------------------------------------------------------------


class BundleError(SutureError):
    """A patch bundle is malformed, incomplete or does not match its manifest."""

    exit_code = 50


# --- the livepatch engine ---------------------------------------------------


class KernelError(SutureError):
    """Talking to the running kernel failed."""

    exit_code = 30


class ModuleFormatError(KernelError):
    """A file is not a kernel module Suture can read."""


class PreflightError(KernelError):
    """A check before loading refused the patch; nothing was loaded.

    Attributes:
        check: the name of the check that refused (e.g. ``vermagic``).
    """

    exit_code = 31

    def __init__(self, message: str, *, check: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.check = check

    def to_dict(self) -> dict[str, str]:
        """Add the failed check to the JSON form."""
        return {**super().to_dict(), "check": self.check}


class LoadError(KernelError):
    """The kernel refused to load or remove a module."""

    exit_code = 32


class TransitionError(KernelError):
    """A livepatch transition did not finish and was backed out."""

    exit_code = 33


class NotLoadedError(KernelError):
    """The named live patch is not loaded."""

    exit_code = 34
