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

from suture import timefmt
from suture.cli.helptext import command, group
from suture.cli.output import Output
from suture.errors import UsageError
from suture.repo.layout import CHANNELS

# The client is imported inside the handlers, like every command's library.


_FLEET = (0, 81)
_SERVER_NOTE = (
    "It calls the fleet server's API with the admin token: --server URL (or "
    "$SUTURE_FLEET_SERVER) and --admin-token-file FILE (or $SUTURE_ADMIN_TOKEN)."
)


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    """Add ``fleet`` and its sub-commands."""
    _, fleet_subs = group(
        subs,
        "fleet",
        common,
        summary="see and steer the fleet (admin)",
        description="The operator's view of every host and the rollout controls, through "
        "the fleet server's API. " + _SERVER_NOTE,
    )
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--server", metavar="URL", help="the fleet server ($SUTURE_FLEET_SERVER)")
    server.add_argument(
        "--admin-token-file",
        type=Path,
        metavar="FILE",
        help="the admin token ($SUTURE_ADMIN_TOKEN)",
    )
    parents = [server]

    _register_keys_hosts(fleet_subs, common, parents)

    _, ro_subs = group(
        fleet_subs,
        "rollout",
        common,
        summary="rollout control of a channel",
        description="The rollout policy of a channel: a delay after publishing, canaries "
        "first, sticky levels per tag, an automatic halt when too many hosts fail a level, "
        "and halt, resume, promote and unroll by hand.",
    )
    channel = argparse.ArgumentParser(add_help=False)
    channel.add_argument(
        "--channel", choices=CHANNELS, default="stable", help="the channel (stable)"
    )
    ro = [*parents, channel]
    p = command(
        ro_subs, "show", common, parents=ro, summary="the policy",
        description="The channel's rollout policy, and its halt if there is one.",
        examples=[("suture fleet rollout show --channel testing", "")], exits=_FLEET,
    )  # fmt: skip
    p.set_defaults(handler=cmd_rollout_show)
    p = command(
        ro_subs, "set", common, parents=ro, summary="change policy settings",
        description="Change the settings given; the others stay as they are.",
        examples=[
            ("suture fleet rollout set --delay-hours 24 --canary-tag ring:0 --canary-hours 12",
             "a day's wait, then canaries for 12 h, then everyone"),
            ("suture fleet rollout set --sticky env:prod=3", "hosts tagged env:prod stay at 3"),
        ],
        exits=(*_FLEET, 64),
    )  # fmt: skip
    p.add_argument(
        "--delay-hours", type=float, metavar="H", help="a level waits this long after publishing"
    )
    p.add_argument(
        "--canary-tag", action="append", metavar="TAG",
        help="hosts with this tag get new levels first (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--canary-percent", type=int, metavar="N", help="share of other hosts that are canaries"
    )
    p.add_argument(
        "--canary-hours", type=float, metavar="H", help="everyone else gets a level after this"
    )
    p.add_argument(
        "--sticky", action="append", metavar="TAG=LEVEL",
        help="cap the level of hosts with TAG (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--failure-threshold", type=float, metavar="SHARE",
        help="halt a level once this share of the hosts that tried it failed (0.2)",
    )  # fmt: skip
    p.add_argument(
        "--min-attempts", type=int, metavar="N",
        help="...but only once this many hosts tried it (5)",
    )  # fmt: skip
    p.set_defaults(handler=cmd_rollout_set)
    build = argparse.ArgumentParser(add_help=False)
    build.add_argument("--release", help="only this kernel build: its release...")
    build.add_argument("--build-id", help="...and its build id")
    p = command(
        ro_subs, "halt", common, parents=[*ro, build], summary="stop a level's rollout",
        description="No host goes above the level below LEVEL until 'resume'; with --release "
        "and --build-id, only hosts of that kernel build. The level must be published on the "
        "channel.",
        examples=[("suture fleet rollout halt --level 4 --reason 'oops on canaries'", "")],
        exits=(*_FLEET, 64),
    )  # fmt: skip
    p.add_argument("--level", type=int, required=True, help="the published level to halt")
    p.add_argument("--reason", default="", help="why (shown with the policy)")
    p.set_defaults(handler=cmd_rollout_action, action="halt")
    p = command(
        ro_subs, "resume", common, parents=[*ro, build], summary="lift halts",
        description="Lift the halts (or the one of a kernel build); the halted level is not "
        "halted again automatically.",
        examples=[("suture fleet rollout resume", "")], exits=(*_FLEET, 64),
    )  # fmt: skip
    p.set_defaults(handler=cmd_rollout_action, action="resume")
    p = command(
        ro_subs, "promote", common, parents=ro, summary="release a level to every host now",
        description="Every host may have LEVEL now, canary phase or not. The level must be "
        "published on the channel.",
        examples=[("suture fleet rollout promote --level 4", "")], exits=(*_FLEET, 64),
    )  # fmt: skip
    p.add_argument("--level", type=int, required=True, help="the published level to release")
    p.set_defaults(handler=cmd_rollout_action, action="promote")
    p = command(
        ro_subs, "unroll", common, parents=ro, summary="send hosts back to an earlier level",
        description="Hosts above LEVEL go down to it (agents apply it as a cumulative level); "
        "--end lets them climb again.",
        examples=[
            ("suture fleet rollout unroll --level 3", "back to level 3"),
            ("suture fleet rollout unroll --end", "end the unroll"),
        ],
        exits=(*_FLEET, 64),
    )  # fmt: skip
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--level", type=int, help="the published level to go back to")
    which.add_argument("--end", action="store_true", help="end the unroll")
    p.set_defaults(handler=cmd_rollout_action, action="unroll")
    _register_queries(fleet_subs, common, parents)


def _register_keys_hosts(
    fleet_subs: Any, common: argparse.ArgumentParser, parents: list[argparse.ArgumentParser]
) -> None:
    """``key create|list|revoke`` and ``host show|revoke|delete``."""
    _, key_subs = group(
        fleet_subs,
        "key",
        common,
        summary="registration keys hosts enrol with",
        description="A host enrols once with a registration key (registration_key in its "
        "agent.toml) and gets its own token; the key's tags go to every host enrolled with it.",
    )
    p = command(
        key_subs, "create", common, parents=parents,
        summary="a new key (printed once)",
        description="Create a registration key. The secret is printed once and stored only as "
        "its hash. A key may be limited to a number of hosts and to a time.",
        examples=[("suture fleet key create --tag env:prod --note 'web tier'", "a tagged key"),
                  ("suture fleet key create --max-hosts 20 --expires-in 7d",
                   "for one rack, this week only")],
        exits=(*_FLEET, 64),
    )  # fmt: skip
    p.add_argument(
        "--tag", action="append", default=[], metavar="TAG",
        help="a tag for the hosts that enrol with it, e.g. env:prod (repeatable)",
    )  # fmt: skip
    p.add_argument("--note", default="", help="what the key is for (shown in the list)")
    p.add_argument("--max-hosts", type=int, metavar="N", help="enrol at most N hosts")
    p.add_argument(
        "--expires-in", metavar="TIME", help="no enrolment after this long, e.g. 30m, 12h, 7d"
    )
    p.set_defaults(handler=cmd_key_create)
    p = command(
        key_subs, "list", common, parents=parents,
        summary="the keys (never their secrets)",
        description="Every registration key: its id, when it was made, revoked, expired or "
        "active, the hosts enrolled with it (of at most how many), its tags and note.",
        examples=[("suture fleet key list", "")],
        exits=_FLEET,
    )  # fmt: skip
    p.set_defaults(handler=cmd_key_list)
    p = command(
        key_subs, "revoke", common, parents=parents,
        summary="stop a key from enrolling hosts",
        description="Revoke a registration key; hosts already enrolled with it keep their "
        "tokens, unless --hosts revokes those too.",
        examples=[("suture fleet key revoke k_12ab", ""),
                  ("suture fleet key revoke k_12ab --hosts", "a leaked key: its hosts too")],
        exits=_FLEET,
    )  # fmt: skip
    p.add_argument("key_id", help="the key's id (suture fleet key list)")
    p.add_argument("--hosts", action="store_true", help="revoke its hosts' tokens too")
    p.set_defaults(handler=cmd_key_revoke)

    _, host_subs = group(
        fleet_subs,
        "host",
        common,
        summary="one host: show, revoke, delete",
        description="One host the server knows: its last report and history, revoking its "
        "token, or forgetting it.",
    )
    p = command(
        host_subs, "show", common, parents=parents,
        summary="its last report and history",
        description="The host's last check-in (kernel build, channel, level, state, token, "
        "last seen) and its history, newest first, a page at a time.",
        examples=[("suture fleet host show web-1", ""),
                  ("suture fleet host show web-1 --cursor CURSOR", "older history")],
        exits=_FLEET,
    )  # fmt: skip
    p.add_argument("host_id", help="the host's id (suture fleet hosts)")
    p.add_argument("--cursor", help="the next page of its history (from the last answer)")
    p.add_argument("--limit", type=int, metavar="N", help="events in a page (200)")
    p.set_defaults(handler=cmd_host_show)
    p = command(
        host_subs, "revoke", common, parents=parents,
        summary="revoke its token",
        description="Revoke the host's token: its check-ins are refused from now on. Its id "
        "may not enrol again unless --allow-reenrol.",
        examples=[("suture fleet host revoke web-1", "a host that was compromised"),
                  ("suture fleet host revoke web-1 --allow-reenrol", "it enrols again")],
        exits=_FLEET,
    )  # fmt: skip
    p.add_argument("host_id", help="the host's id (suture fleet hosts)")
    p.add_argument("--allow-reenrol", action="store_true", help="its id may enrol again")
    p.set_defaults(handler=cmd_host_revoke)
    p = command(
        host_subs, "delete", common, parents=parents,
        summary="forget it (report, history, token)",
        description="Forget the host: its last report, its history and its token.",
        examples=[("suture fleet host delete old-web-9", "a host that was retired")],
        exits=_FLEET,
    )  # fmt: skip
    p.add_argument("host_id", help="the host's id (suture fleet hosts)")
    p.set_defaults(handler=cmd_host_delete)


def _register_queries(
    fleet_subs: Any, common: argparse.ArgumentParser, parents: list[argparse.ArgumentParser]
) -> None:
    """``hosts``, ``exposed``, ``summary``, ``export``, ``vex``: what the fleet runs and lacks."""
    p = command(
        fleet_subs, "hosts", common, parents=parents, summary="hosts, with filters",
        description="Every host the server knows, with its kernel build, channel, level and "
        "state; the filters combine.",
        examples=[
            ("suture fleet hosts --state failed", "the hosts whose last cycle failed"),
            ("suture --json fleet hosts --cve CVE-2026-1234 | jq -r '.hosts[].host_id'",
             "the hosts still exposed to a CVE, for a script"),
        ],
        exits=_FLEET,
    )  # fmt: skip
    p.add_argument("--release", help="kernel release (uname -r)")
    p.add_argument("--build-id", help="kernel build id")
    p.add_argument("--level", type=int, help="the level reported")
    p.add_argument(
        "--state", choices=("patched", "unpatched", "failed", "unsupported"),
        help="the state reported",
    )  # fmt: skip
    p.add_argument("--status", help="a state, or inactive")
    p.add_argument("--tag", help="e.g. env:prod")
    p.add_argument("--channel", choices=CHANNELS, help="the host's channel")
    p.add_argument("--cve", metavar="CVE-ID", help="only hosts exposed to it")
    p.add_argument(
        "--inactive-after", type=int, metavar="S", help="s of silence before inactive (10800)"
    )
    _paging(p)
    p.set_defaults(handler=cmd_hosts)
    p = command(
        fleet_subs, "exposed", common, parents=parents, summary="hosts exposed to a CVE now",
        description="Hosts exposed to CVE-ID although a fix is published for their build, "
        "hosts with no fix published for their build, and hosts fixed in memory.",
        examples=[("suture fleet exposed CVE-2026-1234", ""),
                  ("suture --json fleet exposed CVE-2026-1234 --all", "every exposed host")],
        exits=_FLEET,
    )  # fmt: skip
    p.add_argument("cve", metavar="CVE-ID", help="e.g. CVE-2026-1234")
    p.add_argument("--all", action="store_true", help="every exposed host (every page)")
    p.set_defaults(handler=cmd_exposed)
    p = command(
        fleet_subs, "summary", common, parents=parents, summary="hosts per build, level, state",
        description="Counts per kernel build, level and state, and the hosts that failed.",
        examples=[("suture fleet summary", "")], exits=_FLEET,
    )  # fmt: skip
    p.set_defaults(handler=cmd_summary)
    p = command(
        fleet_subs, "export", common, parents=parents, summary="every host, as CSV or JSON",
        description="Every host, to a file or standard output. With --json the export is "
        "JSON (standard output then holds one JSON document); CSV needs -o FILE then.",
        examples=[
            ("suture fleet export --format csv -o hosts.csv", "a spreadsheet"),
            ("suture --json fleet export | jq '.hosts | length'", "JSON on standard output"),
        ],
        exits=(*_FLEET, 64),
    )  # fmt: skip
    p.add_argument(
        "--format", choices=("csv", "json"), default=None, dest="export_format",
        help="csv (the default) or json (the default under --json)",
    )  # fmt: skip
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="(standard output)")
    p.set_defaults(handler=cmd_export)
    p = command(
        fleet_subs, "vex", common, parents=parents, summary="a host's signed OpenVEX document",
        description="The CVEs fixed in memory on one host, as an OpenVEX document signed with "
        "the server's Ed25519 key (/api/v1/vex-key).",
        examples=[("suture fleet vex web-1 -o web-1.vex.json", "the document and .sig beside it")],
        exits=_FLEET,
    )  # fmt: skip
    p.add_argument("host_id", help="the host's id (suture fleet hosts)")
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

    body: dict[str, Any] = {"tags": args.tag, "note": args.note}
    if args.max_hosts is not None:
        if args.max_hosts < 1:
            raise UsageError("--max-hosts is not 1 or more")
        body["max_hosts"] = args.max_hosts
    if args.expires_in is not None:
        when = time.time() + _duration(args.expires_in)
        body["expires_at"] = timefmt.utc(when)
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
    client = _client(args)
    level = getattr(args, "level", None)
    if level is not None:
        _require_published(client, args.channel, level)
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
    data = client.call("POST", f"/api/v1/rollouts/{args.channel}/{args.action}", body)
    out.result(data, _policy_text(args.channel, data["policy"]))
    return 0


def _require_published(client: Any, channel: str, level: int) -> None:
    """Refuse a level that was never published on ``channel`` (any build): a typo, not a plan.

    Raises:
        UsageError: no build has that level on the channel.
    """
    levels = client.call("GET", "/api/v1/levels")["levels"]
    published = sorted({lv["level"] for lv in levels if lv.get("channel") == channel})
    if level not in published:
        raise UsageError(
            f"level {level} was never published on {channel}",
            hint="published there: "
            + (", ".join(map(str, published)) or "none")
            + " (suture fleet rollout show)",
        )


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
    fmt = args.export_format or ("json" if out.json_mode else "csv")
    if out.json_mode and fmt == "csv" and args.output is None:
        raise UsageError(
            "--json prints JSON on standard output, not CSV",
            hint="give -o FILE for the CSV, or leave out --json",
        )
    raw = _client(args).export(fmt)
    if args.output is None:
        sys.stdout.write(raw.decode())
        sys.stdout.flush()
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
