"""Attacks on the update path: each is refused by a whole agent cycle; nothing is loaded or kept.

The hostile repository or mirror is a :class:`ServingFetcher` that swaps
files; forged metadata is made with python-tuf's Metadata API and, where
the attack assumes a stolen online key, signed with the repository's own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Timestamp

from suture.agent import cycle, update
from suture.agent import state as agent_state
from suture.agent.config import AgentConfig
from suture.errors import (
    IntegrityError,
    MetadataExpiredError,
    RollbackError,
    SignatureError,
    SutureError,
    WrongBuildError,
)
from suture.fsutil import atomic_write
from suture.repo import create, publish
from suture.repo.index import BuildIndex
from suture.repo.keys import Keyring
from suture.repo.layout import Layout, bundle_path, index_path
from suture.repo.metadata import Expiry, commit, load
from tests.support.agent import FakeKernel
from tests.support.repo import (
    BUILD_A,
    BUILD_B,
    NAME,
    RELEASE,
    ServingFetcher,
    make_bundle,
    metadata_file,
    remote,
    signed_as,
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with levels 1 and 2 of build A."""
    create.init(tmp_path / "repo")
    publish.publish(tmp_path / "repo", make_bundle(tmp_path, 1))
    publish.publish(tmp_path / "repo", make_bundle(tmp_path, 2))
    return tmp_path / "repo"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def fetcher(repo: Path) -> ServingFetcher:
    return ServingFetcher(repo)


def seen_by_agent(repo: Path, state: Path, level: int = 2) -> None:
    """An agent checks in once, so it trusts the repository's current versions."""
    with update.session(remote(repo), state, fetcher=ServingFetcher(repo)) as s:
        offer = s.find_latest(RELEASE, BUILD_A)
    assert offer is not None
    assert offer.level == level


def forged_timestamp(repo: Path, snapshot: bytes, snapshot_version: int) -> bytes:
    """A newer timestamp pointing at ``snapshot``, signed with the stolen timestamp key."""
    md = Metadata[Timestamp].from_file(str(metadata_file(repo, "timestamp")))
    md.signed.version += 1
    md.signed.snapshot_meta = MetaFile.from_data(snapshot_version, snapshot, ["sha256"])
    return signed_as(repo, md, "timestamp")


def agent_update(repo: Path, state: Path, fetcher: ServingFetcher) -> None:
    """A whole agent cycle against the attacked repository; it must load nothing.

    The refusal is raised for the test to check; the kernel saw no apply, no
    bundle is left, and the state records the error (the log line an
    operator sees, in `suture status` and in the check-in).
    """
    kernel = FakeKernel()
    config = AgentConfig(
        server=repo.as_uri(),
        state_dir=state,
        trusted_root=repo / "metadata" / "1.root.json",
        retries=0,
    )
    try:
        cycle.run_update(config, kernel=kernel, fetcher=fetcher)
    except SutureError as e:
        recorded = agent_state.read(state).last_error
        assert recorded is not None
        assert recorded["message"] == e.message
        raise
    finally:
        assert kernel.applied == []
        bundles = state / agent_state.BUNDLES
        assert not bundles.exists() or list(bundles.iterdir()) == []


# --- rollback -------------------------------------------------------------------


def test_timestamp_rollback(repo: Path, state: Path, fetcher: ServingFetcher) -> None:
    old = metadata_file(repo, "timestamp").read_bytes()
    publish.publish(repo, make_bundle(repo.parent, 3))
    seen_by_agent(repo, state, level=3)
    fetcher.replace["metadata/timestamp.json"] = old
    with pytest.raises(RollbackError, match=r"rollback detected.*must be >= 4") as caught:
        agent_update(repo, state, fetcher)
    assert caught.value.check == "rollback"


def test_snapshot_rollback(repo: Path, state: Path, fetcher: ServingFetcher) -> None:
    seen_by_agent(repo, state)  # snapshot v3
    old_snapshot = metadata_file(repo, "snapshot", 2).read_bytes()
    fetcher.replace["metadata/timestamp.json"] = forged_timestamp(repo, old_snapshot, 2)
    with pytest.raises(RollbackError, match="snapshot version must be >= 3"):
        agent_update(repo, state, fetcher)


def test_targets_rollback(repo: Path, state: Path, fetcher: ServingFetcher) -> None:
    seen_by_agent(repo, state)  # targets v3
    old_targets = metadata_file(repo, "targets", 2).read_bytes()
    snapshot = Metadata[Snapshot].from_file(str(metadata_file(repo, "snapshot", 3)))
    snapshot.signed.version = 4
    snapshot.signed.meta["targets.json"] = MetaFile.from_data(2, old_targets, ["sha256"])
    forged = signed_as(repo, snapshot, "snapshot")
    fetcher.replace["metadata/4.snapshot.json"] = forged
    fetcher.replace["metadata/timestamp.json"] = forged_timestamp(repo, forged, 4)
    with pytest.raises(RollbackError, match=r"targets\.json version"):
        agent_update(repo, state, fetcher)


# --- freeze -----------------------------------------------------------------------


def test_freeze_expired_timestamp(repo: Path, state: Path, fetcher: ServingFetcher) -> None:
    # A mirror keeps serving what was once valid; here, the newest timestamp, expired.
    md = Metadata[Timestamp].from_file(str(metadata_file(repo, "timestamp")))
    md.signed.version += 1
    md.signed.expires = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    fetcher.replace["metadata/timestamp.json"] = signed_as(repo, md, "timestamp")
    with pytest.raises(MetadataExpiredError, match="metadata expired: the repository may be"):
        agent_update(repo, state, fetcher)


def test_freeze_of_a_repository_nobody_refreshes(tmp_path: Path) -> None:
    create.init(tmp_path / "repo", expiry=Expiry(timestamp=timedelta(seconds=-60)))
    with (
        pytest.raises(MetadataExpiredError, match=r"timestamp\.json is expired") as caught,
        update.session(remote(tmp_path / "repo"), tmp_path / "state") as s,
    ):
        s.find_latest(RELEASE, BUILD_A)
    assert "suture repo refresh" in caught.value.hint
    assert "clock" in caught.value.hint


# --- forged and mixed metadata ----------------------------------------------------


def test_metadata_signed_by_an_unknown_key(
    repo: Path, state: Path, fetcher: ServingFetcher
) -> None:
    md = Metadata[Timestamp].from_file(str(metadata_file(repo, "timestamp")))
    md.signed.version += 1
    md.sign(CryptoSigner.generate_ed25519())
    fetcher.replace["metadata/timestamp.json"] = md.to_bytes()
    with pytest.raises(SignatureError, match="not signed by the keys this host trusts"):
        agent_update(repo, state, fetcher)


def test_mix_and_match_targets_from_another_version(
    repo: Path, state: Path, fetcher: ServingFetcher
) -> None:
    # Snapshot v3 says targets v3; the mirror serves targets v2 under that name.
    fetcher.replace["metadata/3.targets.json"] = metadata_file(repo, "targets", 2).read_bytes()
    with pytest.raises(IntegrityError, match="mix-and-match"):
        agent_update(repo, state, fetcher)


def test_mix_and_match_snapshot_from_another_version(
    repo: Path, state: Path, fetcher: ServingFetcher
) -> None:
    fetcher.replace["metadata/3.snapshot.json"] = metadata_file(repo, "snapshot", 2).read_bytes()
    with pytest.raises(IntegrityError, match="mix-and-match"):
        agent_update(repo, state, fetcher)


# --- the bundle's bytes -----------------------------------------------------------


def _bundle_url(repo: Path, state: Path, fetcher: ServingFetcher) -> tuple[str, bytes]:
    with update.session(remote(repo), state, fetcher=fetcher) as s:
        offer = s.find_latest(RELEASE, BUILD_A)
    assert offer is not None
    rel = f"targets/{RELEASE}/{BUILD_A}/stable/{offer.sha256}.{NAME}-L2.bundle"
    return rel, (repo / rel).read_bytes()


def test_tampered_bundle_bytes(repo: Path, state: Path, fetcher: ServingFetcher) -> None:
    rel, data = _bundle_url(repo, state, fetcher)
    fetcher.replace[rel] = data[:-1] + bytes([data[-1] ^ 1])  # same length
    with pytest.raises(IntegrityError, match="do not match their signed length and hashes"):
        agent_update(repo, state, fetcher)


def test_oversized_bundle(repo: Path, state: Path, fetcher: ServingFetcher) -> None:
    rel, data = _bundle_url(repo, state, fetcher)
    fetcher.replace[rel] = data + b"\0" * 100_000
    with pytest.raises(IntegrityError, match=r"more bytes .* than its signed length"):
        agent_update(repo, state, fetcher)


def test_oversized_metadata(repo: Path, state: Path, fetcher: ServingFetcher) -> None:
    # Endless data: the timestamp has no signed length; python-tuf caps it (16 KiB).
    fetcher.replace["metadata/timestamp.json"] = b" " * 100_000
    with pytest.raises(IntegrityError, match="more bytes for a metadata file"):
        agent_update(repo, state, fetcher)


# --- a signed bundle for another kernel build -------------------------------------


def sign_in(repo: Path, path: str, data: bytes, custom: dict[str, object]) -> None:
    """A stolen targets key (or a publisher bug) signs ``data`` at ``path`` as level 3."""
    layout = Layout(repo)
    state = load(layout)
    target = TargetFile.from_data(path, data, ["sha256"])
    target.unrecognized_fields["custom"] = custom
    (stored,) = target.get_prefixed_paths()
    atomic_write(layout.targets / stored, data)
    ipath = index_path(RELEASE, BUILD_A, "stable")
    old = state.targets.signed.targets[ipath]
    index = BuildIndex.from_json((layout.targets / old.get_prefixed_paths()[0]).read_bytes())
    index_data = index.with_level(3, path).to_json()
    index_target = TargetFile.from_data(ipath, index_data, ["sha256"])
    (layout.targets / index_target.get_prefixed_paths()[0]).write_bytes(index_data)
    state.targets.signed.targets[path] = target
    state.targets.signed.targets[ipath] = index_target
    commit(layout, state, Keyring(layout), Expiry())


def custom_for(build_id: str) -> dict[str, object]:
    return {
        "release": RELEASE,
        "build_id": build_id,
        "channel": "stable",
        "level": 3,
        "name": NAME,
        "cves": [],
    }


def test_signed_bundle_whose_manifest_names_another_build(repo: Path, state: Path) -> None:
    other = make_bundle(repo.parent, 3, build_id=BUILD_B).read_bytes()
    path = bundle_path(RELEASE, BUILD_A, "stable", NAME, 3)
    sign_in(repo, path, other, custom_for(BUILD_A))
    with pytest.raises(WrongBuildError, match="the bundle inside is for") as caught:
        agent_update(repo, state, ServingFetcher(repo))
    assert caught.value.expected == f"{RELEASE}/{BUILD_A}"
    assert caught.value.found == f"{RELEASE}/{BUILD_B}"


def test_signed_description_for_another_build_under_this_builds_path(
    repo: Path, state: Path
) -> None:
    other = make_bundle(repo.parent, 3, build_id=BUILD_B).read_bytes()
    path = bundle_path(RELEASE, BUILD_A, "stable", NAME, 3)
    sign_in(repo, path, other, custom_for(BUILD_B))
    with pytest.raises(WrongBuildError, match="is signed for"):
        agent_update(repo, state, ServingFetcher(repo))


def test_index_pointing_into_another_builds_folder(repo: Path, state: Path) -> None:
    other = make_bundle(repo.parent, 3, build_id=BUILD_B).read_bytes()
    path = bundle_path(RELEASE, BUILD_B, "stable", NAME, 3)
    sign_in(repo, path, other, custom_for(BUILD_B))
    with pytest.raises(WrongBuildError, match="points to"):
        agent_update(repo, state, ServingFetcher(repo))
