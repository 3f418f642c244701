"""``suture serve``: the patch server for a repository (static files, check-ins, fleet API)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from suture.cli.output import Output

# suture.server is imported inside the handler: `suture apply` must not load it.


def register(subs: Any, common: argparse.ArgumentParser) -> None:
    """Add ``serve``."""
    p = subs.add_parser(
        "serve", parents=[common], help="serve a repository and take agents' check-ins"
    )
    p.add_argument("--repo", required=True, type=Path, metavar="DIR", help="the repository folder")
    p.add_argument(
        "--listen", default="127.0.0.1:8470", metavar="HOST:PORT", help="(127.0.0.1:8470)"
    )
    p.add_argument(
        "--db",
        metavar="URL",
        help="sqlite:///path or postgresql://... "
        "(default: sqlite $SUTURE_STATE_DIR/server.db or ~/.local/state/suture/server.db)",
    )
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    """Serve until SIGTERM or SIGINT."""
    from suture import server

    srv = server.open_server(args.repo, listen=args.listen, db=args.db)
    server.run(srv, lambda url: out.message(f"serving {args.repo} on {url}"))
    out.result({"format": 1, "ok": True, "stopped": True}, "")
    return 0
