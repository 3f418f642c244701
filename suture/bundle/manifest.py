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

from suture import jsontypes
from suture.bundle import labtest
from suture.errors import BundleError
from suture.jsontypes import as_int, as_str

FORMAT_VERSION = 1
MAX_LEVEL = 1_000_000  # as the fleet server's check-ins; no real level comes near
MAX_SIZE = 1 << 30  # bytes: any size field above is a lie

# Every pattern is matched whole (fullmatch): "$" alone lets a trailing newline through.
_NAME = re.compile(r"[a-z0-9_]{1,55}")  # a module name the kernel accepts (MODULE_NAME_LEN)
_HEX = re.compile(r"[0-9a-f]*")
_BUILD_ID = re.compile(r"[0-9a-f]{16,128}")  # GNU build ids: md5 to sha512 lengths
_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~_-]{0,99}")  # as suture.repo.layout


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
            as_str(data["sha256"]),
            as_str(data.get("subject", "")),
            tuple(as_str(c) for c in data.get("cves", [])),
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

    @property
    def all_functions(self) -> tuple[Function, ...]:
        """Every replaced function, of every object."""
        return tuple(f for o in self.objects for f in o.functions)

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
            data = jsontypes.loads(raw)
        except ValueError as e:
            raise BundleError(f"the manifest is not (strict) JSON: {e}") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            got = data.get("format") if isinstance(data, dict) else None
            raise BundleError(
                f"manifest format {got!r} is not supported (this Suture reads {FORMAT_VERSION})",
                hint="upgrade Suture or rebuild the bundle",
            )
        try:
            manifest = cls._from_dict(data)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise BundleError(f"the manifest is incomplete or malformed: {str(e)[:200]}") from e
        manifest.validate()
        return manifest

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> Manifest:
        # Strict types: 7.9 is not level 7, and "8" is not level 8.
        kernel, module = _object(data["kernel"]), _object(data["module"])
        return cls(
            name=as_str(data["name"]),
            release=as_str(kernel["release"]),
            build_id=as_str(kernel["build_id"]),
            level=as_int(data["level"], 1, MAX_LEVEL),
            replace=_bool(data.get("replace", True)),
            module_file=as_str(module["file"]),
            module_sha256=as_str(module["sha256"]),
            module_size=as_int(module["size"], 0, MAX_SIZE),
            objects=tuple(
                PatchedObject(
                    name=as_str(o["name"]),
                    functions=tuple(
                        Function(
                            name=as_str(f["name"]),
                            sympos=as_int(f.get("sympos", 0), 0, MAX_SIZE),
                            size=as_int(f.get("size", 0), 0, MAX_SIZE),
                            old_sha256=as_str(f.get("old_sha256", "")),
                        )
                        for f in map(_object, _list(o["functions"]))
                    ),
                )
                for o in map(_object, _list(data.get("objects", [])))
            ),
            cves=tuple(as_str(c) for c in _list(data.get("cves", []))),
            description=as_str(data.get("description", "")),
            fix_sha256=as_str(data.get("fix_sha256", "")),
            builder=as_str(data.get("builder", "")),
            created=as_str(data.get("created", "")),
            unpatched=tuple(as_str(u) for u in _list(data.get("unpatched", []))),
            fixes=tuple(FixRecord.from_dict(_object(f)) for f in _list(data.get("fixes", []))),
            test=labtest.parse(data.get("test")),
            extra=dict(_object(data.get("extra", {}))),
            **_userspace_fields(data),
        )

    def validate(self) -> None:
        """Check the fields a loader relies on.

        Raises:
            BundleError: naming the first field that is wrong.
        """
        problems = []
        if not _NAME.fullmatch(self.name):
            problems.append(f"name {self.name!r} is not a kernel module name")
        problems += self._kind_problems()
        if len(self.module_sha256) != 64 or not _HEX.fullmatch(self.module_sha256):
            problems.append("module sha256 is not 64 hex digits")
        if self.build_id and not _BUILD_ID.fullmatch(self.build_id):
            problems.append(f"build id {self.build_id[:140]!r} is not 16 to 128 hex digits")
        if not 1 <= self.level <= MAX_LEVEL:
            problems.append(f"level {self.level} is not from 1 to {MAX_LEVEL}")
        if not _RELEASE.fullmatch(self.release):
            problems.append(f"kernel release {self.release[:110]!r} is not a release name")
        if any(len(f.sha256) != 64 or not _HEX.fullmatch(f.sha256) for f in self.fixes):
            problems.append("a fix's sha256 is not 64 hex digits")
        if any(f.old_sha256 and not _HEX.fullmatch(f.old_sha256) for f in self.all_functions):
            problems.append("a function's old_sha256 is not hex")
        names = [o.name for o in self.objects]
        if len(set(names)) != len(names):
            problems.append(f"objects {names} list one twice")
        if problems:
            raise BundleError("invalid manifest: " + "; ".join(problems))
        if self.test is not None:
            self.test.validate()

    def _kind_problems(self) -> list[str]:
        """What is wrong with the kind and the file it names (a kernel .ko, a userspace .o)."""
        problems = []
        suffix = ".o" if self.kind == "userspace" else ".ko"
        if self.kind not in ("kernel", "userspace"):
            problems.append(f"kind {self.kind[:40]!r} is not kernel or userspace")
        if self.module_file != f"{self.name}{suffix}":
            problems.append(f"module file {self.module_file!r} is not {self.name}{suffix}")
        if self.kind == "userspace" and not (self.build_id and self.userspace_functions):
            problems.append("a userspace patch names no library build id or no function")
        return problems


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {str(value)[:40]!r}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a JSON list, got {str(value)[:40]!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {str(value)[:40]!r}")
    return value


def _userspace_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The userspace part of a manifest's JSON, as keyword arguments (none for a kernel patch)."""
    kind = as_str(data.get("kind", "kernel"))
    if kind != "userspace":
        return {"kind": kind}
    user = _object(data["userspace"])
    symbols = _object(user.get("symbols", {}))
    return {
        "kind": "userspace",
        "package": as_str(user.get("package", "")),
        "version": as_str(user.get("version", "")),
        "userspace_functions": tuple(
            UserFunction(
                as_str(f["name"]),
                as_int(f["offset"], 0),
                as_int(f["size"], 0, MAX_SIZE),
                as_str(f["old_sha256"]),
                as_str(f["symbol"]),
            )
            for f in map(_object, _list(user["functions"]))
        ),
        "userspace_symbols": {
            as_str(k): (as_str(_list(v)[0]), as_int(_list(v)[1], 0)) for k, v in symbols.items()
        },
    }
