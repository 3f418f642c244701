"""The patch bundle: one live patch module plus the manifest of what it expects.

A bundle is the unit the builder writes, the repository signs and the agent
applies. See :mod:`suture.bundle.manifest` for the fields,
:mod:`suture.bundle.labtest` for the result of ``suture test`` it carries,
and :mod:`suture.bundle.archive` for the file format.
"""

from suture.bundle.archive import (
    is_bundle,
    manifest_of,
    opened,
    read_manifest,
    record_test,
    unpack,
    write,
)
from suture.bundle.labtest import LabStep, LabTest
from suture.bundle.manifest import FORMAT_VERSION, FixRecord, Function, Manifest, PatchedObject

__all__ = [
    "FORMAT_VERSION",
    "FixRecord",
    "Function",
    "LabStep",
    "LabTest",
    "Manifest",
    "PatchedObject",
    "is_bundle",
    "manifest_of",
    "opened",
    "read_manifest",
    "record_test",
    "unpack",
    "write",
]
