"""The bundle manifest: what a live patch is for and what it expects to replace.

Format 1, JSON::

    {"format": 1, "name": "...", "level": 1, "replace": true,
     "kernel": {"release": "6.1.0-56-amd64", "build_id": "<hex>"},
     "objects": [{"name": "vmlinux", "functions": [
         {"name": "cmdline_proc_show", "sympos": 0, "size": 43, "old_sha256": "<hex>"}]}],
     "module": {"file": "x.ko", "sha256": "<hex>", "size": 12345},
     "cves": ["CVE-2024-1"], "description": "...", "fix_sha256": "<hex>",
     "builder": "suture 0.1.0", "created": "2026-11-25T19:00:00Z"}

``objects`` has one entry per patched object (vmlinux, then modules), each
listed once: a fix of several files lists all their functions there.
``old_sha256`` is the hash of the code each function has in the target build
(relocation targets zeroed), so builder and agent can check it before loading.
``unpatched`` (present only when not empty) lists the ways into changed code
without an ftrace entry that the patch could not route to the new code: the
fix is partial there (see suture/builder/callers.py).
``fixes`` (present only for a level made by ``suture release``) lists the
fixes the level was built from, in order: each fix file's sha256, its
subject(s) and CVE ids. The files themselves are signed into the repository
as ``fixes/<sha256>.patch``, so a level can be rebuilt and audited.
``kind`` is ``userspace`` for a patch of a shared library in running
processes (absent: a kernel patch). Its ``kernel.release`` is then the
library's soname and ``kernel.build_id`` the library file's GNU build id; the
bundle holds ``<name>.o`` (a relocatable patch object, not a module) and the
manifest a ``userspace`` object::

    "userspace": {"package": "glibc", "version": "2.36-9+deb12u14",
      "functions": [{"name": "_IO_wdefault_pbackfail", "offset": 569504, "size": 412,
                     "old_sha256": "<hex of the shipped bytes>", "symbol": "__suture_new_..."}],
      "symbols": {"_IO_switch_to_wbackup_area": ["addr", 570000],
                  "__libc_errno": ["got", 1961416]}}

``offset`` is from the library's start (its first byte in memory); a symbol's
place is the thing itself (``addr``) or a slot of the library's GOT holding
its address or TLS offset (``got``).
``test`` (present only once ``suture test`` ran) is the result of testing the
bundle in a guest of its kernel build, with a format number of its own (see
:mod:`suture.bundle.labtest`); publish requires a pass on the manifest's build.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from suture.bundle import labtest
from suture.errors import BundleError

FORMAT_VERSION = 1

_NAME = re.compile(r"^[a-z0-9_]{1,55}$")  # a module name the kernel accepts (MODULE_NAME_LEN)
_HEX = re.compile(r"^[0-9a-f]*$")


@dataclass(frozen=True)
class Function:
    """One function a patch replaces."""

    name: str
    sympos: int = 0  # position among same-named local symbols (0: unique)
    size: int = 0  # bytes of the old function in the target build (0: unknown)
    old_sha256: str = ""  # hash of the old code, relocations zeroed ("" : not checked)


@dataclass(frozen=True)
class UserFunction:
    """One function of a shared library that a userspace patch replaces."""

    name: str
    offset: int  # from the library's start
    size: int  # bytes of the old function
    old_sha256: str  # of its bytes in the shipped library
    symbol: str  # the patch object's global holding the new code

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)


@dataclass(frozen=True)
class FixRecord:
    """One fix a cumulative level was built from."""

    sha256: str  # of the fix file as given (a diff or an mbox)
    subject: str = ""
    cves: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"sha256": self.sha256, "subject": self.subject, "cves": list(self.cves)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FixRecord:
        """Parse one entry of ``fixes``."""
        return cls(
            str(data["sha256"]), str(data.get("subject", "")), tuple(map(str, data.get("cves", [])))
        )


@dataclass(frozen=True)
class PatchedObject:
    """``vmlinux`` or a module, with the functions replaced in it."""

    name: str
    functions: tuple[Function, ...]


@dataclass(frozen=True)
class Manifest:
    """Everything about a bundle but the module's bytes."""

    name: str
    release: str
    build_id: str
    level: int
    module_file: str
    module_sha256: str
    module_size: int
    objects: tuple[PatchedObject, ...] = ()
    replace: bool = True
    cves: tuple[str, ...] = ()
    description: str = ""
    fix_sha256: str = ""
    builder: str = ""
    created: str = ""
    unpatched: tuple[str, ...] = ()  # paths that keep reaching old code: a partial fix
    fixes: tuple[FixRecord, ...] = ()  # what a released level was built from, in order
    test: labtest.LabTest | None = None  # the last `suture test` result (None: never tested)
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = "kernel"  # or "userspace": release is then a soname, build_id the library's
    package: str = ""  # userspace: the Debian source package and version it was built from
    version: str = ""
    userspace_functions: tuple[UserFunction, ...] = ()
    userspace_symbols: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def functions(self) -> tuple[str, ...]:
        """Every replaced function's name, for the ftrace pre-flight."""
        return tuple(f.name for o in self.objects for f in o.functions)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (format 1)."""
        return {
            "format": FORMAT_VERSION,
            "name": self.name,
            "level": self.level,
            "replace": self.replace,
            "kernel": {"release": self.release, "build_id": self.build_id},
            "objects": [
                {"name": o.name, "functions": [asdict(f) for f in o.functions]}
                for o in self.objects
            ],
            "module": {
                "file": self.module_file,
                "sha256": self.module_sha256,
                "size": self.module_size,
            },
            "cves": list(self.cves),
            "description": self.description,
            "fix_sha256": self.fix_sha256,
            "builder": self.builder,
            "created": self.created,
            **({"unpatched": list(self.unpatched)} if self.unpatched else {}),
            **({"fixes": [f.to_dict() for f in self.fixes]} if self.fixes else {}),
            **({"test": self.test.to_dict()} if self.test else {}),
            **({"extra": self.extra} if self.extra else {}),
            **(self._userspace_dict() if self.kind == "userspace" else {}),
        }

    def _userspace_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "userspace": {
                "package": self.package,
                "version": self.version,
                "functions": [f.to_dict() for f in self.userspace_functions],
                "symbols": {k: list(v) for k, v in sorted(self.userspace_symbols.items())},
            },
        }

    def to_json(self) -> bytes:
        """Canonical bytes: sorted keys, so the same manifest hashes the same."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """Parse and validate manifest bytes.

        Raises:
            BundleError: not JSON, another format version, or a field is missing or wrong.
        """
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise BundleError(f"the manifest is not JSON: {e}") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            got = data.get("format") if isinstance(data, dict) else None
            raise BundleError(
                f"manifest format {got!r} is not supported (this Suture reads {FORMAT_VERSION})",
                hint="upgrade Suture or rebuild the bundle",
            )
        try:
            manifest = cls._from_dict(data)
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"the manifest is incomplete or malformed: {e!r}") from e
        manifest.validate()
        return manifest

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> Manifest:
        kernel, module = data["kernel"], data["module"]
        return cls(
            name=str(data["name"]),
            release=str(kernel["release"]),
            build_id=str(kernel["build_id"]),
            level=int(data["level"]),
            replace=bool(data.get("replace", True)),
            module_file=str(module["file"]),
            module_sha256=str(module["sha256"]),
            module_size=int(module["size"]),
            objects=tuple(
                PatchedObject(
                    name=str(o["name"]),
                    functions=tuple(
                        Function(
                            name=str(f["name"]),
                            sympos=int(f.get("sympos", 0)),
                            size=int(f.get("size", 0)),
                            old_sha256=str(f.get("old_sha256", "")),
                        )
                        for f in o["functions"]
                    ),
                )
                for o in data.get("objects", [])
            ),
            cves=tuple(str(c) for c in data.get("cves", [])),
            description=str(data.get("description", "")),
            fix_sha256=str(data.get("fix_sha256", "")),
            builder=str(data.get("builder", "")),
            created=str(data.get("created", "")),
            unpatched=tuple(str(u) for u in data.get("unpatched", [])),
            fixes=tuple(FixRecord.from_dict(f) for f in data.get("fixes", [])),
            test=labtest.parse(data.get("test")),
            extra=dict(data.get("extra", {})),
            **_userspace_fields(data),
        )

    def validate(self) -> None:
        """Check the fields a loader relies on.

        Raises:
            BundleError: naming the first field that is wrong.
        """
        problems = []
        if not _NAME.match(self.name):
            problems.append(f"name {self.name!r} is not a kernel module name")
        suffix = ".o" if self.kind == "userspace" else ".ko"
        if self.kind not in ("kernel", "userspace"):
            problems.append(f"kind {self.kind!r} is not kernel or userspace")
        if self.module_file != f"{self.name}{suffix}":
            problems.append(f"module file {self.module_file!r} is not {self.name}{suffix}")
        if self.kind == "userspace" and not (self.build_id and self.userspace_functions):
            problems.append("a userspace patch names no library build id or no function")
        if len(self.module_sha256) != 64 or not _HEX.match(self.module_sha256):
            problems.append("module sha256 is not 64 hex digits")
        if not _HEX.match(self.build_id):
            problems.append("build id is not hex")
        if self.level < 1:
            problems.append(f"level {self.level} is below 1")
        if not self.release:
            problems.append("kernel release is empty")
        if any(len(f.sha256) != 64 or not _HEX.match(f.sha256) for f in self.fixes):
            problems.append("a fix's sha256 is not 64 hex digits")
        names = [o.name for o in self.objects]
        if len(set(names)) != len(names):
            problems.append(f"objects {names} list one twice")
        if problems:
            raise BundleError("invalid manifest: " + "; ".join(problems))
        if self.test is not None:
            self.test.validate()


def _userspace_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The userspace part of a manifest's JSON, as keyword arguments (none for a kernel patch)."""
    if data.get("kind", "kernel") != "userspace":
        return {"kind": str(data.get("kind", "kernel"))}
    user = data["userspace"]
    return {
        "kind": "userspace",
        "package": str(user.get("package", "")),
        "version": str(user.get("version", "")),
        "userspace_functions": tuple(
            UserFunction(
                str(f["name"]),
                int(f["offset"]),
                int(f["size"]),
                str(f["old_sha256"]),
                str(f["symbol"]),
            )
            for f in user["functions"]
        ),
        "userspace_symbols": {
            str(k): (str(v[0]), int(v[1])) for k, v in dict(user.get("symbols", {})).items()
        },
    }
