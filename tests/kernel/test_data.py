"""Bundles that copy read-only data or redirect stored pointers (tests/test_guest_data.py).

Kernel memory is read through /proc/kcore at the addresses /proc/kallsyms
gives (root sees them), so the tests see what a slot holds, not only what it
does. A module that keeps itself loaded stays for the rest of the boot:
each test uses bundles of its own names.
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from tests.support.inguest import IN_GUEST, status, suture

BUNDLES = Path(os.environ.get("SUTURE_TEST_BUNDLES", "/nonexistent"))
TRACING = Path("/sys/kernel/tracing")
REFUSE = TRACING / "options/test_nop_refuse"  # nop_set_flag() refuses it, until patched


@pytest.fixture(autouse=True)
def bundles_present() -> None:
    if IN_GUEST and not BUNDLES.is_dir():
        pytest.fail(f"SUTURE_TEST_BUNDLES={BUNDLES} holds no bundles: the harness is broken")
    if IN_GUEST and not (TRACING / "options").exists():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACING)], check=True)


def ksym(name: str, module: str = "") -> int:
    """The address of ``name`` in /proc/kallsyms (of ``module`` when given)."""
    for line in Path("/proc/kallsyms").read_text().splitlines():
        fields = line.split()
        if fields[2] == name and (not module or fields[3:] == [f"[{module}]"]):
            return int(fields[0], 16)
    raise LookupError(f"{name} {module}")


def read_kernel(address: int, size: int) -> bytes:
    """``size`` bytes of kernel memory at ``address`` (/proc/kcore)."""
    with Path("/proc/kcore").open("rb") as f:
        for seg in ELFFile(f).iter_segments():
            start, length = seg["p_vaddr"], seg["p_memsz"]
            if seg["p_type"] == "PT_LOAD" and start <= address < start + length:
                f.seek(seg["p_offset"] + address - start)
                return f.read(size)
    raise LookupError(hex(address))


def slot_address() -> int:
    """Where nop_trace holds its set_flag pointer (the one that holds nop_set_flag now)."""
    base, target = ksym("nop_trace"), ksym("nop_set_flag")
    data = read_kernel(base, 0x100)
    for offset in range(0, len(data), 8):
        if int.from_bytes(data[offset : offset + 8], "little") == target:
            return base + offset
    raise LookupError("nop_trace holds no pointer to nop_set_flag")


def slot_value(address: int) -> int:
    return int.from_bytes(read_kernel(address, 8), "little")


def nop_refuse(value: str) -> int:
    """Write the nop tracer's test_nop_refuse option: 0, or the errno the kernel returned."""
    try:
        REFUSE.write_text(value)
    except OSError as e:
        return e.errno or -1
    return 0


def kept(name: str) -> bool:
    return Path(f"/sys/module/{name}/parameters/kept").read_text().strip() == "Y"


def apply(name: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    return suture("apply", str(BUNDLES / f"suture_t_{name}.bundle"), expect=expect)


def test_changed_string_table_is_carried_as_a_copy() -> None:
    def state() -> str:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines()
                    if x.startswith("State:"))  # fmt: skip
        return line.split("\t", 1)[1]

    assert state() == "R (running)"
    apply("states")
    assert state() == "R (running, patched)"
    assert Path("/proc/self/stat").read_text().split()[2] == "R"  # do_task_stat reads it too
    suture("unload", "suture_t_states")
    assert state() == "R (running)"
    assert not Path("/sys/module/suture_t_states").exists()  # read only: the module goes


def test_a_global_table_copy_is_used_from_another_file() -> None:
    def unmovable() -> list[str]:
        info = Path("/proc/pagetypeinfo").read_text()  # mm/vmstat.c
        return [w for w in info.split() if w.startswith("Unmovable")]

    assert set(unmovable()) == {"Unmovable"}
    apply("names")
    assert set(unmovable()) == {"Unmovable*"}
    suture("unload", "suture_t_names")
    assert set(unmovable()) == {"Unmovable"}
    assert not Path("/sys/module/suture_t_names").exists()


def test_changed_ops_struct_is_carried_and_its_module_kept() -> None:
    def first_line() -> str:
        return Path("/proc/self/maps").read_text().splitlines()[0]

    assert not first_line().startswith("suture:")
    apply("maps")
    assert first_line().startswith("suture:")
    with Path("/proc/self/maps").open() as opened:  # seq_file->op is the module's copy
        shown = suture("unload", "suture_t_maps").stdout
        assert "its module stays loaded" in shown
        assert not first_line().startswith("suture:")  # new opens use the kernel's table
        assert opened.readline().startswith("suture:")  # the open file still uses the copy
    assert kept("suture_t_maps")
    # Disabled for good: the same patch cannot load again before a reboot.
    assert "stays loaded from an earlier use" in apply("maps", expect=31).stderr


def test_stored_pointer_redirected_and_put_back() -> None:
    slot, original = slot_address(), ksym("nop_set_flag")
    assert nop_refuse("1") == errno.EINVAL
    apply("slot")
    copy = ksym("__suture_new_nop_set_flag", "suture_t_slot")
    assert slot_value(slot) == copy
    assert nop_refuse("1") == 0  # the carried copy accepts it
    assert nop_refuse("0") == 0
    (patch,) = status()["patches"]  # type: ignore[misc]
    assert patch["objects"] == [{"name": "vmlinux", "patched": True, "functions": []}]
    suture("unload", "suture_t_slot")
    assert slot_value(slot) == original
    assert nop_refuse("1") == errno.EINVAL
    assert kept("suture_t_slot")
    log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    assert "suture_t_slot: the module stays loaded: a pointer stored in the kernel" in log


def test_a_slot_that_does_not_hold_the_kernels_function_refuses_the_patch() -> None:
    slot = slot_address()
    poke = BUNDLES / "poke/suture_slot_poke.ko"
    subprocess.run(["insmod", str(poke), f"addr={slot}"], check=True)
    try:
        assert slot_value(slot) == ksym("suture_poke_set_flag", "suture_slot_poke")
        assert "Invalid argument" in apply("poked", expect=32).stderr
        assert status()["patches"] == []  # the kernel stays unpatched
        log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
        assert "suture_t_poked: nop_trace+0x" in log and "not patching" in log
    finally:
        subprocess.run(["rmmod", "suture_slot_poke"], check=True)
    assert slot_value(slot) == ksym("nop_set_flag")


def test_levels_take_over_and_give_back_the_slot() -> None:
    slot, original = slot_address(), ksym("nop_set_flag")
    apply("lvl1")
    assert slot_value(slot) == ksym("__suture_new_nop_set_flag", "suture_t_lvl1")
    # Level 2 replaces level 1 (whose callbacks the core does not call) and takes over.
    assert "suture_t_lvl1 kept loaded" in apply("lvl2").stdout
    assert slot_value(slot) == ksym("__suture_new_nop_set_flag", "suture_t_lvl2")
    subprocess.run(["dmesg", "-C"], check=True)
    assert nop_refuse("1") == 0
    log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    assert "suture level 2 accepts" in log
    assert nop_refuse("0") == 0
    # Level 3 no longer has that fix: the slot goes back to the kernel's function.
    cmdline = Path("/proc/cmdline").read_text()
    apply("lvl3")
    assert slot_value(slot) == original
    assert nop_refuse("1") == errno.EINVAL
    assert Path("/proc/cmdline").read_text() == "l3:" + cmdline
    assert kept("suture_t_lvl2")
    suture("unload", "suture_t_lvl3")
    assert not Path("/sys/module/suture_t_lvl3").exists()  # it redirected nothing: it goes


def test_a_task_inside_the_copy_when_the_slot_is_put_back() -> None:
    # The livepatch core's stack check does not see a task that reached the
    # copy through the slot: it is still inside when the patch goes. The module
    # stays, so it returns into code that is still there.
    slot, original = slot_address(), ksym("nop_set_flag")
    apply("sleepy")
    result: list[int] = []
    writer = threading.Thread(target=lambda: result.append(nop_refuse("1")))
    start = time.monotonic()
    writer.start()
    time.sleep(0.5)  # the writer now sleeps in the carried copy (12 s)
    suture("unload", "suture_t_sleepy")
    assert slot_value(slot) == original
    assert writer.is_alive(), "the unpatch waited for the task in the copy"
    writer.join()
    assert result == [0] and time.monotonic() - start >= 12
    assert kept("suture_t_sleepy")
    assert nop_refuse("0") == errno.EINVAL  # the kernel's function again


def test_a_modules_slot_follows_the_module() -> None:
    # crc_t10dif's notifier block points to crc_t10dif_notify (lib/: no ftrace entry).
    def slot() -> int:
        return slot_value(ksym("crc_t10dif_nb", "crc_t10dif"))

    def notify(module: str) -> bool:
        subprocess.run(["dmesg", "-C"], check=True)
        subprocess.run(["modprobe", module], check=True)  # registers crypto algorithms
        log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
        subprocess.run(["modprobe", "-r", module], check=True)
        return "suture-crc:" in log

    subprocess.run(["modprobe", "-r", "crc-t10dif"], check=False)
    apply("crc")
    subprocess.run(["modprobe", "crc-t10dif"], check=True)  # the patch applies as it loads
    copy = ksym("__suture_new_crc_t10dif_notify", "suture_t_crc")
    assert slot() == copy
    assert notify("sha3_generic")
    subprocess.run(["modprobe", "-r", "crc-t10dif"], check=True)  # put back before it goes
    log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    assert "reverting patch 'suture_t_crc' on unloading module 'crc_t10dif'" in log
    # Loaded again: redirected again where the kernel clears a module patch's
    # relocations when the module goes; Linux 6.1 does not, and refuses the
    # module while the patch is live. Either way no pointer outlives its target.
    again = subprocess.run(["modprobe", "crc-t10dif"], capture_output=True, text=True, check=False)
    log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    if again.returncode == 0:
        assert slot() == copy
        subprocess.run(["modprobe", "-r", "crc-t10dif"], check=True)
    else:
        assert "refusing to load module 'crc_t10dif'" in log
    suture("unload", "suture_t_crc")
    assert kept("suture_t_crc")
    subprocess.run(["modprobe", "crc-t10dif"], check=True)
    try:
        assert slot() == ksym("crc_t10dif_notify", "crc_t10dif")
        assert not notify("md4")
    finally:
        subprocess.run(["modprobe", "-r", "crc-t10dif"], check=False)
