"""The bundle file: an uncompressed POSIX tar of ``manifest.json`` then ``<name>.ko``.

Tar because any tool can look inside; uncompressed because modules compress
poorly and the repository hashes the file as a whole anyway. Reading is
strict: exactly those two regular members, sizes bounded, the module's hash
checked against the manifest before anything uses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from suture.bundle.labtest import LabTest
from suture.bundle.manifest import Manifest
from suture.errors import BundleError
from suture.fsutil import atomic_write

MANIFEST = "manifest.json"
MAX_MANIFEST = 1 << 20  # bytes
MAX_MODULE = 64 << 20  # bytes; a live patch module is tens of KiB


def is_bundle(path: Path) -> bool:
    """True when ``path`` looks like a bundle (a tar file), not a bare ``.ko``."""
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def write(path: Path, manifest: Manifest, module: bytes) -> None:
    """Write a bundle atomically. The manifest must describe ``module``.

    Raises:
        BundleError: the manifest's size or hash does not match ``module``.
    """
    manifest.validate()
    if manifest.module_size != len(module) or (
        manifest.module_sha256 != hashlib.sha256(module).hexdigest()
    ):
        raise BundleError("the manifest does not describe this module (size or sha256)")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in ((MANIFEST, manifest.to_json()), (manifest.module_file, module)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0  # reproducible: same inputs, same bytes
            tar.addfile(info, io.BytesIO(data))
    atomic_write(path, out.getvalue())


def manifest_of(data: bytes, name: str) -> Manifest:
    """The verified manifest of a bundle held in memory (``name`` says which, in errors)."""
    return _members(Path(name), io.BytesIO(data))[0]


def unpack(data: bytes, name: str) -> tuple[Manifest, bytes]:
    """The verified manifest and the module of a bundle held in memory (``name``: for errors)."""
    return _members(Path(name), io.BytesIO(data))


def members(path: Path) -> tuple[Manifest, bytes]:
    """The verified manifest and the patch file (module or patch object) of a bundle."""
    return _members(path)


def _members(path: Path, data: io.BytesIO | None = None) -> tuple[Manifest, bytes]:
    try:
        with tarfile.open(path if data is None else None, mode="r:", fileobj=data) as tar:
            manifest, module = _checked_members(path, tar)
    except (OSError, tarfile.TarError) as e:
        raise BundleError(f"{path} is not a bundle: {e}", hint="pass a bundle or a .ko") from e
    digest = hashlib.sha256(module).hexdigest()
    if digest != manifest.module_sha256 or len(module) != manifest.module_size:
        raise BundleError(
            f"{path}: the module's sha256 {digest[:16]}… does not match the manifest",
            hint="the bundle was altered or damaged; fetch it again",
        )
    return manifest, module


def _checked_members(path: Path, tar: tarfile.TarFile) -> tuple[Manifest, bytes]:
    members = tar.getmembers()
    names = [m.name for m in members]
    if len(names) != 2 or names[0] != MANIFEST:
        raise BundleError(
            f"{path}: a bundle holds {MANIFEST} and one module, found {names}",
            hint="rebuild it with 'suture build'",
        )
    man_info, mod_info = members
    for info, limit in ((man_info, MAX_MANIFEST), (mod_info, MAX_MODULE)):
        if not info.isreg() or info.size > limit:
            raise BundleError(f"{path}: member {info.name} is not a file of at most {limit} B")
    manifest = Manifest.from_json(_read(tar, man_info))
    if mod_info.name != manifest.module_file:
        raise BundleError(
            f"{path}: holds {mod_info.name}, but the manifest names {manifest.module_file}"
        )
    return manifest, _read(tar, mod_info)


def _read(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(info)
    if f is None:
        raise BundleError(f"member {info.name} cannot be read")
    return f.read()


def read_manifest(path: Path) -> Manifest:
    """The verified manifest of the bundle at ``path`` (the module's hash is checked too)."""
    return _members(path)[0]


@contextlib.contextmanager
def opened(path: Path) -> Iterator[tuple[Manifest, Path]]:
    """The bundle's manifest and its module written to a private temporary file.

    The module is checked against the manifest's hash first; the file is
    removed when the block ends.
    """
    manifest, module = _members(path)
    with tempfile.TemporaryDirectory(prefix="suture-bundle-") as tmp:
        ko = Path(tmp) / manifest.module_file
        ko.write_bytes(module)
        yield manifest, ko


def record_test(path: Path, test: LabTest, *, module_sha256: str) -> Manifest:
    """Write ``test`` into the manifest of the bundle at ``path``, atomically; same module bytes.

    Args:
        path: the bundle.
        test: the result; it replaces any earlier one.
        module_sha256: the module that was tested: the bundle must still hold it.

    Returns:
        The new manifest.

    Raises:
        BundleError: the bundle is malformed, or now holds another module than the one tested.
    """
    manifest, module = _members(path)
    if manifest.module_sha256 != module_sha256:
        raise BundleError(
            f"{path} changed while it was tested (its module is not the one tested)",
            hint="run 'suture test' on it again",
        )
    new = dataclasses.replace(manifest, test=test)
    write(path, new, module)
    return new
