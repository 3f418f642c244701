"""The builder end to end: source fixes -> bundles on the host, applied in a guest of that build.

Fixes are made here from the pristine distro source with difflib, so they
always apply to the tree the builder prepares. Refusals and "no change" are
checked on the host; behaviour is checked inside the guest by
tests/kernel/test_built.py.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

import pytest

from suture.build import source
from suture.build.pipeline import BuildRequest, build
from suture.errors import BuildError, NoChangeError
from suture.lab import guest, kernels
from tests.test_guest_engine import require_qemu

ROOT = Path(__file__).resolve().parent.parent
RELEASE = os.environ.get("SUTURE_TEST_BUILD_KERNEL", "6.1.0-47-amd64")
CORPUS = ROOT.parent / "shared" / "patches" / "stable-dev"

pytestmark = pytest.mark.guest


def make_fix(tree: source.SourceTree, path: str, *edits: tuple[str, str], out: Path) -> Path:
    before = (tree.path / path).read_text()
    after = before
    for old, new in edits:
        assert old in after, f"{old!r} not in {path}"
        after = after.replace(old, new, 1)
    text = "".join(
        difflib.unified_diff(
            before.splitlines(True), after.splitlines(True), f"a/{path}", f"b/{path}"
        )
    )
    fix = out / (path.replace("/", "_") + f".{abs(hash(text)) % 10**6}.patch")
    fix.write_text(text)
    return fix


SHOW = "\tseq_puts(m, saved_command_line);\n"

FEATURES = {
    # name: (file, edits)
    "string": ("fs/proc/cmdline.c", [(SHOW, '\tseq_printf(m, "v1:%s", saved_command_line);\n')]),
    "newfunc": (
        "fs/proc/cmdline.c",
        [
            (
                "static int cmdline_proc_show",
                "static noinline void suture_tag(struct seq_file *m)\n{\n"
                '\tseq_puts(m, "tagged:");\n}\n\nstatic int cmdline_proc_show',
            ),
            (SHOW, "\tsuture_tag(m);\n" + SHOW),
        ],
    ),
    "statics": (
        "fs/proc/cmdline.c",
        [
            ("static int cmdline_proc_show", "int suture_reads;\n\nstatic int cmdline_proc_show"),
            (
                SHOW,
                "\tstatic int calls;\n\n\tcalls++;\n\tsuture_reads += 10;\n"
                '\tseq_printf(m, "%d/%d:", calls, suture_reads);\n' + SHOW,
            ),
        ],
    ),
}


@pytest.fixture(scope="module")
def tree() -> source.SourceTree:
    require_qemu()
    return source.prepare(RELEASE)


def test_no_change_is_reported(tree: source.SourceTree, tmp_path: Path) -> None:
    fix = make_fix(
        tree,
        "fs/proc/cmdline.c",
        ("#include <linux/fs.h>", "#include <linux/fs.h>  /* c */"),
        out=tmp_path,
    )
    with pytest.raises(NoChangeError):
        build(BuildRequest(RELEASE, fix, tmp_path))


def test_init_code_is_refused(tree: source.SourceTree, tmp_path: Path) -> None:
    fix = make_fix(tree, "fs/proc/cmdline.c", ('"cmdline", 0,', '"cmdline", 0444,'), out=tmp_path)
    with pytest.raises(BuildError, match=r"proc_cmdline_init changed, but __init"):
        build(BuildRequest(RELEASE, fix, tmp_path))


def test_data_change_is_refused(tree: source.SourceTree, tmp_path: Path) -> None:
    fix = make_fix(tree, "fs/proc/interrupts.c", ("\t.stop  = int_seq_stop,\n", ""), out=tmp_path)
    with pytest.raises(BuildError, match=r"changes existing data \(int_seq_ops\).*") as e:
        build(BuildRequest(RELEASE, fix, tmp_path))
    assert "shadow variables" in e.value.hint


def test_built_patches_in_guest(tree: source.SourceTree, tmp_path: Path) -> None:
    out = tmp_path / "bundles"
    for name, (path, edits) in FEATURES.items():
        fix = make_fix(tree, path, *edits, out=tmp_path)
        build(BuildRequest(RELEASE, fix, out, name=f"suture_t_{name}"))
    module_fix = CORPUS / "modules" / "107-net-802-mrp_pdu_parse_vecattr.patch"
    build(BuildRequest(RELEASE, module_fix, out, name="suture_t_mrp"))
    result = guest.run(
        kernels.fetch(RELEASE),
        [
            sys.executable,
            "-m",
            "pytest",
            "-v",
            "-p",
            "no:cacheprovider",
            "tests/kernel/test_built.py",
        ],
        guest.GuestConfig(timeout=900, env={"SUTURE_TEST_BUNDLES": str(out)}),
        cwd=ROOT,
    )
    assert result.returncode == 0, "the in-guest tests failed (their output is above)"
