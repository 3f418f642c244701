"""``suture serve``: the patch server for a repository (static files, check-ins, fleet API)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from suture.cli.helptext import command
from suture.cli.output import Output
from suture.errors import UsageError

# suture.server is imported inside the handler: `suture apply` must not load it.


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    """Add ``serve``."""
    p = command(
        subs,
        "serve",
        common,
        summary="serve a repository, take agents' check-ins, run the fleet API and dashboard",
        description="Serve the repository's metadata/ and targets/ (metadata no-cache, "
        "hashed targets immutable), agents' enrolment and check-ins, the fleet API for "
        "operators (/openapi.json describes it), the dashboard (/) and Prometheus metrics "
        "(/metrics). SQLite by default, PostgreSQL by URL. SIGTERM stops it.",
        examples=[
            ("suture serve --repo /srv/repo --admin-token-file /etc/suture/admin.token", ""),
            ("suture serve --repo /srv/repo --listen 0.0.0.0:8470 --db postgresql://suture@db/fleet",
             "for a fleet: behind TLS (a reverse proxy), PostgreSQL"),
        ],
        exits=(0, 60, 80),
    )  # fmt: skip
    p.add_argument("--repo", required=True, type=Path, metavar="DIR", help="the repository folder")
    p.add_argument(
        "--listen",
        default="127.0.0.1:8470",
        metavar="HOST:PORT",
        help="the address to listen on (127.0.0.1:8470)",
    )
    p.add_argument(
        "--db",
        metavar="URL",
        help="sqlite:///path or postgresql://... "
        "(default: sqlite $SUTURE_STATE_DIR/server.db or ~/.local/state/suture/server.db)",
    )
    p.add_argument(
        "--admin-token-file",
        type=Path,
        metavar="FILE",
        help="the operators' bearer token for the fleet API (made, mode 0600, when missing)",
    )
    p.add_argument(
        "--signing-key-file",
        type=Path,
        metavar="FILE",
        help="the Ed25519 key that signs OpenVEX documents (made, mode 0600, when missing; "
        "default: vex-signing.key beside the database)",
    )
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    """Serve until SIGTERM or SIGINT."""
    from suture import server

    token = _admin_token(args.admin_token_file, out) if args.admin_token_file else None
    srv = server.open_server(
        args.repo,
        listen=args.listen,
        db=args.db,
        admin_token=token,
        signing_key_file=args.signing_key_file,
    )
    server.run(srv, lambda url: out.message(f"serving {args.repo} on {url}"))
    out.result({"format": 1, "ok": True, "stopped": True}, "")
    return 0


def _admin_token(path: Path, out: Output) -> str:
    """The token in ``path``; a new random one written there (0600) when the file is missing."""
    import secrets

    from suture.fsutil import atomic_write

    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = "sat_" + secrets.token_urlsafe(32)
        atomic_write(path, token.encode() + b"\n", mode=0o600)
        out.message(f"wrote a new admin token to {path}")
    except OSError as e:
        raise UsageError(f"cannot read the admin token {path}: {e.strerror}") from e
    if len(token) < 16:
        raise UsageError(
            f"the admin token in {path} is shorter than 16 characters",
            hint="remove the file: the server writes a random one",
        )
    return token
