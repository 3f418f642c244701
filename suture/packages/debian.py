"""Debian's kernel series: the :class:`~suture.packages.distro.KernelSeries` of Debian's archive.

A Debian build ``R`` is ``linux-image-R`` with what it depends on at the
same version (7.x splits it into ``linux-base-R``, ``linux-binary-R`` and
``linux-modules-R``), ``linux-headers-R`` with its ``-common`` part and
``linux-kbuild``; its exact source is a binary package holding the
source tarball (``linux-source-6.1``, ``linux-source-6.12``, ``linux-source``)
at the image's version; its compiler is the host's when it is exactly the
one the config names, else the suite's own in a build root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from suture.errors import KernelNotFoundError
from suture.packages import apt, buildroot
from suture.packages.buildroot import BuildRootSpec
from suture.packages.distro import FetchedKernel, SourceRef
from suture.packages.toolchain import Toolchain, host, mismatch

_IMAGE = "linux-image-"


@dataclass(frozen=True)
class DebianSeries:
    """One line of Debian kernel builds, all made from one source package.

    A release is ``<abi part>-<flavour>``, e.g. ``6.1.0-57-cloud-amd64``,
    ``6.12.118+deb13-amd64``.
    """

    name: str  # e.g. debian12
    description: str
    image_prefix: str  # what `apt-cache pkgnames` is asked for: linux-image-6.1.0-
    abi_pattern: str  # regex over the release without its flavour; its one group orders builds
    flavours: tuple[str, ...]  # every flavour Debian builds in this series
    # The binary package holding the exact source: linux-source-6.1. "": Debian's
    # convention for a release of no known series, linux-source-X.Y.
    source_package: str
    archive: apt.Archive = apt.HOST  # where apt finds the series' packages
    # Build roots that may hold the series' compiler, tried in order after the host's.
    build_roots: tuple[BuildRootSpec, ...] = ()

    def parse(self, release: str) -> tuple[tuple[int, ...], str] | None:
        """``(abi, flavour)`` of a release of this series, or None when it is not one.

        The ABI is the tuple of numbers in the pattern's group: ``57`` -> ``(57,)``,
        ``7.3.4+deb13`` -> ``(7, 3, 4, 13)``; builds sort by it.
        """
        # The longest flavour first: "-amd64" also ends "-cloud-amd64".
        for flavour in sorted(self.flavours, key=len, reverse=True):
            head = release.removesuffix(f"-{flavour}")
            if head != release and (m := re.fullmatch(self.abi_pattern, head)):
                return tuple(int(n) for n in re.findall(r"\d+", m.group(1))), flavour
        return None

    def releases(self, flavours: tuple[str, ...]) -> list[str]:
        """The builds of ``flavours`` the archive offers now."""
        names = [
            pkg
            for pkg in apt.pkgnames(self.image_prefix, self.archive)
            if (parsed := self.parse(pkg.removeprefix(_IMAGE))) and parsed[1] in flavours
        ]
        # apt also knows names only referred to, or installed here without a
        # version in the archive: the archive's own answer decides.
        offered = apt.madison(names, self.archive)
        return [pkg.removeprefix(_IMAGE) for pkg in names if offered.get(pkg)]

    def image_versions(self, releases: list[str]) -> dict[str, str]:
        """Each release's newest ``linux-image`` version; those the archive lacks are left out."""
        found = apt.madison([_IMAGE + r for r in releases], self.archive)
        return {r: found[_IMAGE + r][0] for r in releases if found.get(_IMAGE + r)}

    def source_of(self, release: str, image_version: str) -> SourceRef:
        """``linux-source-X.Y`` (or the series' own package) at the image's version."""
        package = self.source_package or "linux-source-" + ".".join(image_version.split(".")[:2])
        return SourceRef(package, image_version)

    def offered_sources(self, refs: list[SourceRef]) -> set[SourceRef]:
        """Those of ``refs`` whose version the archive offers."""
        found = apt.madison(sorted({r.package for r in refs}), self.archive)
        return {r for r in refs if r.version in found.get(r.package, [])}

    def package_set(self, release: str) -> tuple[str, list[str]]:
        """The image version and the ``name=version`` packages that make up one build.

        Raises:
            KernelNotFoundError: the archive has no image of ``release``.
        """
        image = _IMAGE + release
        version = self.image_versions([release]).get(release)
        if version is None:
            raise KernelNotFoundError(
                f"the package archive has no {image}",
                hint="'suture lab list' shows the builds of each set; " + self.archive.hint(),
            )
        headers = f"linux-headers-{release}"
        specs = {f"{image}={version}": None, f"{headers}={version}": None}
        # 7.x images are a meta-package over linux-base/-binary/-modules-<release>.
        for dep in apt.depends(image, version, self.archive):
            if dep.startswith("linux-") and dep.endswith(release) and dep != image:
                specs[f"{dep}={version}"] = None
        for dep in apt.depends(headers, version, self.archive):
            if dep.endswith("-common") or (dep.startswith("linux-base-") and dep.endswith(release)):
                specs[f"{dep}={version}"] = None
            elif dep.startswith("linux-kbuild-"):
                # The kbuild tools of older builds leave the archive when a newer
                # point release lands; the newest one of the same series builds
                # modules for them all (it is what Debian installs alongside).
                kbuild = apt.versions(dep, self.archive)
                specs[f"{dep}={version if version in kbuild else kbuild[0]}"] = None
        return version, list(specs)

    def fetch_kernel(self, release: str, root: Path) -> FetchedKernel:
        """Download the build's packages and unpack them under ``root`` (no package scripts)."""
        version, specs = self.package_set(release)
        debs = apt.download(specs, root.parent / ".debs", self.archive)
        if len(debs) != len(specs):
            raise KernelNotFoundError(
                f"expected {len(specs)} packages of {release}, got {len(debs)}",
                hint="run the command again; " + self.archive.hint(),
            )
        for deb in debs:
            apt.unpack(deb, root)
            deb.unlink()
        return FetchedKernel(version, tuple(specs))

    def fetch_source(self, ref: SourceRef, work: Path) -> Path:
        """Download ``ref`` and take its source tarball out (``usr/src/linux-source-*.tar.*``)."""
        (deb,) = apt.download([ref.spec], work / "debs", self.archive)
        apt.unpack(deb, work / "root")
        (tarball,) = (work / "root" / "usr" / "src").glob("linux-source-*.tar.*")
        return tarball

    def package_lists(self) -> str:
        """The private apt configuration's name ("" for the host's lists)."""
        return self.archive.name

    def refresh(self) -> None:
        """Refresh the private apt lists now (the host's are apt-get update's)."""
        apt.ensure_lists(self.archive, refresh=True)

    def toolchain(self, config_text: str) -> Toolchain:
        """The host's compiler when it is exactly the config's, else the first build root's that is.

        A build root is made (once) only when the host's compiler is not the one.

        Raises:
            BuildError: neither the host nor any of the series' build roots has it.
        """
        on_host = host(config_text)
        found = on_host.version()
        if found == on_host.version_text:
            return on_host
        tried = [("the host", found)]
        for spec in self.build_roots:
            root = buildroot.ensure(spec)
            candidate = Toolchain(on_host.cc, on_host.version_text, root, spec.name)
            found = candidate.version()
            if found == on_host.version_text:
                return candidate
            tried.append((f"build root {spec.name}", found))
        raise mismatch(config_text, tried)

    def default_release(self, meta: str = apt.DEFAULT_META) -> str:
        """The release the archive's meta-package ``meta`` depends on now."""
        return apt.default_release(meta, self.archive)
