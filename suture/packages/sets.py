"""Kernel series and sets: the distro builds a fleet runs, resolved from apt at run time.

A *series* is one line of distro kernels made from one source package: Debian
12's 6.1 kernels (``linux-image-6.1.0-<abi>-<flavour>``, source
``linux-source-6.1``). A *set* picks flavours of a series: ``debian12`` is
every Debian 12 ``amd64`` build whose image the archive still has. Nothing
here names a build: the archive moves, and a set is whatever apt lists today.

Other series (Debian 13's 6.12, bookworm-backports, trixie-backports) are
new rows of :data:`SERIES` and :data:`SETS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from suture.errors import KernelNotFoundError, UsageError
from suture.packages import apt

FORMAT_VERSION = 1

_APT_HINT = "run 'apt-get update' (as root) so that apt knows the archive's packages"


@dataclass(frozen=True)
class Series:
    """One line of distro kernel builds, all made from one source package.

    A release is ``<abi part>-<flavour>``, e.g. ``6.1.0-57-cloud-amd64``.
    """

    name: str  # e.g. debian12
    description: str
    image_prefix: str  # what `apt-cache pkgnames` is asked for: linux-image-6.1.0-
    abi_pattern: str  # regex over the release without its flavour; its one group orders builds
    flavours: tuple[str, ...]  # every flavour Debian builds in this series
    source_package: str  # the binary package holding the exact source: linux-source-6.1

    def parse(self, release: str) -> tuple[tuple[int, ...], str] | None:
        """``(abi, flavour)`` of a release of this series, or None when it is not one.

        The ABI is the tuple of numbers in the pattern's group: ``57`` -> ``(57,)``,
        ``7.3.4`` -> ``(7, 3, 4)``; builds sort by it.
        """
        # The longest flavour first: "-amd64" also ends "-cloud-amd64".
        for flavour in sorted(self.flavours, key=len, reverse=True):
            head = release.removesuffix(f"-{flavour}")
            if head != release and (m := re.fullmatch(self.abi_pattern, head)):
                return tuple(int(n) for n in re.findall(r"\d+", m.group(1))), flavour
        return None


@dataclass(frozen=True)
class KernelSet:
    """A named choice of builds: the flavours ``flavours`` of every build of ``series``."""

    name: str
    series: Series
    flavours: tuple[str, ...]
    description: str


DEBIAN12 = Series(
    name="debian12",
    description="Debian 12 (bookworm) 6.1 kernels",
    image_prefix="linux-image-6.1.0-",
    abi_pattern=r"6\.1\.0-(\d+)",
    flavours=("amd64", "cloud-amd64", "rt-amd64"),
    source_package="linux-source-6.1",
)

SERIES: tuple[Series, ...] = (DEBIAN12,)

# rt-amd64 has no set: linux-source-6.1 holds the source without the RT featureset.
SETS: dict[str, KernelSet] = {
    s.name: s
    for s in (
        KernelSet("debian12", DEBIAN12, ("amd64",), "every Debian 12 amd64 build in the archive"),
        KernelSet(
            "debian12-cloud",
            DEBIAN12,
            ("cloud-amd64",),
            "every Debian 12 cloud-amd64 build in the archive",
        ),
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


def series_of(release: str) -> tuple[Series, tuple[int, ...], str] | None:
    """The series a release belongs to, with its ABI and flavour (None: no known series)."""
    for series in SERIES:
        if (parsed := series.parse(release)) is not None:
            return series, *parsed
    return None


def source_package(release: str, image_version: str) -> str:
    """The package with the exact source of ``release`` (at ``image_version``).

    Known series name it; otherwise Debian's convention, ``linux-source-X.Y``.
    """
    if (found := series_of(release)) is not None:
        return found[0].source_package
    return "linux-source-" + ".".join(image_version.split(".")[:2])


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
    """The releases of set ``name`` that apt lists now, in ABI order.

    Raises:
        UsageError: no such set.
        KernelNotFoundError: apt lists no build of it (its lists are empty or stale).
    """
    kset = SETS.get(name)
    if kset is None:
        raise UsageError(
            f"no kernel set named {name!r}",
            hint=f"the sets are: {', '.join(sorted(SETS))}",
        )
    prefix = "linux-image-"
    names = [
        pkg
        for pkg in apt.pkgnames(kset.series.image_prefix)
        if (parsed := kset.series.parse(pkg.removeprefix(prefix))) and parsed[1] in kset.flavours
    ]
    # apt also knows packages only installed here, or left without a version: the
    # archive's own answer decides.
    in_archive = apt.madison(names)
    releases = [pkg.removeprefix(prefix) for pkg in names if in_archive.get(pkg)]
    if not releases:
        raise KernelNotFoundError(f"apt lists no build of the kernel set {name}", hint=_APT_HINT)
    return sorted(releases, key=order)


def resolve_kernels(kernels: list[str], sets: list[str]) -> list[str]:
    """The builds named by ``--kernel RELEASE`` and ``--kernels SET`` options, once each, in order.

    With neither, the distro's current default build. Sets are resolved from
    apt now; a release given by name must have an image in the archive.

    Raises:
        UsageError: an unknown set name.
        KernelNotFoundError: a release the archive has no image of, or a set
            apt lists no build of.
    """
    if not kernels and not sets:
        return [apt.default_release()]
    found: set[str] = set()
    for name in sets:
        found.update(set_releases(name))
    named = sorted(set(kernels) - found, key=order)
    if named:
        images = apt.madison([f"linux-image-{r}" for r in named])
        missing = [r for r in named if f"linux-image-{r}" not in images]
        if missing:
            raise KernelNotFoundError(
                f"the package archive has no linux-image-{' or linux-image-'.join(missing)}",
                hint="'suture lab list' shows the builds of each set; or run 'apt-get update'",
            )
        found.update(named)
    return sorted(found, key=order)


def describe(releases: list[str]) -> list[Build]:
    """Each release's image version and whether its exact source is still in the archive.

    Two apt calls in all, whatever the number of releases.

    Raises:
        KernelNotFoundError: a release the archive has no image of.
    """
    images = apt.madison([f"linux-image-{r}" for r in releases])
    missing = [r for r in releases if not images.get(f"linux-image-{r}")]
    if missing:
        raise KernelNotFoundError(
            f"the package archive has no linux-image-{' or linux-image-'.join(missing)}",
            hint=_APT_HINT,
        )
    versions = {r: images[f"linux-image-{r}"][0] for r in releases}
    packages = {r: source_package(r, versions[r]) for r in releases}
    sources = apt.madison(sorted(set(packages.values())))
    out = []
    for r in releases:
        found = series_of(r)
        out.append(
            Build(
                release=r,
                series=found[0].name if found else "",
                flavour=found[2] if found else "",
                image_version=versions[r],
                source_package=packages[r],
                source_available=versions[r] in sources.get(packages[r], []),
            )
        )
    return out
