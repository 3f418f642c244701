"""A fake ``apt-cache`` on PATH that answers from a table, so apt's own output format is parsed.

Called with a private configuration (``-o Dir::Etc::SourceList=...``, as
Suture reads the suites the host does not list), it answers from a second
table; its ``apt-get update`` counts its calls in ``updates`` beside the table.
"""

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
    "linux-image-5.10.0-30-amd64": ["5.10.218-1"],  # Debian 11: no known series
    "linux-image-6.1.0-10-amd64": [],  # apt knows the name (installed here), the archive has none
    "linux-source-6.1": ["6.1.192-3", "6.1.192-2", "6.1.170-3", "6.1.27-1"],
}

# What Suture's private lists (trixie, trixie-security, trixie-backports,
# bookworm-backports) offer in the tests.
PRIVATE: dict[str, list[str]] = {
    "linux-image-6.12.117+deb13-amd64": ["6.12.117-1"],
    "linux-image-6.12.118+deb13-amd64": ["6.12.118-1"],
    "linux-image-6.12.118+deb13-amd64-dbg": ["6.12.118-1"],
    "linux-image-6.12.118+deb13-cloud-amd64": ["6.12.118-1"],
    "linux-image-6.12.115+deb13.1-amd64": ["6.12.115-2"],
    "linux-image-6.12.90+deb13-amd64": [],  # only referred to: not in the archive
    "linux-image-6.12.95+deb12-amd64": ["6.12.95-1~bpo12+1"],
    "linux-image-6.12.95+deb12-rt-amd64": ["6.12.95-1~bpo12+1"],
    "linux-image-7.2.12+deb13-amd64": ["7.2.12-1~bpo13+1"],
    "linux-image-7.3.4+deb13-amd64": ["7.3.4-1~bpo13+1"],
    "linux-image-7.3.4+deb13-rt-amd64": ["7.3.4-1~bpo13+1"],
    "linux-source-6.12": ["6.12.118-1", "6.12.115-2", "6.12.95-1~bpo12+1"],
    "linux-source": ["7.3.4-1~bpo13+1", "6.12.118-1"],  # a meta-package
    "linux-source-7.3": ["7.3.4-1~bpo13+1"],
}

_SCRIPT = """\
import json, sys
argv, private = [], False
words = iter(sys.argv[1:])
for word in words:
    if word == "-o":
        private |= next(words).startswith("Dir::Etc::SourceList=")
    else:
        argv.append(word)
archive = json.load(open({table!r}))["private" if private else "host"]
cmd, args = argv[0], argv[1:]
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
# `apt-get update`: counts its calls.
_GET = """\
import json, pathlib, shutil, sys
if "update" in sys.argv:
    count = pathlib.Path({updates!r})
    count.write_text(str(int(count.read_text() or 0) + 1) if count.exists() else "1")
    for arg in sys.argv:  # an index in the lists folder, as apt leaves one per suite
        if arg.startswith("Dir::State::Lists="):
            lists = pathlib.Path(arg.split("=", 1)[1])
            (lists / "deb.debian.org_debian_dists_trixie_main_binary-amd64_Packages").touch()
    sys.exit(0)
debs = json.load(open({table!r})) if pathlib.Path({table!r}).exists() else {{}}
specs = [a for a in sys.argv[1:] if "=" in a and not a.startswith(("APT::", "Dir"))]
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
    private: dict[str, list[str]] | None = None,
) -> Path:
    """Put a fake ``apt-cache`` answering from ``archive`` first on PATH; returns its table.

    ``private`` (default :data:`PRIVATE`) answers calls through Suture's
    private apt configuration. With ``debs`` (``name=version`` -> a .deb
    file), ``apt-get download`` copies them; ``apt-get update`` always works.
    """
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(parents=True)
    table = bin_dir / "archive.json"
    table.write_text(
        json.dumps({"host": archive, "private": PRIVATE if private is None else private})
    )
    script = bin_dir / "apt-cache"
    script.write_text(f"#!{sys.executable}\n" + _SCRIPT.format(table=str(table)))
    script.chmod(0o755)
    deb_table = bin_dir / "debs.json"
    if debs is not None:
        deb_table.write_text(json.dumps({k: str(v) for k, v in debs.items()}))
    get = bin_dir / "apt-get"
    updates = bin_dir / "updates"
    get.write_text(
        f"#!{sys.executable}\n" + _GET.format(table=str(deb_table), updates=str(updates))
    )
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
