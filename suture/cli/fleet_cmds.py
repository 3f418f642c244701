"""``suture fleet ...``: the operator's commands against the fleet server (admin token).

Every command takes ``--server URL`` (or ``$SUTURE_FLEET_SERVER``) and
``--admin-token-file FILE`` (or ``$SUTURE_ADMIN_TOKEN``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from suture.cli.output import Output
from suture.errors import UsageError
from suture.repo.layout import CHANNELS

# The client is imported inside the handlers, like every command's library.


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    """Add ``fleet`` and its sub-commands."""
    fleet = subs.add_parser("fleet", parents=[common], help="see and steer the fleet (admin)")
    fleet_subs = fleet.add_subparsers(dest="fleet_command", required=True, metavar="COMMAND")
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--server", metavar="URL", help="the fleet server ($SUTURE_FLEET_SERVER)")
    server.add_argument(
        "--admin-token-file",
        type=Path,
        metavar="FILE",
        help="the admin token ($SUTURE_ADMIN_TOKEN)",
    )
    parents = [common, server]

    key = fleet_subs.add_parser("key", parents=parents, help="registration keys hosts enrol with")
    key_subs = key.add_subparsers(dest="key_command", required=True, metavar="COMMAND")
    p = key_subs.add_parser("create", parents=parents, help="a new key (printed once)")
    p.add_argument("--tag", action="append", default=[], metavar="TAG", help="e.g. env:prod")
    p.add_argument("--note", default="", help="what the key is for")
    p.set_defaults(handler=cmd_key_create)
    p = key_subs.add_parser("list", parents=parents, help="the keys (never their secrets)")
    p.set_defaults(handler=cmd_key_list)
    p = key_subs.add_parser("revoke", parents=parents, help="stop a key from enrolling hosts")
    p.add_argument("key_id")
    p.set_defaults(handler=cmd_key_revoke)

    ro = fleet_subs.add_parser("rollout", parents=parents, help="rollout control of a channel")
    ro_subs = ro.add_subparsers(dest="rollout_command", required=True, metavar="COMMAND")
    channel = argparse.ArgumentParser(add_help=False)
    channel.add_argument("--channel", choices=CHANNELS, default="stable", help="(stable)")
    p = ro_subs.add_parser("show", parents=[*parents, channel], help="the policy")
    p.set_defaults(handler=cmd_rollout_show)
    p = ro_subs.add_parser("set", parents=[*parents, channel], help="change policy settings")
    p.add_argument("--delay-hours", type=float, help="a level waits this long after publishing")
    p.add_argument("--canary-tag", action="append", metavar="TAG", help="canary hosts' tag")
    p.add_argument("--canary-percent", type=int, help="share of other hosts that are canaries")
    p.add_argument("--canary-hours", type=float, help="then everyone, after this long")
    p.add_argument("--sticky", action="append", metavar="TAG=LEVEL", help="cap a tag's level")
    p.add_argument("--failure-threshold", type=float, help="halt at this failed share (0.2)")
    p.add_argument("--min-attempts", type=int, help="...once this many hosts tried (5)")
    p.set_defaults(handler=cmd_rollout_set)
    p = ro_subs.add_parser("halt", parents=[*parents, channel], help="stop a level's rollout")
    p.add_argument("--level", type=int, required=True)
    p.add_argument("--reason", default="")
    p.set_defaults(handler=cmd_rollout_action, action="halt")
    p = ro_subs.add_parser("resume", parents=[*parents, channel], help="lift a halt")
    p.set_defaults(handler=cmd_rollout_action, action="resume")
    p = ro_subs.add_parser("promote", parents=[*parents, channel], help="release to every host")
    p.add_argument("--level", type=int, required=True)
    p.set_defaults(handler=cmd_rollout_action, action="promote")
    p = ro_subs.add_parser("unroll", parents=[*parents, channel], help="back to an earlier level")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--level", type=int)
    which.add_argument("--end", action="store_true", help="end the unroll")
    p.set_defaults(handler=cmd_rollout_action, action="unroll")
    _register_queries(fleet_subs, parents)


def _register_queries(fleet_subs: Any, parents: list[argparse.ArgumentParser]) -> None:
    """``hosts``, ``exposed``, ``summary``, ``export``, ``vex``: what the fleet runs and lacks."""
    p = fleet_subs.add_parser("hosts", parents=parents, help="hosts, with filters")
    p.add_argument("--release", help="kernel release (uname -r)")
    p.add_argument("--build-id", help="kernel build id")
    p.add_argument("--level", type=int, help="the level reported")
    p.add_argument("--state", choices=("patched", "unpatched", "failed", "unsupported"))
    p.add_argument("--status", help="a state, or inactive")
    p.add_argument("--tag", help="e.g. env:prod")
    p.add_argument("--channel", choices=CHANNELS)
    p.add_argument("--cve", metavar="CVE-ID", help="only hosts exposed to it")
    p.add_argument("--inactive-after", type=int, metavar="S", help="s of silence (10800)")
    p.set_defaults(handler=cmd_hosts)
    p = fleet_subs.add_parser("exposed", parents=parents, help="hosts exposed to a CVE now")
    p.add_argument("cve", metavar="CVE-ID")
    p.set_defaults(handler=cmd_exposed)
    p = fleet_subs.add_parser("summary", parents=parents, help="hosts per build, level, state")
    p.set_defaults(handler=cmd_summary)
    p = fleet_subs.add_parser("export", parents=parents, help="every host, CSV or JSON")
    p.add_argument("--format", choices=("csv", "json"), default="csv", dest="export_format")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="(standard output)")
    p.set_defaults(handler=cmd_export)
    p = fleet_subs.add_parser("vex", parents=parents, help="a host's signed OpenVEX document")
    p.add_argument("host_id")
    p.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="the document as signed; FILE.sig beside"
    )
    p.set_defaults(handler=cmd_vex)


def _client(args: argparse.Namespace) -> Any:
    from suture.fleet.client import FleetClient

    return FleetClient.from_options(args.server, args.admin_token_file)


def cmd_key_create(args: argparse.Namespace, out: Output) -> int:
    """Create a registration key."""
    data = _client(args).call(
        "POST", "/api/v1/registration-keys", {"tags": args.tag, "note": args.note}
    )
    text = (
        f"registration key {data['key_id']} (tags: {', '.join(data['tags']) or 'none'}):\n"
        f"{data['registration_key']}\n"
        "give it to agents as registration_key in agent.toml; it is not shown again"
    )
    out.result(data, text)
    return 0


def cmd_key_list(args: argparse.Namespace, out: Output) -> int:
    """List registration keys."""
    data = _client(args).call("GET", "/api/v1/registration-keys")
    lines = [
        f"{k['key_id']}  {k['created_at']}  {'revoked' if k['revoked'] else 'active':7}  "
        f"{','.join(k['tags']) or '-'}  {k['note']}"
        for k in data["keys"]
    ]
    out.result(data, "\n".join(lines) or "no registration keys")
    return 0


def cmd_key_revoke(args: argparse.Namespace, out: Output) -> int:
    """Revoke a registration key."""
    data = _client(args).call("DELETE", f"/api/v1/registration-keys/{args.key_id}")
    out.result(data, f"revoked {args.key_id}; hosts enrolled with it keep their tokens")
    return 0


def _policy_text(channel: str, policy: dict[str, Any]) -> str:
    lines = [f"rollout on {channel}:"]
    lines += [f"  {k}: {v}" for k, v in sorted(policy.items())]
    if policy.get("halted_level") is not None:
        lines.append(f"HALTED at level {policy['halted_level']}: {policy['halt_reason']}")
    return "\n".join(lines)


def cmd_rollout_show(args: argparse.Namespace, out: Output) -> int:
    """Show a channel's rollout policy."""
    data = _client(args).call("GET", f"/api/v1/rollouts/{args.channel}")
    out.result(data, _policy_text(args.channel, data["policy"]))
    return 0


def cmd_rollout_set(args: argparse.Namespace, out: Output) -> int:
    """Change some settings of a channel's policy, keep the others."""
    client = _client(args)
    policy = client.call("GET", f"/api/v1/rollouts/{args.channel}")["policy"]
    changes = {
        "delay_hours": args.delay_hours,
        "canary_tags": args.canary_tag,
        "canary_percent": args.canary_percent,
        "canary_hours": args.canary_hours,
        "failure_threshold": args.failure_threshold,
        "min_attempts": args.min_attempts,
    }
    policy.update({k: v for k, v in changes.items() if v is not None})
    for item in args.sticky or []:
        tag, _, level = item.partition("=")
        if not tag or not level.isdigit():
            raise UsageError(f"--sticky {item!r} is not TAG=LEVEL", hint="e.g. --sticky env:prod=3")
        policy.setdefault("sticky", {})[tag] = int(level)
    data = client.call("PUT", f"/api/v1/rollouts/{args.channel}", policy)
    out.result(data, _policy_text(args.channel, data["policy"]))
    return 0


def cmd_rollout_action(args: argparse.Namespace, out: Output) -> int:
    """halt, resume, promote or unroll."""
    body: dict[str, Any] = {}
    if args.action in ("halt", "promote"):
        body["level"] = args.level
    if args.action == "halt":
        body["reason"] = args.reason
    if args.action == "unroll":
        body["level"] = None if args.end else args.level
    data = _client(args).call("POST", f"/api/v1/rollouts/{args.channel}/{args.action}", body)
    out.result(data, _policy_text(args.channel, data["policy"]))
    return 0


# --- queries ----------------------------------------------------------------------------


def _canonical(document: dict[str, Any]) -> bytes:
    """The bytes the server signed (as suture.server.vex.canonical; the server is not loaded)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _table(header: tuple[str, ...], rows: Sequence[Sequence[object]]) -> str:
    """Aligned columns."""
    cells = [header, *[tuple(str(c) for c in r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def _host_rows(hosts: list[dict[str, Any]]) -> list[tuple[object, ...]]:
    return [
        (
            h["host_id"],
            h["hostname"],
            h["kernel"]["release"],
            h["kernel"]["build_id"][:12] or "-",
            h["channel"],
            h["level"],
            h["status"],
            h["last_seen"],
        )
        for h in hosts
    ]


_HOST_HEADER = ("HOST", "HOSTNAME", "RELEASE", "BUILD", "CHANNEL", "LEVEL", "STATUS", "LAST SEEN")


def cmd_hosts(args: argparse.Namespace, out: Output) -> int:
    """List hosts, filtered."""
    filters = {
        "release": args.release,
        "build_id": args.build_id,
        "level": args.level,
        "state": args.state,
        "status": args.status,
        "tag": args.tag,
        "channel": args.channel,
        "cve": args.cve,
        "inactive_after": args.inactive_after,
    }
    query = {k: str(v) for k, v in filters.items() if v is not None}
    data = _client(args).call("GET", "/api/v1/hosts", query=query)
    hosts = data["hosts"]
    text = _table(_HOST_HEADER, _host_rows(hosts)) if hosts else "no hosts"
    out.result(data, text)
    return 0


def cmd_exposed(args: argparse.Namespace, out: Output) -> int:
    """Hosts exposed to a CVE, hosts without a fix for it, hosts fixed."""
    data = _client(args).call("GET", "/api/v1/exposed", query={"cve": args.cve})
    counts = data["counts"]
    parts = [
        f"{args.cve}: {counts['exposed']} exposed, {counts['fixed']} fixed, "
        f"{counts['no_fix']} with no fix published for their build"
    ]
    if data["exposed"]:
        rows = [
            (*r, h["fixed_by"]["level"])
            for r, h in zip(_host_rows(data["exposed"]), data["exposed"], strict=True)
        ]
        parts += ["", "exposed (a fix is published, not live):"]
        parts.append(_table((*_HOST_HEADER, "FIXED BY"), rows))
    out.result(data, "\n".join(parts))
    return 0


def cmd_summary(args: argparse.Namespace, out: Output) -> int:
    """Hosts per kernel build, level and state; the failures."""
    data = _client(args).call("GET", "/api/v1/summary")
    t = data["totals"]
    parts = [
        f"{t['hosts']} hosts: {t['active']} active, {t['inactive']} inactive, "
        f"{t['failed']} failed, {t['unsupported']} unsupported"
    ]
    if data["groups"]:
        rows = [
            (
                g["kernel"]["release"],
                g["kernel"]["build_id"][:12] or "-",
                g["level"],
                g["state"],
                g["hosts"],
                g["inactive"],
            )
            for g in data["groups"]
        ]
        parts += ["", _table(("RELEASE", "BUILD", "LEVEL", "STATE", "HOSTS", "INACTIVE"), rows)]
    if data["failures"]:
        failed = [
            (f["host_id"], f["level"], f["attempted_level"], (f["last_error"] or "")[:60])
            for f in data["failures"]
        ]
        parts += ["", "failures:", _table(("HOST", "LEVEL", "TRIED", "ERROR"), failed)]
    out.result(data, "\n".join(parts))
    return 0


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    """Every host, as CSV or JSON, to a file or standard output."""
    raw = _client(args).raw("GET", "/api/v1/export", query={"format": args.export_format})
    if args.output is None:
        sys.stdout.write(raw.decode())
        return 0
    _write(args.output, raw)
    out.result({"format": 1, "ok": True, "output": str(args.output)}, f"wrote {args.output}")
    return 0


def cmd_vex(args: argparse.Namespace, out: Output) -> int:
    """A host's OpenVEX document, signed by the server."""
    client = _client(args)
    path = f"/api/v1/hosts/{quote(args.host_id, safe='')}/vex"
    data = client.call("GET", path)
    if args.output is None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return 0
    _write(args.output, _canonical(data["document"]))
    sig = args.output.with_name(args.output.name + ".sig")
    _write(sig, data["signature"].encode() + b"\n")
    text = (
        f"wrote {args.output} and its Ed25519 signature {sig} "
        f"(key: {data['public_key']}, also at /api/v1/vex-key)"
    )
    out.result({"format": 1, "ok": True, "output": str(args.output), "signature": str(sig)}, text)
    return 0


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from e
