"""Checks run before a live patch is loaded; each refuses with a reason, nothing half-done.

A check raises :class:`PreflightError` naming itself, so callers (the agent,
reports) can tell "wrong kernel" from "signature policy" without parsing text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from suture.errors import PreflightError
from suture.kernel import module
from suture.kernel.identity import KernelIdentity
from suture.kernel.livepatch import LivepatchSysfs
from suture.kernel.modinfo import ModInfo

# The trailer scripts/sign-file appends to a signed module.
SIGNATURE_MAGIC = b"~Module signature appended~\n"

# Where the kernel lists ftrace users and kprobes (tracefs, or under debugfs).
_ENABLED_FUNCTIONS = (
    "sys/kernel/tracing/enabled_functions",
    "sys/kernel/debug/tracing/enabled_functions",
)
_KPROBES_LIST = "sys/kernel/debug/kprobes/list"


@dataclass(frozen=True)
class PatchCandidate:
    """What is known about a patch before it is loaded.

    Attributes:
        path: the module file.
        modinfo: its ``.modinfo``.
        build_id: the vmlinux build id it was made for ("" when it does not say).
        functions: the functions it replaces, where a manifest says (else empty).
    """

    path: Path
    modinfo: ModInfo
    build_id: str = ""
    functions: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The module (and live patch) name."""
        return self.modinfo.name


def _kernel_label(release: str, build_id: str) -> str:
    return f"{release} (build id {build_id[:12]})" if build_id else release


def check_livepatch(ident: KernelIdentity) -> None:
    """The running kernel has a livepatch core."""
    if not ident.livepatch:
        raise PreflightError(
            f"kernel {ident.release} has no livepatch support (/sys/kernel/livepatch is missing)",
            check="livepatch",
            hint="live patching needs a kernel built with CONFIG_LIVEPATCH=y",
        )


def check_is_livepatch(cand: PatchCandidate) -> None:
    """The module declares itself a live patch (``MODULE_INFO(livepatch, "Y")``)."""
    if not cand.modinfo.is_livepatch:
        raise PreflightError(
            f"{cand.path.name} is a kernel module but not a live patch",
            check="livepatch-module",
            hint="load ordinary modules with modprobe; Suture applies live patches only",
        )


def check_build(cand: PatchCandidate, ident: KernelIdentity) -> None:
    """The module was built for this exact kernel build (release, and build id where known)."""
    built_for = cand.modinfo.release
    build_id = cand.build_id or cand.modinfo.get("suture_build_id")
    running = _kernel_label(ident.release, ident.build_id)
    if built_for != ident.release:
        raise PreflightError(
            f"{cand.path.name} was built for kernel {_kernel_label(built_for, build_id)}, "
            f"but this host runs {running}",
            check="kernel-build",
            hint=f"use the patch built for {ident.release} (suture build --kernel {ident.release})",
        )
    if build_id and ident.build_id and build_id != ident.build_id:
        raise PreflightError(
            f"{cand.path.name} was built for kernel {_kernel_label(built_for, build_id)}, "
            f"but this host runs {running}: same release, another build",
            check="kernel-build",
            hint="rebuild the patch against the exact build this host runs",
        )


def check_signature(cand: PatchCandidate, ident: KernelIdentity) -> None:
    """Signature policy: under lockdown or ``sig_enforce`` an unsigned module cannot load."""
    if not ident.needs_signed_modules:
        return
    with cand.path.open("rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - len(SIGNATURE_MAGIC)))
        signed = f.read() == SIGNATURE_MAGIC
    if not signed:
        why = f"lockdown={ident.lockdown}" if ident.lockdown not in ("", "none") else "sig_enforce"
        raise PreflightError(
            f"{cand.path.name} is not signed and this kernel only loads signed modules ({why})",
            check="signature",
            hint="sign the module with a key enrolled in the kernel's keyring (MOK)",
        )


def check_not_loaded(cand: PatchCandidate, lp: LivepatchSysfs) -> None:
    """No live patch of the same name is loaded, nor the kept module of a disabled one."""
    if lp.exists(cand.name):
        raise PreflightError(
            f"a live patch named {cand.name} is loaded already",
            check="already-loaded",
            hint=f"see 'suture status'; remove it first with 'suture unload {cand.name}'",
        )
    if module.kept(cand.name, lp.sysroot):
        raise PreflightError(
            f"the module of {cand.name} stays loaded from an earlier use (the kernel may "
            "still point into it), and the livepatch core cannot enable it again",
            check="already-loaded",
            hint="apply it under another name (a new level), or after a reboot",
        )


KLP_HANDLER = "klp_ftrace_handler"


def ftrace_conflicts(functions: Iterable[str], sysroot: Path) -> dict[str, str]:
    """Target functions that a kprobe or an IPMODIFY ftrace user holds, with who holds it."""
    wanted = set(functions)
    found: dict[str, str] = {}
    for rel in _ENABLED_FUNCTIONS:
        try:
            lines = (sysroot / rel).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            # "cmdline_proc_show (1) R I   \ttramp: ..." or, for a module's
            # function, "ext4_file_open [ext4] (1) R I ...": flags follow "(N)".
            if KLP_HANDLER in line:
                # The livepatch core's own handler: patches stack on one function
                # (the newest wins, a replace retires the others), so another
                # live patch is not a conflict.
                continue
            head, _, tail = line.partition(")")
            if head.split()[:1] and head.split()[0] in wanted and "I" in tail.split()[:3]:
                found[head.split()[0]] = "an ftrace user that modifies the instruction pointer"
        break
    try:
        kprobes = (sysroot / _KPROBES_LIST).read_text().splitlines()
    except OSError:
        kprobes = []
    for line in kprobes:
        # "ffffffff8123  k  do_sys_open+0x0    [FTRACE]"
        words = line.split()
        if len(words) >= 3 and (func := words[2].split("+", 1)[0]) in wanted:
            found.setdefault(func, "a kprobe")
    return found


def check_ftrace(cand: PatchCandidate, sysroot: Path) -> None:
    """No kprobe or IPMODIFY ftrace user sits on a function the patch replaces (where visible)."""
    conflicts = ftrace_conflicts(cand.functions, sysroot)
    if conflicts:
        func, who = sorted(conflicts.items())[0]
        raise PreflightError(
            f"{func} is held by {who}; the live patch cannot redirect it",
            check="ftrace",
            hint="remove the kprobe or stop the tracer, then apply again",
        )


def run_all(cand: PatchCandidate, ident: KernelIdentity, lp: LivepatchSysfs) -> None:
    """Every check, cheapest first. Raises the first :class:`PreflightError`."""
    check_livepatch(ident)
    check_is_livepatch(cand)
    check_build(cand, ident)
    check_signature(cand, ident)
    check_not_loaded(cand, lp)
    check_ftrace(cand, lp.sysroot)
