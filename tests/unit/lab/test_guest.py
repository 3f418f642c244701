"""suture.lab.guest: the guest command script and how a finished run is judged (no QEMU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from suture.errors import EmulatorFaultError, GuestError, LabError, UsageError
from suture.lab import guest
from suture.lab.guest import GuestConfig

TRICKY_ARGV = ["a b", "it's", 'say "hi"', "$HOME", "`id`", "*", ""]
REPORT = (
    "import json, os, sys; "
    "print(json.dumps([sys.argv[1:], os.environ['FOO'], os.environ['LANG'], "
    "os.environ['HOME'], os.environ['SUTURE_IN_GUEST'], os.getcwd()]))"
)


@pytest.fixture
def host_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A known host environment: two passed variables and one that must not pass."""
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("CI", "it's true")
    monkeypatch.setenv("SECRET_TOKEN", "do-not-pass")
    monkeypatch.delenv("LC_ALL", raising=False)


@pytest.mark.usefixtures("host_env")
def test_command_script_text(tmp_path: Path) -> None:
    cfg = GuestConfig(env={"FOO": "x y 'z'", "LANG": "de_DE.UTF-8"})
    script = guest._command_script(["pytest", "-k", "a b"], tmp_path / "my dir", cfg)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert script.endswith("\n")
    exports = [line for line in lines if line.startswith("export ")]
    assert exports == sorted(exports)
    assert "export CI='it'\"'\"'s true'" in lines
    assert "export FOO='x y '\"'\"'z'\"'\"''" in lines
    assert "export LANG=de_DE.UTF-8" in lines  # the config wins over the host
    assert "export HOME=/root" in lines
    assert "export SUTURE_IN_GUEST=1" in lines
    assert not any("SECRET_TOKEN" in line for line in lines)
    assert not any(line.startswith("export LC_ALL=") for line in lines)
    assert lines[-2] == f"cd '{tmp_path}/my dir' || exit 125"
    assert lines[-1] == "exec pytest -k 'a b'"


@pytest.mark.usefixtures("host_env")
def test_command_script_runs_argv_verbatim(tmp_path: Path) -> None:
    cwd = tmp_path / "dir with 'quotes' and spaces"
    cwd.mkdir()
    cfg = GuestConfig(env={"FOO": "x y 'z' \"w\" $PATH"})
    script = tmp_path / "cmd.sh"
    script.write_text(guest._command_script([sys.executable, "-c", REPORT, *TRICKY_ARGV], cwd, cfg))
    out = subprocess.run(["/bin/sh", str(script)], check=True, capture_output=True, text=True)
    argv, foo, lang, home, in_guest, where = json.loads(out.stdout)
    assert argv == TRICKY_ARGV
    assert foo == "x y 'z' \"w\" $PATH"
    assert lang == "C.UTF-8"
    assert home == "/root"
    assert in_guest == "1"
    assert where == str(cwd)


def test_command_script_missing_cwd(tmp_path: Path) -> None:
    script = tmp_path / "cmd.sh"
    script.write_text(guest._command_script(["true"], tmp_path / "absent", GuestConfig()))
    result = subprocess.run(["/bin/sh", str(script)], capture_output=True, check=False)
    assert result.returncode == 125


def test_result_returncode() -> None:
    res = guest._result(0, "", "[    0.0] Linux version 6.1.0\n", "3", 1.5)
    assert res.returncode == 3
    assert res.seconds == 1.5
    assert "Linux version" in res.console
    assert guest._result(0, "", "", "0", 0.1).returncode == 0


@pytest.mark.parametrize(
    ("marker", "shown"),
    [
        ("Kernel panic - not syncing: Fatal exception", "Kernel panic"),
        ("Oops: 0000 [#1] PREEMPT SMP NOPTI", "Oops"),
        ("BUG: kernel NULL pointer dereference, address: 0000000000000000", "BUG"),
        ("suture-init: cannot mount hostroot", "suture-init"),
    ],
)
def test_result_fatal_console(marker: str, shown: str) -> None:
    before = "".join(f"[    {i}.0] line {i}\n" for i in range(100))
    after = "".join(f"[  100.0] trace {i}\n" for i in range(100))
    with pytest.raises(GuestError) as e:
        # even a clean rc does not hide a panic
        guest._result(0, "", before + marker + "\n" + after, "0", 2.0)
    assert f"({shown})" in e.value.message
    tail = e.value.console_tail.splitlines()
    assert len(tail) == 40
    assert tail[0] == marker  # the report starts where the kernel first said so
    assert "line 99" not in e.value.console_tail
    assert e.value.to_dict()["console_tail"] == e.value.console_tail
    assert isinstance(e.value, LabError)
    assert e.value.exit_code == 20


@pytest.mark.parametrize("rc_text", ["", "abc", "-1"])
def test_result_without_rc(rc_text: str) -> None:
    with pytest.raises(GuestError, match="stopped before the command ended") as e:
        guest._result(1, "qemu: could not open kernel\n", "early console\n", rc_text, 0.5)
    assert "qemu exit 1" in e.value.message
    assert "could not open kernel" in e.value.message
    assert e.value.console_tail == "early console"


def test_qemu_argv_shape(tmp_path: Path) -> None:
    cfg = GuestConfig(memory_mb=512, cpus=1, extra_cmdline="foo=bar")
    argv = guest._qemu_argv(tmp_path / "vmlinux", tmp_path / "initrd", tmp_path, cfg)
    assert argv[0] == guest.QEMU
    assert "-no-reboot" in argv
    assert argv[argv.index("-m") + 1] == "512"
    assert argv[argv.index("-smp") + 1] == "1"
    assert argv[argv.index("-accel") + 1] == "tcg,thread=multi"
    cmdline = argv[argv.index("-append") + 1]
    assert "panic=-1" in cmdline
    assert "oops=panic" in cmdline
    assert cmdline.endswith("foo=bar")
    kvm = guest._qemu_argv(tmp_path / "k", tmp_path / "i", tmp_path, GuestConfig(accel="kvm"))
    assert kvm[kvm.index("-accel") + 1] == "kvm"


def test_run_without_command_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        guest.run(None, [])  # type: ignore[arg-type]


def test_round_robin_tcg_for_kernels_that_rewrite_the_scheduler() -> None:
    # 6.15+ toggles a static key in __schedule on each transition (ADR 21).
    assert guest.tcg_threads("7.3.4+deb13-amd64") == "single"
    assert guest.tcg_threads("7.2.9+deb13-amd64") == "single"
    assert guest.tcg_threads("6.12.118+deb13-amd64") == "multi"
    assert guest.tcg_threads("6.1.0-57-amd64") == "multi"
    cfg = GuestConfig(tcg_threads="single")
    argv = guest._qemu_argv(Path("k"), Path("i"), Path("x"), cfg)
    assert argv[argv.index("-accel") + 1] == "tcg,thread=single"


ORIGINAL = "0f 1f 44 00 00 0f 1f 44 00 00 0f <1f> 44 00 00 49 8d 85 40 0f 00 00"
OOPS = (
    "[  249.95] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n"
    "[  249.95] RIP: 0010:__schedule+0x411/0xbe0\n"
    "[  249.95] Code: 48 29 c1 49 01 8c 24 98 08 00 00 {code}\n"
    "[  249.95] Kernel panic - not syncing: Fatal exception in interrupt\n"
)


def test_an_int3_no_longer_in_the_code_is_an_emulator_fault() -> None:
    # 6.12.117, trixie-dev 318: the byte before the faulting address is the
    # original again, so the kernel had finished its text poke (ADR 21).
    console = OOPS.format(code=ORIGINAL)
    assert guest.stale_int3(console) == "__schedule+0x411/0xbe0"
    with pytest.raises(EmulatorFaultError) as e:
        guest._result(0, "", console, "0", 2.0)
    assert "__schedule+0x411/0xbe0" in e.value.message and "emulator" in e.value.message
    assert e.value.code == "guest-emulator-fault" and isinstance(e.value, GuestError)


@pytest.mark.parametrize(
    "console",
    [
        OOPS.format(code=ORIGINAL.replace("0f <1f>", "cc <1f>")),  # the int3 is there
        OOPS.replace("Oops: int3", "Oops: general protection fault").format(code=ORIGINAL),
        OOPS.format(code="Unable to access opcode bytes at 0xffffffff81000000."),
    ],
)
def test_other_oopses_stay_the_kernels(console: str) -> None:
    assert guest.stale_int3(console) is None
    with pytest.raises(GuestError) as e:
        guest._result(0, "", console, "0", 2.0)
    assert not isinstance(e.value, EmulatorFaultError)
