"""A userspace patch as the patcher uses it: read from a bundle, checked, parsed once.

The bundle is the same tar as a kernel bundle (``manifest.json``, then the
patch object ``<name>.o``); its manifest says ``kind: userspace`` and
carries the library (soname, package, version, build id), each replaced
function (offset in the library, size, sha256 of its old code, the patch
object's symbol for the new code) and the places of the names the patch
object refers to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from suture.bundle import archive
from suture.bundle.manifest import Manifest, UserFunction
from suture.errors import BundleError
from suture.userspace.image import PatchObject, Resolution


@dataclass(frozen=True)
class UserPatch:
    """One level of a userspace patch for one library build."""

    manifest: Manifest
    obj: PatchObject

    @property
    def name(self) -> str:
        """The patch's name (what ``unload`` takes)."""
        return self.manifest.name

    @property
    def level(self) -> int:
        """Its cumulative level."""
        return self.manifest.level

    @property
    def build_id(self) -> str:
        """The library build it is for."""
        return self.manifest.build_id

    @property
    def functions(self) -> tuple[UserFunction, ...]:
        """The functions it replaces."""
        return self.manifest.userspace_functions

    @property
    def resolutions(self) -> dict[str, Resolution]:
        """Names of the patch object -> their places in the library."""
        return {
            name: Resolution(kind, offset)
            for name, (kind, offset) in self.manifest.userspace_symbols.items()
        }


def load(path: Path) -> UserPatch:
    """Read and check a userspace bundle.

    Raises:
        BundleError: malformed, or not a userspace bundle.
    """
    manifest, data = archive.members(path)
    if manifest.kind != "userspace":
        raise BundleError(
            f"{path} is a {manifest.kind} patch, not a userspace one",
            hint="'suture apply' takes kernel bundles without --pid",
        )
    return UserPatch(manifest, PatchObject.parse(data))
