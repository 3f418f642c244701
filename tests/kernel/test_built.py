"""Bundles made by `suture build` (tests/test_guest_build.py), applied on their own kernel build."""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.inguest import IN_GUEST, status, suture

BUNDLES = Path(os.environ.get("SUTURE_TEST_BUNDLES", "/nonexistent"))


@pytest.fixture(autouse=True)
def bundles_present() -> None:
    if IN_GUEST and not BUNDLES.is_dir():
        pytest.fail(f"SUTURE_TEST_BUNDLES={BUNDLES} holds no bundles: the harness is broken")


def cmdline() -> str:
    return Path("/proc/cmdline").read_text().strip()


def apply(name: str) -> None:
    suture("apply", str(BUNDLES / f"suture_t_{name}.bundle"))


def needs(name: str, why: str) -> None:
    """Skip unless the harness built this bundle (some series lack its code)."""
    if not (BUNDLES / f"suture_t_{name}.bundle").exists():
        pytest.skip(why)


# 7.x builds no legacy ebtables (CONFIG_BRIDGE_NF_EBTABLES_LEGACY), so no ebtable_filter.
NO_EBTABLE_FILTER = "this build has no ebtable_filter module"


def test_string_change() -> None:
    original = cmdline()
    apply("string")
    assert cmdline() == "v1:" + original
    suture("unload", "suture_t_string")
    assert cmdline() == original


def test_new_function() -> None:
    original = cmdline()
    apply("newfunc")
    assert cmdline() == "tagged:" + original


def test_new_static_local_and_global() -> None:
    original = cmdline()
    apply("statics")
    assert cmdline() == "1/10:" + original
    assert cmdline() == "2/20:" + original  # the state lives on between calls


def test_callbacks_with_kpatch_macros() -> None:
    original = cmdline()
    apply("callbacks")
    assert cmdline() == "cb42:" + original  # the pre-patch callback ran first


def test_shadow_variable() -> None:
    original = cmdline()
    apply("shadow")
    assert cmdline() == "sh1:" + original
    assert cmdline() == "sh2:" + original
    suture("unload", "suture_t_shadow")  # the post-unpatch callback frees the shadow
    apply("shadow")
    assert cmdline() == "sh1:" + original


def test_module_patch_applies_when_the_module_loads() -> None:
    apply("mrp")
    (patch,) = status()["patches"]  # type: ignore[misc]
    assert (
        patch["objects"]
        == [{"name": "mrp", "patched": False, "functions": [{"name": "mrp_rcv", "sympos": 1}]}]
        or patch["objects"][0]["name"] == "mrp"
    )
    subprocess.run(["modprobe", "mrp"], check=True)
    (patch,) = status()["patches"]  # type: ignore[misc]
    assert patch["objects"][0]["patched"]
    log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    assert "applying patch 'suture_t_mrp' to loading module 'mrp'" in log
    suture("unload", "suture_t_mrp")
    subprocess.run(["modprobe", "-r", "mrp"], check=True)


def ebtables_filter_info() -> int:
    """Ask for ebtables' "filter" table (EBT_SO_GET_INFO): the first ask in a netns sets it up."""
    libc = ctypes.CDLL(None, use_errno=True)
    replace = ctypes.create_string_buffer(b"filter", 120)  # struct ebt_replace, name first
    size = ctypes.c_uint(120)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
        return int(libc.getsockopt(s.fileno(), socket.IPPROTO_IP, 128, replace, ctypes.byref(size)))


def test_module_patch_uses_another_modules_export() -> None:
    # Before the fix, a klp symbol of ebtables was looked up in ebtable_filter
    # and the core refused to load the module at all.
    needs("ebt", NO_EBTABLE_FILTER)
    apply("ebt")
    subprocess.run(["modprobe", "ebtable_filter"], check=True)
    try:
        (patch,) = status()["patches"]  # type: ignore[misc]
        assert patch["objects"][0]["name"] == "ebtable_filter"
        assert patch["objects"][0]["patched"]
        assert ebtables_filter_info() == 0  # the new code ran ebtables' ebt_register_table()
        log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
        assert "suture-ebt: filter table set up" in log
    finally:
        suture("unload", "suture_t_ebt")
        subprocess.run(["modprobe", "-r", "ebtable_filter"], check=False)


def test_module_patch_reads_its_modules_static_key(tmp_path: Path) -> None:
    # ext4_sync_fs() with its tracepoint, whose key is ext4's own: the patched
    # copy reads the key, so the event still fires when it is enabled.
    apply("ext4")
    subprocess.run(["modprobe", "-a", "ext4", "loop"], check=True)
    image, mnt = tmp_path / "e4.img", tmp_path / "e4"
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    tracing = Path("/sys/kernel/tracing")
    if not (tracing / "events").exists():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(tracing)], check=True)
    event = tracing / "events/ext4/ext4_sync_fs/enable"
    try:
        (patch,) = status()["patches"]  # type: ignore[misc]
        assert patch["objects"][0]["name"] == "ext4" and patch["objects"][0]["patched"]
        (tracing / "trace").write_text("")
        event.write_text("1")
        (mnt / "x").write_text("x")
        subprocess.run(["sync", "-f", str(mnt / "x")], check=True)
        event.write_text("0")
        assert "ext4_sync_fs" in (tracing / "trace").read_text()
        log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
        assert "suture-ext4: sync_fs" in log
    finally:
        event.write_text("0")
        subprocess.run(["umount", str(mnt)], check=False)
        suture("unload", "suture_t_ext4")


def stack_labels() -> tuple[bool, bool]:
    """Whether /proc/self/maps and /proc/self/numa_maps label the stack (via is_stack())."""
    maps = Path("/proc/self/maps").read_text()
    numa = Path("/proc/self/numa_maps").read_text().splitlines()
    return "[stack]" in maps, any(line.split()[2:3] == ["stack"] for line in numa)


def test_inlined_static_function_is_patched_in_its_callers() -> None:
    needs("inline", "6.1's is_stack() only: later series have no such code (features.py)")
    assert stack_labels() == (True, True)
    apply("inline")
    (patch,) = status()["patches"]  # type: ignore[misc]
    assert {f["name"] for f in patch["objects"][0]["functions"]} == {
        "show_map_vma",
        "show_numa_map",
    }
    assert stack_labels() == (False, False)  # the patched is_stack() never matches
    suture("unload", "suture_t_inline")
    assert stack_labels() == (True, True)


def test_static_inline_is_patched_in_its_caller() -> None:
    status_file = Path("/proc/self/status")
    assert "\nTracerPid:\t" in status_file.read_text()
    apply("inline_caller")
    assert "\nTracerPID:\t" in status_file.read_text()
    suture("unload", "suture_t_inline_caller")
    assert "\nTracerPid:\t" in status_file.read_text()


def stored_oom_score_adj(value: int) -> int:
    """Write ``value`` to this process's oom_score_adj, read back what the kernel kept."""
    path = Path("/proc/self/oom_score_adj")
    before = path.read_text()
    path.write_text(f"{value}\n")
    try:
        return int(path.read_text())
    finally:
        path.write_text(before)


def test_gcc_clone_is_patched() -> None:
    assert stored_oom_score_adj(999) == 999
    apply("clone")
    (patch,) = status()["patches"]  # type: ignore[misc]
    assert patch["objects"][0]["functions"][0]["name"] == "__set_oom_adj.isra.0"
    # With its tracepoint on, the new code's static call into the tracepoint is live too.
    tracing = Path("/sys/kernel/tracing")
    event = tracing / "events/oom/oom_score_adj_update/enable"
    (tracing / "trace").write_text("")
    event.write_text("1\n")
    try:
        assert stored_oom_score_adj(999) == 998
    finally:
        event.write_text("0\n")
    assert "oom_score_adj=998" in (tracing / "trace").read_text()
    assert stored_oom_score_adj(500) == 500
    suture("unload", "suture_t_clone")
    assert stored_oom_score_adj(999) == 999


def test_fix_beside_a_moved_bug_on() -> None:
    personality = Path("/proc/self/personality")
    original = personality.read_text()
    apply("bug_moved")
    assert personality.read_text() == original.strip() + ":p\n"
    assert Path("/proc/self/cmdline").read_bytes()  # proc_pid_cmdline_read, not replaced


def version() -> str:
    return Path("/proc/version").read_text()


def test_fix_of_two_files_of_vmlinux() -> None:
    original, original_version = cmdline(), version()
    apply("two_files")
    (patch,) = status()["patches"]  # type: ignore[misc]
    (obj,) = patch["objects"]
    assert {f["name"] for f in obj["functions"]} == {"cmdline_proc_show", "version_proc_show"}
    assert cmdline() == "c2:" + original
    assert version() == "v2:" + original_version
    suture("unload", "suture_t_two_files")
    assert (cmdline(), version()) == (original, original_version)


def test_fix_of_vmlinux_and_a_module() -> None:
    original = cmdline()
    assert not Path("/sys/module/mrp").exists(), "mrp must load after the patch"
    apply("vmlinux_mrp")
    assert cmdline() == "mx:" + original  # vmlinux is patched at once
    (patch,) = status()["patches"]  # type: ignore[misc]
    objects = {o["name"]: o for o in patch["objects"]}
    assert set(objects) <= {"vmlinux", "mrp"} and objects["vmlinux"]["patched"]
    assert not objects.get("mrp", {}).get("patched", False)
    subprocess.run(["modprobe", "mrp"], check=True)
    try:
        (patch,) = status()["patches"]  # type: ignore[misc]
        objects = {o["name"]: o for o in patch["objects"]}
        assert objects["mrp"]["patched"]
        assert [f["name"] for f in objects["mrp"]["functions"]] == ["mrp_rcv"]
        log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
        assert "applying patch 'suture_t_vmlinux_mrp' to loading module 'mrp'" in log
        assert cmdline() == "mx:" + original
        suture("unload", "suture_t_vmlinux_mrp")
        assert cmdline() == original
    finally:
        subprocess.run(["modprobe", "-r", "mrp"], check=True)


def test_syscall_with_kpatch_syscall_define() -> None:
    original = os.uname().sysname
    apply("kpatch_syscall")
    assert os.uname().sysname == original + ".suture"
    suture("unload", "suture_t_kpatch_syscall")
    assert os.uname().sysname == original


def dmesg() -> str:
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout


def test_acpica_fix_finds_its_files_module_name() -> None:
    # _acpi_module_name is defined by each of ACPICA's files: the patch must
    # print nsxfeval.c's, found among them by its contents.
    apply("acpi")
    for status_file in Path("/sys/bus/acpi/devices").glob("*/status"):
        status_file.read_text()  # evaluates the device's _STA: acpi_evaluate_object()
    assert "suture-acpi: nsxfeval evaluates " in dmesg()
    suture("unload", "suture_t_acpi")


def test_ext4_inline_dir_fix_finds_its_files_table(tmp_path: Path) -> None:
    # ext4_filetype_table is in ext4.ko once per file that uses it, with the same
    # bytes: the relocations of ext4.ko's ext4_read_inline_dir() say which.
    apply("ext4_inline")
    subprocess.run(["modprobe", "-a", "ext4", "loop"], check=True)
    image, mnt = tmp_path / "inline.img", tmp_path / "inline"
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    # Without dir_index, readdir of an inline directory is ext4_read_inline_dir().
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-O", "inline_data,^dir_index", str(image)], check=True
    )
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        (patch,) = status()["patches"]  # type: ignore[misc]
        assert patch["objects"][0]["name"] == "ext4" and patch["objects"][0]["patched"]
        (mnt / "d").mkdir()
        (mnt / "d" / "f").write_text("x")
        assert [p.name for p in (mnt / "d").iterdir()] == ["f"]  # an inline directory
        assert "suture-ext4-inline: dir type 4" in dmesg()  # DT_DIR, from the table
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        suture("unload", "suture_t_ext4_inline")


def test_new_code_of_one_file_used_by_another_file_of_vmlinux() -> None:
    original, original_version = cmdline(), version()
    apply("shared_vmlinux")
    assert cmdline() == "s0:" + original
    assert version() == "v1:" + original_version  # called cmdline.c's new function
    assert cmdline() == "s1:" + original  # which counted in cmdline.c's new counter
    assert "suture-shared: version" in dmesg()
    suture("unload", "suture_t_shared_vmlinux")
    assert (cmdline(), version()) == (original, original_version)


def test_new_code_of_vmlinux_used_by_a_module() -> None:
    needs("shared_module", NO_EBTABLE_FILTER)
    original = cmdline()
    apply("shared_module")
    assert cmdline() == "s0:" + original
    subprocess.run(["modprobe", "ebtable_filter"], check=True)
    try:
        objects = {o["name"]: o for o in status()["patches"][0]["objects"]}  # type: ignore[index]
        assert objects["ebtable_filter"]["patched"]
        assert ebtables_filter_info() == 0  # the patched table set-up ran in a new netns
        assert "suture-shared: ebt" in dmesg()
        assert cmdline() == "s1:" + original
    finally:
        suture("unload", "suture_t_shared_module")
        subprocess.run(["modprobe", "-r", "ebtable_filter"], check=False)
