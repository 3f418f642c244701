"""Apply a local file: a bundle (verified against its manifest) or a bare live patch ``.ko``."""

from __future__ import annotations

from pathlib import Path

from suture import bundle
from suture.errors import BundleError
from suture.kernel import engine
from suture.kernel.modinfo import read_modinfo


def apply_file(
    path: Path, policy: engine.TransitionPolicy | None = None, *, sysroot: Path = Path("/")
) -> engine.ApplyResult:
    """Apply ``path``: a bundle's module with its manifest's build id and functions, or a .ko.

    ``sysroot`` is where /proc and /sys are (tests point it at a fake tree).

    Raises:
        BundleError: the bundle is malformed or its module does not match the manifest.
        PreflightError, LoadError, TransitionError: from the engine; nothing stays loaded.
    """
    if not bundle.is_bundle(path):
        return engine.apply(path, policy, sysroot=sysroot)
    with bundle.opened(path) as (manifest, ko):
        name = read_modinfo(ko).name
        if name != manifest.name:
            raise BundleError(
                f"{path}: the manifest names {manifest.name} but the module is {name}",
                hint="the bundle was altered; rebuild or fetch it again",
            )
        return engine.apply(
            ko, policy, build_id=manifest.build_id, functions=manifest.functions, sysroot=sysroot
        )
