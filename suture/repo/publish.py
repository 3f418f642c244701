"""``publish`` and ``yank``: add a level's bundle to a kernel build's channel, or withdraw it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuf.api.exceptions import LengthOrHashMismatchError
from tuf.api.metadata import TargetFile, Targets

from suture import bundle, timefmt
from suture.bundle import Manifest, labtest
from suture.bundle import module as bundle_module
from suture.errors import LevelError, NotARepoError, NotPublishedError, UntestedError, UsageError
from suture.fsutil import atomic_write, locked
from suture.repo import layout as paths
from suture.repo.index import BuildIndex
from suture.repo.keys import Keyring, SignerSource
from suture.repo.layout import Layout
from suture.repo.metadata import HASH_ALGORITHMS, commit, load, read_config


@dataclass(frozen=True)
class PublishResult:
    """The target that ``publish`` added."""

    path: str
    manifest: Manifest
    channel: str
    length: int
    sha256: str
    targets_version: int
    test: str  # what the signed metadata says: passed, failed or untested

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        m = self.manifest
        return {
            "path": self.path,
            "release": m.release,
            "build_id": m.build_id,
            "channel": self.channel,
            "level": m.level,
            "name": m.name,
            "cves": list(m.cves),
            "unpatched": list(m.unpatched),
            "test": self.test,
            "length": self.length,
            "sha256": self.sha256,
            "targets_version": self.targets_version,
        }


@dataclass(frozen=True)
class YankResult:
    """The target that ``yank`` withdrew and what agents are offered instead."""

    path: str
    level: int
    latest: int | None  # the level agents now find, None: no level left
    targets_version: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "path": self.path,
            "level": self.level,
            "latest": self.latest,
            "targets_version": self.targets_version,
        }


def publish(
    directory: Path,
    bundle_path: Path,
    channel: str = "stable",
    *,
    keys: SignerSource | None = None,
    untested: bool = False,
    fix_files: Mapping[str, bytes] | None = None,
) -> PublishResult:
    """Sign ``bundle_path`` into the repository for its kernel build and ``channel``.

    A level made by ``suture release`` names the fixes it was built from; each
    fix file is signed in too (``fixes/<sha256>.patch``), from ``fix_files``
    (sha256 -> bytes) unless the repository has it already.

    The target path comes from the bundle's verified manifest:
    ``<release>/<build_id>/<channel>/<name>-L<level>.bundle``. Levels are
    cumulative, so the level must be above every level ever published for
    that build and channel, yanked ones included.

    The manifest must carry a passing ``suture test`` result for its own
    kernel build (release and build id). ``untested`` lifts that gate; the
    signed metadata (``custom["test"]``) then says what is true: ``failed``
    for a failed result on this build, ``untested`` otherwise.

    Raises:
        BundleError: the bundle is malformed, its module does not match its manifest,
            or the module is not a live patch ELF for the manifest's release, build id
            and name.
        UsageError: the channel is unknown, the manifest names no build id, or a
            fix it names is neither given nor in the repository.
        UntestedError: no passing test on this build, and ``untested`` is not set.
        LevelError: the level is not above the published ones.
        NotARepoError, SigningKeyError: the repository or its keys cannot be used.
    """
    layout = Layout(directory)
    expiry = read_config(layout)
    data, manifest = _read_bundle(bundle_path)
    if not manifest.build_id:
        raise UsageError(
            f"{bundle_path}: the manifest names no build id",
            hint="a patch is published for one exact kernel build: rebuild it with its build id",
        )
    test = _test_summary(bundle_path, manifest, untested)
    path = paths.bundle_path(
        manifest.release, manifest.build_id, channel, manifest.name, manifest.level
    )
    index_path = paths.index_path(manifest.release, manifest.build_id, channel)
    with locked(layout.lock):
        state = load(layout)
        targets = state.targets.signed
        index = _read_index(layout, targets, manifest.release, manifest.build_id, channel)
        if manifest.level <= index.highest_ever:
            raise LevelError(
                f"level {manifest.level} is not above level {index.highest_ever}, already "
                f"published for {manifest.release} ({manifest.build_id[:12]}…) on {channel}",
                level=manifest.level,
                published=index.highest_ever,
                hint=f"levels are cumulative: build level {index.highest_ever + 1} or higher",
            )
        custom = {
            "release": manifest.release,
            "build_id": manifest.build_id,
            "channel": channel,
            "level": manifest.level,
            "name": manifest.name,
            "cves": list(manifest.cves),
            # when the level was signed in: the fleet server's rollout delay counts from it
            "published": timefmt.utc(),
        }
        if manifest.kind != "kernel":  # a library build's level: release is its soname
            custom["kind"] = manifest.kind
        if manifest.unpatched:  # a partial fix: signed in, for whoever reads the metadata
            custom["unpatched"] = list(manifest.unpatched)
        custom["test"] = test
        if manifest.fixes:
            custom["fixes"] = [f.sha256 for f in manifest.fixes]
            _store_fixes(layout, targets, manifest, fix_files or {})
        target = _store(layout, path, data, custom)
        targets.targets[path] = target
        new_index = index.with_level(manifest.level, path)
        targets.targets[index_path] = _store(layout, index_path, new_index.to_json())
        commit(layout, state, keys or Keyring(layout), expiry)
    return PublishResult(
        path=path,
        manifest=manifest,
        channel=channel,
        length=target.length,
        sha256=target.hashes["sha256"],
        targets_version=targets.version,
        test=labtest.signed_result(test),
    )


def _test_summary(bundle_path: Path, manifest: Manifest, untested: bool) -> dict[str, Any]:
    """What the signed metadata says of the bundle's test; refuses an untested bundle.

    Raises:
        UntestedError: no passing result for the manifest's own build, and not ``untested``.
    """
    build = (manifest.release, manifest.build_id)
    test = manifest.test
    # A result of another build says nothing about this one: it counts as none.
    own = test if test is not None and (test.release, test.build_id) == build else None
    if own is not None and (own.passed or untested):
        return own.summary()
    if untested:
        return {"format": labtest.FORMAT_VERSION, "result": labtest.UNTESTED}
    named = f"{manifest.release} ({manifest.build_id[:12]}…)"
    if own is not None:
        what, why = "failed", f"{bundle_path} failed its test on {named} at {own.at}: {own.reason}"
    elif test is not None:
        what = "other-build"
        why = (
            f"{bundle_path} was tested on {test.release} ({test.build_id[:12]}…), "
            f"not on its own build {named}"
        )
    else:
        what, why = "untested", f"{bundle_path} has no test result"
    raise UntestedError(
        f"publish refused: {why}",
        result=what,
        hint=f"run 'suture test {bundle_path} [--test SCRIPT]' (it boots {manifest.release} "
        "in the lab) and publish once it passes, or give --untested to sign it in marked "
        "as not tested",
    )


def yank(
    directory: Path,
    release: str,
    build_id: str,
    level: int,
    channel: str = "stable",
    *,
    keys: SignerSource | None = None,
) -> YankResult:
    """Withdraw one level: agents no longer find it; its file stays for the record.

    The level moves to the index's ``yanked`` list, so its number is never
    published again.

    Raises:
        NotPublishedError: that level is not live for that build and channel.
        UsageError: the release, build id or channel cannot name a target.
        NotARepoError, SigningKeyError: the repository or its keys cannot be used.
    """
    layout = Layout(directory)
    expiry = read_config(layout)
    index_path = paths.index_path(release, build_id, channel)
    with locked(layout.lock):
        state = load(layout)
        targets = state.targets.signed
        index = _read_index(layout, targets, release, build_id, channel)
        entry = index.find(level)
        if entry is None:
            live = ", ".join(str(lv.level) for lv in index.levels) or "none"
            why = "was yanked already" if level in index.yanked else "is not published"
            raise NotPublishedError(
                f"level {level} {why} for {release} ({build_id[:12]}…) on {channel}",
                hint=f"live levels there: {live}",
            )
        del targets.targets[entry.path]
        new_index = index.without_level(level)
        targets.targets[index_path] = _store(layout, index_path, new_index.to_json())
        commit(layout, state, keys or Keyring(layout), expiry)
    latest = new_index.latest()
    return YankResult(
        path=entry.path,
        level=level,
        latest=latest.level if latest else None,
        targets_version=targets.version,
    )


def _read_bundle(bundle_path: Path) -> tuple[bytes, Manifest]:
    # The manifest is read from the very bytes that get signed, not from a
    # file that could change between the check and the copy.
    try:
        data = bundle_path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {bundle_path}: {e.strerror}") from e
    manifest, module = bundle.unpack(data, str(bundle_path))
    bundle_module.check(manifest, module)
    return data, manifest


def _read_index(
    layout: Layout, targets: Targets, release: str, build_id: str, channel: str
) -> BuildIndex:
    path = paths.index_path(release, build_id, channel)
    target = targets.targets.get(path)
    if target is None:
        return BuildIndex(release, build_id, channel)
    stored = layout.targets / target.get_prefixed_paths()[0]
    try:
        data = stored.read_bytes()
        target.verify_length_and_hashes(data)
        return BuildIndex.from_json(data)
    except (OSError, ValueError, LengthOrHashMismatchError) as e:
        raise NotARepoError(
            f"the level index {stored} is missing or altered: {e}",
            hint="restore the targets folder from a backup",
        ) from e


def _store_fixes(
    layout: Layout, targets: Targets, manifest: Manifest, given: Mapping[str, bytes]
) -> None:
    """Sign in the fix files a level names that the repository does not have yet."""
    for fix in manifest.fixes:
        path = paths.fix_path(fix.sha256)
        if path in targets.targets:
            continue
        data = given.get(fix.sha256)
        if data is None or hashlib.sha256(data).hexdigest() != fix.sha256:
            raise UsageError(
                f"level {manifest.level} names the fix {fix.sha256[:12]}… "
                f"({fix.subject or 'no subject'}), which is neither given nor in the repository",
                hint="publish it with suture release, which signs in the fix files too",
            )
        targets.targets[path] = _store(layout, path, data)


def _store(layout: Layout, path: str, data: bytes, custom: Any = None) -> TargetFile:
    """Write ``data`` under its hash-prefixed name(s) and return its signed description."""
    target = TargetFile.from_data(path, data, HASH_ALGORITHMS)
    if custom is not None:
        target.unrecognized_fields["custom"] = custom
    for prefixed in target.get_prefixed_paths():
        atomic_write(layout.targets / prefixed, data)
    return target
