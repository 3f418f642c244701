"""``suture repo ...`` and ``suture publish``: the publisher's TUF repository of bundles."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from suture import timefmt
from suture.cli.helptext import command, group
from suture.cli.output import Output
from suture.repo.layout import CHANNELS, ONLINE_ROLES

# The environment's word for --untested (an attack kit or lab script that runs
# plain `suture publish` on stand-in bundles); the default stays: refuse.
UNTESTED_ENV = "SUTURE_PUBLISH_UNTESTED"

# The signing modules are imported inside the handlers: `suture apply` on a
# production host should not load them.


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    """Add ``publish`` and ``repo`` with its sub-commands."""
    p = command(
        subs,
        "publish",
        common,
        summary="sign a bundle into a repository as the next level of its build",
        description="Check the bundle (its manifest, and that its module is a live patch ELF "
        "for the manifest's release, build id and name), require a passing 'suture test' on "
        "its own build unless --untested, and sign it in as a cumulative level of its kernel "
        "build and channel: the level must be above every level ever published there.",
        examples=[
            ("suture publish out/suture_fix.bundle --repo /srv/repo", "on stable"),
            (
                "suture publish fix.bundle --repo /srv/repo --channel testing --untested",
                "an emergency level without a lab test (the metadata says so)",
            ),
        ],
        exits=(0, 50, 60, 61, 62),
    )
    p.add_argument(
        "bundle", type=Path, help="a bundle from 'suture build', tested by 'suture test'"
    )
    _repo_option(p)
    _channel_option(p)
    p.add_argument(
        "--untested",
        action="store_true",
        help="publish without a passing 'suture test' on the bundle's build "
        "(the signed metadata says so, and agents and the dashboard show it); "
        f"{UNTESTED_ENV}=1 does the same, for labs whose tools cannot pass the flag",
    )
    p.set_defaults(handler=cmd_publish)

    _, repo_subs = group(
        subs,
        "repo",
        common,
        summary="create and maintain a repository",
        description="A TUF repository of static files: metadata/ and targets/ are served "
        "(suture serve, or any web server or CDN); keys/ (online) and keys-offline/ (root) "
        "are not.",
    )
    p = command(
        repo_subs, "init", common,
        summary="create a repository with new keys",
        description="Create the keys (root apart in keys-offline/), the first signed "
        "metadata and the folders. Install metadata/1.root.json on every agent as its "
        "trusted root.",
        examples=[("suture repo init /srv/repo", ""),
                  ("suture repo init /srv/repo --root-threshold 2", "two root keys, both needed")],
        exits=(0, 60),
    )  # fmt: skip
    p.add_argument("dir", type=Path, help="a new or empty folder")
    p.add_argument(
        "--root-threshold", type=int, default=1, metavar="N", help="root keys to make, all needed"
    )
    p.set_defaults(handler=cmd_init)

    p = command(
        repo_subs, "yank", common,
        summary="withdraw a published level",
        description="Agents stop finding the level; hosts running it go down to the newest "
        "level still offered (or remove it when none is left), and never apply it again. "
        "Its number is never reused.",
        examples=[("suture repo yank --repo /srv/repo --kernel 6.1.0-57-amd64 --build-id "
                   "0123...ef --level 4", "")],
        exits=(0, 60),
    )  # fmt: skip
    _repo_option(p)
    p.add_argument("--kernel", required=True, metavar="RELEASE", help="e.g. 6.1.0-56-amd64")
    p.add_argument("--build-id", required=True, metavar="ID", help="the kernel's GNU build id")
    p.add_argument("--level", required=True, type=int, metavar="N", help="the level to withdraw")
    _channel_option(p)
    p.set_defaults(handler=cmd_yank)

    p = command(
        repo_subs, "refresh", common,
        summary="re-sign snapshot and timestamp before they expire",
        description="Renew the expiry of snapshot and timestamp (one day). Run it from cron "
        "more often than that, or agents stop with 'metadata expired'.",
        examples=[("suture repo refresh --repo /srv/repo", "hourly, from cron")],
        exits=(0, 60),
    )  # fmt: skip
    _repo_option(p)
    p.set_defaults(handler=cmd_refresh)

    p = command(
        repo_subs, "rotate-key", common,
        summary="replace an online role's key",
        description="Write root N+1 (signed with the offline root keys) naming a new key for "
        "the role, and re-sign the role with both keys, so agents on root N and N+1 verify it.",
        examples=[("suture repo rotate-key timestamp --repo /srv/repo "
                   "--offline-keys /media/usb/keys-offline", "")],
        exits=(0, 60),
    )  # fmt: skip
    _repo_option(p)
    p.add_argument("role", choices=ONLINE_ROLES, help="the role whose key is replaced")
    p.add_argument("--offline-keys", type=Path, metavar="DIR", help="root keys (REPO/keys-offline)")
    p.set_defaults(handler=cmd_rotate_key)


def _repo_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", required=True, type=Path, metavar="DIR", help="the repository folder")


def _channel_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channel", choices=CHANNELS, default="stable", help="the channel (stable)")


def cmd_init(args: argparse.Namespace, out: Output) -> int:
    """Create a repository."""
    from suture.repo.create import init

    result = init(args.dir, root_threshold=args.root_threshold)
    root = result.root
    text = "\n".join(
        [
            f"created a repository in {root}",
            f"root key(s), kept apart for offline use: {', '.join(map(str, result.root_keys))}",
            "  move them to offline storage now; they are needed again only for "
            "'suture repo rotate-key'",
            f"online keys (targets, snapshot, timestamp, mode 0600): {root / 'keys'}",
            f"install {result.trusted_root} on every agent as its trusted root",
            f"serve {root / 'metadata'} and {root / 'targets'} only, never the key folders",
            "run 'suture repo refresh' at least daily (cron): timestamp expires after one day",
        ]
    )
    out.result({"format": 1, "ok": True, **result.to_dict()}, text)
    return 0


def cmd_publish(args: argparse.Namespace, out: Output) -> int:
    """Sign a bundle into the repository."""
    from suture.repo.publish import publish

    untested = args.untested or os.environ.get(UNTESTED_ENV) == "1"
    result = publish(args.repo, args.bundle, args.channel, untested=untested)
    for way in result.manifest.unpatched:
        out.message(f"warning: partial fix, this way in keeps the old code: {way}")
    if result.test != "passed":
        out.message(f"warning: published as {result.test}: no passing 'suture test' on this build")
    text = f"published level {result.manifest.level} as {result.path}"
    out.result({"format": 1, "ok": True, **result.to_dict()}, text)
    return 0


def cmd_yank(args: argparse.Namespace, out: Output) -> int:
    """Withdraw a level."""
    from suture.repo.publish import yank

    result = yank(args.repo, args.kernel, args.build_id, args.level, args.channel)
    now = f"level {result.latest}" if result.latest is not None else "no level"
    text = f"yanked level {result.level} ({result.path}); agents now find {now}"
    out.result({"format": 1, "ok": True, **result.to_dict()}, text)
    return 0


def cmd_refresh(args: argparse.Namespace, out: Output) -> int:
    """Renew snapshot and timestamp."""
    from suture.repo.maintain import refresh

    result = refresh(args.repo)
    for warning in result.warnings:
        out.message(f"warning: {warning}")
    stamp = result.expires["timestamp"]
    text = f"timestamp v{result.versions['timestamp']} is valid until {timefmt.utc(stamp)}"
    out.result({"format": 1, "ok": True, **result.to_dict()}, text)
    return 0


def cmd_rotate_key(args: argparse.Namespace, out: Output) -> int:
    """Replace an online role's key."""
    from suture.repo.keys import Keyring
    from suture.repo.layout import Layout
    from suture.repo.maintain import rotate_key

    keys = Keyring(Layout(args.repo), offline_keys=args.offline_keys)
    result = rotate_key(args.repo, args.role, keys=keys)
    text = (
        f"{result.role} now signs with key {result.keyid[:16]}…; root v{result.root_version} "
        "says so; the old key file is deleted"
    )
    out.result({"format": 1, "ok": True, **result.to_dict()}, text)
    return 0
