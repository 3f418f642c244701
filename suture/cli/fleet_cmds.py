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
        "its hash.",
        examples=[("suture fleet key create --tag env:prod --note 'web tier'", "a tagged key")],
        exits=_FLEET,
    )  # fmt: skip
    p.add_argument(
        "--tag", action="append", default=[], metavar="TAG",
        help="a tag for the hosts that enrol with it, e.g. env:prod (repeatable)",
    )  # fmt: skip
    p.add_argument("--note", default="", help="what the key is for (shown in the list)")
    p.set_defaults(handler=cmd_key_create)
    p = command(
        key_subs, "list", common, parents=parents,
        summary="the keys (never their secrets)",
        description="Every registration key: its id, when it was made, revoked or active, "
        "its tags and note.",
        examples=[("suture fleet key list", "")],
        exits=_FLEET,
    )  # fmt: skip
    p.set_defaults(handler=cmd_key_list)
    p = command(
        key_subs, "revoke", common, parents=parents,
        summary="stop a key from enrolling hosts",
        description="Revoke a registration key; hosts already enrolled with it keep their tokens.",
        examples=[("suture fleet key revoke k_12ab", "")],
        exits=_FLEET,
    )  # fmt: skip
    p.add_argument("key_id", help="the key's id (suture fleet key list)")
    p.set_defaults(handler=cmd_key_revoke)

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
    p = command(
        ro_subs, "halt", common, parents=ro, summary="stop a level's rollout",
        description="No host goes above the level below LEVEL until 'resume'. The level must "
        "be published on the channel.",
        examples=[("suture fleet rollout halt --level 4 --reason 'oops on canaries'", "")],
        exits=(*_FLEET, 64),
    )  # fmt: skip
    p.add_argument("--level", type=int, required=True, help="the published level to halt")
    p.add_argument("--reason", default="", help="why (shown with the policy)")
    p.set_defaults(handler=cmd_rollout_action, action="halt")
    p = command(
        ro_subs, "resume", common, parents=ro, summary="lift a halt",
        description="Lift the halt; the halted level is not halted again automatically.",
        examples=[("suture fleet rollout resume", "")], exits=_FLEET,
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
    p.set_defaults(handler=cmd_hosts)
    p = command(
        fleet_subs, "exposed", common, parents=parents, summary="hosts exposed to a CVE now",
        description="Hosts exposed to CVE-ID although a fix is published for their build, "
        "hosts with no fix published for their build, and hosts fixed in memory.",
        examples=[("suture fleet exposed CVE-2026-1234", "")], exits=_FLEET,
    )  # fmt: skip
    p.add_argument("cve", metavar="CVE-ID", help="e.g. CVE-2026-1234")
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
    client = _client(args)
    level = getattr(args, "level", None)
    if level is not None:
        _require_published(client, args.channel, level)
    body: dict[str, Any] = {}
    if args.action in ("halt", "promote"):
        body["level"] = args.level
    if args.action == "halt":
        body["reason"] = args.reason
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
    fmt = args.export_format or ("json" if out.json_mode else "csv")
    if out.json_mode and fmt == "csv" and args.output is None:
        raise UsageError(
            "--json prints JSON on standard output, not CSV",
            hint="give -o FILE for the CSV, or leave out --json",
        )
    raw = _client(args).raw("GET", "/api/v1/export", query={"format": fmt})
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
