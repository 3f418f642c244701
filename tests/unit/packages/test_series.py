"""The other kernel series: private apt lists, the KernelSeries interface, toolchains, layouts."""

from __future__ import annotations

import ast
import json
import lzma
import os
import time
from pathlib import Path

import pytest

from suture.builder import source
from suture.errors import BuildError, DownloadError, KernelNotFoundError
from suture.lab import guest, initramfs
from suture.lab.guest import GuestConfig
from suture.packages import apt, buildroot, cache, debian, distro, kernels, sets
from suture.packages.kernels import KernelTree
from suture.packages.toolchain import Toolchain, mismatch, required_compiler
from tests.support import apt as fake_apt
from tests.support.kernel import compile_module

ROOT = Path(__file__).resolve().parents[3]
GCC14 = "x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0"


@pytest.fixture(autouse=True)
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SUTURE_CACHE", str(tmp_path / "cache"))
    yield tmp_path / "cache"
    cache.unpin_all()


def updates(table: Path) -> int:
    count = table.parent / "updates"
    return int(count.read_text()) if count.exists() else 0


# --- private apt lists -------------------------------------------------------


def test_private_archive_options_never_name_the_hosts_configuration(cache_root: Path) -> None:
    opts = sets.DEBIAN_MORE.options()
    pairs = dict(o.split("=", 1) for o in opts[1::2])
    assert opts[::2] == ["-o"] * len(pairs)
    private = cache_root / "apt" / "debian-more"
    assert pairs["Dir::Etc::SourceList"] == str(private / "sources.list")
    assert pairs["Dir::Etc::SourceParts"] == "/dev/null"
    assert pairs["Dir::State::Lists"] == str(private / "lists")
    assert pairs["Dir::State::status"] == str(private / "status")  # not /var/lib/dpkg/status
    assert pairs["Dir::Cache"] == str(private / "cache")  # not the host's pkgcache.bin
    assert apt.HOST.options() == []


def test_private_lists_are_fetched_once_and_refreshed_after_a_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_root: Path
) -> None:
    table = fake_apt.install(tmp_path, monkeypatch, fake_apt.ARCHIVE)
    sets.set_releases("debian13")
    sets.describe(["7.3.4+deb13-amd64", "6.12.95+deb12-amd64"])
    assert updates(table) == 1  # one private configuration serves the three series
    sources = (cache_root / "apt" / "debian-more" / "sources.list").read_text().splitlines()
    assert sources == list(sets.DEBIAN_MORE.sources)
    assert "deb http://deb.debian.org/debian trixie-backports main" in sources
    sets.set_releases("debian12")  # the host's own lists: no private refresh
    assert updates(table) == 1

    stamp = cache_root / "apt" / "debian-more" / "updated.json"
    record = json.loads(stamp.read_text())
    record["updated"] = time.time() - apt.MAX_AGE - 60
    stamp.write_text(json.dumps(record))
    sets.set_releases("trixie-backports")
    assert updates(table) == 2

    assert sets.refresh() == ["debian-more"]  # `suture lab update`: once for the three series
    assert updates(table) == 3


def test_changed_sources_refresh_the_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = fake_apt.install(tmp_path, monkeypatch, fake_apt.ARCHIVE)
    apt.ensure_lists(sets.DEBIAN_MORE)
    more = apt.Archive("debian-more", (*sets.DEBIAN_MORE.sources, "deb http://x sid main"))
    apt.ensure_lists(more)
    assert updates(table) == 2
    assert apt.lists_age(sets.DEBIAN_MORE) is None  # stamped for the other sources now


def test_a_private_series_lists_nothing_names_suture_lab_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_apt.install(tmp_path, monkeypatch, fake_apt.ARCHIVE, private={})
    with pytest.raises(KernelNotFoundError, match="no build of the kernel set debian13") as e:
        sets.set_releases("debian13")
    assert "suture lab update" in e.value.hint


# --- the interface -------------------------------------------------------------


def test_debian_series_implement_the_interface() -> None:
    rows: list[distro.KernelSeries] = list(sets.SERIES)  # mypy checks the protocol here
    assert [s.name for s in rows] == [
        "debian12",
        "debian13",
        "bookworm-backports",
        "trixie-backports",
    ]
    for row in rows:
        for name in ("parse", "releases", "image_versions", "source_of", "offered_sources"):
            assert callable(getattr(row, name))
        assert callable(row.fetch_kernel) and callable(row.fetch_source)
        assert callable(row.toolchain)


def test_source_of_each_series() -> None:
    assert sets.DEBIAN13.source_of("6.12.118+deb13-amd64", "6.12.118-1").spec == (
        "linux-source-6.12=6.12.118-1"
    )
    assert sets.TRIXIE_BACKPORTS.source_of("7.3.4+deb13-amd64", "7.3.4-1~bpo13+1").spec == (
        "linux-source-7.3=7.3.4-1~bpo13+1"
    )
    assert sets.OTHER.source_of("5.10.0-30-amd64", "5.10.218-1").package == "linux-source-5.10"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_nothing_debian_specific_leaks_past_the_interface() -> None:
    # apt, Debian's series and its build roots are reached only through
    # suture.packages.sets (the registry) and the KernelSeries it returns.
    debian_only = {"suture.packages.apt", "suture.packages.debian", "suture.packages.buildroot"}
    allowed = {
        ("packages", "sets.py"),
        ("packages", "debian.py"),
        ("packages", "buildroot.py"),
        ("packages", "apt.py"),
        ("lab", "rootfs.py"),
    }
    for path in sorted((ROOT / "suture").rglob("*.py")):
        if (path.parent.name, path.name) in allowed:
            continue
        leaked = {m for m in _imports(path) if any(m.startswith(d) for d in debian_only)}
        assert not leaked, f"{path.relative_to(ROOT)} imports {leaked}"


# --- fetching: the package set and the layouts -------------------------------------


def test_package_set_of_a_7x_build_takes_its_split_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def depends(package: str, version: str, archive: apt.Archive) -> list[str]:
        calls.append((package, archive.name))
        return {
            "linux-image-7.3.4+deb13-amd64": [
                "dracut",
                "linux-base-7.3.4+deb13-amd64",
                "linux-binary-7.3.4+deb13-amd64",
                "linux-modules-7.3.4+deb13-amd64",
            ],
            "linux-headers-7.3.4+deb13-amd64": [
                "gcc-14-for-host",
                "linux-base",
                "linux-base-7.3.4+deb13-amd64",
                "linux-headers-7.3.4+deb13-common",
                "linux-kbuild-7.3.4+deb13",
            ],
        }[package]

    fake_apt.install(
        tmp_path,
        monkeypatch,
        {},
        private={**fake_apt.PRIVATE, "linux-kbuild-7.3.4+deb13": ["7.3.4-1~bpo13+1"]},
    )
    monkeypatch.setattr(apt, "depends", depends)
    version, specs = sets.TRIXIE_BACKPORTS.package_set("7.3.4+deb13-amd64")
    v = "7.3.4-1~bpo13+1"
    assert version == v
    assert specs == [
        f"linux-image-7.3.4+deb13-amd64={v}",
        f"linux-headers-7.3.4+deb13-amd64={v}",
        f"linux-base-7.3.4+deb13-amd64={v}",
        f"linux-binary-7.3.4+deb13-amd64={v}",
        f"linux-modules-7.3.4+deb13-amd64={v}",
        f"linux-headers-7.3.4+deb13-common={v}",
        f"linux-kbuild-7.3.4+deb13={v}",
    ]
    assert {a for _, a in calls} == {"debian-more"}


def test_kernel_tree_finds_7x_and_merged_usr_layouts(tmp_path: Path) -> None:
    r = "7.3.4+deb13-amd64"
    mods = tmp_path / "usr" / "lib" / "modules" / r
    mods.mkdir(parents=True)
    (mods / "vmlinuz").write_bytes(b"x")
    (mods / "config").write_text("CONFIG_X=y\n")
    tree = KernelTree(r, "7.3.4-1~bpo13+1", tmp_path)
    assert tree.vmlinuz == mods / "vmlinuz"
    assert tree.config == mods / "config"
    assert tree.modules_dir == mods
    old = KernelTree("6.1.0-57-amd64", "6.1.192-3", tmp_path / "old")
    assert old.vmlinuz == tmp_path / "old" / "boot" / "vmlinuz-6.1.0-57-amd64"  # none exist
    assert old.modules_dir == tmp_path / "old" / "lib" / "modules" / "6.1.0-57-amd64"


def _module(tmp: Path, name: str, depends: str) -> bytes:
    """A real (tiny, gcc-built) module object with a ``.modinfo`` section."""
    obj = compile_module(tmp / f"{name}.o", [f"name={name}", f"depends={depends}"])
    return obj.read_bytes()


def test_initramfs_leaves_built_in_modules_out_and_decompresses(tmp_path: Path) -> None:
    r = "6.12.118+deb13-amd64"
    mods = tmp_path / "usr" / "lib" / "modules" / r
    for rel, dep in (
        ("fs/9p/9p.ko.xz", "9pnet,netfs"),
        ("net/9p/9pnet.ko.xz", ""),
        ("net/9p/9pnet_virtio.ko.xz", "9pnet,virtio_ring"),
        ("fs/netfs/netfs.ko.xz", ""),
        ("fs/overlayfs/overlay.ko.xz", ""),
    ):
        path = mods / "kernel" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lzma.compress(_module(tmp_path, path.name.split(".")[0], dep)))
    (mods / "modules.builtin").write_text(
        "kernel/drivers/virtio/virtio_ring.ko\nkernel/drivers/virtio/virtio_pci.ko\n"
    )
    tree = KernelTree(r, "6.12.118-1", tmp_path)
    order = [p.name for p in initramfs.module_load_order(tree)]
    assert order == [
        "9pnet.ko.xz",
        "9pnet_virtio.ko.xz",
        "netfs.ko.xz",
        "9p.ko.xz",
        "overlay.ko.xz",
    ]


# --- toolchains ----------------------------------------------------------------


def test_host_toolchain_runs_argv_as_it_is() -> None:
    chain = Toolchain("gcc-12", "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0")
    assert chain.on_host
    assert chain.wrap(["make", "-C", "/x"]) == ["make", "-C", "/x"]


def test_build_root_toolchain_wraps_argv_in_a_mount_namespace_and_chroot(
    tmp_path: Path, cache_root: Path
) -> None:
    root = tmp_path / "root"
    tree = cache_root / "trees" / "r" / "linux"
    work = tmp_path / "work" / "module"
    for d in (root, tree, work):
        d.mkdir(parents=True)
    chain = Toolchain("x86_64-linux-gnu-gcc-14", GCC14, root, "trixie-gcc-14")
    argv = chain.wrap(["make", "-C", str(tree), "CC=x"], cwd=tree, paths=(work, Path("/usr")))
    assert argv[:8] == [
        "env", argv[1], "unshare", "--mount", "--propagation", "private", "--", "sh"
    ]  # fmt: skip
    assert argv[1].startswith("SUTURE_ROOT_PATH=/usr/local/sbin:")
    script, name, got_root, cwd, count = argv[9:14]
    assert "chroot" in script and "mount --rbind" in script
    assert (name, got_root, cwd) == ("suture-buildroot", str(root), str(tree))
    binds = argv[14 : 14 + int(count)]
    assert argv[14 + int(count) :] == ["make", "-C", str(tree), "CC=x"]
    # The cache (holding the tree), Suture's package and the temporary folder
    # (holding work): none inside another, no system folder.
    assert any(str(cache_root).startswith(b + "/") or str(cache_root) == b for b in binds)
    here = str(ROOT / "suture")  # bound itself, or inside a bound folder (a clone under /tmp)
    assert any(here == b or here.startswith(b + "/") for b in binds)
    assert "/usr" not in binds and str(tree) not in binds
    assert all(not b.startswith(o + "/") for b in binds for o in binds)


def test_source_tree_make_argv_goes_through_its_toolchain(tmp_path: Path) -> None:
    chain = Toolchain("x86_64-linux-gnu-gcc-14", GCC14, tmp_path, "trixie-gcc-14")
    tree = source.SourceTree("r", "1", tmp_path / "linux", chain.cc, chain)
    argv = tree.make_argv("modules_prepare")
    assert argv[2] == "unshare"
    assert argv[-3:] == ["-C", str(tmp_path / "linux"), f"CC={chain.cc}"] or argv[-1] == (
        "modules_prepare"
    )
    assert f"CC={chain.cc}" in argv
    plain = source.SourceTree("r", "1", tmp_path / "linux", "gcc-12")
    assert plain.make_argv("x")[0] == "make"


def test_toolchain_of_a_series_takes_the_host_compiler_when_it_is_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Toolchain, "version", lambda self: GCC14 if self.on_host else "")
    made = []
    monkeypatch.setattr(buildroot, "ensure", lambda spec: made.append(spec) or Path("/nope"))
    chain = sets.DEBIAN13.toolchain(f'CONFIG_CC_VERSION_TEXT="{GCC14}"\n')
    assert chain.on_host and chain.cc == "x86_64-linux-gnu-gcc-14"
    assert made == []  # no build root made when the host has it


def test_toolchain_of_a_series_falls_back_to_its_build_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(Toolchain, "version", lambda self: "" if self.on_host else GCC14)
    monkeypatch.setattr(buildroot, "ensure", lambda spec: tmp_path / spec.name)
    chain = sets.TRIXIE_BACKPORTS.toolchain(f'CONFIG_CC_VERSION_TEXT="{GCC14}"\n')
    assert (chain.name, chain.root) == ("trixie-gcc-14", tmp_path / "trixie-gcc-14")


def test_a_compiler_no_toolchain_has_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    found = "x86_64-linux-gnu-gcc-14 (Debian 14.2.0-20) 14.2.0"
    monkeypatch.setattr(Toolchain, "version", lambda self: "" if self.on_host else found)
    monkeypatch.setattr(buildroot, "ensure", lambda spec: tmp_path)
    with pytest.raises(
        BuildError, match=r"built with 'x86_64-linux-gnu-gcc-14 \(Debian 14\.2\.0-19\)"
    ) as e:
        sets.DEBIAN13.toolchain(f'CONFIG_CC_VERSION_TEXT="{GCC14}"\n')
    assert "the host: missing" in e.value.message
    assert f"build root trixie-gcc-14: {found}" in e.value.message


def test_required_compiler_and_mismatch_text() -> None:
    assert required_compiler(f'CONFIG_CC_VERSION_TEXT="{GCC14}"\n') == (
        "x86_64-linux-gnu-gcc-14",
        GCC14,
    )
    with pytest.raises(BuildError, match="names no compiler"):
        required_compiler("CONFIG_X=y\n")
    err = mismatch(f'CONFIG_CC_VERSION_TEXT="{GCC14}"\n', [("the host", "")])
    assert "the host: missing" in err.message


def test_build_root_bootstrap_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(buildroot.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    argv = buildroot.bootstrap_argv(sets.TRIXIE_GCC14, tmp_path / "root")
    assert argv[:3] == ["mmdebstrap", "--variant=minbase", "--mode=root"]
    include = next(a for a in argv if a.startswith("--include="))
    assert include.split("=", 1)[1].split(",")[:3] == ["gcc-14", "gcc", "make"]
    for tool in ("libelf-dev", "dwarves", "flex", "bison", "bc", "libssl-dev", "kmod", "cpio"):
        assert tool in include
    assert argv[-4:] == ["trixie", str(tmp_path / "root"), *sets.TRIXIE_GCC14.sources]


def test_build_roots_are_cache_entries(cache_root: Path) -> None:
    entry = cache_root / "buildroots" / "trixie-gcc-14"
    (entry / "root").mkdir(parents=True)
    spec = sets.TRIXIE_GCC14
    record = {"sources": list(spec.sources), "packages": list(spec.packages)}
    (entry / "buildroot.json").write_text(json.dumps(record))
    (cache_root / "rootfs" / "debian13").mkdir(parents=True)
    keys = {e.key for e in cache.entries()}
    assert {"buildroot:trixie-gcc-14", "rootfs:debian13"} <= keys
    assert buildroot.cached(spec) == entry / "root"
    # A root made with other packages (an older Suture's) is made again.
    (entry / "buildroot.json").write_text(json.dumps({**record, "packages": ["gcc-14"]}))
    assert buildroot.cached(spec) is None
    result = cache.prune(0)
    assert "buildroot:trixie-gcc-14" in result.evicted
    assert not entry.exists()


# --- guests of another root ----------------------------------------------------------


def test_guest_with_another_root_shares_it_and_the_hosts_folders(tmp_path: Path) -> None:
    cfg = GuestConfig(root=tmp_path / "rootfs")
    argv = guest._qemu_argv(tmp_path / "k", tmp_path / "i", tmp_path, cfg)
    fsdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-fsdev"]
    assert fsdevs[0].startswith(f"local,id=hostroot,path={tmp_path / 'rootfs'},")
    assert any(f.startswith("local,id=hostfs,path=/,") and "readonly=on" in f for f in fsdevs)
    plain = guest._qemu_argv(tmp_path / "k", tmp_path / "i", tmp_path, GuestConfig())
    assert not any("hostfs" in a for a in plain)
    script = guest._command_script(["suture", "status"], tmp_path, cfg)
    assert f"export PATH={guest.ROOT_PATH}" in script
    assert "VIRTUAL_ENV" not in script  # the host's virtualenv is not there


def test_unknown_root_is_a_usage_error() -> None:
    from suture.errors import UsageError  # noqa: PLC0415
    from suture.lab import rootfs  # noqa: PLC0415

    with pytest.raises(UsageError, match="no root file system named 'debian99'") as e:
        rootfs.spec("debian99")
    assert "debian13" in e.value.hint


def test_kernels_resolve_default_is_debian12s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_apt.install(tmp_path, monkeypatch, fake_apt.ARCHIVE)
    assert kernels.resolve(None) == "6.1.0-57-amd64"
    assert os.environ["SUTURE_CACHE"]
    assert isinstance(sets.DEBIAN13, debian.DebianSeries)


def test_compressed_modules_read_as_plain_ones(tmp_path: Path) -> None:
    from suture.kernel.modinfo import module_bytes, read_modinfo  # noqa: PLC0415

    raw = _module(tmp_path, "foo", "bar")
    (tmp_path / "foo.ko.xz").write_bytes(lzma.compress(raw))
    assert module_bytes(tmp_path / "foo.ko.xz") == raw
    assert read_modinfo(tmp_path / "foo.ko.xz").depends == ["bar"]


def test_host_paths_another_root_shows() -> None:
    got = guest.host_paths(
        [
            Path("/"),
            Path("/work/a/b"),
            Path("/work/a"),
            Path("/usr"),
            Path("/tmp/x"),
            Path("/work/a"),
        ]
    )
    assert got == ["/tmp/x", "/work/a"]  # "/" and /usr would hide the root's own


def test_a_refresh_that_leaves_no_index_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_apt.install(tmp_path, monkeypatch, fake_apt.ARCHIVE)
    get = tmp_path / "fake-bin" / "apt-get"
    get.write_text("#!/bin/sh\nexit 0\n")  # "succeeds", fetches nothing
    with pytest.raises(DownloadError, match="refreshing the package lists of debian-more"):
        apt.ensure_lists(sets.DEBIAN_MORE)
    assert apt.lists_age(sets.DEBIAN_MORE) is None  # not stamped: the next call tries again
