"""``suture fleet ...``: the operator's commands against the fleet server (admin token).

Every command takes ``--server URL`` (or ``$SUTURE_FLEET_SERVER``) and
``--admin-token-file FILE`` (or ``$SUTURE_ADMIN_TOKEN``). Lists come a page
at a time (``--limit``, ``--cursor``; ``--all`` follows every page); the
export always takes every page. ``--json`` prints the server's answer
(format 1).
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

    _register_keys_hosts(fleet_subs, parents)

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
    build = argparse.ArgumentParser(add_help=False)
    build.add_argument("--release", help="only this kernel build: its release...")
    build.add_argument("--build-id", help="...and its build id")
    p = ro_subs.add_parser(
        "halt", parents=[*parents, channel, build], help="stop a level's rollout"
    )
    p.add_argument("--level", type=int, required=True)
    p.add_argument("--reason", default="")
    p.set_defaults(handler=cmd_rollout_action, action="halt")
    p = ro_subs.add_parser("resume", parents=[*parents, channel, build], help="lift halts")
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


def _register_keys_hosts(fleet_subs: Any, parents: list[argparse.ArgumentParser]) -> None:
    """``key create|list|revoke`` and ``host show|revoke|delete``."""
    key = fleet_subs.add_parser("key", parents=parents, help="registration keys hosts enrol with")
    key_subs = key.add_subparsers(dest="key_command", required=True, metavar="COMMAND")
    p = key_subs.add_parser("create", parents=parents, help="a new key (printed once)")
    p.add_argument("--tag", action="append", default=[], metavar="TAG", help="e.g. env:prod")
    p.add_argument("--note", default="", help="what the key is for")
    p.add_argument("--max-hosts", type=int, metavar="N", help="enrol at most N hosts")
    p.add_argument("--expires-in", metavar="TIME", help="e.g. 12h, 7d: no enrolment after")
    p.set_defaults(handler=cmd_key_create)
    p = key_subs.add_parser("list", parents=parents, help="the keys (never their secrets)")
    p.set_defaults(handler=cmd_key_list)
    p = key_subs.add_parser("revoke", parents=parents, help="stop a key from enrolling hosts")
    p.add_argument("key_id")
    p.add_argument("--hosts", action="store_true", help="revoke its hosts' tokens too")
    p.set_defaults(handler=cmd_key_revoke)

    host = fleet_subs.add_parser("host", parents=parents, help="one host: show, revoke, delete")
    host_subs = host.add_subparsers(dest="host_command", required=True, metavar="COMMAND")
    p = host_subs.add_parser("show", parents=parents, help="its last report and history")
    p.add_argument("host_id")
    p.add_argument("--cursor", help="the next page of its history (from the last answer)")
    p.add_argument("--limit", type=int, help="events in a page (200)")
    p.set_defaults(handler=cmd_host_show)
    p = host_subs.add_parser("revoke", parents=parents, help="revoke its token")
    p.add_argument("host_id")
    p.add_argument("--allow-reenrol", action="store_true", help="its id may enrol again")
    p.set_defaults(handler=cmd_host_revoke)
    p = host_subs.add_parser("delete", parents=parents, help="forget it (report, history, token)")
    p.add_argument("host_id")
    p.set_defaults(handler=cmd_host_delete)


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
    _paging(p)
    p.set_defaults(handler=cmd_hosts)
    p = fleet_subs.add_parser("exposed", parents=parents, help="hosts exposed to a CVE now")
    p.add_argument("cve", metavar="CVE-ID")
    p.add_argument("--all", action="store_true", help="every exposed host (every page)")
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


def _paging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, metavar="N", help="rows in a page (200)")
    p.add_argument("--cursor", help="the next page (the last answer's next_cursor)")
    p.add_argument("--all", action="store_true", help="follow every page")


def _pages(client: Any, path: str, query: dict[str, str], key: str, every: bool) -> dict[str, Any]:
    """One page of a list, or with ``every`` all of them in one answer."""
    data: dict[str, Any] = client.call("GET", path, query=query)
    while every and data.get("next_cursor"):
        more = client.call("GET", path, query={**query, "cursor": data["next_cursor"]})
        data = {**more, key: data[key] + more[key]}
    return data


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not (number.isascii() and number.isdigit()) or int(number) < 1:
        raise UsageError(f"--expires-in {text!r} is not a duration", hint="e.g. 30m, 12h, 7d")
    return int(number) * units[unit]


def _client(args: argparse.Namespace) -> Any:
    from suture.fleet.client import FleetClient

    return FleetClient.from_options(args.server, args.admin_token_file)


def cmd_key_create(args: argparse.Namespace, out: Output) -> int:
    """Create a registration key."""
    import time
    from datetime import UTC, datetime

    body: dict[str, Any] = {"tags": args.tag, "note": args.note}
    if args.max_hosts is not None:
        if args.max_hosts < 1:
            raise UsageError("--max-hosts is not 1 or more")
        body["max_hosts"] = args.max_hosts
    if args.expires_in is not None:
        when = time.time() + _duration(args.expires_in)
        body["expires_at"] = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    data = _client(args).call("POST", "/api/v1/registration-keys", body)
    limits = [f"at most {data['max_hosts']} hosts"] if data.get("max_hosts") else []
    limits += [f"until {data['expires_at']}"] if data.get("expires_at") else []
    text = (
        f"registration key {data['key_id']} (tags: {', '.join(data['tags']) or 'none'}"
        f"{'; ' + ', '.join(limits) if limits else ''}):\n"
        f"{data['registration_key']}\n"
        "give it to agents as registration_key in agent.toml; it is not shown again"
    )
    out.result(data, text)
    return 0


def cmd_key_list(args: argparse.Namespace, out: Output) -> int:
    """List registration keys."""
    data = _client(args).call("GET", "/api/v1/registration-keys")

    def status(k: dict[str, Any]) -> str:
        return "revoked" if k["revoked"] else "expired" if k.get("expired") else "active"

    lines = [
        f"{k['key_id']}  {k['created_at']}  {status(k):7}  {k.get('enrolled', 0)}"
        f"{'/' + str(k['max_hosts']) if k.get('max_hosts') else ''} hosts  "
        f"{','.join(k['tags']) or '-'}  {k['note']}"
        for k in data["keys"]
    ]
    out.result(data, "\n".join(lines) or "no registration keys")
    return 0


def cmd_key_revoke(args: argparse.Namespace, out: Output) -> int:
    """Revoke a registration key."""
    path = f"/api/v1/registration-keys/{quote(args.key_id, safe='')}"
    query = {"revoke_hosts": "true"} if args.hosts else None
    data = _client(args).call("DELETE", path, query=query)
    after = (
        f"and the tokens of its {data['hosts_revoked']} hosts"
        if args.hosts
        else "hosts enrolled with it keep their tokens"
    )
    out.result(data, f"revoked {args.key_id}; {after}")
    return 0


def _host_path(host_id: str, tail: str = "") -> str:
    return f"/api/v1/hosts/{quote(host_id, safe='')}{tail}"


def cmd_host_show(args: argparse.Namespace, out: Output) -> int:
    """A host's last report and history."""
    client = _client(args)
    query = {k: str(v) for k, v in (("cursor", args.cursor), ("limit", args.limit)) if v}
    if query:
        data = client.call("GET", _host_path(args.host_id, "/events"), query=query)
        events, more = data["events"], data["next_cursor"]
    else:
        data = client.call("GET", _host_path(args.host_id))
        events, more = data["history"], data["history_next_cursor"]
        h = data["host"]
        out_lines = [
            f"{h['host_id']} ({h['hostname']}): {h['kernel']['release']} "
            f"{h['kernel']['build_id'][:12] or '-'} {h['channel']} level {h['level']} "
            f"{h['status']}, token {h['token']}, last seen {h['last_seen']}"
        ]
        out_lines += _userspace_lines(data)
    rows = [(e["at"], e["level"], e["attempted_level"], e["state"]) for e in events]
    text = "\n".join(
        [*(out_lines if not query else []), _table(("AT", "LEVEL", "TRIED", "STATE"), rows)]
    )
    if more:
        text += f"\nolder history: --cursor {more}"
    out.result(data, text)
    return 0


def cmd_host_revoke(args: argparse.Namespace, out: Output) -> int:
    """Revoke a host's token."""
    body = {"allow_reenrol": args.allow_reenrol}
    data = _client(args).call("POST", _host_path(args.host_id, "/revoke"), body)
    again = "it may enrol again" if args.allow_reenrol else "its id may not enrol again"
    out.result(data, f"revoked the token of {args.host_id}; {again}")
    return 0


def cmd_host_delete(args: argparse.Namespace, out: Output) -> int:
    """Forget a host."""
    data = _client(args).call("DELETE", _host_path(args.host_id))
    out.result(data, f"deleted {args.host_id}")
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
    if args.action in ("halt", "resume") and (args.release or args.build_id):
        if not (args.release and args.build_id):
            raise UsageError("give both --release and --build-id, or neither")
        body.update(release=args.release, build_id=args.build_id)
    if args.action == "unroll":
        body["level"] = None if args.end else args.level
    data = _client(args).call("POST", f"/api/v1/rollouts/{args.channel}/{args.action}", body)
    out.result(data, _policy_text(args.channel, data["policy"]))
    return 0


# --- queries ----------------------------------------------------------------------------


def _userspace_lines(data: dict[str, Any]) -> list[str]:
    """The host's library builds beside its kernel, and its CVEs fixed in part."""
    rows = [
        (
            u["soname"],
            u["build_id"][:12],
            u["level"],
            u["state"],
            u["processes"]["patched"],
            u["processes"]["unpatched"] + u["processes"]["failed"]
            + sum(u["processes"]["refused"].values()),
            " ".join(u["cves"]) or "-",
        )
        for u in data["host"].get("userspace", [])
    ]  # fmt: skip
    lines = ["userspace:", _table(_USER_HEADER, rows)] if rows else []
    if data.get("cves_partial"):
        lines.append("partly fixed in memory (some processes): " + " ".join(data["cves_partial"]))
    return lines


_USER_HEADER = ("LIBRARY", "BUILD", "LEVEL", "STATE", "PATCHED", "NOT", "CVES")


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
    filters.update(limit=args.limit, cursor=args.cursor)
    query = {k: str(v) for k, v in filters.items() if v is not None}
    data = _pages(_client(args), "/api/v1/hosts", query, "hosts", args.all)
    hosts = data["hosts"]
    text = _table(_HOST_HEADER, _host_rows(hosts)) if hosts else "no hosts"
    if data.get("next_cursor"):
        text += f"\nnext page: --cursor {data['next_cursor']} (or --all)"
    out.result(data, text)
    return 0


def cmd_exposed(args: argparse.Namespace, out: Output) -> int:
    """Hosts exposed to a CVE, hosts without a fix for it, hosts fixed."""
    client = _client(args)
    data = client.call("GET", "/api/v1/exposed", query={"cve": args.cve})
    more = data["next_cursors"].get("exposed")
    while args.all and more:
        query = {"cve": args.cve, "kind": "exposed", "cursor": more}
        page = client.call("GET", "/api/v1/exposed", query=query)
        data["exposed"] += page["exposed"]
        more = page["next_cursors"].get("exposed")
    data["next_cursors"]["exposed"] = more
    counts = data["counts"]
    parts = [
        f"{args.cve}: {counts['exposed']} exposed, {counts['fixed']} fixed, "
        f"{counts.get('partial', 0)} partly fixed (some processes only), "
        f"{counts['no_fix']} with no fix published for their build"
    ]
    if data["exposed"]:
        rows = [
            (*r, _fixed_by(h))
            for r, h in zip(_host_rows(data["exposed"]), data["exposed"], strict=True)
        ]
        parts += ["", "exposed (a fix is published, not live):"]
        parts.append(_table((*_HOST_HEADER, "FIXED BY"), rows))
    if more:
        parts.append(f"(the first {len(data['exposed'])}; --all for every one)")
    out.result(data, "\n".join(parts))
    return 0


def _fixed_by(host: dict[str, Any]) -> str:
    """The kernel level that fixes it, or its library builds' (``libc.so.6 L2``)."""
    found = [str(host["fixed_by"]["level"])] if host.get("fixed_by") else []
    found += [
        f"{u['soname']} L{u['fixed_by']}" for u in host.get("libraries", []) if u.get("fixed_by")
    ]
    return ", ".join(found) or "-"


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
    """Every host, as CSV or JSON, to a file or standard output (every page)."""
    raw = _client(args).export(args.export_format)
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
