"""suture.packages.sets: kernel sets resolved from (a fake) apt, in ABI order, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from suture.errors import KernelNotFoundError, UsageError
from suture.packages import sets
from tests.support import apt as fake_apt


@pytest.fixture(autouse=True)
def archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_apt.install(tmp_path, monkeypatch, fake_apt.ARCHIVE)


def test_debian12_is_every_amd64_build_in_abi_order() -> None:
    assert sets.set_releases("debian12") == [
        "6.1.0-9-amd64",
        "6.1.0-47-amd64",
        "6.1.0-51-amd64",
        "6.1.0-56-amd64",
        "6.1.0-57-amd64",
    ]  # not -dbg, -unsigned, cloud, rt, nor the 6.12 backport


def test_cloud_set() -> None:
    assert sets.set_releases("debian12-cloud") == [
        "6.1.0-47-cloud-amd64",
        "6.1.0-57-cloud-amd64",
    ]


def test_resolve_merges_sets_and_releases_once_each_in_order() -> None:
    got = sets.resolve_kernels(
        ["6.1.0-57-cloud-amd64", "6.1.0-47-amd64", "5.10.0-30-amd64", "6.1.0-57-cloud-amd64"],
        ["debian12", "debian12"],
    )
    assert got == [
        "6.1.0-9-amd64",
        "6.1.0-47-amd64",
        "6.1.0-51-amd64",
        "6.1.0-56-amd64",
        "6.1.0-57-amd64",
        "6.1.0-57-cloud-amd64",
        "5.10.0-30-amd64",  # no known series: after them
    ]


def test_resolve_without_options_is_the_default_build() -> None:
    assert sets.resolve_kernels([], []) == ["6.1.0-57-amd64"]


def test_unknown_set_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no kernel set named 'debian11'") as e:
        sets.resolve_kernels([], ["debian11"])
    assert "debian12" in e.value.hint


def test_unknown_releases_are_named() -> None:
    with pytest.raises(
        KernelNotFoundError,
        match=r"no linux-image-6\.1\.0-98-amd64 or linux-image-6\.1\.0-99-amd64$",
    ):
        sets.resolve_kernels(["6.1.0-99-amd64", "6.1.0-57-amd64", "6.1.0-98-amd64"], [])


def test_a_set_apt_lists_nothing_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_apt.install(tmp_path / "empty", monkeypatch, {})
    with pytest.raises(KernelNotFoundError, match="no build of the kernel set debian12") as e:
        sets.resolve_kernels([], ["debian12"])
    assert "apt-get update" in e.value.hint


def test_describe_marks_builds_whose_source_is_gone() -> None:
    got = {b.release: b for b in sets.describe(["6.1.0-51-amd64", "6.1.0-56-amd64"])}
    gone, there = got["6.1.0-51-amd64"], got["6.1.0-56-amd64"]
    assert (gone.image_version, gone.source_available) == ("6.1.177-1", False)
    assert gone.source_spec == "linux-source-6.1=6.1.177-1"  # its own version, never a neighbour
    assert (there.image_version, there.source_available) == ("6.1.192-2", True)
    assert there.to_dict() == {
        "release": "6.1.0-56-amd64",
        "series": "debian12",
        "flavour": "amd64",
        "image_version": "6.1.192-2",
        "source": "linux-source-6.1=6.1.192-2",
        "source_available": True,
    }


def test_release_of_no_known_series_takes_debians_source_name() -> None:
    (b,) = sets.describe(["5.10.0-30-amd64"])
    assert (b.series, b.flavour, b.source_package) == ("", "", "linux-source-5.10")
    assert not b.source_available


@pytest.mark.parametrize(
    ("release", "parsed"),
    [
        ("6.1.0-57-amd64", ((57,), "amd64")),
        ("6.1.0-57-cloud-amd64", ((57,), "cloud-amd64")),
        ("6.1.0-57-rt-amd64", ((57,), "rt-amd64")),
        ("6.1.0-57-amd64-dbg", None),
        ("6.1.0-x-amd64", None),
        ("6.12.95+deb12-amd64", None),
        ("6.12.118+deb13-amd64", None),
    ],
)
def test_series_parse(release: str, parsed: tuple[tuple[int, ...], str] | None) -> None:
    assert sets.DEBIAN12.parse(release) == parsed


def test_a_series_row_with_dotted_abi() -> None:
    # How a later row (trixie-backports) orders its builds: by every number of the version.
    row = sets.Series(
        name="trixie-backports",
        description="",
        image_prefix="linux-image-7.",
        abi_pattern=r"(7\.\d+\.\d+)\+deb13",
        flavours=("amd64", "cloud-amd64"),
        source_package="linux-source-7",
    )
    assert row.parse("7.3.4+deb13-cloud-amd64") == ((7, 3, 4), "cloud-amd64")
    assert row.parse("7.10.1+deb13-amd64")[0] > row.parse("7.3.4+deb13-amd64")[0]  # type: ignore[index]


def test_new_series_parse_their_releases() -> None:
    assert sets.DEBIAN13.parse("6.12.118+deb13-amd64") == ((6, 12, 118, 13), "amd64")
    assert sets.DEBIAN13.parse("6.12.115+deb13.1-cloud-amd64") == (
        (6, 12, 115, 13, 1),
        "cloud-amd64",
    )
    assert sets.DEBIAN13.parse("6.12.95+deb12-amd64") is None
    assert sets.BOOKWORM_BACKPORTS.parse("6.12.95+deb12-amd64") == ((6, 12, 95, 12), "amd64")
    assert sets.TRIXIE_BACKPORTS.parse("7.3.4+deb13-rt-amd64") == ((7, 3, 4, 13), "rt-amd64")
    assert sets.TRIXIE_BACKPORTS.parse("6.12.118+deb13-amd64") is None
    assert sets.series_for("7.3.4+deb13-amd64") is sets.TRIXIE_BACKPORTS
    assert sets.series_for("5.10.0-30-amd64") is sets.OTHER


def test_new_sets_come_from_the_private_lists() -> None:
    assert sets.set_releases("debian13") == [
        "6.12.115+deb13.1-amd64",
        "6.12.117+deb13-amd64",
        "6.12.118+deb13-amd64",
    ]  # not -dbg, cloud, the +deb12 backport, nor a name without a version
    assert sets.set_releases("debian13-cloud") == ["6.12.118+deb13-cloud-amd64"]
    assert sets.set_releases("bookworm-backports") == ["6.12.95+deb12-amd64"]
    assert sets.set_releases("trixie-backports") == ["7.2.12+deb13-amd64", "7.3.4+deb13-amd64"]


def test_releases_resolve_to_their_series_by_themselves() -> None:
    got = sets.resolve_kernels(
        ["7.3.4+deb13-amd64", "6.12.95+deb12-amd64", "6.1.0-57-amd64", "6.12.118+deb13-amd64"], []
    )
    assert got == [
        "6.1.0-57-amd64",
        "6.12.118+deb13-amd64",
        "6.12.95+deb12-amd64",
        "7.3.4+deb13-amd64",
    ]  # series in table order: debian12, debian13, bookworm-backports, trixie-backports
    with pytest.raises(KernelNotFoundError, match=r"linux-image-7\.9\.9\+deb13-amd64") as e:
        sets.resolve_kernels(["7.9.9+deb13-amd64"], [])
    assert "suture lab update" in e.value.hint  # the private lists, not the host's


def test_describe_new_series_names_their_own_source_packages() -> None:
    got = {
        b.release: b
        for b in sets.describe(
            [
                "6.12.118+deb13-amd64",
                "6.12.95+deb12-amd64",
                "7.3.4+deb13-amd64",
                "7.2.12+deb13-amd64",
            ]
        )
    }
    assert got["6.12.118+deb13-amd64"].source_spec == "linux-source-6.12=6.12.118-1"
    assert got["6.12.95+deb12-amd64"].source_spec == "linux-source-6.12=6.12.95-1~bpo12+1"
    assert got["7.3.4+deb13-amd64"].source_spec == "linux-source-7.3=7.3.4-1~bpo13+1"
    assert [got[r].source_available for r in sorted(got)] == [True, True, False, True]
    assert got["7.2.12+deb13-amd64"].series == "trixie-backports"
