"""Pre-match on the host side: a patch that refuses itself is a PrematchError naming the function.

The check itself runs inside the kernel (tests/kernel/test_prematch.py, in a
guest); here the kernel's answer is faked: finit_module fails with EILSEQ
and the log says which function, or a loaded patch lists the module
functions it refused in its ``prematch`` parameter.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from suture.cli.main import main
from suture.errors import LoadError, PrematchError
from suture.kernel import engine, kmsg, module
from tests.support.kernel import BUILD_ID, fake_kernel, put
from tests.support.repo import module_bytes

NAME = "suture_fix"
LOG = (
    "livepatch: enabling patch 'suture_fix'",
    "suture: pre-match: suture_fix: vmlinux:cmdline_proc_show is not the code this patch was "
    "built for (byte 17 of 43): refused",
    "livepatch: pre-patch callback failed for object 'vmlinux'",
)


def refusing_load(path: Path, params: str = "") -> None:
    e = LoadError(f"the kernel refused to load {path.name}: Invalid or incomplete multibyte")
    e.errno = errno.EILSEQ
    raise e


def test_a_patch_that_refuses_itself_names_the_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fake_kernel(tmp_path / "root")
    ko = tmp_path / f"{NAME}.ko"
    ko.write_bytes(module_bytes(NAME, "6.1.0-56-amd64", BUILD_ID))
    monkeypatch.setattr(module, "load", refusing_load)
    monkeypatch.setattr(kmsg.KernelLog, "lines", lambda self: list(LOG))
    with pytest.raises(PrematchError) as e:
        engine.apply(ko, sysroot=root)
    assert (e.value.object, e.value.function, e.value.exit_code) == (
        "vmlinux",
        "cmdline_proc_show",
        31,
    )
    assert "vmlinux:cmdline_proc_show is not the code" in e.value.message
    assert e.value.to_dict()["check"] == "pre-match"
    monkeypatch.setattr(kmsg.KernelLog, "lines", lambda self: [])  # no CAP_SYSLOG: less said
    with pytest.raises(PrematchError, match=r"a function it replaces \(see dmesg\)"):
        engine.apply(ko, sysroot=root)


def test_the_kernel_log_is_read_from_the_moment_it_was_opened(tmp_path: Path) -> None:
    put(tmp_path, "dev/kmsg", "6,1,0,-;an old line\n")
    with kmsg.watching(tmp_path) as log:  # a plain file stands in: read from its end
        assert log.lines() == []
    assert kmsg.KernelLog(tmp_path / "nowhere").lines() == []  # unreadable: nothing, no error


def test_status_shows_what_a_live_patch_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = fake_kernel(tmp_path / "root")
    put(root, f"sys/kernel/livepatch/{NAME}/enabled", "1\n")
    put(root, f"sys/kernel/livepatch/{NAME}/transition", "0\n")
    put(root, f"sys/kernel/livepatch/{NAME}/mrp/patched", "0\n")
    put(root, f"sys/module/{NAME}/parameters/prematch", "mrp:mrp_rcv \n")
    data = engine.status(root)
    assert data["patches"][0]["prematch_refused"] == ["mrp:mrp_rcv"]  # type: ignore[index]
    assert module.prematch_refused("other", root) == ()


def test_status_text_names_the_refused_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = fake_kernel(tmp_path / "root")
    put(root, f"sys/kernel/livepatch/{NAME}/enabled", "1\n")
    put(root, f"sys/kernel/livepatch/{NAME}/transition", "0\n")
    put(root, f"sys/module/{NAME}/parameters/prematch", "mrp:mrp_rcv \n")
    real = engine.status
    monkeypatch.setattr(engine, "status", lambda: real(root))
    main(["status", "--state-dir", str(tmp_path / "state")])
    assert "REFUSED by pre-match: mrp:mrp_rcv" in capsys.readouterr().out
    main(["--json", "status", "--state-dir", str(tmp_path / "state")])
    shown = json.loads(capsys.readouterr().out)
    assert shown["patches"][0]["prematch_refused"] == ["mrp:mrp_rcv"]
