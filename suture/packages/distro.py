"""The one interface between Suture and a distro's kernels: :class:`KernelSeries`.

Everything distro-specific about a line of kernel builds sits behind it:
which builds the distro offers now and at which package version, where a
build's image, modules, headers and config come from, which source package
holds its exact source, and where its compiler can be had. The rest of
Suture (the cache, the guests, the builder) works on what it returns:
files unpacked into the cache, a source tarball, a :class:`Toolchain`.

Debian's series implement it (suture/packages/debian.py); docs/adr/0016 says how
Ubuntu, the RHEL family and Amazon Linux would. Symbol positions are not
part of it: every distro's build is booted in a lab guest and its
``/proc/kallsyms`` read (suture/lab/kallsyms.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from suture.packages.toolchain import Toolchain


@dataclass(frozen=True)
class SourceRef:
    """The exact source of a build: one package at one version, unpacked once in the cache.

    Attributes:
        package: e.g. ``linux-source-6.12`` (Debian), ``kernel`` (an SRPM).
        version: the package version, the build's own, e.g. ``6.12.118-1``.
    """

    package: str
    version: str

    @property
    def spec(self) -> str:
        """``package=version``: the shared source's name in the cache."""
        return f"{self.package}={self.version}"


@dataclass(frozen=True)
class FetchedKernel:
    """What :meth:`KernelSeries.fetch_kernel` unpacked.

    Attributes:
        version: the image's package version.
        packages: what was downloaded, for the record (``name=version``).
    """

    version: str
    packages: tuple[str, ...]


class KernelSeries(Protocol):
    """One line of a distro's kernel builds, made from one source package.

    A release names a build: ``6.1.0-57-amd64``, ``6.12.118+deb13-amd64``.
    """

    @property
    def name(self) -> str:
        """The series' name, e.g. ``debian13``."""
        ...

    @property
    def description(self) -> str:
        """One line for people."""
        ...

    @property
    def flavours(self) -> tuple[str, ...]:
        """Every flavour the distro builds in this series (``amd64``, ``cloud-amd64``...)."""
        ...

    def parse(self, release: str) -> tuple[tuple[int, ...], str] | None:
        """``(abi, flavour)`` of a release of this series (None: not one); builds sort by abi."""
        ...

    def releases(self, flavours: tuple[str, ...]) -> list[str]:
        """The builds of those flavours the distro's archive offers now (any order)."""
        ...

    def image_versions(self, releases: list[str]) -> dict[str, str]:
        """Each release's image package version; one the archive lacks is left out."""
        ...

    def source_of(self, release: str, image_version: str) -> SourceRef:
        """The package holding the exact source of that build."""
        ...

    def offered_sources(self, refs: list[SourceRef]) -> set[SourceRef]:
        """Those of ``refs`` the archive still offers (one query for all)."""
        ...

    def fetch_kernel(self, release: str, root: Path) -> FetchedKernel:
        """Download the build's image, modules, config and kbuild headers, unpacked under ``root``.

        ``root`` is laid out as the distro installs them (``boot/`` or
        ``usr/lib/modules/<release>/``, ``usr/src/...``); nothing runs
        any package script.
        """
        ...

    def fetch_source(self, ref: SourceRef, work: Path) -> Path:
        """Download the source package ``ref`` into ``work``; returns its source tarball."""
        ...

    def package_lists(self) -> str:
        """The name of the package lists Suture keeps for this series ("" for the host's own)."""
        ...

    def refresh(self) -> None:
        """Fetch this series' package lists again now (nothing for the host's own)."""
        ...

    def toolchain(self, config_text: str) -> Toolchain:
        """Where the exact compiler of a build with that config runs (made once if need be).

        Raises:
            BuildError: nothing here can provide exactly that compiler.
        """
        ...
