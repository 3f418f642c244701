"""The builder's features on the newer series: Debian 13's 6.12 and trixie-backports' 7.x.

A representative subset of tests/test_guest_build.py (the whole set runs on
the default build): a string change, a new function, callbacks, a shadow
variable, a static inline patched in its caller, a module patch applied
as the module loads, a fix of two files. Built on the host with each build's
own compiler (its build root), then applied and checked in a guest of that
build by the same in-guest tests. The builds are the newest each set offers
today, resolved at run time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from suture.builder import source
from suture.builder.pipeline import BuildRequest, build
from suture.packages import kernels
from tests.builds import LAB, newest
from tests.support.features import FEATURES, MRP_EDITS, MULTI_FILE
from tests.support.fixes import make_fix, make_multi_fix
from tests.support.guest import require_qemu, run_guest_tests

pytestmark = pytest.mark.guest

SUBSET = ("string", "newfunc", "callbacks", "shadow", "inline_caller")
# The in-guest tests of tests/kernel/test_built.py that use exactly these bundles.
IN_GUEST = (
    "test_string_change or test_new_function or test_callbacks_with_kpatch_macros"
    " or test_shadow_variable or test_static_inline_is_patched_in_its_caller"
    " or test_module_patch_applies_when_the_module_loads or test_fix_of_two_files_of_vmlinux"
)


@pytest.mark.parametrize("set_name", ["debian13", "trixie-backports"])
def test_feature_subset_on_the_newest_build(set_name: str, tmp_path: Path) -> None:
    require_qemu()
    release = newest(set_name)
    tree = source.prepare(release)
    out = tmp_path / "bundles"
    for name in SUBSET:
        path, edits = FEATURES[name]
        fix = make_fix(tree, path, *edits, out=tmp_path)
        build(BuildRequest(release, fix, out, name=f"suture_t_{name}"), LAB)
    module_fix = make_fix(tree, "net/802/mrp.c", *MRP_EDITS, out=tmp_path)
    build(BuildRequest(release, module_fix, out, name="suture_t_mrp"), LAB)
    two = make_multi_fix(tree, MULTI_FILE["two_files"], tmp_path)
    build(BuildRequest(release, two, out, name="suture_t_two_files"), LAB)
    run_guest_tests(
        kernels.fetch(release),
        "tests/kernel/test_built.py",
        {"SUTURE_TEST_BUNDLES": str(out)},
        select=IN_GUEST,
    )
