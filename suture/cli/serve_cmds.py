"""``suture serve``: the patch server for a repository (static files, check-ins, fleet API).

Options come from the command line, over ``--config FILE`` (TOML, see
:mod:`suture.server.config`), over the defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from suture.cli.helptext import command
from suture.cli.output import Output

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
        "(/metrics), on uvicorn with one or more worker processes. SQLite by default, "
        "PostgreSQL by URL. Settings come from a TOML file (--config), and the options "
        "below override it. SIGTERM stops it once the requests under way are answered.",
        examples=[
            ("suture serve --repo /srv/repo --admin-token-file /etc/suture/admin.token", ""),
            ("suture serve --config /etc/suture/server.toml --admin-token-file "
             "/var/lib/suture-server/admin-token",
             "as packaging/systemd/suture-server.service runs it"),
            ("suture serve --repo /srv/repo --listen 0.0.0.0:8470 --db postgresql://suture@db/fleet",
             "for a fleet: behind TLS (a reverse proxy, or --tls-cert/--tls-key), PostgreSQL"),
        ],
        exits=(0, 60, 80),
    )  # fmt: skip
    p.add_argument(
        "--config", type=Path, metavar="FILE", help="a server configuration (TOML; see README)"
    )
    p.add_argument("--repo", type=Path, metavar="DIR", help="the repository folder")
    p.add_argument(
        "--listen", metavar="HOST:PORT", help="the address to listen on (127.0.0.1:8470)"
    )
    p.add_argument(
        "--db",
        metavar="URL",
        help="sqlite:///path or postgresql://... "
        "(default: sqlite $SUTURE_STATE_DIR/server.db or ~/.local/state/suture/server.db)",
    )
    p.add_argument("--db-pool", type=int, metavar="N", help="connections per process (8)")
    p.add_argument("--workers", type=int, metavar="N", help="server processes on the socket (1)")
    p.add_argument(
        "--admin-token-file",
        type=Path,
        metavar="FILE",
        help="the operators' bearer token (made, mode 0600, when missing; must be private)",
    )
    p.add_argument(
        "--signing-key-file",
        type=Path,
        metavar="FILE",
        help="the Ed25519 key that signs OpenVEX documents (made, mode 0600, when missing; "
        "default: vex-signing.key beside the database)",
    )
    p.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve HTTPS with this chain")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="...and this private key")
    p.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="ADDR",
        help="a reverse proxy whose X-Forwarded-For/-Proto are believed (repeatable)",
    )
    p.add_argument("--log-format", choices=("text", "json"), help="(text)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="(info)")
    p.add_argument("--no-access-log", action="store_true", help="no line per request")
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    """Serve until SIGTERM or SIGINT."""
    from suture import server
    from suture.server import config as cfg

    options = {
        "repo": args.repo,
        "listen": args.listen,
        "db": args.db,
        "db_pool": args.db_pool,
        "workers": args.workers,
        "admin_token_file": args.admin_token_file,
        "signing_key_file": args.signing_key_file,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "trusted_proxies": tuple(args.trusted_proxy) if args.trusted_proxy else None,
        "log_format": args.log_format,
        "log_level": args.log_level,
        "access_log": False if args.no_access_log else None,
    }
    config = cfg.load(args.config, **options) if args.config else cfg.build({}, options)
    token = None
    if config.admin_token_file is not None:
        token, made = cfg.read_admin_token(config.admin_token_file)
        if made:
            out.message(f"wrote a new admin token to {config.admin_token_file}")
    status = server.serve(
        config,
        admin_token=token,
        ready=lambda url: out.message(f"serving {config.repo} on {url}"),
    )
    out.result({"format": 1, "ok": status == 0, "stopped": True}, "")
    return status
