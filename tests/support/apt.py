"""A fake ``apt-cache`` on PATH that answers from a table, so apt's own output format is parsed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

# The archive as the tests see it: Debian 12 today, with builds whose source is gone.
ARCHIVE: dict[str, list[str]] = {
    "linux-image-6.1.0-47-amd64": ["6.1.170-3"],
    "linux-image-6.1.0-47-cloud-amd64": ["6.1.170-3"],
    "linux-image-6.1.0-47-amd64-dbg": ["6.1.170-3"],
    "linux-image-6.1.0-51-amd64": ["6.1.177-1"],
    "linux-image-6.1.0-51-rt-amd64": ["6.1.177-1"],
    "linux-image-6.1.0-56-amd64": ["6.1.192-2"],
    "linux-image-6.1.0-56-amd64-unsigned": ["6.1.192-2"],
    "linux-image-6.1.0-57-amd64": ["6.1.192-3"],
    "linux-image-6.1.0-57-cloud-amd64": ["6.1.192-3"],
    "linux-image-6.1.0-9-amd64": ["6.1.27-1"],  # ABI 9 sorts before 47, not after
    "linux-image-6.12.95+deb12-amd64": ["6.12.95-1~bpo12+1"],
    "linux-image-6.1.0-10-amd64": [],  # apt knows the name (installed here), the archive has none
    "linux-source-6.1": ["6.1.192-3", "6.1.192-2", "6.1.170-3", "6.1.27-1"],
}

_SCRIPT = """\
import json, sys
archive = json.load(open({table!r}))
cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "pkgnames":
    # Unsorted, like apt's own answer.
    print("\\n".join(sorted((n for n in archive if n.startswith(args[0])), reverse=True)))
elif cmd == "madison":
    for name in args:
        for v in archive.get(name, []):
            print(f"{{name:>30}} | {{v:>12}} | http://deb.debian.org/debian bookworm/main Packages")
elif cmd == "depends":
    print(args[0])
    print("  Depends: linux-image-6.1.0-57-amd64")
else:
    sys.exit(100)
"""


# `apt-get download NAME=VERSION...`: copies the .deb the table names into the current folder.
_GET = """\
import json, shutil, sys
debs = json.load(open({table!r}))
specs = [a for a in sys.argv[1:] if "=" in a and not a.startswith("APT::")]
for spec in specs:
    if spec not in debs:
        sys.exit(f"E: Version '{{spec}}' not found")
    shutil.copy(debs[spec], ".")
"""


def install(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    archive: dict[str, list[str]],
    debs: dict[str, Path] | None = None,
) -> Path:
    """Put a fake ``apt-cache`` answering from ``archive`` first on PATH; returns its table.

    With ``debs`` (``name=version`` -> a .deb file), a fake ``apt-get download`` too.
    """
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(parents=True)
    table = bin_dir / "archive.json"
    table.write_text(json.dumps(archive))
    script = bin_dir / "apt-cache"
    script.write_text(f"#!{sys.executable}\n" + _SCRIPT.format(table=str(table)))
    script.chmod(0o755)
    if debs is not None:
        deb_table = bin_dir / "debs.json"
        deb_table.write_text(json.dumps({k: str(v) for k, v in debs.items()}))
        get = bin_dir / "apt-get"
        get.write_text(f"#!{sys.executable}\n" + _GET.format(table=str(deb_table)))
        get.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir), prepend=os.pathsep)
    return table


def source_deb(tmp_path: Path, version: str, files: dict[str, str]) -> Path:
    """A ``linux-source-6.1`` package of ``version`` whose tarball holds ``files``."""
    root = tmp_path / f"deb-{version}"
    top = root / "tree" / "linux-source-6.1"
    for rel, text in files.items():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_text(text)
    pkg = root / "pkg"
    (pkg / "usr" / "src").mkdir(parents=True)
    with tarfile.open(pkg / "usr" / "src" / "linux-source-6.1.tar.xz", "w:xz") as tar:
        tar.add(top, arcname="linux-source-6.1")
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN" / "control").write_text(
        f"Package: linux-source-6.1\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: test <t@example.org>\nDescription: test\n"
    )
    deb = root / f"linux-source-6.1_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "-Zgzip", "-b", str(pkg), str(deb)], check=True, capture_output=True
    )
    return deb
