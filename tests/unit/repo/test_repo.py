"""suture.repo: init, publish, yank, refresh and key rotation on a repository on disk."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from suture.cli.main import main
from suture.errors import (
    BundleError,
    LevelError,
    NotARepoError,
    NotPublishedError,
    RepoExistsError,
    SigningKeyError,
    UntestedError,
    UsageError,
)
from suture.repo import create, maintain, publish
from suture.repo.index import BuildIndex
from suture.repo.keys import Keyring
from suture.repo.layout import Layout
from suture.repo.metadata import Expiry, load
from tests.support.repo import BUILD_A, BUILD_B, NAME, RELEASE, lab_test, make_bundle

A_STABLE = f"{RELEASE}/{BUILD_A}/stable"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    create.init(tmp_path / "repo")
    return tmp_path / "repo"


def versions(repo: Path) -> dict[str, int]:
    state = load(Layout(repo))
    return {r: state.role(r).signed.version for r in ("root", "targets", "snapshot", "timestamp")}


def targets(repo: Path) -> Targets:
    return load(Layout(repo)).targets.signed


def read_index(repo: Path) -> BuildIndex:
    target = targets(repo).targets[f"{A_STABLE}/index.json"]
    return BuildIndex.from_json((repo / "targets" / target.get_prefixed_paths()[0]).read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- init ---------------------------------------------------------------------


def test_init_writes_the_first_version_of_every_role(repo: Path) -> None:
    meta = repo / "metadata"
    assert sorted(p.name for p in meta.iterdir()) == [
        "1.root.json",
        "1.snapshot.json",
        "1.targets.json",
        "root.json",
        "timestamp.json",
    ]
    assert (meta / "root.json").read_bytes() == (meta / "1.root.json").read_bytes()
    root = Metadata[Root].from_file(str(meta / "1.root.json")).signed
    assert root.consistent_snapshot is True
    assert root.roles["root"].threshold == 1
    # Every role has its own key.
    assert len({k for role in root.roles.values() for k in role.keyids}) == 4
    assert versions(repo) == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1}
    assert (repo / "targets").is_dir()
    assert json.loads((repo / "repo.json").read_bytes())["format"] == 1


def test_init_keeps_the_root_key_apart_and_every_key_private(repo: Path) -> None:
    root = load(Layout(repo)).root.signed
    (root_key,) = (repo / "keys-offline").iterdir()
    assert root_key.name == f"root-{root.roles['root'].keyids[0]}.pem"
    online = sorted(p.name.split("-")[0] for p in (repo / "keys").iterdir())
    assert online == ["snapshot", "targets", "timestamp"]
    for folder in (repo / "keys", repo / "keys-offline"):
        assert mode(folder) == 0o700
        assert all(mode(p) == 0o600 for p in folder.iterdir())
    # What a web server serves stays readable.
    assert mode(repo) == 0o755
    assert mode(repo / "metadata") & 0o005 == 0o005


def test_init_with_a_root_threshold_makes_that_many_root_keys(tmp_path: Path) -> None:
    result = create.init(tmp_path / "repo", root_threshold=2)
    assert len(result.root_keys) == 2
    root = Metadata[Root].from_file(str(tmp_path / "repo/metadata/1.root.json"))
    assert root.signed.roles["root"].threshold == 2
    assert len(root.signatures) == 2


@pytest.mark.parametrize("content", ["repo", "stray file"])
def test_init_never_overwrites(tmp_path: Path, content: str) -> None:
    target = tmp_path / "repo"
    if content == "repo":
        create.init(target)
    else:
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    before = sorted(p.relative_to(target) for p in target.rglob("*"))
    with pytest.raises(RepoExistsError, match="not empty"):
        create.init(target)
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no staging folder left


def test_init_accepts_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    create.init(tmp_path / "repo")
    assert (tmp_path / "repo/metadata/timestamp.json").exists()


def test_init_refuses_a_threshold_below_one(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        create.init(tmp_path / "repo", root_threshold=0)
    assert not (tmp_path / "repo").exists()


# --- publish --------------------------------------------------------------------


def test_publish_signs_the_bundle_under_its_build_and_channel(repo: Path, tmp_path: Path) -> None:
    path = make_bundle(tmp_path, 1)
    result = publish.publish(repo, path)
    assert result.path == f"{A_STABLE}/{NAME}-L1.bundle"
    target = targets(repo).targets[result.path]
    custom = dict(target.custom)
    published = datetime.fromisoformat(custom.pop("published"))
    assert abs((datetime.now(UTC) - published).total_seconds()) < 60
    assert custom == {
        "release": RELEASE,
        "build_id": BUILD_A,
        "channel": "stable",
        "level": 1,
        "name": NAME,
        "cves": ["CVE-2026-1001"],
        "test": lab_test(RELEASE, BUILD_A).summary(),
    }
    assert custom["test"]["result"] == "passed"
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert target.length == len(data)
    assert target.hashes == {"sha256": digest}
    # Consistent snapshots: the file is stored under its hash-prefixed name.
    assert (repo / "targets" / A_STABLE / f"{digest}.{NAME}-L1.bundle").read_bytes() == data
    assert versions(repo) == {"root": 1, "targets": 2, "snapshot": 2, "timestamp": 2}


def test_publish_signs_in_the_ways_a_partial_fix_leaves_old(repo: Path, tmp_path: Path) -> None:
    way = "irq_work_sync: it is exported, so modules may call the old code"
    result = publish.publish(repo, make_bundle(tmp_path, 1, unpatched=(way,)))
    assert targets(repo).targets[result.path].custom["unpatched"] == [way]
    assert result.to_dict()["unpatched"] == [way]


def test_publish_pins_each_role_by_version_length_and_hash(repo: Path, tmp_path: Path) -> None:
    publish.publish(repo, make_bundle(tmp_path, 1))
    meta = repo / "metadata"
    timestamp = Metadata[Timestamp].from_file(str(meta / "timestamp.json")).signed
    snapshot_bytes = (meta / "2.snapshot.json").read_bytes()
    timestamp.snapshot_meta.verify_length_and_hashes(snapshot_bytes)
    snapshot = Metadata[Snapshot].from_bytes(snapshot_bytes).signed
    snapshot.meta["targets.json"].verify_length_and_hashes((meta / "2.targets.json").read_bytes())
    # The versions before stay: agents mid-update and CDN caches may still ask for them.
    assert (meta / "1.targets.json").exists()
    assert (meta / "1.snapshot.json").exists()


def test_publish_keeps_a_level_index_per_build_and_channel(repo: Path, tmp_path: Path) -> None:
    publish.publish(repo, make_bundle(tmp_path, 1))
    publish.publish(repo, make_bundle(tmp_path, 3))
    index = read_index(repo)
    assert (index.release, index.build_id, index.channel) == (RELEASE, BUILD_A, "stable")
    assert [lv.level for lv in index.levels] == [1, 3]
    assert index.levels[-1].path == f"{A_STABLE}/{NAME}-L3.bundle"


@pytest.mark.parametrize("level", [1, 2])
def test_publish_refuses_a_level_not_above_the_published_ones(
    repo: Path, tmp_path: Path, level: int
) -> None:
    publish.publish(repo, make_bundle(tmp_path, 2))
    before = versions(repo)
    with pytest.raises(LevelError, match="not above level 2") as caught:
        publish.publish(repo, make_bundle(tmp_path, level))
    assert (caught.value.level, caught.value.published) == (level, 2)
    assert "level 3 or higher" in caught.value.hint
    assert versions(repo) == before


def test_levels_count_per_build_and_channel(repo: Path, tmp_path: Path) -> None:
    publish.publish(repo, make_bundle(tmp_path, 5))
    publish.publish(repo, make_bundle(tmp_path, 1), channel="testing")
    publish.publish(repo, make_bundle(tmp_path, 1, build_id=BUILD_B))
    publish.publish(repo, make_bundle(tmp_path, 1, release="6.1.0-55-amd64"))
    assert len(targets(repo).targets) == 8  # four bundles, four indexes


def test_publish_refuses_an_unknown_channel(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="channel 'nightly'"):
        publish.publish(repo, make_bundle(tmp_path, 1), channel="nightly")


def test_publish_refuses_a_bundle_without_build_id(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="names no build id"):
        publish.publish(repo, make_bundle(tmp_path, 1, build_id="", test=None))


# --- the test gate: a passing `suture test` on the bundle's own build, or --untested ---


@pytest.mark.parametrize(
    ("test", "result", "message"),
    [
        (None, "untested", "has no test result"),
        ("failed", "failed", "failed its test on 6.1.0-56-amd64 .* it must pass"),
        (lab_test(RELEASE, BUILD_B), "other-build", "tested on .* not on its own build"),
        (lab_test("6.1.0-55-amd64", BUILD_A), "other-build", "tested on 6.1.0-55-amd64"),
    ],
)
def test_publish_refuses_a_bundle_without_a_pass_on_its_build(
    repo: Path, tmp_path: Path, test: object, result: str, message: str
) -> None:
    path = make_bundle(tmp_path, 1, test=test)  # type: ignore[arg-type]
    with pytest.raises(UntestedError, match=message) as caught:
        publish.publish(repo, path)
    assert caught.value.result == result
    assert caught.value.exit_code == 62
    assert "suture test" in caught.value.hint and "--untested" in caught.value.hint
    assert versions(repo)["targets"] == 1  # nothing signed


@pytest.mark.parametrize(
    ("test", "signed"),
    [
        (None, "untested"),
        ("failed", "failed"),  # the truth, not "untested"
        (lab_test(RELEASE, BUILD_B), "untested"),  # another build's result says nothing
        ("passed", "passed"),  # --untested lifts the gate, it does not hide a pass
    ],
)
def test_publish_untested_signs_in_what_is_true(
    repo: Path, tmp_path: Path, test: object, signed: str
) -> None:
    path = make_bundle(tmp_path, 1, test=test)  # type: ignore[arg-type]
    result = publish.publish(repo, path, untested=True)
    custom = targets(repo).targets[result.path].custom
    assert custom["test"]["result"] == signed
    assert (result.test, result.to_dict()["test"]) == (signed, signed)


def test_publish_refuses_what_is_not_a_bundle(repo: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bundle"
    junk.write_bytes(b"not a tar")
    with pytest.raises(BundleError):
        publish.publish(repo, junk)
    assert versions(repo)["targets"] == 1


def test_publish_refuses_a_folder_that_is_no_repository(tmp_path: Path) -> None:
    with pytest.raises(NotARepoError, match="not a Suture repository"):
        publish.publish(tmp_path, make_bundle(tmp_path, 1))


def test_publish_without_the_online_key_changes_nothing(repo: Path, tmp_path: Path) -> None:
    shutil.rmtree(repo / "keys")
    timestamp = (repo / "metadata/timestamp.json").read_bytes()
    with pytest.raises(SigningKeyError, match="targets metadata needs 1 of its keys, 0 found"):
        publish.publish(repo, make_bundle(tmp_path, 1))
    assert (repo / "metadata/timestamp.json").read_bytes() == timestamp
    assert not (repo / "metadata/2.targets.json").exists()


def test_a_key_can_live_behind_a_uri(repo: Path, tmp_path: Path) -> None:
    # The HSM/KMS hook: a private-key URI per keyid takes the place of the file.
    root = load(Layout(repo)).root.signed
    keyid = root.roles["targets"].keyids[0]
    elsewhere = tmp_path / "hsm" / "targets.pem"
    elsewhere.parent.mkdir()
    shutil.move(repo / "keys" / f"targets-{keyid}.pem", elsewhere)
    keys = Keyring(Layout(repo), uris={keyid: f"file2:{elsewhere}"})
    publish.publish(repo, make_bundle(tmp_path, 1), keys=keys)
    assert versions(repo)["targets"] == 2


# --- yank -----------------------------------------------------------------------


def test_yank_withdraws_a_level_and_keeps_its_file(repo: Path, tmp_path: Path) -> None:
    publish.publish(repo, make_bundle(tmp_path, 1))
    published = publish.publish(repo, make_bundle(tmp_path, 2))
    result = publish.yank(repo, RELEASE, BUILD_A, 2)
    assert (result.path, result.level, result.latest) == (published.path, 2, 1)
    assert published.path not in targets(repo).targets
    stored = repo / "targets" / A_STABLE / f"{published.sha256}.{NAME}-L2.bundle"
    assert stored.exists()
    index_target = targets(repo).targets[f"{A_STABLE}/index.json"]
    index = BuildIndex.from_json(
        (repo / "targets" / index_target.get_prefixed_paths()[0]).read_bytes()
    )
    assert ([lv.level for lv in index.levels], index.yanked) == ([1], (2,))
    assert versions(repo)["timestamp"] == 4


def test_a_yanked_level_is_never_published_again(repo: Path, tmp_path: Path) -> None:
    publish.publish(repo, make_bundle(tmp_path, 1))
    publish.publish(repo, make_bundle(tmp_path, 2))
    publish.yank(repo, RELEASE, BUILD_A, 2)
    with pytest.raises(LevelError, match="not above level 2"):
        publish.publish(repo, make_bundle(tmp_path, 2))
    publish.publish(repo, make_bundle(tmp_path, 3))


def test_yank_refuses_what_is_not_live(repo: Path, tmp_path: Path) -> None:
    publish.publish(repo, make_bundle(tmp_path, 1))
    publish.yank(repo, RELEASE, BUILD_A, 1)
    with pytest.raises(NotPublishedError, match="was yanked already"):
        publish.yank(repo, RELEASE, BUILD_A, 1)
    with pytest.raises(NotPublishedError, match="is not published"):
        publish.yank(repo, RELEASE, BUILD_B, 1)
    with pytest.raises(NotPublishedError, match="is not published"):
        publish.yank(repo, RELEASE, BUILD_A, 1, channel="testing")


# --- refresh --------------------------------------------------------------------


def test_refresh_renews_snapshot_and_timestamp(repo: Path, tmp_path: Path) -> None:
    publish.publish(repo, make_bundle(tmp_path, 1))
    before = load(Layout(repo))
    result = maintain.refresh(repo)
    assert result.versions == {"root": 1, "targets": 2, "snapshot": 3, "timestamp": 3}
    after = load(Layout(repo))
    assert after.timestamp.signed.expires >= before.timestamp.signed.expires
    assert after.snapshot.signed.meta == before.snapshot.signed.meta  # same targets
    assert result.warnings == ()


def test_refresh_renews_targets_that_would_expire_first(tmp_path: Path) -> None:
    short = Expiry(targets=timedelta(days=2), snapshot=timedelta(days=7))
    create.init(tmp_path / "repo", expiry=short)
    result = maintain.refresh(tmp_path / "repo")
    assert result.versions["targets"] == 2
    assert result.expires["targets"] > datetime.now(UTC) + timedelta(days=1)


def test_refresh_warns_when_root_expires_soon(tmp_path: Path) -> None:
    create.init(tmp_path / "repo", expiry=Expiry(root=timedelta(days=10)))
    (warning,) = maintain.refresh(tmp_path / "repo").warnings
    assert "root v1 expires" in warning


# --- rotate_key -----------------------------------------------------------------


@pytest.mark.parametrize("role", ["targets", "snapshot", "timestamp"])
def test_rotate_key_replaces_the_key_in_a_new_root(repo: Path, role: str) -> None:
    old_root = load(Layout(repo)).root
    (old_keyid,) = old_root.signed.roles[role].keyids
    result = maintain.rotate_key(repo, role)
    assert (result.role, result.retired, result.root_version) == (role, (old_keyid,), 2)

    new_root = Metadata[Root].from_file(str(repo / "metadata/2.root.json"))
    assert (repo / "metadata/root.json").read_bytes() == (
        repo / "metadata/2.root.json"
    ).read_bytes()
    assert new_root.signed.roles[role].keyids == [result.keyid]
    # Agents walk 1 -> 2 only when both root versions' keys signed 2.
    check = new_root.signed.get_root_verification_result(
        old_root.signed, new_root.signed_bytes, new_root.signatures
    )
    assert check.verified
    assert not (repo / "keys" / f"{role}-{old_keyid}.pem").exists()
    assert (repo / "keys" / f"{role}-{result.keyid}.pem").exists()

    # The re-signed role verifies under the new root and, signed by the old key
    # too, under the old root: agents on either side of the root walk accept it.
    state = load(Layout(repo))
    md = state.role(role)
    assert versions(repo)[role] == 2
    new_root.signed.verify_delegate(role, md.signed_bytes, md.signatures)
    old_root.signed.verify_delegate(role, md.signed_bytes, md.signatures)


def test_rotate_key_twice_walks_the_root_on(repo: Path, tmp_path: Path) -> None:
    maintain.rotate_key(repo, "timestamp")
    maintain.rotate_key(repo, "targets")
    publish.publish(repo, make_bundle(tmp_path, 1))
    assert versions(repo)["root"] == 3
    assert len(list((repo / "keys").iterdir())) == 3


def test_rotate_key_refuses_root(repo: Path) -> None:
    with pytest.raises(UsageError, match="cannot rotate 'root'"):
        maintain.rotate_key(repo, "root")


def test_rotate_key_needs_the_offline_root_key(repo: Path, tmp_path: Path) -> None:
    usb = tmp_path / "usb"
    shutil.move(repo / "keys-offline", usb)
    keys_before = sorted((repo / "keys").iterdir())
    with pytest.raises(SigningKeyError, match="needs 1 root key"):
        maintain.rotate_key(repo, "snapshot")
    assert sorted((repo / "keys").iterdir()) == keys_before
    assert not (repo / "metadata/2.root.json").exists()

    result = maintain.rotate_key(repo, "snapshot", keys=Keyring(Layout(repo), offline_keys=usb))
    assert result.root_version == 2


def test_rotate_key_needs_a_threshold_of_root_keys(tmp_path: Path) -> None:
    result = create.init(tmp_path / "repo", root_threshold=2)
    result.root_keys[0].unlink()
    with pytest.raises(SigningKeyError, match="needs 2 root key"):
        maintain.rotate_key(tmp_path / "repo", "timestamp")


def test_publish_takes_untested_from_the_environment(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # An attack kit or lab script runs plain `suture publish` on stand-in bundles.
    path = make_bundle(tmp_path, 1, test=None)
    monkeypatch.delenv("SUTURE_PUBLISH_UNTESTED", raising=False)
    assert main(["publish", str(path), "--repo", str(repo)]) == 62
    monkeypatch.setenv("SUTURE_PUBLISH_UNTESTED", "yes")  # only "1" lifts the gate
    assert main(["publish", str(path), "--repo", str(repo)]) == 62
    monkeypatch.setenv("SUTURE_PUBLISH_UNTESTED", "1")
    capsys.readouterr()
    assert main(["publish", str(path), "--repo", str(repo), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"] == "untested"
