"""Build every fix of ../shared/patches/stable-dev, then load each in a guest of its kernel.

Prints one JSON document: per patch, built / no-change / refused (with the
reason), and for built ones whether it loaded, transitioned, unloaded, and
kept dmesg clean while a short workload ran (a generic one, and for some
fixes one of their own from bench/workloads.py). A patch for a module counts as
right only if that module then loads and the livepatch core patches it. A
partial fix (ways into carried code left to the old code) lists them.

    .venv/bin/python bench/stable_dev.py [--corpus DIR] [--only ID...] [--kernel RELEASE]
        [--reuse DIR]

The kernel build is the one the corpus' README names as its base
(``linux-image-<release>``), unless ``--kernel`` says otherwise. A corpus
whose manifest has an ``expected_outcome`` column (header-dev) is judged by
it: a fix expected to be refused, or to change nothing, is right when the
builder says so; the others must build, load, unload and keep dmesg clean.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

import workloads  # bench/workloads.py, next to this file

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "patches" / "stable-dev"
RELEASE = "6.1.0-47-amd64"  # stable-dev's base, when a corpus' README names none
WORKLOAD = (
    "ls -R /sys/kernel/livepatch >/dev/null; cat /proc/self/status /proc/cmdline >/dev/null; "
    "ip link >/dev/null; ping -c1 -W1 127.0.0.1 >/dev/null 2>&1; sync; "
    "dd if=/dev/zero of=/tmp/suture-w bs=64k count=16 2>/dev/null; rm -f /tmp/suture-w"
)
# Objects freed through paths several fixes patch (perf events, BPF maps):
# open and close a software perf event and a BPF ring buffer.
WORKLOAD_PY = """
import ctypes, os, struct
libc = ctypes.CDLL(None, use_errno=True)
attr = struct.pack("IIQ", 1, 64, 0) + bytes(48)  # PERF_TYPE_SOFTWARE, cpu-clock
fd = libc.syscall(298, attr, 0, -1, -1, 0)  # perf_event_open
if fd >= 0:
    os.close(fd)
ring = struct.pack("IIIII", 27, 0, 0, 4096, 0) + bytes(100)  # BPF_MAP_TYPE_RINGBUF
fd = libc.syscall(321, 0, ring, len(ring))  # bpf(BPF_MAP_CREATE)
if fd >= 0:
    os.close(fd)
"""
BAD = ("Call Trace", "BUG:", "WARNING:", "Oops")


def base_kernel(corpus: Path) -> str:
    """The build a corpus' patches apply to: the first ``linux-image-<release>`` of its README."""
    readme = corpus / "README.md"
    text = readme.read_text(errors="replace") if readme.exists() else ""
    # 6.1.0-53-amd64 (Debian 12's ABI numbers), 6.12.117+deb13-amd64 and 7.2.9+deb13-amd64
    # (Debian 13 and its backports: the upstream version and the distribution).
    match = re.search(
        r"linux-image-(\d+\.\d+\.\d+(?:-\d+|\+deb\d+(?:\.\d+)?)-(?:[a-z]+-)?[a-z0-9]+)", text
    )
    return match.group(1) if match else RELEASE


def build_all(
    corpus: Path, out: Path, only: list[str], release: str, reuse: Path | None = None
) -> list[dict[str, object]]:
    """Build each fix into ``out``; one whose bundle ``reuse`` holds (an earlier run's) is taken."""
    from suture.builder.pipeline import BuildRequest, build
    from suture.bundle import read_manifest
    from suture.errors import NoChangeError, SutureError
    from suture.lab.kallsyms import GuestKallsyms

    rows = list(csv.DictReader((corpus / "manifest.tsv").open(), delimiter="\t"))
    results = []
    for row in rows:
        if only and row["id"] not in only:
            continue
        patch = next(corpus.rglob(row["patch"]))
        entry: dict[str, object] = {"id": row["id"], "file": row["file"], "target": row["target"]}
        if row.get("expected_outcome"):
            entry["expected"] = row["expected_outcome"].split()[0]
        start = time.monotonic()
        progress = _Tee(sys.stderr)
        earlier = reuse / f"sd_{row['id'][:3]}.bundle" if reuse else None
        if earlier is not None and earlier.exists():
            manifest = read_manifest(earlier)
            objects = {o.name: [f.name for f in o.functions] for o in manifest.objects}
            entry.update(status="built", bundle=str(earlier), functions=objects, reused=True)
            if manifest.unpatched:
                entry["unpatched"] = list(manifest.unpatched)
            print(f"{row['id']}: built (reused {earlier})", file=sys.stderr)
            results.append(entry)
            continue
        try:
            request = BuildRequest(release, patch, out, name=f"sd_{row['id'][:3]}")
            with contextlib.redirect_stderr(progress):
                report = build(request, GuestKallsyms())
            entry.update(status="built", bundle=str(report.bundle), functions=report.objects)
            if report.unpatched:  # a partial fix: these ways keep the old code
                entry["unpatched"] = report.unpatched
        except NoChangeError as e:
            entry.update(status="no-change", reason=e.message)
        except SutureError as e:
            entry.update(status="refused", reason=_first(e.message))
        except Exception as e:  # a builder bug: reported, and the other fixes still run
            entry.update(status="error", reason=f"{type(e).__name__}: {e}")
        entry["build_s"] = round(time.monotonic() - start, 1)
        entry.update(_units(progress.getvalue()))
        print(f"{row['id']}: {entry['status']} {entry.get('reason', '')}", file=sys.stderr)
        results.append(entry)
    return results


def _first(message: str) -> str:
    """A refusal's first line; a first line that announces more (kbuild's output) with its end."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].endswith(":") and len(lines) > 1:
        return " ".join([lines[0], *lines[1:][-3:]])[:600]
    return lines[0]


class _Tee(io.StringIO):
    """Progress lines kept for the result, and shown as they come."""

    def __init__(self, sink: TextIO) -> None:
        super().__init__()
        self.sink = sink

    def write(self, text: str) -> int:
        self.sink.write(text)
        return super().write(text)


def _units(progress: str) -> dict[str, object]:
    """How many units a build compiled (and, for a header fix, how many it looked at)."""
    out: dict[str, object] = {}
    reach = re.search(r"(\d+) of the (\d+) units including the headers", progress)
    if reach:
        out["header_units"] = int(reach.group(1))
        out["including_units"] = int(reach.group(2))
    compiled = re.search(r"compiling (.+) before and after the fix", progress)
    if compiled:
        listed = compiled.group(1)
        more = re.search(r" and (\d+) more$", listed)
        names = listed[: more.start()] if more else listed
        out["units_compiled"] = len(names.split(", ")) + (int(more.group(1)) if more else 0)
    return out


def load_inside(bundles: list[str]) -> None:
    """In the guest: apply, exercise, unload each bundle; one JSON line each."""
    for path in bundles:
        subprocess.run(["dmesg", "-C"], check=False)
        res: dict[str, object] = {"bundle": path}
        apply = subprocess.run(
            [sys.executable, "-m", "suture.cli.main", "apply", path, "--timeout", "30"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        res["loaded"] = apply.returncode == 0
        if apply.returncode != 0:
            res["error"] = apply.stderr.strip().splitlines()[-2:]
        else:
            from suture import bundle

            targets = [o.name for o in bundle.read_manifest(Path(path)).objects]
            modules = [t for t in targets if t != "vmlinux"]
            name = Path(path).stem
            for mod in modules:  # the core patches a module as it loads
                loaded = subprocess.run(["modprobe", mod], capture_output=True, check=False)
                flag = Path(f"/sys/kernel/livepatch/{name}/{mod}/patched")
                patched = flag.exists() and flag.read_text().strip() == "1"
                res.setdefault("modprobe", {})[mod] = loaded.returncode == 0 and patched  # type: ignore[index]
            subprocess.run(["sh", "-c", WORKLOAD], check=False)
            subprocess.run([sys.executable, "-c", WORKLOAD_PY], check=False)
            own = workloads.program(name.removeprefix("sd_"))
            if own is not None:  # this fix's subsystem, more closely
                try:
                    done = subprocess.run([sys.executable, "-c", own], check=False, timeout=60)
                    res["workload"] = "ran" if done.returncode == 0 else f"exit {done.returncode}"
                except subprocess.TimeoutExpired:
                    res["workload"] = "timed out"
            unload = subprocess.run(
                [sys.executable, "-m", "suture.cli.main", "unload", name],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            res["unloaded"] = unload.returncode == 0
            if unload.returncode != 0:
                res["unload_error"] = unload.stderr.strip().splitlines()[-2:]
            for mod in modules:
                subprocess.run(["modprobe", "-r", mod], capture_output=True, check=False)
        log = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
        res["dmesg_clean"] = not any(b in log for b in BAD)
        if not res["dmesg_clean"]:
            res["dmesg"] = log[-1500:]
        print("RESULT " + json.dumps(res), flush=True)


def load_all(bundles: list[str], release: str, out: Path) -> dict[str, dict[str, object]]:
    """Each bundle loaded in a guest of ``release``; a guest that dies fails the bundle it was on.

    The rest go on in a fresh guest, so one panic does not cost the others their result.
    A guest that died of QEMU's stale-code fault is not the bundle's: it is loaded
    again, with round-robin TCG from then on (ADR 21), and the retry is recorded.
    """
    from suture.errors import EmulatorFaultError, GuestError
    from suture.lab import guest
    from suture.packages import kernels

    loads: dict[str, dict[str, object]] = {}
    left = list(bundles)
    threads = ""
    retried: dict[str, str] = {}
    for attempt in range(2 * len(bundles)):
        if not left:
            break
        log = out / f"guest-{attempt}.log"
        died = None
        with log.open("wb") as sink:
            try:
                guest.run(
                    kernels.fetch(release),
                    [sys.executable, str(Path(__file__).resolve()), "--inside", *left],
                    guest.GuestConfig(timeout=3000, tcg_threads=threads),
                    cwd=ROOT,
                    stdout=sink,
                )
            except GuestError as e:
                died = e
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("RESULT "):
                res = json.loads(line[7:])
                loads[str(res.pop("bundle"))] = res
        left = [b for b in left if b not in loads]
        if died is None or not left:
            break
        culprit = left[0]  # the one that was running when the guest died
        if isinstance(died, EmulatorFaultError) and culprit not in retried:
            retried[culprit] = died.message
            threads = "single"
            print(f"{Path(culprit).stem}: {died.message}; again, round robin", file=sys.stderr)
            continue
        left.pop(0)
        loads[culprit] = {
            "loaded": False,
            "error": f"the guest died: {died.message}",
            "console_tail": died.console_tail[-3000:],
        }
        print(f"{Path(culprit).stem}: the guest died ({died.message})", file=sys.stderr)
    for culprit, message in retried.items():
        loads.setdefault(culprit, {})["emulator_fault_retried"] = message
    return loads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--kernel", help="the build to patch (default: the one the README names)")
    parser.add_argument(
        "--reuse", type=Path, help="an earlier run's folder: its bundles are not built again"
    )
    parser.add_argument("--inside", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside is not None:
        load_inside(args.inside)
        return
    out = Path(tempfile.mkdtemp(prefix="suture-stable-dev-"))
    release = args.kernel or base_kernel(args.corpus)
    results = build_all(args.corpus, out, args.only, release, args.reuse)
    bundles = [str(r["bundle"]) for r in results if r["status"] == "built"]
    loads = load_all(bundles, release, out)
    for r in results:
        if r["status"] == "built":
            r.update(loads.get(str(r["bundle"]), {"loaded": False, "error": "no result"}))

    def right(r: dict[str, object]) -> bool:
        expected = r.get("expected")
        if expected in ("refused", "no-change"):
            return r["status"] == expected
        if r["status"] == "no-change":
            return expected is None  # stable-dev: a fix this build does not need is fine
        healthy = r.get("loaded") and r.get("unloaded") and r.get("dmesg_clean")
        modules = r.get("modprobe", {})  # each patched module loaded, and patched as it did
        return r["status"] == "built" and bool(healthy) and all(modules.values())  # type: ignore[union-attr]

    ok = sum(1 for r in results if right(r))
    print(json.dumps({
        "format": 1,
        "bench": "stable-dev",
        "kernel": release,
        "patches": len(results),
        "right": ok,
        "right_share": round(ok / max(len(results), 1), 3),
        "built": sum(1 for r in results if r["status"] == "built"),
        "no_change": sum(1 for r in results if r["status"] == "no-change"),
        "refused": sum(1 for r in results if r["status"] == "refused"),
        "errors": sum(1 for r in results if r["status"] == "error"),
        "partial": sum(1 for r in results if r.get("unpatched")),
        "exercised": sum(1 for r in results if r.get("workload") == "ran"),
        "emulator_faults_retried": sum(1 for r in results if "emulator_fault_retried" in r),
        "by_expected": {
            kind: {
                "fixes": sum(1 for r in results if r.get("expected") == kind),
                "right": sum(1 for r in results if r.get("expected") == kind and right(r)),
            }
            for kind in sorted({str(r["expected"]) for r in results if r.get("expected")})
        },
        "results": results,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
