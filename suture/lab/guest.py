"""Boot a fetched kernel under QEMU and run one command in it as root.

The guest sees the host's root file system (read-only 9p under a tmpfs
overlay: writes stay in the guest), so the project's own virtualenv and code
run inside. With ``GuestConfig.root`` it boots another root file system
instead (suture.lab.rootfs: Debian 13 with Suture from a wheel), the same way,
and sees of the host only the folders it needs (its working folder, the
kernel's modules, ``host_paths``), read-only at the same paths.

The command's output streams back on a second serial port; its exit status
comes back through a small read-write exchange folder. The harness fails
fast (``-no-reboot``, ``panic=-1 oops=panic``) and turns a panic, an oops or
a timeout into a :class:`GuestError` with the console tail.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from suture.errors import (
    EmulatorFaultError,
    GuestError,
    GuestTimeoutError,
    LabError,
    ToolMissingError,
    UsageError,
)
from suture.fsutil import cache_dir
from suture.lab import initramfs
from suture.packages import kernels, vmlinux
from suture.packages.kernels import KernelTree

QEMU = "qemu-system-x86_64"

# Host variables the guest command inherits (with the host's values).
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TERM", "VIRTUAL_ENV", "PYTHONPATH", "SUTURE_CACHE", "CI")
# ... when it boots another root file system (the host's programs are not there).
ROOT_PASSED_ENV = ("TERM", "SUTURE_CACHE", "CI")
ROOT_PATH = "/opt/suture/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Signs in the console that the guest kernel died rather than the command failing.
_FATAL_MARKERS = ("Kernel panic", "Oops:", "BUG:", "general protection fault", "suture-init:")


@dataclass(frozen=True)
class GuestConfig:
    """How to boot the guest.

    Attributes:
        memory_mb: guest RAM in MiB.
        cpus: virtual CPUs.
        timeout: seconds from QEMU's start until the command must have ended.
        accel: ``tcg`` (software emulation, works everywhere) or ``kvm``
            (only where nested KVM is shown to work; it hangs on these machines).
        extra_cmdline: appended to the kernel command line.
        env: extra variables for the guest command.
        output_dir: where files the command writes to ``$SUTURE_OUT`` (in the
            guest: /run/suture-lab/out) are copied when it ends, or when the
            guest fails or times out; None: dropped.
        root: a root file system folder to boot instead of the host's
            (suture.lab.rootfs.ensure); None: the host's.
        host_paths: with ``root``, host folders the guest also sees (read-only,
            at the same paths), besides the working folder and the modules.
        tcg_threads: ``multi`` (a host thread per vCPU) or ``single`` (round
            robin); "" chooses by the kernel (:func:`tcg_threads`).
    """

    memory_mb: int = 1024
    cpus: int = 2
    timeout: float = 300.0
    accel: str = "tcg"
    extra_cmdline: str = ""
    env: dict[str, str] = field(default_factory=dict)
    output_dir: Path | None = None
    root: Path | None = None
    host_paths: tuple[Path, ...] = ()
    tcg_threads: str = ""


# From 6.15 the livepatch core toggles a static key in __schedule at the start
# and end of every transition (klp_sched_try_switch_key).
_KEY_IN_SCHEDULE = (6, 15)


def tcg_threads(release: str) -> str:
    """How TCG runs a guest of ``release``: round robin where the scheduler's code is rewritten.

    QEMU 7.2's multi-threaded TCG can go on running a translation of code
    another vCPU has just rewritten: a guest that toggles a static key in hot
    code then takes an int3 the kernel no longer expects. 7.3.4 oopsed in
    __schedule within 20 s of toggling the sched_switch tracepoint, and 7.x
    toggles a key there on every transition (ADR 21); round robin ran 300
    toggles cleanly. Older kernels keep a host thread per vCPU: under
    stress-ng a `suture test` of 6.1 took 314 s with it and did not finish
    in 420 s without. They meet the fault rarely (once on 6.12 so far);
    :func:`stale_int3` recognises it and callers run again, round robin.
    """
    match = re.match(r"(\d+)\.(\d+)", release)
    series = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    return "single" if series >= _KEY_IN_SCHEDULE else "multi"


@dataclass(frozen=True)
class GuestResult:
    """What a finished guest run gave back."""

    returncode: int
    seconds: float
    console: str


def _qemu_argv(kernel: Path, initrd: Path, exchange: Path, cfg: GuestConfig) -> list[str]:
    cmdline = " ".join(
        [
            "console=ttyS0",
            "rdinit=/init",
            "panic=-1",
            "oops=panic",
            "quiet",
            "loglevel=4",
            # No probing for hardware the guest does not have.
            "i8042.noaux",
            "i8042.nomux",
            "i8042.nopnp",
            "8250.nr_uarts=2",
            # Under software emulation time runs unevenly: no lockup watchdogs.
            "nowatchdog",
            "nosoftlockup",
            cfg.extra_cmdline,
        ]
    ).strip()
    accel = "kvm" if cfg.accel == "kvm" else f"tcg,thread={cfg.tcg_threads or 'multi'}"
    # The host's root, when the guest boots another one: the host folders it sees.
    host = [] if cfg.root is None else [
        "-fsdev",
        "local,id=hostfs,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device",
        "virtio-9p-pci,fsdev=hostfs,mount_tag=hostfs",
    ]  # fmt: skip
    return [
        QEMU,
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-accel",
        accel,
        "-cpu",
        "max",
        "-smp",
        str(cfg.cpus),
        "-m",
        str(cfg.memory_mb),
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        cmdline,
        "-chardev",
        f"file,id=console,path={exchange / 'console.log'}",
        "-serial",
        "chardev:console",
        "-chardev",
        "stdio,id=out,signal=off",
        "-serial",
        "chardev:out",
        "-fsdev",
        f"local,id=hostroot,path={cfg.root or '/'},security_model=none,readonly=on,multidevs=remap",
        "-device",
        "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev",
        f"local,id=exchange,path={exchange},security_model=none",
        "-device",
        "virtio-9p-pci,fsdev=exchange,mount_tag=exchange",
        *host,
    ]


def _bootable(tree: KernelTree) -> Path:
    """The uncompressed vmlinux (PVH boot, seconds faster under TCG), else the bzImage."""
    try:
        return vmlinux.ensure(tree.vmlinuz, tree.vmlinux)
    except LabError:
        return tree.vmlinuz


def _command_script(argv: list[str], cwd: Path, cfg: GuestConfig) -> str:
    if cfg.root is None:
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    else:
        # Another userland: its own programs, and Suture from its wheel first.
        env = {k: os.environ[k] for k in ROOT_PASSED_ENV if k in os.environ}
        env["PATH"] = ROOT_PATH
    env.update(
        {
            "HOME": "/root",
            "SUTURE_IN_GUEST": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "SUTURE_OUT": "/run/suture-lab/out",
        }
    )
    env.update(cfg.env)
    lines = ["#!/bin/sh"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    lines.append(f"cd {shlex.quote(str(cwd))} || exit 125")
    lines.append("exec " + shlex.join(argv))
    return "\n".join(lines) + "\n"


# Folders of the other root that host folders must never cover.
_SYSTEM = ("/", "/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/proc", "/sys", "/dev", "/run")


def host_paths(paths: list[Path]) -> list[str]:
    """The host folders another root shows: absolute, once, none a system folder of the root.

    A folder inside one already shown is shown by it; "/" (say, the working
    folder) would hide the root itself, so it and the system folders are left out.
    """
    found = sorted({str(p.resolve()) for p in paths}, key=len)
    out: list[str] = []
    for path in found:
        if path in _SYSTEM or any(path == o or path.startswith(o + "/") for o in out):
            continue
        out.append(path)
    return out


def _tail(text: str, lines: int = 40) -> str:
    """The console's last lines, or from the kernel's first report of failure on."""
    all_lines = text.splitlines()
    first = next(
        (i for i, line in enumerate(all_lines) if any(m in line for m in _FATAL_MARKERS)), None
    )
    if first is not None:
        return "\n".join(all_lines[first : first + lines])
    return "\n".join(all_lines[-lines:])


def run(
    tree: KernelTree,
    argv: list[str],
    cfg: GuestConfig | None = None,
    *,
    cwd: Path | None = None,
    stdout: IO[bytes] | int | None = None,
) -> GuestResult:
    """Boot ``tree`` and run ``argv`` as root in the guest, in ``cwd`` (default: ours).

    The command's stdout and stderr go to ``stdout`` (default: inherited).

    Returns:
        The command's exit status and the guest's console.

    Raises:
        GuestTimeoutError: the command did not end within ``cfg.timeout``.
        GuestError: the guest panicked, oopsed or never ran the command.
    """
    cfg = cfg or GuestConfig()
    if not argv:
        raise UsageError("no command to run in the guest", hint="give one after '--'")
    if shutil.which(QEMU) is None:
        raise ToolMissingError(f"{QEMU} is not installed", hint="apt-get install qemu-system-x86")
    initrd = initramfs.build(tree, cache_dir() / "initramfs")
    kernels.ensure_depmod(tree)
    cwd = cwd or Path.cwd()
    with tempfile.TemporaryDirectory(prefix="suture-lab-") as tmp:
        exchange = Path(tmp)
        (exchange / "cmd.sh").write_text(_command_script(argv, cwd, cfg))
        (exchange / "out").mkdir()
        (exchange / "boot.env").write_text(
            f"SUTURE_MODULES_DIR={shlex.quote(str(tree.modules_dir))}\n"
            f"SUTURE_OTHER_ROOT={'1' if cfg.root is not None else ''}\n"
        )
        if cfg.root is not None:
            (exchange / "host-paths").write_text(
                "".join(f"{p}\n" for p in host_paths([cwd, tree.modules_dir, *cfg.host_paths]))
            )
        start = time.monotonic()
        if not cfg.tcg_threads:
            cfg = dataclasses.replace(cfg, tcg_threads=tcg_threads(tree.release))
        proc = subprocess.Popen(
            _qemu_argv(_bootable(tree), initrd, exchange, cfg),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
        )
        try:
            _, err = proc.communicate(timeout=cfg.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            _copy_out(exchange, cfg)  # what the command finished before it hung
            console = _read(exchange / "console.log")
            raise GuestTimeoutError(
                f"the guest command did not finish within {cfg.timeout:g} s",
                hint="raise --timeout, or look at the console tail for where it hung",
                console_tail=_tail(console),
            ) from None
        except BaseException:  # Ctrl-C: never leave a QEMU behind
            proc.kill()
            proc.wait()
            raise
        seconds = time.monotonic() - start
        console = _read(exchange / "console.log")
        rc_text = _read(exchange / "rc").strip()
        _copy_out(exchange, cfg)
    return _result(proc.returncode, err.decode(errors="replace"), console, rc_text, seconds)


def _copy_out(exchange: Path, cfg: GuestConfig) -> None:
    if cfg.output_dir is not None:
        shutil.copytree(exchange / "out", cfg.output_dir, dirs_exist_ok=True)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


# The code bytes of an oops, the one at the faulting address in <>.
_CODE_AT = re.compile(r"Code: (?:[0-9a-f]{2} )*([0-9a-f]{2}) <[0-9a-f]{2}>")


def stale_int3(console: str) -> str | None:
    """The faulting place of an int3 oops whose int3 is no longer in memory, or None.

    The int3 trap leaves the instruction pointer just past the int3, so the
    oops's code dump has 0xcc before the marked byte, unless the kernel had
    already put the original byte back. The kernel's text-poke protocol
    synchronises every CPU before it does that, so on real hardware this
    cannot happen; QEMU's multi-threaded TCG can still run its old
    translation (ADR 21).
    """
    at = console.find("Oops: int3")
    if at < 0:
        return None
    rest = console[at:]
    code = _CODE_AT.search(rest)
    if code is None or code.group(1) == "cc":
        return None
    rip = re.search(r"RIP: [0-9a-f]{4}:(\S+)", rest)
    return rip.group(1) if rip else "?"


def _result(qemu_rc: int, qemu_err: str, console: str, rc_text: str, seconds: float) -> GuestResult:
    fatal = next((m for m in _FATAL_MARKERS if m in console), None)
    where = stale_int3(console) if fatal is not None else None
    if where is not None:
        raise EmulatorFaultError(
            f"the guest took an int3 at {where} that its code no longer holds: QEMU ran "
            "a stale translation of code the kernel had just rewritten (an emulator fault, "
            "not the kernel's or the patch's)",
            hint="run it again: 'suture test' does so by itself; 'suture lab run "
            "--tcg-threads single' avoids it",
            console_tail=_tail(console),
        )
    if fatal is not None:
        raise GuestError(
            f"the guest kernel failed ({fatal.rstrip(':')})",
            hint="the console tail shows the kernel's report",
            console_tail=_tail(console),
        )
    if not rc_text.isdigit():
        raise GuestError(
            f"the guest stopped before the command ended (qemu exit {qemu_rc}) {qemu_err.strip()}",
            hint="the console tail shows how far the guest came",
            console_tail=_tail(console),
        )
    return GuestResult(returncode=int(rc_text), seconds=seconds, console=console)
