"""suture.agent.update: finding and fetching levels from a repository on disk, through TUF."""

from __future__ import annotations

from pathlib import Path

import pytest

from suture import bundle
from suture.agent import trust, update
from suture.errors import FetchError, UpdateError, UsageError, VerificationError
from suture.repo import create, maintain, publish
from tests.support.repo import (
    BUILD_A,
    BUILD_B,
    NAME,
    RELEASE,
    ServingFetcher,
    make_bundle,
    remote,
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    create.init(tmp_path / "repo")
    return tmp_path / "repo"


def latest(repo: Path, state: Path, release: str, build_id: str, channel: str) -> int | None:
    with update.session(remote(repo), state, fetcher=ServingFetcher(repo)) as s:
        offer = s.find_latest(release, build_id, channel)
    return offer.level if offer else None


def test_finds_the_newest_level_of_exactly_its_build_and_channel(
    repo: Path, tmp_path: Path
) -> None:
    publish.publish(repo, make_bundle(tmp_path, 1))
    publish.publish(repo, make_bundle(tmp_path, 2))
    publish.publish(repo, make_bundle(tmp_path, 3), channel="testing")
    publish.publish(repo, make_bundle(tmp_path, 7, build_id=BUILD_B))
    publish.publish(repo, make_bundle(tmp_path, 9, release="6.1.0-55-amd64"))
    state = tmp_path / "state"
    assert latest(repo, state, RELEASE, BUILD_A, "stable") == 2
    assert latest(repo, state, RELEASE, BUILD_A, "testing") == 3
    assert latest(repo, state, RELEASE, BUILD_B, "stable") == 7
    assert latest(repo, state, RELEASE, BUILD_B, "testing") is None
    assert latest(repo, state, "6.1.0-55-amd64", BUILD_A, "stable") == 9
    assert latest(repo, state, "6.1.0-54-amd64", BUILD_A, "stable") is None


@pytest.mark.parametrize(
    ("test", "tested"), [("passed", "passed"), ("failed", "failed"), (None, "untested")]
)
def test_the_offer_says_what_was_signed_of_its_test(
    repo: Path, tmp_path: Path, test: str | None, tested: str
) -> None:
    publish.publish(repo, make_bundle(tmp_path, 1, test=test), untested=True)
    with update.session(remote(repo), tmp_path / "state") as s:
        offer = s.find_latest(RELEASE, BUILD_A)
    assert offer is not None and offer.tested == tested


def test_the_offer_carries_the_signed_description(repo: Path, tmp_path: Path) -> None:
    published = publish.publish(repo, make_bundle(tmp_path, 1))
    with update.session(remote(repo), tmp_path / "state") as s:  # the library's file:// fetcher
        offer = s.find_latest(RELEASE, BUILD_A)
    assert offer is not None
    assert offer.to_dict() == {
        "release": RELEASE,
        "build_id": BUILD_A,
        "channel": "stable",
        "level": 1,
        "name": NAME,
        "cves": ["CVE-2026-1001"],
        "path": published.path,
        "length": published.length,
        "sha256": published.sha256,
        "yanked": [],
        "tested": "passed",
    }


def test_an_empty_repository_offers_nothing(repo: Path, tmp_path: Path) -> None:
    assert latest(repo, tmp_path / "state", RELEASE, BUILD_A, "stable") is None


def test_a_yanked_level_is_no_longer_offered(repo: Path, tmp_path: Path) -> None:
    publish.publish(repo, make_bundle(tmp_path, 1))
    publish.publish(repo, make_bundle(tmp_path, 2))
    state = tmp_path / "state"
    assert latest(repo, state, RELEASE, BUILD_A, "stable") == 2
    publish.yank(repo, RELEASE, BUILD_A, 2)
    with update.session(remote(repo), state) as s:
        offer = s.find_latest(RELEASE, BUILD_A)
    assert offer is not None
    assert (offer.level, offer.yanked) == (1, (2,))
    publish.yank(repo, RELEASE, BUILD_A, 1)
    assert latest(repo, state, RELEASE, BUILD_A, "stable") is None


def test_download_writes_the_verified_bundle(repo: Path, tmp_path: Path) -> None:
    source = make_bundle(tmp_path, 1)
    publish.publish(repo, source)
    fetcher = ServingFetcher(repo)
    with update.session(remote(repo), tmp_path / "state", fetcher=fetcher) as s:
        offer = s.find_latest(RELEASE, BUILD_A)
        assert offer is not None
        path = s.download(offer, tmp_path / "bundles")
    assert path == tmp_path / "bundles" / f"{NAME}-L1.bundle"
    assert path.read_bytes() == source.read_bytes()
    assert bundle.read_manifest(path).level == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    # Consistent snapshots: versioned metadata, the target by its hash-prefixed name.
    assert fetcher.asked == [
        "metadata/2.root.json",
        "metadata/timestamp.json",
        "metadata/2.snapshot.json",
        "metadata/2.targets.json",
        f"targets/{RELEASE}/{BUILD_A}/stable/{_index_name(repo)}",
        f"targets/{RELEASE}/{BUILD_A}/stable/{offer.sha256}.{NAME}-L1.bundle",
    ]


def _index_name(repo: Path) -> str:
    (index,) = (repo / "targets" / RELEASE / BUILD_A / "stable").glob("*.index.json")
    return index.name


def test_the_next_session_reuses_trusted_metadata(repo: Path, tmp_path: Path) -> None:
    publish.publish(repo, make_bundle(tmp_path, 1))
    state = tmp_path / "state"
    assert latest(repo, state, RELEASE, BUILD_A, "stable") == 1
    fetcher = ServingFetcher(repo)
    with update.session(remote(repo), state, fetcher=fetcher) as s:
        assert s.find_latest(RELEASE, BUILD_A) is not None
    # Nothing changed: only the root probe and the timestamp are fetched again.
    assert fetcher.asked == ["metadata/2.root.json", "metadata/timestamp.json"]


def test_the_agent_follows_key_rotations(repo: Path, tmp_path: Path) -> None:
    publish.publish(repo, make_bundle(tmp_path, 1))
    state = tmp_path / "state"
    assert latest(repo, state, RELEASE, BUILD_A, "stable") == 1
    maintain.rotate_key(repo, "timestamp")
    maintain.rotate_key(repo, "snapshot")
    maintain.rotate_key(repo, "targets")
    publish.publish(repo, make_bundle(tmp_path, 2))
    # Both an agent with cached metadata and a new one bootstrapped from root v1.
    assert latest(repo, state, RELEASE, BUILD_A, "stable") == 2
    assert latest(repo, tmp_path / "fresh", RELEASE, BUILD_A, "stable") == 2
    assert (state / "metadata/root_history/4.root.json").exists()


def test_metadata_after_a_rotation_verifies_before_the_new_root_is_seen(
    repo: Path, tmp_path: Path
) -> None:
    # A CDN may serve the new timestamp before 2.root.json: signed by the old
    # and the new key, it verifies under root v1 too.
    maintain.rotate_key(repo, "timestamp")
    fetcher = ServingFetcher(repo)
    fetcher.replace["metadata/2.root.json"] = None
    with update.session(remote(repo), tmp_path / "state", fetcher=fetcher) as s:
        assert s.find_latest(RELEASE, BUILD_A) is None


def test_an_offer_is_only_downloaded_by_its_own_session(repo: Path, tmp_path: Path) -> None:
    publish.publish(repo, make_bundle(tmp_path, 1))
    with update.session(remote(repo), tmp_path / "state") as s:
        offer = s.find_latest(RELEASE, BUILD_A)
    assert offer is not None
    with pytest.raises(UpdateError, match="the update session is over"):
        s.download(offer, tmp_path / "bundles")
    with (
        update.session(remote(repo), tmp_path / "state") as other,
        pytest.raises(UpdateError, match="another update session"),
    ):
        other.download(offer, tmp_path / "bundles")


def test_an_unreachable_repository_is_a_fetch_error(tmp_path: Path, repo: Path) -> None:
    gone = trust.Remote(
        url=(tmp_path / "nowhere").as_uri(),
        trusted_root=(repo / "metadata/root.json").read_bytes(),
    )
    with (
        update.session(gone, tmp_path / "state") as s,
        pytest.raises(FetchError, match=r"No such file or directory: .*timestamp\.json"),
    ):
        s.find_latest(RELEASE, BUILD_A)


def test_a_failed_session_refuses_to_go_on(tmp_path: Path, repo: Path) -> None:
    fetcher = ServingFetcher(repo)
    fetcher.replace["metadata/timestamp.json"] = None
    with update.session(remote(repo), tmp_path / "state", fetcher=fetcher) as s:
        with pytest.raises(FetchError):
            s.find_latest(RELEASE, BUILD_A)
        with pytest.raises(UpdateError, match="failed earlier"):
            s.find_latest(RELEASE, BUILD_A)


def test_a_trusted_root_that_is_not_root_metadata_is_refused(tmp_path: Path, repo: Path) -> None:
    bad = trust.Remote(url=repo.as_uri(), trusted_root=b'{"signed": {}}')
    with (
        pytest.raises(VerificationError, match="loading the trusted root"),
        update.session(bad, tmp_path / "state"),
    ):
        pass


@pytest.mark.parametrize(
    ("kernel", "says"),
    [
        (("../etc", BUILD_A, "stable"), "is not a release name"),
        ((RELEASE, "XYZ", "stable"), "is not 16 to 128 lowercase hex"),
        ((RELEASE, BUILD_A, "nightly"), "channel 'nightly'"),
    ],
)
def test_find_latest_refuses_names_that_are_no_path(
    repo: Path, tmp_path: Path, kernel: tuple[str, str, str], says: str
) -> None:
    with (
        update.session(remote(repo), tmp_path / "state") as s,
        pytest.raises(UsageError, match=says),
    ):
        s.find_latest(*kernel)
