"""What a bundle's module must be before it is signed: a live patch ELF for the manifest's build.

``suture publish`` signs a bundle for every host of a build, so it checks
what the agent's pre-flight would only find out on those hosts: the module
is a relocatable ELF64 kernel module, marked ``livepatch=Y``, of the
manifest's name, with the manifest's release in its vermagic and its build
id in ``suture_build_id``. A userspace bundle's patch object (ADR 18) must
be one the patcher can load, defining every function the manifest names.
"""

from __future__ import annotations

import struct

from suture.bundle.manifest import Manifest
from suture.errors import BundleError, UserspaceError

ET_REL = 1  # a kernel module is a relocatable object
_TYPE = struct.Struct("<16xH")  # e_type follows e_ident


def check(manifest: Manifest, module: bytes) -> None:
    """Refuse a module that is not a live patch for exactly the manifest's build.

    Raises:
        BundleError: not a relocatable ELF64 module, or its ``.modinfo``
            disagrees with the manifest (naming the field).
    """
    if manifest.kind == "userspace":
        _check_userspace(manifest, module)
        return
    from suture.kernel.modinfo import parse_modinfo, section_data  # noqa: PLC0415 - publish only

    where = f"the module {manifest.module_file}"
    try:
        raw = section_data(module, b".modinfo")
        (e_type,) = _TYPE.unpack_from(module)
    except (ValueError, struct.error, IndexError) as e:
        raise BundleError(f"{where} is not an ELF64 kernel module: {e}") from e
    if e_type != ET_REL:
        raise BundleError(f"{where} is an ELF file of type {e_type}, not a kernel module")
    if not raw:
        raise BundleError(f"{where} has no .modinfo section: not a kernel module")
    info = parse_modinfo(raw)
    wanted = {
        "livepatch": ("Y", info.get("livepatch", [""])[0]),
        "name": (manifest.name, info.get("name", [""])[0]),
        "vermagic release": (manifest.release, info.get("vermagic", [""])[0].split(" ", 1)[0]),
        "suture_build_id": (manifest.build_id, info.get("suture_build_id", [""])[0]),
    }
    for what, (expected, found) in wanted.items():
        if expected != found:
            raise BundleError(
                f"{where} says {what} {found[:80]!r}, the manifest {expected[:80]!r}",
                hint="this is not the live patch the manifest describes; rebuild the bundle "
                "with 'suture build'",
            )


def _check_userspace(manifest: Manifest, data: bytes) -> None:
    """Refuse a userspace patch object the patcher could not load, or that lacks a function."""
    from suture.userspace.image import PatchObject  # noqa: PLC0415 - publish only

    where = f"the patch object {manifest.module_file}"
    try:
        obj = PatchObject.parse(data)
        for f in manifest.userspace_functions:
            obj.symbol(f.symbol)
    except (UserspaceError, ValueError, IndexError, struct.error) as e:
        raise BundleError(
            f"{where} is not the userspace patch the manifest describes: {str(e)[:200]}",
            hint="rebuild the bundle with 'suture build --package'",
        ) from e
