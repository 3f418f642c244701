"""Apply and remove a userspace patch in one process, all or nothing.

Apply, in three short holds so that the pause every thread sees is only the switch::

    refuse? (PID 1, traced, seccomp, shadow stack) -> old code == manifest hashes
      (read without stopping anything: another build is never touched)
    stage   one thread borrowed, the others run on: mmap near the library,
            write header (state "staged") + code, relocate, mprotect r-x
    switch  every thread stopped: old code checked again; no thread inside or
            returning into a replaced function (else resume, wait, stop again ...
            until the time limit: then the staged region is unmapped, untouched);
            header "switching", the 5-byte jumps at the function entries, header
            "live" (an earlier level's header "retired"); detach
    clean   one thread borrowed: regions no jump reaches any more are unmapped

The staged region is unreachable until its jumps are written, so other
threads may run while it is made; the switch stop holds no injected system
call, only reads of memory and registers and the few writes of the jumps.

A previous level of the same patch is replaced in the same switch: its
region must be free of threads too; functions it patched that the new
level does not are given their original bytes back.

Fail-safe: until the jumps are written the process runs its old code, and
nothing written so far is reachable. The injected system calls restore the
borrowed thread by themselves (:mod:`suture.userspace.remote`) and ptrace
seize detaches by itself when the patcher dies, so a patcher killed at any
step leaves a process on its old code (at worst with an unreachable, staged
mapping that the next run unmaps). The jumps of a patch of several functions
are written with the patcher's catchable signals blocked; only a SIGKILL in
the microseconds between two writes can leave some written, and the header
then says "switching": the next apply or unload finishes or undoes them.
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
from suture.userspace import image, procfs, remote, safety, unwind
from suture.userspace import ptrace as pt
from suture.userspace.patch import UserPatch
from suture.userspace.stopped import StoppedProcess

ENDBR64 = bytes.fromhex("f30f1efa")
JUMP_SIZE = 5
_REACH = (1 << 31) - (16 << 20)  # bytes: a rel32 reach, less a margin
KILL_AT = "SUTURE_USERSPACE_KILL_AT"
STEPS = ("borrowed", "mapped", "written", "protected", "stopped", "checked", "safe", "switching",
         "switched")  # fmt: skip


def checkpoint(step: str) -> None:
    """The test hook: die here, as a patcher killed at this step would."""
    if os.environ.get(KILL_AT) == step:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Shared:
    """What one run learns once and uses for every process (build ids, gadgets)."""

    build_ids: dict[tuple[int, str], str] = field(default_factory=dict)
    gadgets: dict[str, tuple[int, int]] = field(default_factory=dict)
    modules: unwind.Modules = field(default_factory=unwind.Modules)  # .eh_frame of each file


_REACHABLE = (image.State.LIVE, image.State.SWITCHING)


@dataclass(frozen=True)
class Applied:
    """A patch region found in a process's memory, from its header page."""

    pid: int
    address: int
    size: int
    record: dict[str, Any]
    state: image.State = image.State.LIVE

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

    @property
    def reachable(self) -> bool:
        """Jumps lead (or may lead, when a switch was cut short) into it."""
        return self.state in _REACHABLE

    def jumps(self) -> list[tuple[int, bytes, bytes]]:
        """(address, original bytes, jump bytes) of each redirected entry."""
        return [
            (int(j["at"]), bytes.fromhex(j["saved"]), bytes.fromhex(j["jump"]))
            for j in self.record.get("jumps", [])
        ]


def regions(
    pid: int, mem: int | None = None, mappings: list[procfs.Mapping] | None = None
) -> list[Applied]:
    """Every Suture patch region in ``pid``, any state: anonymous r-x mappings with our header."""
    found = []
    own = mem is None
    try:
        fd = remote.open_mem(pid) if mem is None else mem
    except OSError:
        return []
    try:
        for m in procfs.maps(pid) if mappings is None else mappings:
            if m.path or not m.executable or m.perms[0] != "r":
                continue
            try:
                page = os.pread(fd, image.PAGE, m.start)
            except OSError:
                continue
            parsed = image.parse_header(page)
            if parsed is not None:
                state, record = parsed
                size = record.get("size", 0)
                size = size if isinstance(size, int) else 0
                found.append(Applied(pid, m.start, size, record, state))
    finally:
        if own:
            os.close(fd)
    return found


def applied_patches(pid: int, mem: int | None = None) -> list[Applied]:
    """The Suture patches live in ``pid`` (a cut-short switch counts: it may have jumps)."""
    return [r for r in regions(pid, mem) if r.reachable]


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
    result: str  # patched, already, removed, absent, refused, failed, busy, mismatch, gone
    reason: str = ""
    level: int = 0
    pause_ms: float = 0.0  # every thread stopped (the switch), summed over tries
    inject_ms: float = 0.0  # one thread stopped for the injected calls (stage and clean)
    seconds: float = 0.0  # the whole operation

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "pid": self.pid, "result": self.result, "reason": self.reason, "level": self.level,
            "pause_ms": round(self.pause_ms, 3), "inject_ms": round(self.inject_ms, 3),
            "seconds": round(self.seconds, 6),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        """Back from :meth:`to_dict` (a worker's answer)."""
        return cls(
            int(data["pid"]), str(data["result"]), str(data.get("reason", "")),
            int(data.get("level", 0)), float(data.get("pause_ms", 0.0)),
            float(data.get("inject_ms", 0.0)), float(data.get("seconds", 0.0)),
        )  # fmt: skip


@dataclass(frozen=True)
class Policy:
    """How long to wait for busy threads, and what to refuse."""

    timeout: float = 3.0  # s, for the threads to leave the replaced code
    allow_init: bool = False
    first_wait: float = 0.001  # s, between tries; doubles up to max_wait
    max_wait: float = 0.05


_BORROW_TRIES = 4  # threads tried in turn (one may exit meanwhile)


class _Session:
    """One process: its memory, its maps as read before any stop, the injector's gadgets."""

    def __init__(self, pid: int, shared: Shared) -> None:
        self.pid = pid
        self.shared = shared
        self.stopped = StoppedProcess(pid)
        self.mem = -1
        self.gadgets: remote.Gadgets | None = None
        self.mappings: list[procfs.Mapping] = []
        self.injected = 0.0  # s, one thread held for injected calls

    def prepare(self) -> None:
        """Read what the holds need before any: maps, libc's gadgets, a handle on memory.

        Raises:
            ProcessRefusedError: the process is gone.
            UserspaceError: it maps no libc.
        """
        self.mappings = procfs.maps(self.pid)
        if not self.mappings:
            raise ProcessRefusedError(f"process {self.pid} is gone", pid=self.pid, reason="gone")
        libc = next(
            (
                lib
                for lib in procfs.libraries(self.pid, self.shared.build_ids, self.mappings)
                if "/libc.so" in lib.path or lib.path.endswith("/libc.so.6")
            ),
            None,
        )
        if libc is None:
            raise UserspaceError(f"process {self.pid} maps no libc to run injected calls with")
        self.gadgets = remote.find_gadgets(libc, self.shared.gadgets)
        self.mem = remote.open_mem(self.pid)

    def close(self) -> None:
        if self.mem >= 0:
            os.close(self.mem)
            self.mem = -1

    @contextlib.contextmanager
    def held(self) -> Iterator[_Session]:
        """Every thread stopped, until the block ends."""
        try:
            self.stopped.stop()
            checkpoint("stopped")
            yield self
        finally:
            self.stopped.release()

    @contextlib.contextmanager
    def borrowed(self) -> Iterator[remote.Injector]:
        """One thread stopped for injected system calls; the others run on."""
        assert self.gadgets is not None  # noqa: S101 - prepare() sets it or raises
        one = StoppedProcess(self.pid)
        try:
            tid = self._borrow(one)
            checkpoint("borrowed")
            yield remote.Injector(self.pid, tid, self.gadgets, self.mem, self.mappings)
        finally:
            one.release()
            self.injected += one.paused

    def _borrow(self, one: StoppedProcess) -> int:
        """Stop one thread to borrow (the main one while it lives), and say which."""
        tids = procfs.threads(self.pid)
        tids.sort(key=lambda t: t != self.pid)
        for tid in tids[:_BORROW_TRIES]:
            if one.stop_one(tid):
                return tid
        raise ProcessRefusedError(f"process {self.pid} is gone", pid=self.pid, reason="gone")

    def read(self, address: int, size: int) -> bytes:
        return os.pread(self.mem, size, address)

    def write(self, address: int, data: bytes) -> None:
        if os.pwrite(self.mem, data, address) != len(data):
            raise UserspaceError(f"short write into process {self.pid} at {address:#x}")

    def wait_until_free(self, ranges: list[tuple[int, int]], policy: Policy) -> None:
        """Return with every thread stopped outside ``ranges``, or raise at the time limit."""
        deadline = time.monotonic() + policy.timeout
        wait = policy.first_wait
        while True:
            busy = safety.busy_threads(
                self.pid, self.stopped.tids, ranges, self.mappings, self.shared.modules
            )
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

    def unmap(self, found: list[tuple[int, int]]) -> None:
        """Unmap regions no jump reaches (staged, retired), borrowing one thread.

        Quietly: a region left behind is unreachable, and the next run unmaps it.
        """
        if not found:
            return
        with contextlib.suppress(UserspaceError, pt.PtraceError, OSError), self.borrowed() as inj:
            for address, size in found:
                inj.munmap(address, size)


def _hole(pid: int, mappings: list[procfs.Mapping], lib: procfs.MappedLibrary, size: int) -> int:
    """A free range of ``size`` bytes within a rel32 reach of the whole library."""
    ends = [m.end for m in mappings if m.path == lib.path]
    if not ends:
        raise ProcessRefusedError(f"process {pid} is gone", pid=pid, reason="gone")
    lib_end = max(ends)
    lo, hi = max(lib_end - _REACH, image.PAGE << 4), lib.base + _REACH - size
    # Nearest first below the library, then above it.
    gaps = [(a.end, b.start) for a, b in itertools.pairwise(mappings)]
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
    s: _Session, patch: UserPatch, lib: procfs.MappedLibrary, live: list[Applied]
) -> None:
    """Every replaced function's bytes (with earlier jumps undone) must hash as built against."""
    saved = {at: orig for p in live for at, orig, _j in p.jumps()}
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


def _stage(s: _Session, where: int, img: image.Image, record: dict[str, Any]) -> None:
    """Map, write and protect the patch region, one thread borrowed; unmapped again on failure.

    A patch without writable data is mapped r-x at once and written through
    ``/proc/PID/mem`` (which writes past protections, as for the jumps): one
    injected call instead of two.
    """
    rx = remote.PROT_READ | remote.PROT_EXEC
    with s.borrowed() as inj:
        inj.mmap(where, img.size, rx if not img.data_size else remote.PROT_READ | remote.PROT_WRITE)
        checkpoint("mapped")
        try:
            head = image.header(record, image.State.STAGED)
            s.write(where, head + img.blob[len(head) :])
            checkpoint("written")
            if img.data_size:
                inj.mprotect(where, img.text_size, rx)
            checkpoint("protected")
        except BaseException:
            with contextlib.suppress(UserspaceError, pt.PtraceError, OSError):
                inj.munmap(where, img.size)
            raise


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
    s = _Session(pid, shared)
    try:
        s.prepare()
        lib = procfs.find(pid, patch.build_id, shared.build_ids, s.mappings)
        if lib is None:
            raise UserspaceError(f"process {pid} does not map the library build {patch.build_id}")
        found = regions(pid, s.mem, s.mappings)
        live = [a for a in found if a.reachable and a.build_id == patch.build_id]
        # A cut-short switch ("switching") is finished by applying again.
        done = all(a.state is image.State.LIVE for a in live)
        if done and any(a.name == patch.name and a.level >= patch.level for a in live):
            return Outcome(pid, "already", level=max(a.level for a in live))
        stale = [(a.address, a.size) for a in found if not a.reachable]
        _check_old_code(s, patch, lib, live)  # before anything is mapped
        img = image.layout(
            patch.obj, _hole(pid, s.mappings, lib, image.plan_size(patch.obj, patch.resolutions)),
            lib.base, patch.resolutions,
        )  # fmt: skip
        record = {
            "format": 2, "name": patch.name, "level": patch.level, "build_id": patch.build_id,
            "soname": patch.manifest.release, "size": img.size, "cves": list(patch.manifest.cves),
            "jumps": [
                {"at": at, "saved": old.hex(), "jump": new.hex()}
                for at, old, new in _plan_jumps(s, patch, lib, img, live)[0]
            ],
        }  # fmt: skip
        _stage(s, img.address, img, record)
        switched = False
        try:
            with s.held():
                _check_old_code(s, patch, lib, live)
                checkpoint("checked")
                jumps, ranges = _plan_jumps(s, patch, lib, img, live)
                ranges += [(p.address, p.address + p.size) for p in live]
                s.wait_until_free(ranges, policy)
                checkpoint("safe")
                _switch(s, img.address, jumps, live)
                switched = True
                checkpoint("switched")
        except BaseException:
            if not switched:  # never unmap what jumps lead into
                s.unmap([(img.address, img.size)])
            raise
        s.unmap(stale + [(p.address, p.size) for p in live])
    finally:
        s.close()
    return Outcome(
        pid, "patched", level=patch.level, pause_ms=s.stopped.paused * 1e3,
        inject_ms=s.injected * 1e3, seconds=time.perf_counter() - began,
    )  # fmt: skip


def _plan_jumps(
    s: _Session, patch: UserPatch, lib: procfs.MappedLibrary, img: image.Image, live: list[Applied]
) -> tuple[list[tuple[int, bytes, bytes]], list[tuple[int, int]]]:
    """The jumps to write (address, original bytes, jump) and the ranges to keep free."""
    jumps, ranges = [], []
    earlier = {at: (orig, jump) for p in live for at, orig, jump in p.jumps()}
    for f in patch.functions:
        start = lib.base + f.offset
        skip = _entry(s.read(start, len(ENDBR64)))
        if f.size < skip + JUMP_SIZE:
            raise UserspaceError(f"{f.name} is too short ({f.size} bytes) for a jump")
        shndx, value = patch.obj.symbol(f.symbol)
        target = img.section_addr[shndx] + value
        at = start + skip
        jump = b"\xe9" + struct.pack("<i", target - (at + JUMP_SIZE))
        # The original bytes, as they are without any earlier level's jump.
        current = s.read(at, JUMP_SIZE)
        orig, old_jump = earlier.get(at, (b"", b""))
        jumps.append((at, orig if current == old_jump else current, jump))
        # A thread stopped at or before the jump site runs the jump once it is
        # written, and a word equal to the entry is a function pointer (dlsym,
        # a vtable), never a return address: only (at, end] is unsafe.
        ranges.append((at + 1, start + f.size))
    return jumps, ranges


def _switch(
    s: _Session, where: int, jumps: list[tuple[int, bytes, bytes]], live: list[Applied]
) -> None:
    """Write the entry jumps; give back the entries only an earlier level redirected.

    The header says "switching" while the jumps are written, with the
    patcher's catchable signals blocked. On an error the entries written so
    far get their bytes back and the header says "staged" again.
    """
    new_at = {at for at, _o, _j in jumps}
    undo: list[tuple[int, bytes]] = []
    blocked = pt.block_signals()
    try:
        s.write(where + image.STATE_AT, image.State.SWITCHING.value)
        checkpoint("switching")
        for at, _orig, jump in jumps:
            undo.append((at, s.read(at, len(jump))))
            s.write(at, jump)
        for p in live:
            for at, orig, jump in p.jumps():
                if at not in new_at and s.read(at, len(jump)) == jump:
                    undo.append((at, jump))
                    s.write(at, orig)
        for p in live:
            s.write(p.address + image.STATE_AT, image.State.RETIRED.value)
        s.write(where + image.STATE_AT, image.State.LIVE.value)
    except BaseException:
        with contextlib.suppress(OSError, UserspaceError):
            for at, before in reversed(undo):
                s.write(at, before)
            for p in live:
                s.write(p.address + image.STATE_AT, p.state.value)
            s.write(where + image.STATE_AT, image.State.STAGED.value)
        raise
    finally:
        pt.restore_signals(blocked)


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
    found = [a for a in regions(pid) if a.name == name]
    live = [a for a in found if a.reachable]
    if not live:
        return Outcome(pid, "absent")
    refused = refusal(pid, allow_init=policy.allow_init)
    if refused is not None:
        raise refused
    s = _Session(pid, shared)
    try:
        s.prepare()
        with s.held():
            s.wait_until_free([(a.address, a.address + a.size) for a in live], policy)
            checkpoint("safe")
            _restore(s, live)
            checkpoint("switched")
        s.unmap([(a.address, a.size) for a in found])
    finally:
        s.close()
    return Outcome(
        pid, "removed", level=max(a.level for a in live), pause_ms=s.stopped.paused * 1e3,
        inject_ms=s.injected * 1e3, seconds=time.perf_counter() - began,
    )  # fmt: skip


def _restore(s: _Session, live: list[Applied]) -> None:
    """The original bytes back at every entry still jumping into ``live``; headers "retired"."""
    blocked = pt.block_signals()
    try:
        for a in live:
            s.write(a.address + image.STATE_AT, image.State.SWITCHING.value)
        for a in live:
            for at, orig, jump in a.jumps():
                if s.read(at, len(jump)) == jump:
                    s.write(at, orig)
        for a in live:
            s.write(a.address + image.STATE_AT, image.State.RETIRED.value)
    finally:
        pt.restore_signals(blocked)


def processes_with(build_id: str, shared: Shared | None = None) -> list[int]:
    """Every process that maps the library build ``build_id`` (containers included)."""
    shared = shared or Shared()
    me = os.getpid()
    return [
        pid for pid in procfs.pids()
        if pid != me and procfs.find(pid, build_id, shared.build_ids) is not None
    ]  # fmt: skip
