"""OpenVEX documents per host, signed by the server with its own Ed25519 key.

A document says, for the kernel build a host runs, which CVEs its live
level fixes in memory (``fixed``) and which have a fix published for that
build that is not live yet (``affected``, with what to do). OpenVEX v0.2.0:
https://github.com/openvex/spec/blob/main/OPENVEX-SPEC.md

It says the same of each library build with a userspace level (check-in
format 3), as a product of its own: its level's CVEs are ``fixed`` only
when every process of that build runs it; when some processes still run
the old code they are ``affected``, with a note that they are partially
fixed in memory and how many processes lack the fix.

The signature is a detached Ed25519 signature over the document's canonical
bytes (:func:`canonical`: JSON, keys sorted, no whitespace, UTF-8), so a
scanner verifies it with the key from ``GET /api/v1/vex-key``. The key is
the server's own (not a repository key: the server signs what it observed,
not what the repository publishes), kept in a file beside its database,
mode 0600, and made at first start.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from suture import __version__
from suture.contract.checkin import Library
from suture.errors import ServerError
from suture.fsutil import atomic_write
from suture.server.db.hosts import HostRecord
from suture.server.fleet.catalog import Catalog
from suture.server.fleet.views import FixedCves, live_level

KEY_NAME = "vex-signing.key"  # beside the SQLite database, or in the state folder
CONTEXT = "https://openvex.dev/ns/v0.2.0"
AUTHOR = "Suture patch server"
ALGORITHM = "Ed25519"


def load_or_create(path: Path) -> Ed25519PrivateKey:
    """The signing key in ``path`` (PKCS#8 PEM); a new one written there (0600) when missing.

    Raises:
        ServerError: the file cannot be read or written, or holds no Ed25519 key.
    """
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            atomic_write(path, pem, mode=0o600)
        except OSError as e:
            raise ServerError(f"cannot write the VEX signing key {path}: {e.strerror}") from e
        return key
    except OSError as e:
        raise ServerError(f"cannot read the VEX signing key {path}: {e.strerror}") from e
    try:
        found = serialization.load_pem_private_key(pem, password=None)
    except ValueError as e:
        raise ServerError(
            f"{path} holds no usable signing key: {e}",
            hint="remove it: the server makes a new one (scanners must fetch the new public key)",
        ) from e
    if not isinstance(found, Ed25519PrivateKey):
        raise ServerError(f"{path} is not an Ed25519 key")
    return found


def public_raw(key: Ed25519PrivateKey) -> bytes:
    """The 32 bytes of the public key."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_info(key: Ed25519PrivateKey) -> dict[str, Any]:
    """The public key as ``GET /api/v1/vex-key`` gives it."""
    raw = public_raw(key)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "format": 1,
        "algorithm": ALGORITHM,
        "key_id": hashlib.sha256(raw).hexdigest(),
        "public_key": base64.b64encode(raw).decode(),
        "public_key_pem": pem.decode(),
        "signed_bytes": "canonical JSON: keys sorted, no whitespace, UTF-8",
    }


def canonical(document: dict[str, Any]) -> bytes:
    """The bytes that are signed."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(key: Ed25519PrivateKey, document: dict[str, Any]) -> dict[str, Any]:
    """The document with its detached signature and the public key to check it with."""
    return {
        "format": 1,
        "document": document,
        "algorithm": ALGORITHM,
        "signature": base64.b64encode(key.sign(canonical(document))).decode(),
        "public_key": base64.b64encode(public_raw(key)).decode(),
    }


def verify(public_key: str, signed: bytes, signature: str) -> bool:
    """True when ``signature`` (base64) is the key's (base64, raw) over ``signed``."""
    try:
        pub = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
        pub.verify(base64.b64decode(signature, validate=True), signed)
    except (InvalidSignature, ValueError):
        return False
    return True


def product(host: HostRecord) -> dict[str, Any]:
    """The running kernel as an OpenVEX product, the host as its subcomponent."""
    c = host.checkin
    purl = f"pkg:generic/linux@{quote(c.release, safe='')}"
    if c.build_id:
        purl += f"?build_id={c.build_id}"
    return {
        "@id": purl,
        "identifiers": {"purl": purl},
        "subcomponents": [{"@id": f"urn:suture:host:{c.host_id}"}],
    }


def library_product(host: HostRecord, row: Library) -> dict[str, Any]:
    """A library build of the host as an OpenVEX product, the host as its subcomponent."""
    purl = f"pkg:generic/{quote(row.soname, safe='')}?build_id={row.build_id}"
    return {
        "@id": purl,
        "identifiers": {"purl": purl},
        "subcomponents": [{"@id": f"urn:suture:host:{host.checkin.host_id}"}],
    }


def _processes(row: Library) -> str:
    """Why processes of a build lack its level, in words."""
    parts = [f"{row.unpatched} not reached yet"] if row.unpatched else []
    parts += [f"{row.failed} failed"] if row.failed else []
    parts += [f"{n} refused ({reason})" for reason, n in row.refused]
    return ", ".join(parts) or "none"


def library_statements(host: HostRecord, row: Library, cves: FixedCves) -> list[dict[str, Any]]:
    """The statements of one library build: its level's CVEs, and those of newer levels."""
    c = host.checkin
    prod = [library_product(host, row)]
    level = f"userspace live patch level {row.level} ({row.name}) of {row.soname}"
    mine = cves.of_library(row, c.channel)
    if row.state == "patched":
        found = [
            {
                "vulnerability": {"name": cve},
                "products": prod,
                "status": "fixed",
                "status_notes": f"fixed in memory by {level} in all {row.patched} processes",
            }
            for cve in mine
        ]
    else:
        total = row.patched + row.left
        note = (
            f"partially fixed in memory: {level} runs in {row.patched} of {total} processes"
            if row.state == "partial"
            else f"not fixed in memory: {level} runs in none of its {total} processes"
        )
        found = [
            {
                "vulnerability": {"name": cve},
                "products": prod,
                "status": "affected",
                "status_notes": f"{note}; the others: {_processes(row)}",
                "action_statement": (
                    "restart the processes that run the unpatched code (the agent patches "
                    "them as they start), or run 'suture update' on the host"
                ),
            }
            for cve in mine
        ]
    first: dict[str, int] = {}
    for lv in cves.pending(row.soname, row.build_id, c.channel, row.level):
        for cve in lv.cves:
            if cve not in mine:
                first.setdefault(cve, lv.level)
    return found + [
        {
            "vulnerability": {"name": cve},
            "products": prod,
            "status": "affected",
            "action_statement": (
                f"apply userspace live patch level {level_no} or later of {row.soname} "
                f"(channel {c.channel}: the agent's next update, or 'suture update' on the host)"
            ),
        }
        for cve, level_no in sorted(first.items())
    ]


def document(host: HostRecord, catalog: Catalog, timestamp: str) -> dict[str, Any]:
    """The OpenVEX document of one host: its fixed, partly fixed and still affected CVEs."""
    c = host.checkin
    live = live_level(c.build_id, c.state, c.level)
    cves = FixedCves(catalog)
    prod = [product(host)]
    statements: list[dict[str, Any]] = [
        {
            "vulnerability": {"name": cve},
            "products": prod,
            "status": "fixed",
            "status_notes": f"fixed in memory by live patch level {live}",
        }
        for cve in cves.of(c.release, c.build_id, c.channel, live)
    ]
    fixed = {s["vulnerability"]["name"] for s in statements}
    first: dict[str, int] = {}
    for lv in cves.pending(c.release, c.build_id, c.channel, live):
        for cve in lv.cves:
            if cve not in fixed:
                first.setdefault(cve, lv.level)
    statements += [
        {
            "vulnerability": {"name": cve},
            "products": prod,
            "status": "affected",
            "action_statement": (
                f"apply live patch level {level} or later of channel {c.channel} "
                "(the agent's next update, or 'suture update' on the host)"
            ),
        }
        for cve, level in sorted(first.items())
    ]
    for row in c.userspace:
        statements += library_statements(host, row, cves)
    digest = hashlib.sha256(canonical({"s": statements, "t": timestamp})).hexdigest()[:32]
    return {
        "@context": CONTEXT,
        "@id": f"urn:suture:vex:{c.host_id}:{digest}",
        "author": AUTHOR,
        "role": "live patch server",
        "timestamp": timestamp,
        "version": 1,
        "tooling": f"suture {__version__}",
        "statements": statements,
    }
