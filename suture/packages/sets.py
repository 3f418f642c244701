"""Kernel series and sets: the distro builds a fleet runs, resolved at run time.

A *series* is one line of distro kernels made from one source package: Debian
12's 6.1 kernels (``linux-image-6.1.0-<abi>-<flavour>``, source
``linux-source-6.1``), Debian 13's 6.12 (``linux-image-6.12.<n>+deb13-<flavour>``),
the bookworm-backports 6.12 (``+deb12``) and the trixie-backports 7.x. A
series is a :class:`~suture.packages.distro.KernelSeries`; the rows of
:data:`SERIES` are Debian's (suture/packages/debian.py). A *set* picks flavours
of a series: ``debian12`` is every Debian 12 ``amd64`` build whose image the
archive still has. Nothing here names a build: the archive moves, and a set
is whatever the archive lists today.

A release resolves to its series by itself (:func:`series_for`), so
``--kernel 6.12.118+deb13-amd64`` reads trixie's packages through Suture's
private apt lists without being told.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from suture.errors import KernelNotFoundError, UsageError
from suture.packages import apt, buildroot
from suture.packages.debian import DebianSeries
from suture.packages.distro import KernelSeries

FORMAT_VERSION = 1

# Kept for callers that name the row type.
Series = DebianSeries

# The suites a Debian 12 host does not list, read through one private apt
# configuration in the cache (one refresh serves the three series).
DEBIAN_MORE = apt.Archive(
    "debian-more",
    (
        f"deb {buildroot.MIRROR} trixie main",
        f"deb {buildroot.SECURITY} trixie-security main",
        f"deb {buildroot.MIRROR} trixie-backports main",
        f"deb {buildroot.MIRROR} bookworm-backports main",
    ),
)

# Debian 13 and the trixie backports are built with trixie's gcc-14; Debian 12
# and bookworm-backports with bookworm's gcc-12 (CONFIG_CC_VERSION_TEXT of
# 6.12.95+deb12: "x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0").
TRIXIE_GCC14 = buildroot.debian_suite("trixie", "gcc-14")
BOOKWORM_GCC12 = buildroot.debian_suite("bookworm", "gcc-12")

_FLAVOURS = ("amd64", "cloud-amd64", "rt-amd64")

DEBIAN12 = DebianSeries(
    name="debian12",
    description="Debian 12 (bookworm) 6.1 kernels",
    image_prefix="linux-image-6.1.0-",
    abi_pattern=r"6\.1\.0-(\d+)",
    flavours=_FLAVOURS,
    source_package="linux-source-6.1",
    build_roots=(BOOKWORM_GCC12,),
)

DEBIAN13 = DebianSeries(
    name="debian13",
    description="Debian 13 (trixie, trixie-security) 6.12 kernels",
    image_prefix="linux-image-6.12.",
    # 6.12.115+deb13.1: an ABI bump within one upstream version.
    abi_pattern=r"(6\.12\.\d+\+deb13(?:\.\d+)?)",
    flavours=_FLAVOURS,
    source_package="linux-source-6.12",
    archive=DEBIAN_MORE,
    build_roots=(TRIXIE_GCC14,),
)

BOOKWORM_BACKPORTS = DebianSeries(
    name="bookworm-backports",
    description="Debian 12 backports (bookworm-backports) 6.12 kernels",
    image_prefix="linux-image-6.12.",
    abi_pattern=r"(6\.12\.\d+\+deb12(?:\.\d+)?)",
    flavours=_FLAVOURS,
    source_package="linux-source-6.12",
    archive=DEBIAN_MORE,
    build_roots=(BOOKWORM_GCC12,),
)

TRIXIE_BACKPORTS = DebianSeries(
    name="trixie-backports",
    description="Debian 13 backports (trixie-backports) 7.x kernels",
    image_prefix="linux-image-7.",
    abi_pattern=r"(7\.\d+\.\d+\+deb13(?:\.\d+)?)",
    flavours=_FLAVOURS,
    # linux-source-7.3 for 7.3.4 (by Debian's convention): `linux-source` itself
    # is only a meta-package depending on the newest of them.
    source_package="",
    archive=DEBIAN_MORE,
    build_roots=(TRIXIE_GCC14,),
)

SERIES: tuple[KernelSeries, ...] = (DEBIAN12, DEBIAN13, BOOKWORM_BACKPORTS, TRIXIE_BACKPORTS)

# A release of no known series: the host's archive and Debian's conventions.
OTHER = DebianSeries(
    name="",
    description="a Debian build of no known series",
    image_prefix="linux-image-",
    abi_pattern=r"(?!)",
    flavours=(),
    source_package="",
)


@dataclass(frozen=True)
class KernelSet:
    """A named choice of builds: the flavours ``flavours`` of every build of ``series``."""

    name: str
    series: KernelSeries
    flavours: tuple[str, ...]
    description: str


def _set(name: str, series: KernelSeries, flavour: str, what: str) -> KernelSet:
    return KernelSet(name, series, (flavour,), f"every {what} {flavour} build in the archive")


# rt-amd64 has no set: the source packages hold the source without the RT featureset.
SETS: dict[str, KernelSet] = {
    s.name: s
    for s in (
        _set("debian12", DEBIAN12, "amd64", "Debian 12"),
        _set("debian12-cloud", DEBIAN12, "cloud-amd64", "Debian 12"),
        _set("debian13", DEBIAN13, "amd64", "Debian 13"),
        _set("debian13-cloud", DEBIAN13, "cloud-amd64", "Debian 13"),
        _set("bookworm-backports", BOOKWORM_BACKPORTS, "amd64", "bookworm-backports"),
        _set("trixie-backports", TRIXIE_BACKPORTS, "amd64", "trixie-backports"),
    )
}


@dataclass(frozen=True)
class Build:
    """One build the archive offers, and whether its exact source is still there."""

    release: str
    series: str  # the Series' name, "" for a release of no known series
    flavour: str  # "" for a release of no known series
    image_version: str  # Debian version of linux-image-<release>, e.g. 6.1.192-3
    source_package: str  # e.g. linux-source-6.1; its version must equal image_version
    source_available: bool

    @property
    def source_spec(self) -> str:
        """``package=version`` of the build's exact source."""
        return f"{self.source_package}={self.image_version}"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready description."""
        return {
            "release": self.release,
            "series": self.series,
            "flavour": self.flavour,
            "image_version": self.image_version,
            "source": self.source_spec,
            "source_available": self.source_available,
        }


def series_of(release: str) -> tuple[KernelSeries, tuple[int, ...], str] | None:
    """The series a release belongs to, with its ABI and flavour (None: no known series)."""
    for series in SERIES:
        if (parsed := series.parse(release)) is not None:
            return series, *parsed
    return None


def series_for(release: str) -> KernelSeries:
    """The series that provides ``release``: a known one, else Debian's conventions on the host."""
    found = series_of(release)
    return found[0] if found is not None else OTHER


def default_release() -> str:
    """The distro's current default build: what Debian 12's ``linux-image-amd64`` names."""
    return DEBIAN12.default_release()


def refresh() -> list[str]:
    """Refresh the package lists Suture keeps (each once); returns their names."""
    done: list[str] = []
    for series in SERIES:
        name = series.package_lists()
        if name and name not in done:
            series.refresh()
            done.append(name)
    return done


def source_package(release: str, image_version: str) -> str:
    """The package with the exact source of ``release`` (at ``image_version``)."""
    return series_for(release).source_of(release, image_version).package


def order(release: str) -> tuple[int, tuple[int, ...], int, tuple[tuple[int, str], ...]]:
    """Sort key: series in table order, then ABI, then flavour; other releases last, by name."""
    if (found := series_of(release)) is not None:
        series, abi, flavour = found
        return SERIES.index(series), abi, series.flavours.index(flavour), ()
    tokens = tuple(
        (int(t), "") if t.isdigit() else (-1, t) for t in re.findall(r"\d+|\D+", release)
    )
    return len(SERIES), (), 0, tokens


def set_releases(name: str) -> list[str]:
    """The releases of set ``name`` that the archive offers now, in ABI order.

    Raises:
        UsageError: no such set.
        KernelNotFoundError: the archive lists no build of it (its lists are empty or stale).
    """
    kset = SETS.get(name)
    if kset is None:
        raise UsageError(
            f"no kernel set named {name!r}",
            hint=f"the sets are: {', '.join(sorted(SETS))}",
        )
    releases = kset.series.releases(kset.flavours)
    if not releases:
        raise KernelNotFoundError(
            f"the package archive lists no build of the kernel set {name}",
            hint=_hint(kset.series),
        )
    return sorted(releases, key=order)


def _hint(series: KernelSeries) -> str:
    archive = getattr(series, "archive", None)
    return archive.hint() if isinstance(archive, apt.Archive) else "refresh the package lists"


def _by_series(releases: Iterable[str]) -> dict[KernelSeries, list[str]]:
    groups: dict[KernelSeries, list[str]] = {}
    for r in releases:
        groups.setdefault(series_for(r), []).append(r)
    return groups


def image_versions(releases: list[str]) -> dict[str, str]:
    """Each release's image version, asking each series once.

    Raises:
        KernelNotFoundError: a release the archive has no image of.
    """
    versions: dict[str, str] = {}
    missing: list[str] = []
    hints: list[str] = []
    for series, group in _by_series(releases).items():
        found = series.image_versions(group)
        versions.update(found)
        gone = [r for r in group if r not in found]
        missing += gone
        if gone:
            hints.append(_hint(series))
    if missing:
        raise KernelNotFoundError(
            f"the package archive has no linux-image-{' or linux-image-'.join(missing)}",
            hint="'suture lab list' shows the builds of each set; or "
            + "; ".join(dict.fromkeys(hints)),
        )
    return versions


def resolve_kernels(kernels: list[str], sets: list[str]) -> list[str]:
    """The builds named by ``--kernel RELEASE`` and ``--kernels SET`` options, once each, in order.

    With neither, the distro's current default build. Sets are resolved from
    the archive now; a release given by name must have an image in the archive.

    Raises:
        UsageError: an unknown set name.
        KernelNotFoundError: a release the archive has no image of, or a set
            the archive lists no build of.
    """
    if not kernels and not sets:
        return [default_release()]
    found: set[str] = set()
    for name in sets:
        found.update(set_releases(name))
    named = sorted(set(kernels) - found, key=order)
    if named:
        image_versions(named)
        found.update(named)
    return sorted(found, key=order)


def describe(releases: list[str]) -> list[Build]:
    """Each release's image version and whether its exact source is still in the archive.

    Two archive queries per series, whatever the number of releases.

    Raises:
        KernelNotFoundError: a release the archive has no image of.
    """
    versions = image_versions(releases)
    refs = {r: series_for(r).source_of(r, versions[r]) for r in releases}
    offered: set[tuple[str, str]] = set()
    for series, group in _by_series(releases).items():
        have = series.offered_sources([refs[r] for r in group])
        offered |= {(x.package, x.version) for x in have}
    out = []
    for r in releases:
        found = series_of(r)
        out.append(
            Build(
                release=r,
                series=found[0].name if found else "",
                flavour=found[2] if found else "",
                image_version=versions[r],
                source_package=refs[r].package,
                source_available=(refs[r].package, refs[r].version) in offered,
            )
        )
    return out
