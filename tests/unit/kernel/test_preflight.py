"""suture.kernel.preflight: each check refuses with its own name and a message that says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from suture.errors import PreflightError
from suture.kernel import preflight
from suture.kernel.livepatch import LivepatchSysfs
from suture.kernel.modinfo import ModInfo
from suture.kernel.preflight import PatchCandidate
from tests.support.kernel import BUILD_ID, RELEASE, SIGNATURE_MAGIC, VERMAGIC, identity, put

OTHER_BUILD_ID = "fedcba9876543210fedcba9876543210fedcba98"


def candidate(
    tmp_path: Path,
    *,
    name: str = "suture_fix",
    vermagic: str = VERMAGIC,
    livepatch: bool = True,
    build_id: str = "",
    modinfo_build_id: str | None = None,
    functions: tuple[str, ...] = (),
    signed: bool = False,
) -> PatchCandidate:
    """A candidate whose file exists (signed or not) and whose modinfo is made up."""
    path = tmp_path / f"{name}.ko"
    path.write_bytes(b"\x7fELF" + b"\0" * 60 + (SIGNATURE_MAGIC if signed else b""))
    fields = {"vermagic": [vermagic], "name": [name], "depends": [""]}
    if livepatch:
        fields["livepatch"] = ["Y"]
    if modinfo_build_id is not None:
        fields["suture_build_id"] = [modinfo_build_id]
    return PatchCandidate(path, ModInfo(path=path, fields=fields), build_id, functions)


def test_candidate_name_is_the_module_name(tmp_path: Path) -> None:
    assert candidate(tmp_path, name="suture_fix").name == "suture_fix"


def test_check_livepatch() -> None:
    preflight.check_livepatch(identity())
    with pytest.raises(PreflightError) as e:
        preflight.check_livepatch(identity(livepatch=False))
    assert e.value.check == "livepatch"
    assert RELEASE in e.value.message
    assert "CONFIG_LIVEPATCH" in e.value.hint
    assert e.value.to_dict()["check"] == "livepatch"


def test_check_is_livepatch(tmp_path: Path) -> None:
    preflight.check_is_livepatch(candidate(tmp_path))
    with pytest.raises(PreflightError) as e:
        preflight.check_is_livepatch(candidate(tmp_path, livepatch=False))
    assert e.value.check == "livepatch-module"
    assert "suture_fix.ko" in e.value.message
    assert "not a live patch" in e.value.message


def test_check_build_accepts_the_same_build(tmp_path: Path) -> None:
    preflight.check_build(candidate(tmp_path, build_id=BUILD_ID), identity())
    preflight.check_build(candidate(tmp_path, modinfo_build_id=BUILD_ID), identity())
    # Unknown on either side: the release alone decides.
    preflight.check_build(candidate(tmp_path), identity())
    preflight.check_build(candidate(tmp_path, build_id=BUILD_ID), identity(build_id=""))


def test_check_build_refuses_another_release(tmp_path: Path) -> None:
    cand = candidate(tmp_path, vermagic="6.1.0-47-amd64 SMP preempt mod_unload modversions ")
    with pytest.raises(PreflightError) as e:
        preflight.check_build(cand, identity())
    assert e.value.check == "kernel-build"
    assert "6.1.0-47-amd64" in e.value.message
    assert RELEASE in e.value.message
    assert f"build id {BUILD_ID[:12]}" in e.value.message  # the running kernel's
    assert RELEASE in e.value.hint


def test_check_build_refuses_another_build_of_the_same_release(tmp_path: Path) -> None:
    for cand in (
        candidate(tmp_path, build_id=OTHER_BUILD_ID),
        candidate(tmp_path, modinfo_build_id=OTHER_BUILD_ID),
    ):
        with pytest.raises(PreflightError) as e:
            preflight.check_build(cand, identity())
        assert e.value.check == "kernel-build"
        assert "same release, another build" in e.value.message
        assert OTHER_BUILD_ID[:12] in e.value.message
        assert BUILD_ID[:12] in e.value.message


def test_check_build_manifest_id_wins_over_modinfo(tmp_path: Path) -> None:
    cand = candidate(tmp_path, build_id=BUILD_ID, modinfo_build_id=OTHER_BUILD_ID)
    preflight.check_build(cand, identity())


def test_check_signature_not_needed(tmp_path: Path) -> None:
    preflight.check_signature(candidate(tmp_path), identity())


@pytest.mark.parametrize(
    ("lockdown", "sig_enforce", "why"),
    [
        ("none", True, "(sig_enforce)"),
        ("", True, "(sig_enforce)"),
        ("integrity", False, "(lockdown=integrity)"),
        ("confidentiality", True, "(lockdown=confidentiality)"),
    ],
)
def test_check_signature_refuses_unsigned(
    tmp_path: Path, lockdown: str, sig_enforce: bool, why: str
) -> None:
    ident = identity(lockdown=lockdown, sig_enforce=sig_enforce)
    with pytest.raises(PreflightError) as e:
        preflight.check_signature(candidate(tmp_path), ident)
    assert e.value.check == "signature"
    assert "not signed" in e.value.message
    assert why in e.value.message
    # The same module with the sign-file trailer passes.
    preflight.check_signature(candidate(tmp_path, signed=True), ident)


def test_check_not_loaded(tmp_path: Path) -> None:
    lp = LivepatchSysfs(tmp_path / "root")
    cand = candidate(tmp_path)
    preflight.check_not_loaded(cand, lp)
    (tmp_path / "root/sys/kernel/livepatch/suture_fix").mkdir(parents=True)
    with pytest.raises(PreflightError) as e:
        preflight.check_not_loaded(cand, lp)
    assert e.value.check == "already-loaded"
    assert "suture_fix" in e.value.message
    assert "suture unload suture_fix" in e.value.hint


def test_check_not_loaded_refuses_a_kept_module(tmp_path: Path) -> None:
    # Disabled, but its module kept itself loaded (docs/adr/0010): it cannot load again.
    lp = LivepatchSysfs(tmp_path / "root")
    kept = tmp_path / "root/sys/module/suture_fix/parameters/kept"
    kept.parent.mkdir(parents=True)
    kept.write_text("Y\n")
    with pytest.raises(PreflightError, match="stays loaded from an earlier use") as e:
        preflight.check_not_loaded(candidate(tmp_path), lp)
    assert e.value.check == "already-loaded"


ENABLED_FUNCTIONS = (
    "cmdline_proc_show (1) R I   \ttramp: 0xffffffffc0000000 (bpf_tramp_handler+0x0/0x1e0)\n"
    "meminfo_proc_show (1) R I   \ttramp: 0xffffffffc0002000 (klp_ftrace_handler+0x0/0x1e0)\n"
    "vfs_read (1) R     \ttramp: 0xffffffffc0001000 (kprobe_ftrace_handler+0x0/0x1d0)\n"
    "schedule (2)           \n"
    "\n"
)
KPROBES = (
    "ffffffff81234567  k  do_sys_open+0x0    [FTRACE]\n"
    "ffffffff81345678  k  vfs_write+0x10    \n"
    "ffffffff81456789  r  cmdline_proc_show+0x0    [FTRACE]\n"
    "garbage\n"
)


def tracing_root(tmp_path: Path, tracefs: str = "sys/kernel/tracing") -> Path:
    root = tmp_path / "root"
    put(root, f"{tracefs}/enabled_functions", ENABLED_FUNCTIONS)
    put(root, "sys/kernel/debug/kprobes/list", KPROBES)
    return root


def test_ftrace_conflicts(tmp_path: Path) -> None:
    root = tracing_root(tmp_path)
    wanted = ("cmdline_proc_show", "vfs_read", "schedule", "do_sys_open", "vfs_write", "ksys_read")
    found = preflight.ftrace_conflicts((*wanted, "meminfo_proc_show"), root)
    assert found == {
        # An IPMODIFY ftrace user that is not the livepatch core (another live
        # patch, on meminfo_proc_show, stacks); the kretprobe on it comes second.
        "cmdline_proc_show": "an ftrace user that modifies the instruction pointer",
        "do_sys_open": "a kprobe",
        "vfs_write": "a kprobe",
    }
    # vfs_read has an ftrace user without IPMODIFY and no kprobe: no conflict.
    assert preflight.ftrace_conflicts(("vfs_read", "schedule", "ksys_read"), root) == {}
    assert preflight.ftrace_conflicts((), root) == {}


def test_ftrace_conflicts_under_debugfs(tmp_path: Path) -> None:
    root = tracing_root(tmp_path, "sys/kernel/debug/tracing")
    found = preflight.ftrace_conflicts(("cmdline_proc_show",), root)
    assert found == {"cmdline_proc_show": "an ftrace user that modifies the instruction pointer"}


def test_ftrace_conflicts_nothing_visible(tmp_path: Path) -> None:
    assert preflight.ftrace_conflicts(("cmdline_proc_show",), tmp_path) == {}


def test_ftrace_conflicts_on_a_module_function(tmp_path: Path) -> None:
    root = tmp_path / "root"
    put(
        root,
        "sys/kernel/tracing/enabled_functions",
        "ext4_file_open [ext4] (1) R I   \ttramp: 0xffffffffc0000000\n",
    )
    assert preflight.ftrace_conflicts(("ext4_file_open",), root) == {
        "ext4_file_open": "an ftrace user that modifies the instruction pointer"
    }


def test_check_ftrace(tmp_path: Path) -> None:
    root = tracing_root(tmp_path)
    preflight.check_ftrace(candidate(tmp_path, functions=("vfs_read",)), root)
    cand = candidate(tmp_path, functions=("do_sys_open", "cmdline_proc_show"))
    with pytest.raises(PreflightError) as e:
        preflight.check_ftrace(cand, root)
    assert e.value.check == "ftrace"
    # The first conflict by name is reported.
    assert e.value.message.startswith("cmdline_proc_show is held by an ftrace user")


def test_run_all_happy_path(tmp_path: Path) -> None:
    root = tracing_root(tmp_path)
    (root / "sys/kernel/livepatch/other_patch").mkdir(parents=True)
    cand = candidate(tmp_path, build_id=BUILD_ID, functions=("vfs_read",), signed=True)
    preflight.run_all(cand, identity(lockdown="integrity"), LivepatchSysfs(root))


@pytest.mark.parametrize(
    ("change", "check"),
    [
        ({"ident": {"livepatch": False}, "cand": {"livepatch": False}}, "livepatch"),
        ({"cand": {"livepatch": False, "vermagic": "5.10.0-1-amd64 SMP"}}, "livepatch-module"),
        (
            {"cand": {"vermagic": "5.10.0-1-amd64 SMP"}, "ident": {"sig_enforce": True}},
            "kernel-build",
        ),
        ({"ident": {"sig_enforce": True}, "loaded": True}, "signature"),
        ({"loaded": True, "cand": {"functions": ("do_sys_open",)}}, "already-loaded"),
        ({"cand": {"functions": ("do_sys_open",)}}, "ftrace"),
    ],
)
def test_run_all_order(tmp_path: Path, change: dict[str, object], check: str) -> None:
    """Each case also breaks a later check; the earlier (cheaper) check is the one reported."""
    root = tracing_root(tmp_path)
    (root / "sys/kernel/livepatch").mkdir(parents=True)
    if change.get("loaded"):
        (root / "sys/kernel/livepatch/suture_fix").mkdir()
    cand = candidate(tmp_path, **change.get("cand", {}))  # type: ignore[arg-type]
    ident = identity(**change.get("ident", {}))  # type: ignore[arg-type]
    with pytest.raises(PreflightError) as e:
        preflight.run_all(cand, ident, LivepatchSysfs(root))
    assert e.value.check == check
