"""Every process of a host: apply, remove, and say where a userspace patch is live.

A patch goes to every process that maps its library build; status says,
per build, which processes run it, which do not, and which are refused and why.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suture.errors import (
    OldCodeMismatchError,
    ProcessRefusedError,
    SwitchTimeoutError,
    UserspaceError,
)
from suture.userspace import image, patcher, procfs
from suture.userspace import patch as patch_file


@dataclass
class Report:
    """What one apply or unload did across processes."""

    name: str
    build_id: str
    outcomes: list[patcher.Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, *results: str) -> int:
        """How many processes ended with one of ``results``."""
        return sum(1 for o in self.outcomes if o.result in results)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "name": self.name, "build_id": self.build_id, "seconds": round(self.seconds, 6),
            "processes": [o.to_dict() for o in self.outcomes],
        }  # fmt: skip


def _alive(pid: int) -> bool:
    """The process still exists and is not a zombie."""
    return procfs.status_field(pid, "State")[:1] not in ("", "Z", "X")


def guarded(pid: int, action: Any) -> patcher.Outcome:
    """Run ``action`` for one process; turn its refusal or failure into an outcome.

    A host scan meets processes that exit while they are looked at (compilers,
    shells): one that is gone by the time of its error is ``gone``, not a failure.
    ``ValueError`` and ``struct.error`` are what a process's memory or file that
    changed under us makes the parsers raise.
    """
    try:
        outcome: patcher.Outcome = action()
    except ProcessRefusedError as e:
        result = "gone" if e.reason == "gone" else "refused"
        return patcher.Outcome(pid, result, reason=f"{e.reason}: {e.message}")
    except OldCodeMismatchError as e:
        return patcher.Outcome(pid, "mismatch", reason=e.message)
    except SwitchTimeoutError as e:
        return patcher.Outcome(pid, "busy", reason=e.message)
    except (UserspaceError, OSError, ValueError, struct.error) as e:
        if not _alive(pid):
            return patcher.Outcome(pid, "gone", reason=str(e))
        return patcher.Outcome(pid, "failed", reason=str(e))
    return outcome


def _spread(
    targets: list[int], workers: int, one: Callable[[int], patcher.Outcome]
) -> list[patcher.Outcome]:
    """``one(pid)`` for every target, in ``workers`` forked processes when there are many.

    Each process is handled whole by one worker (the ptrace tracer is the
    worker that seized it). Python holds one CPU per process; most of a
    process's patching is Python, so workers are what use a host's cores.
    A worker that dies leaves its processes as its patcher left them (never
    half patched); they are reported ``failed``.
    """
    if workers <= 1 or len(targets) < 2 * workers:
        return [one(pid) for pid in targets]
    children = []
    for chunk in (targets[i::workers] for i in range(workers)):
        r, w = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the worker
            os.close(r)
            code = 0
            try:
                data = json.dumps([one(pid).to_dict() for pid in chunk]).encode()
                with os.fdopen(w, "wb") as f:
                    f.write(data)
            except BaseException:  # a worker must never return into the caller
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        children.append((child, r, chunk))
    outcomes = []
    for child, r, chunk in children:
        with os.fdopen(r, "rb") as f:
            data = f.read()
        os.waitpid(child, 0)
        try:
            outcomes += [patcher.Outcome.from_dict(d) for d in json.loads(data)]
        except ValueError:
            outcomes += [patcher.Outcome(pid, "failed", reason="the worker died") for pid in chunk]
    return outcomes


def apply(
    bundle: Path,
    pids: Iterable[int] = (),
    policy: patcher.Policy | None = None,
    *,
    workers: int = 1,
) -> Report:
    """Apply the userspace bundle in ``pids`` (default: every process mapping its library)."""
    began = time.perf_counter()
    p = patch_file.load(bundle)
    shared = patcher.Shared()
    targets = list(pids) or patcher.processes_with(p.build_id, shared)
    report = Report(p.name, p.build_id)
    report.outcomes = _spread(
        targets,
        workers,
        lambda pid: guarded(pid, lambda: patcher.apply_in_process(p, pid, policy, shared)),
    )
    report.seconds = time.perf_counter() - began
    return report


def unload(
    name: str,
    pids: Iterable[int] = (),
    policy: patcher.Policy | None = None,
    *,
    workers: int = 1,
) -> Report:
    """Remove patch ``name`` from ``pids`` (default: every process that has it)."""
    began = time.perf_counter()
    shared = patcher.Shared()
    targets = list(pids) or [
        pid for pid in procfs.pids() if any(a.name == name for a in patcher.applied_patches(pid))
    ]
    report = Report(name, "")
    report.outcomes = _spread(
        targets,
        workers,
        lambda pid: guarded(pid, lambda: patcher.unload_in_process(name, pid, policy, shared)),
    )
    report.seconds = time.perf_counter() - began
    return report


def status(build_ids: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Per library build: processes patched (by patch and level), unpatched, refused and why.

    Without ``build_ids``, the builds that some process has a Suture patch for.
    """
    shared = patcher.Shared()
    applied = {pid: patcher.applied_patches(pid) for pid in procfs.pids()}
    wanted = set(build_ids) | {a.build_id for found in applied.values() for a in found}
    rows = []
    for build_id in sorted(wanted):
        patched: dict[str, list[int]] = {}
        unpatched: list[int] = []
        refused: dict[str, list[int]] = {}
        soname = ""
        for pid, found in applied.items():
            mine = [a for a in found if a.build_id == build_id]
            if mine:
                a = max(mine, key=lambda a: a.level)
                soname = soname or str(a.record.get("soname", ""))
                if a.state is image.State.SWITCHING:  # a patcher was killed mid-switch
                    refused.setdefault("interrupted", []).append(pid)
                else:
                    patched.setdefault(f"{a.name} L{a.level}", []).append(pid)
                continue
            if procfs.find(pid, build_id, shared.build_ids) is None:
                continue
            why = patcher.refusal(pid)
            if why is not None:
                refused.setdefault(why.reason, []).append(pid)
            else:
                unpatched.append(pid)
        rows.append({
            "build_id": build_id, "library": soname,
            "patched": {k: sorted(v) for k, v in patched.items()},
            "unpatched": sorted(unpatched), "refused": {k: sorted(v) for k, v in refused.items()},
        })  # fmt: skip
    return rows
