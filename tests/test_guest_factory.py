"""The patch factory's fix classes: built on the host, applied in a guest of that build.

Fixes are made from the pristine distro source (tests/test_guest_build.py's
make_fix), so they apply to whatever build is tested. Refusals are checked
on the host; behaviour inside the guest by tests/kernel/test_factory.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from suture import bundle
from suture.builder import source
from suture.builder.pipeline import BuildRequest, build
from suture.cli.main import main
from suture.errors import BuildError, NoChangeError
from suture.factory.release import ReleaseRequest, release
from suture.packages import kernels
from tests.builds import LAB
from tests.support.fixes import make_fix
from tests.support.guest import require_qemu, run_guest_tests

pytestmark = pytest.mark.guest

# seq_show_option(), a static inline of include/linux/seq_file.h, marks each option.
HEADER_EDIT = (
    "\tseq_putc(m, ',');\n\tseq_escape(m, name, \",= \\t\\n\\\\\");\n",
    '\tseq_putc(m, \',\');\n\tseq_puts(m, "s:");\n\tseq_escape(m, name, ",= \\t\\n\\\\");\n',
)
SHOW = "\tseq_puts(m, saved_command_line);\n"
LOADAVG = '\tseq_printf(m, "%lu.%02lu %lu.%02lu %lu.%02lu %u/%d %d\\n",\n'

BANNER = "\tseq_printf(m, linux_proc_banner,"


@pytest.fixture(scope="module")
def tree(kernel_release: str) -> source.SourceTree:
    require_qemu()
    return source.prepare(kernel_release)


def mbox(*commits: tuple[str, str]) -> str:
    """``git format-patch --stdout`` of ``commits`` (subject, diff)."""
    mails = []
    for i, (subject, diff) in enumerate(commits, 1):
        mails.append(
            f"From 000000000000000000000000000000000000000{i} Mon Sep 17 00:00:00 2001\n"
            f"From: Suture Test <test@example.org>\nDate: Thu, 3 Dec 2026 10:0{i}:00 +0000\n"
            f"Subject: [PATCH {i}/{len(commits)}] {subject}\n\n"
            f"Commit {i} of the test series.\n\n---\n{diff}\n-- \n2.39.5\n\n"
        )
    return "".join(mails)


def test_header_layout_change_is_refused(
    tree: source.SourceTree, tmp_path: Path, kernel_release: str
) -> None:
    fix = make_fix(
        tree,
        "include/linux/seq_file.h",
        (
            "\tsize_t size;\n\tsize_t from;\n",
            "\tsize_t size;\n\tsize_t suture_new;\n\tsize_t from;\n",
        ),
        out=tmp_path,
    )
    with pytest.raises(BuildError, match=r"the layout of struct seq_file") as e:
        build(BuildRequest(kernel_release, fix, tmp_path), LAB)
    assert "shadow variables" in e.value.hint


def test_header_change_nothing_uses_is_no_change(
    tree: source.SourceTree, tmp_path: Path, kernel_release: str
) -> None:
    fix = make_fix(
        tree,
        "include/linux/seq_file.h",
        (
            "#include <linux/types.h>\n",
            "#include <linux/types.h>\n\n#define SUTURE_UNUSED(x) (x)\n",
        ),
        out=tmp_path,
    )
    with pytest.raises(NoChangeError):
        build(BuildRequest(kernel_release, fix, tmp_path), LAB)


def test_factory_fixes_in_guest(
    tree: source.SourceTree, tmp_path: Path, kernel_release: str
) -> None:
    out = tmp_path / "bundles"
    header = make_fix(tree, "include/linux/seq_file.h", HEADER_EDIT, out=tmp_path)
    report = build(BuildRequest(kernel_release, header, out, name="suture_t_header"), LAB)
    assert "cgroup1_show_options" in report.objects["vmlinux"]
    assert "ovl_show_options" in report.objects["overlay"]
    assert len(report.objects) >= 4, report.objects  # vmlinux and several filesystems

    first = make_fix(
        tree, "fs/proc/cmdline.c", (SHOW, '\tseq_puts(m, "m1:");\n' + SHOW), out=tmp_path
    )
    second = make_fix(
        tree,
        "fs/proc/version.c",
        (
            "\tseq_printf(m, linux_proc_banner,",
            '\tseq_puts(m, "m2:");\n\tseq_printf(m, linux_proc_banner,',
        ),
        out=tmp_path,
    )
    series = tmp_path / "series.mbox"
    series.write_text(
        mbox(
            ("proc: mark cmdline (CVE-2026-90001)", first.read_text()),
            ("proc: mark version", second.read_text()),
        )
    )
    report = build(BuildRequest(kernel_release, series, out, name="suture_t_mbox"), LAB)
    manifest = bundle.read_manifest(out / "suture_t_mbox.bundle")
    assert manifest.cves == ("CVE-2026-90001",)
    assert manifest.description == "proc: mark cmdline (CVE-2026-90001); proc: mark version"
    assert sorted(manifest.functions) == ["cmdline_proc_show", "version_proc_show"]
    release_levels(tree, tmp_path, out, kernel_release)
    run_guest_tests(
        kernels.fetch(kernel_release),
        "tests/kernel/test_factory.py",
        {"SUTURE_TEST_BUNDLES": str(out)},
    )


def release_levels(tree: source.SourceTree, tmp_path: Path, out: Path, kernel_release: str) -> None:
    """Three fixes released one after the other: levels 1, 2, 3, each holding the ones before."""
    repo = tmp_path / "repo"
    assert main(["repo", "init", str(repo)]) == 0
    edits = [
        ("fs/proc/cmdline.c", (SHOW, f'\tseq_puts(m, "r1:");\n{SHOW}')),
        ("fs/proc/version.c", (BANNER, f'\tseq_puts(m, "r2:");\n{BANNER}')),
        ("fs/proc/loadavg.c", (LOADAVG, f'\tseq_puts(m, "r3:");\n{LOADAVG}')),
    ]
    fixes = [make_fix(tree, path, edit, out=tmp_path) for path, edit in edits]
    for level, fix in enumerate(fixes, 1):
        report = release(ReleaseRequest((fix,), (kernel_release,), repo, jobs=1))
        (row,) = report.rows
        assert (row.status, row.level, row.tested) == ("published", level, "passed"), row
        manifest = bundle.read_manifest(Path(row.bundle))
        assert len(manifest.fixes) == level  # cumulative: every fix released so far
        (out / f"suture_t_level{level}.bundle").write_bytes(Path(row.bundle).read_bytes())
    # Run again with the same inputs: nothing left to do.
    (row,) = release(ReleaseRequest((fixes[-1],), (kernel_release,), repo, jobs=1)).rows
    assert (row.status, row.level) == ("up to date", 3), row
