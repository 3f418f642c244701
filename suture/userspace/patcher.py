"""Apply and remove a userspace patch in one process, all or nothing.

Apply, with every thread stopped (:mod:`suture.userspace.stopped`)::

    refuse? (PID 1, traced, seccomp, shadow stack) -> stop all threads
      -> old code == manifest hashes (another build is never touched)
      -> mmap near the library, write header + code, relocate, mprotect r-x
      -> no thread inside or returning into a replaced function
         (else resume, wait, stop again ... until the time limit: then unmap, untouched)
      -> write the 5-byte jumps at the function entries -> detach

A previous level of the same patch is replaced in the same stop: its
region must be free of threads too; functions it patched that the new
level does not are given their original bytes back; its region is unmapped.

Fail-safe: until the jumps are written the process runs its old code, and
nothing written so far is reachable. The injected system calls restore the
borrowed thread by themselves (:mod:`suture.userspace.remote`) and ptrace
seize detaches by itself when the patcher dies, so a patcher killed at any
step leaves a process on its old code (at worst with an unreachable mapping).
``SUTURE_USERSPACE_KILL_AT=<step>`` makes the patcher SIGKILL itself at a
step, for the tests that show this.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import signal
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from suture.errors import (
    OldCodeMismatchError,
    ProcessRefusedError,
    SwitchTimeoutError,
    UserspaceError,
)
from suture.userspace import image, procfs, remote, safety
from suture.userspace import ptrace as pt
from suture.userspace.patch import UserPatch
from suture.userspace.stopped import StoppedProcess

ENDBR64 = bytes.fromhex("f30f1efa")
JUMP_SIZE = 5
_REACH = (1 << 31) - (16 << 20)  # bytes: a rel32 reach, less a margin
KILL_AT = "SUTURE_USERSPACE_KILL_AT"
STEPS = ("stopped", "checked", "mapped", "written", "protected", "safe", "switched")


def checkpoint(step: str) -> None:
    """The test hook: die here, as a patcher killed at this step would."""
    if os.environ.get(KILL_AT) == step:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Shared:
    """What one run learns once and uses for every process (build ids, gadgets)."""

    build_ids: dict[tuple[int, str], str] = field(default_factory=dict)
    gadgets: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Applied:
    """A patch found in a process's memory, from its header page."""

    pid: int
    address: int
    size: int
    record: dict[str, Any]

    @property
    def name(self) -> str:
        """The patch's name."""
        return str(self.record.get("name", ""))

    @property
    def level(self) -> int:
        """Its level."""
        return int(self.record.get("level", 0))

    @property
    def build_id(self) -> str:
        """The library build it patches."""
        return str(self.record.get("build_id", ""))

    def jumps(self) -> list[tuple[int, bytes, bytes]]:
        """(address, original bytes, jump bytes) of each redirected entry."""
        return [
            (int(j["at"]), bytes.fromhex(j["saved"]), bytes.fromhex(j["jump"]))
            for j in self.record.get("jumps", [])
        ]


def applied_patches(pid: int, mem: int | None = None) -> list[Applied]:
    """The Suture patches live in ``pid``: anonymous executable mappings with our header."""
    found = []
    own = mem is None
    try:
        fd = remote.open_mem(pid) if mem is None else mem
    except OSError:
        return []
    try:
        for m in procfs.maps(pid):
            if m.path or not m.executable or m.perms[0] != "r":
                continue
            try:
                page = os.pread(fd, image.PAGE, m.start)
            except OSError:
                continue
            record = image.parse_header(page)
            if record is not None:
                size = record.get("size", 0)
                found.append(Applied(pid, m.start, size if isinstance(size, int) else 0, record))
    finally:
        if own:
            os.close(fd)
    return found


def refusal(pid: int, *, allow_init: bool = False) -> ProcessRefusedError | None:  # noqa: PLR0911 - one return per refusal
    """Why Suture will not touch ``pid``, or None."""
    if pid == 1 and not allow_init:
        return ProcessRefusedError(
            "PID 1 (init) is not patched unless asked", pid=pid, reason="init",
            hint="give --allow-init: a fault in init brings the whole host down",
        )  # fmt: skip
    if pid == os.getpid():
        return ProcessRefusedError("Suture does not patch itself", pid=pid, reason="self")
    tracer = procfs.status_field(pid, "TracerPid")
    if not tracer:
        return ProcessRefusedError(f"process {pid} is gone", pid=pid, reason="gone")
    if tracer != "0":
        return ProcessRefusedError(
            f"process {pid} is already traced by {tracer} (a debugger?)", pid=pid, reason="traced",
            hint="detach the debugger, then apply again",
        )  # fmt: skip
    if procfs.status_field(pid, "Seccomp") not in ("", "0"):
        return ProcessRefusedError(
            f"process {pid} runs under a seccomp filter: the injected mmap could be refused "
            "or kill it", pid=pid, reason="seccomp",
            hint="restart it to take the fixed library",
        )  # fmt: skip
    if "shstk" in procfs.status_field(pid, "x86_Thread_features"):
        return ProcessRefusedError(
            f"process {pid} uses a shadow stack", pid=pid, reason="shadow-stack",
            hint="restart it to take the fixed library",
        )  # fmt: skip
    return None


def yama_hint() -> str:
    """What the Yama scope of this host allows, in one sentence."""
    scope = procfs.yama_scope()
    return {
        None: "this kernel has no Yama; ptrace needs the same user or CAP_SYS_PTRACE",
        0: "Yama scope 0: any process of the same user, or any with CAP_SYS_PTRACE",
        1: "Yama scope 1: only descendants, unless the tracer has CAP_SYS_PTRACE (run as root)",
        2: "Yama scope 2: only with CAP_SYS_PTRACE (run as root)",
        3: "Yama scope 3: ptrace is off on this host until reboot; no process can be patched",
    }.get(scope, f"Yama scope {scope}")


@dataclass
class Outcome:
    """What happened in one process."""

    pid: int
    result: str  # patched, already, removed, refused, failed, busy, mismatch
    reason: str = ""
    level: int = 0
    pause_ms: float = 0.0  # threads stopped, summed over tries
    seconds: float = 0.0  # the whole operation

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "pid": self.pid, "result": self.result, "reason": self.reason, "level": self.level,
            "pause_ms": round(self.pause_ms, 3), "seconds": round(self.seconds, 6),
        }  # fmt: skip


@dataclass(frozen=True)
class Policy:
    """How long to wait for busy threads, and what to refuse."""

    timeout: float = 3.0  # s, for the threads to leave the replaced code
    allow_init: bool = False
    first_wait: float = 0.001  # s, between tries; doubles up to max_wait
    max_wait: float = 0.05


class _Session:
    """One process, stopped: memory, the injector, and the library's place."""

    def __init__(self, pid: int, shared: Shared) -> None:
        self.pid = pid
        self.shared = shared
        self.stopped = StoppedProcess(pid)
        self.mem = -1
        self.gadgets: remote.Gadgets | None = None

    def prepare(self) -> None:
        """Find libc's gadgets before the threads stop: the stop should be short."""
        libc = next(
            (
                lib
                for lib in procfs.libraries(self.pid, self.shared.build_ids)
                if "/libc.so" in lib.path or lib.path.endswith("/libc.so.6")
            ),
            None,
        )
        if libc is None:
            raise UserspaceError(f"process {self.pid} maps no libc to run injected calls with")
        self.gadgets = remote.find_gadgets(libc, self.shared.gadgets)

    @contextlib.contextmanager
    def held(self) -> Iterator[_Session]:
        self.stopped.stop()
        checkpoint("stopped")
        try:
            self.mem = remote.open_mem(self.pid)
            yield self
        finally:
            if self.mem >= 0:
                os.close(self.mem)
            self.stopped.release()

    def injector(self) -> remote.Injector:
        if self.gadgets is None:
            self.prepare()
        assert self.gadgets is not None  # noqa: S101 - prepare() sets it or raises
        return remote.Injector(self.pid, _pick_thread(self.stopped.tids), self.gadgets, self.mem)

    def read(self, address: int, size: int) -> bytes:
        return os.pread(self.mem, size, address)

    def wait_until_free(self, ranges: list[tuple[int, int]], policy: Policy) -> None:
        """Return with every thread stopped outside ``ranges``, or raise at the time limit."""
        deadline = time.monotonic() + policy.timeout
        wait = policy.first_wait
        while True:
            busy = safety.busy_threads(self.pid, self.stopped.tids, ranges)
            if not busy:
                return
            if time.monotonic() >= deadline:
                b = busy[0]
                raise SwitchTimeoutError(
                    f"process {self.pid}: thread {b.tid} stayed in replaced code "
                    f"({b.how} {b.address:#x}) for {policy.timeout:g} s; not patched",
                    hint="try again later, or with a longer --timeout",
                )
            self.stopped.resume()
            time.sleep(wait)
            wait = min(wait * 2, policy.max_wait)
            self.stopped.stop()


def _pick_thread(tids: list[int]) -> int:
    """The thread to borrow: one not inside a blocking call if there is one."""
    for tid in tids:
        regs = pt.get_regs(tid)
        if remote._signed(regs.orig_rax) < 0:
            return tid
    return tids[0]


def _hole(pid: int, lib: procfs.MappedLibrary, size: int) -> int:
    """A free range of ``size`` bytes within a rel32 reach of the whole library."""
    ranges = procfs.maps(pid)
    ends = [m.end for m in ranges if m.path == lib.path]
    if not ends:
        raise ProcessRefusedError(f"process {pid} is gone", pid=pid, reason="gone")
    lib_end = max(ends)
    lo, hi = max(lib_end - _REACH, image.PAGE << 4), lib.base + _REACH - size
    # Nearest first below the library, then above it.
    gaps = [(a.end, b.start) for a, b in itertools.pairwise(ranges)]
    below = [g for g in gaps if g[1] <= lib.base]
    above = [g for g in gaps if g[0] >= lib_end]
    for start, end in sorted(below, key=lambda g: -g[1]) + sorted(above):
        cand = (
            (end - size - image.PAGE) & ~(image.PAGE - 1) if end <= lib.base else start + image.PAGE
        )
        if start + image.PAGE <= cand and cand + size + image.PAGE <= end and lo <= cand <= hi:
            return cand
    raise UserspaceError(f"process {pid} has no free room within 2 GiB of {lib.path}")


def _entry(code: bytes) -> int:
    """Where the jump goes in a function: after an ``endbr64`` (indirect calls land there)."""
    return len(ENDBR64) if code.startswith(ENDBR64) else 0


def _check_old_code(
    s: _Session, patch: UserPatch, lib: procfs.MappedLibrary, previous: list[Applied]
) -> None:
    """Every replaced function's bytes (with earlier jumps undone) must hash as built against."""
    saved = {at: orig for p in previous for at, orig, _j in p.jumps()}
    for f in patch.functions:
        start = lib.base + f.offset
        code = bytearray(s.read(start, f.size))
        for at, orig in saved.items():
            if start <= at < start + f.size:
                code[at - start : at - start + len(orig)] = orig
        if hashlib.sha256(code).hexdigest() != f.old_sha256:
            raise OldCodeMismatchError(
                f"process {s.pid}: {f.name} in {lib.path} is not the code {patch.name} was "
                "built against; nothing was changed",
                hint="the library is another build: build the patch for it",
            )


def apply_in_process(
    patch: UserPatch, pid: int, policy: Policy | None = None, shared: Shared | None = None
) -> Outcome:
    """Apply ``patch`` in ``pid`` (a cumulative level replaces the one before it).

    Raises:
        ProcessRefusedError, OldCodeMismatchError, SwitchTimeoutError, UserspaceError:
            nothing was changed in the process (it runs its old code).
    """
    policy = policy or Policy()
    shared = shared or Shared()
    began = time.perf_counter()
    refused = refusal(pid, allow_init=policy.allow_init)
    if refused is not None:
        raise refused
    lib = procfs.find(pid, patch.build_id, shared.build_ids)
    if lib is None:
        raise UserspaceError(f"process {pid} does not map the library build {patch.build_id}")
    previous = [a for a in applied_patches(pid) if a.build_id == patch.build_id]
    if any(a.name == patch.name and a.level >= patch.level for a in previous):
        return Outcome(pid, "already", level=max(a.level for a in previous))
    s = _Session(pid, shared)
    s.prepare()
    size = image.plan_size(patch.obj, patch.resolutions)
    where = _hole(pid, lib, size)
    img = image.layout(patch.obj, where, lib.base, patch.resolutions)
    with s.held():
        _check_old_code(s, patch, lib, previous)
        checkpoint("checked")
        jumps, ranges = _plan_jumps(s, patch, lib, img)
        record = {
            "format": 1, "name": patch.name, "level": patch.level, "build_id": patch.build_id,
            "soname": patch.manifest.release, "size": img.size, "cves": list(patch.manifest.cves),
            "jumps": [{"at": at, "saved": old.hex(), "jump": new.hex()} for at, old, new in jumps],
        }  # fmt: skip
        inj = s.injector()
        inj.mmap(where, img.size, remote.PROT_READ | remote.PROT_WRITE)
        checkpoint("mapped")
        try:
            os.pwrite(s.mem, image.header(record) + img.blob[len(image.header(record)) :], where)
            checkpoint("written")
            inj.mprotect(where, img.text_size, remote.PROT_READ | remote.PROT_EXEC)
            checkpoint("protected")
            for p in previous:
                ranges.append((p.address, p.address + p.size))
            s.wait_until_free(ranges, policy)
        except BaseException:
            _unmap_quietly(s, where, img.size)
            raise
        checkpoint("safe")
        _switch(s, jumps, previous)
        checkpoint("switched")
        for p in previous:
            s.injector().munmap(p.address, p.size)
    return Outcome(
        pid, "patched", level=patch.level, pause_ms=s.stopped.paused * 1e3,
        seconds=time.perf_counter() - began,
    )  # fmt: skip


def _plan_jumps(
    s: _Session, patch: UserPatch, lib: procfs.MappedLibrary, img: image.Image
) -> tuple[list[tuple[int, bytes, bytes]], list[tuple[int, int]]]:
    """The jumps to write (address, original bytes, jump) and the ranges to keep free."""
    jumps, ranges = [], []
    for f in patch.functions:
        start = lib.base + f.offset
        skip = _entry(s.read(start, len(ENDBR64)))
        if f.size < skip + JUMP_SIZE:
            raise UserspaceError(f"{f.name} is too short ({f.size} bytes) for a jump")
        shndx, value = patch.obj.symbol(f.symbol)
        target = img.section_addr[shndx] + value
        at = start + skip
        rel = target - (at + JUMP_SIZE)
        jump = b"\xe9" + struct.pack("<i", rel)
        jumps.append((at, b"", jump))
        # A thread stopped at or before the jump site runs the jump once it is
        # written, and a word equal to the entry is a function pointer (dlsym,
        # a vtable), never a return address: only (at, end] is unsafe.
        ranges.append((at + 1, start + f.size))
    # The original bytes, as they would be without any earlier level's jump.
    out = []
    for at, _o, jump in jumps:
        out.append((at, _original(s, at), jump))
    return out, ranges


def _original(s: _Session, at: int) -> bytes:
    current = s.read(at, JUMP_SIZE)
    for p in applied_patches(s.pid, s.mem):
        for where, orig, jump in p.jumps():
            if where == at and current == jump:
                return orig
    return current


def _switch(s: _Session, jumps: list[tuple[int, bytes, bytes]], previous: list[Applied]) -> None:
    """Write the entry jumps; give back the entries only an earlier level redirected."""
    new_at = {at for at, _o, _j in jumps}
    for at, _orig, jump in jumps:
        os.pwrite(s.mem, jump, at)
    for p in previous:
        for at, orig, _jump in p.jumps():
            if at not in new_at:
                os.pwrite(s.mem, orig, at)


def _unmap_quietly(s: _Session, where: int, size: int) -> None:
    with contextlib.suppress(UserspaceError, pt.PtraceError, OSError):
        if not s.stopped.tids:
            s.stopped.stop()
        s.injector().munmap(where, size)


def unload_in_process(
    name: str, pid: int, policy: Policy | None = None, shared: Shared | None = None
) -> Outcome:
    """Remove patch ``name`` from ``pid``: original bytes back, its region unmapped.

    Raises:
        SwitchTimeoutError: a thread stayed in the patch's code; it stays applied.
        UserspaceError: the process changed under us.
    """
    policy = policy or Policy()
    shared = shared or Shared()
    began = time.perf_counter()
    found = [a for a in applied_patches(pid) if a.name == name]
    if not found:
        return Outcome(pid, "absent")
    refused = refusal(pid, allow_init=policy.allow_init)
    if refused is not None:
        raise refused
    s = _Session(pid, shared)
    s.prepare()
    with s.held():
        ranges = [(a.address, a.address + a.size) for a in found]
        s.wait_until_free(ranges, policy)
        checkpoint("safe")
        for a in found:
            for at, orig, jump in a.jumps():
                if s.read(at, len(jump)) == jump:
                    os.pwrite(s.mem, orig, at)
        checkpoint("switched")
        for a in found:
            s.injector().munmap(a.address, a.size)
    return Outcome(
        pid, "removed", level=found[0].level, pause_ms=s.stopped.paused * 1e3,
        seconds=time.perf_counter() - began,
    )  # fmt: skip


def processes_with(build_id: str, shared: Shared | None = None) -> list[int]:
    """Every process that maps the library build ``build_id`` (containers included)."""
    shared = shared or Shared()
    me = os.getpid()
    return [
        pid for pid in procfs.pids()
        if pid != me and procfs.find(pid, build_id, shared.build_ids) is not None
    ]  # fmt: skip
