"""The generic load a bundle is applied under, in the guest: Debian's stress-ng and module churn.

A live patch switches every task at a safe point. A test on an idle guest
would never show a transition that stalls behind busy tasks, a patched
function entered while forking, or a patch's module object that breaks as
modules come and go. So the guest runs a small fixed mix while the patch is
applied and removed: CPU, fork, file I/O, TCP and UDP over loopback
(stress-ng), and a loop that loads and removes a harmless module of the
image. It is kept light: under software emulation the guest runs 10-50x
slower than the host.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from suture.bundle.labtest import LabStep

STRESS_NG = "stress-ng"


@dataclass(frozen=True)
class LoadPlan:
    """What runs, and its time limits.

    Attributes:
        stressors: stress-ng options, one worker each.
        modules: modules with no hardware and no side effects (a CRC table and
            a function); the first one the build ships is loaded and removed in
            a loop (builds drop some: 7.x has no crc7).
        limit: stress-ng's own ``--timeout`` in s; it never outlives a lost runner.
        warmup: s the load runs before the first step, so its workers are busy.
        stop_grace: s stress-ng gets to end after SIGINT before it is killed.
    """

    stressors: tuple[str, ...] = (
        "--cpu", "1", "--cpu-method", "int64",
        "--fork", "1",
        "--hdd", "1", "--hdd-bytes", "4M",
        "--sock", "1",
        "--udp", "1",
    )  # fmt: skip
    modules: tuple[str, ...] = ("crc8", "crc7", "crc_itu_t")
    limit: int = 600
    warmup: float = 3.0
    stop_grace: float = 30.0

    def describe(self) -> str:
        """One line for the test record: what ran."""
        churn = "/".join(self.modules)
        return f"{STRESS_NG} {' '.join(self.stressors)}; modprobe/rmmod {churn} in a loop"


@contextlib.contextmanager
def running(plan: LoadPlan) -> Iterator[Load]:
    """The load, started; stopped when the block ends if :meth:`Load.stop` was not called."""
    with tempfile.TemporaryFile() as output, tempfile.TemporaryDirectory() as workdir:
        load = Load(plan, output, Path(workdir))
        load.start()
        try:
            yield load
        finally:
            load.stop()


class Load:
    """The running load (see :func:`running`); :meth:`stop` says how it went."""

    def __init__(self, plan: LoadPlan, output: IO[bytes], workdir: Path) -> None:
        self.plan = plan
        self._output = output  # stress-ng's messages, for the step's detail
        self._workdir = workdir  # stress-ng's files
        self._stress: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._churn = threading.Thread(target=self._module_loop, daemon=True)
        self._cycles = 0
        self._module = ""  # the first of the plan's modules this build ships
        self._churn_error = ""
        self._started = 0.0
        self._stopped: LabStep | None = None

    def start(self) -> None:
        """Start stress-ng and the module loop, and give them ``warmup`` s to get going."""
        argv = [STRESS_NG, *self.plan.stressors, "--timeout", f"{self.plan.limit}s"]
        argv += ["--temp-path", str(self._workdir)]
        self._started = time.monotonic()
        # A session of its own: stopping it reaches every worker it forked.
        self._stress = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._churn.start()
        time.sleep(self.plan.warmup)

    def _module_loop(self) -> None:
        found = [m for m in self.plan.modules if _ships(m)]
        if not found:
            self._churn_error = f"this build ships none of {', '.join(self.plan.modules)}"
            return
        module = self._module = found[0]
        while not self._stop.is_set():
            for argv in (["modprobe", module], ["rmmod", module]):
                done = subprocess.run(argv, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    self._churn_error = f"{' '.join(argv)}: {done.stderr.strip()[:200]}"
                    return
            self._cycles += 1

    def stop(self) -> LabStep:
        """Stop the load (once); the ``load`` step: ok when both parts ran until now.

        stress-ng ends with status 0 on SIGINT when every stressor ran
        without failing; anything else, or a module loop that broke, fails the step.
        """
        if self._stopped is None:
            self._stopped = self._stop_all()
        return self._stopped

    def _stop_all(self) -> LabStep:
        self._stop.set()
        problems = []
        code = self._stop_stress()
        if code != 0:
            self._output.seek(0)
            tail = self._output.read().decode(errors="replace").strip().splitlines()[-5:]
            problems.append(f"{STRESS_NG} ended with status {code}: " + " | ".join(tail))
        self._churn.join(timeout=self.plan.stop_grace)
        if self._churn_error:
            problems.append(f"module loop stopped: {self._churn_error}")
        if self._module:
            subprocess.run(["rmmod", self._module], capture_output=True, check=False)
        seconds = time.monotonic() - self._started
        detail = "; ".join(problems) or f"{self._cycles} load/unload cycles of {self._module}"
        return LabStep("load", ok=not problems, seconds=round(seconds, 2), detail=detail)

    def _stop_stress(self) -> int | None:
        proc = self._stress
        if proc is None:
            return None
        try:
            os.killpg(proc.pid, signal.SIGINT)
            return proc.wait(timeout=self.plan.stop_grace)
        except ProcessLookupError:  # it ended by itself: its limit, or it failed
            return proc.wait()
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None


def _ships(module: str) -> bool:
    """The running build has ``module`` (modprobe's dry run finds it)."""
    found = subprocess.run(["modprobe", "-n", "-q", module], capture_output=True, check=False)
    return found.returncode == 0
