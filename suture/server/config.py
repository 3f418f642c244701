"""The server's configuration as one typed value: defaults, a TOML file, command-line options.

``suture serve --config FILE`` reads a file like this (every key optional;
options on the command line win over the file)::

    format = 1

    [server]
    repo = "/srv/suture/repo"
    listen = "127.0.0.1:8470"
    db = "postgresql://suture@/suture?host=/run/postgresql"
    db_pool = 8                      # connections per server process
    workers = 2                      # server processes on one socket
    admin_token_file = "/etc/suture/admin-token"
    signing_key_file = "/var/lib/suture/vex-signing.key"
    trusted_proxies = ["127.0.0.1"]  # their X-Forwarded-For/-Proto are believed

    [tls]
    cert = "/etc/suture/tls/fullchain.pem"
    key = "/etc/suture/tls/key.pem"

    [log]
    format = "json"                  # or "text"
    level = "info"                   # debug, info, warning, error
    access = true                    # a line per request

    [limits]                         # see Limits
    checkin_burst = 1000
    checkin_per_s = 1.0

    [retention]                      # see Retention
    events_per_host = 100
    events_days = 180

An unknown key is refused with its name: a misspelt setting must not be
silently ignored.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from suture.errors import UsageError
from suture.server.log import FORMATS, LEVELS

DEFAULT_LISTEN = "127.0.0.1:8470"
MIN_TOKEN = 32  # characters of an admin token
FORMAT = 1


@dataclass(frozen=True)
class Limits:
    """What one client may take of the server (sizes in bytes, times in seconds)."""

    max_body: int = 64 * 1024  # a request body
    max_head: int = 16 * 1024  # a request line and its headers
    head_timeout: float = 10.0  # to send a request's line and headers
    body_timeout: float = 30.0  # to send its body
    idle_timeout: float = 15.0  # a kept-alive connection waits this long for its next request
    max_connections: int = 0  # open at once; 0: from the open-file limit
    checkin_burst: int = 1000  # check-ins one host may send at once,
    checkin_per_s: float = 1.0  # then this many per second
    login_failures: int = 10  # wrong dashboard logins from one address,
    auth_failures: int = 30  # wrong admin tokens, or refused enrolments, from one address,
    failure_window: float = 900.0  # in this long; then 429 until it ends


@dataclass(frozen=True)
class Retention:
    """How much history the database keeps."""

    events_per_host: int = 100  # the newest history events of each host
    events_days: float = 180.0  # and none older than this


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``suture serve`` runs with."""

    repo: Path
    listen: str = DEFAULT_LISTEN
    db: str = ""  # "" for the default SQLite file in the state folder
    db_pool: int = 8
    workers: int = 1
    admin_token_file: Path | None = None
    signing_key_file: Path | None = None
    trusted_proxies: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    log_format: str = "text"
    log_level: str = "info"
    access_log: bool = True
    limits: Limits = field(default_factory=Limits)
    retention: Retention = field(default_factory=Retention)

    @property
    def tls(self) -> bool:
        """True when the server speaks TLS itself."""
        return self.tls_cert is not None

    def check(self) -> ServerConfig:
        """``self`` when it makes sense.

        Raises:
            UsageError: a value out of range, or TLS half given.
        """
        parse_listen(self.listen)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UsageError("TLS needs both --tls-cert and --tls-key")
        if self.log_format not in FORMATS:
            raise UsageError(f"log format {self.log_format!r} is not one of {', '.join(FORMATS)}")
        if self.log_level not in LEVELS:
            raise UsageError(f"log level {self.log_level!r} is not one of {', '.join(LEVELS)}")
        if not 1 <= self.workers <= 64:
            raise UsageError("workers is not from 1 to 64")
        if not 1 <= self.db_pool <= 200:
            raise UsageError("db_pool is not from 1 to 200")
        for group in (self.limits, self.retention):
            for f in fields(group):
                value = getattr(group, f.name)
                if value < 0 or (value == 0 and f.name != "max_connections"):
                    raise UsageError(f"{f.name} is not above 0")
        return self


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` as a (host, port) pair.

    Raises:
        UsageError: not of that form, or the port is out of range.
    """
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise UsageError(f"--listen {text!r} is not HOST:PORT", hint="e.g. --listen 127.0.0.1:8470")
    return host, int(port)


# --- the file ---------------------------------------------------------------------------

_SECTIONS: dict[str, dict[str, str]] = {  # section -> key in the file -> ServerConfig field
    "server": {
        "repo": "repo",
        "listen": "listen",
        "db": "db",
        "db_pool": "db_pool",
        "workers": "workers",
        "admin_token_file": "admin_token_file",
        "signing_key_file": "signing_key_file",
        "trusted_proxies": "trusted_proxies",
    },
    "tls": {"cert": "tls_cert", "key": "tls_key"},
    "log": {"format": "log_format", "level": "log_level", "access": "access_log"},
}
_PATHS = {"repo", "admin_token_file", "signing_key_file", "tls_cert", "tls_key"}


def load(path: Path, **options: Any) -> ServerConfig:
    """The configuration in a TOML file, with ``options`` (those not None) over it.

    Raises:
        UsageError: the file cannot be read, is not TOML, or holds an unknown or bad setting.
    """
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise UsageError(f"cannot read the server configuration {path}: {e.strerror}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not TOML: {e}") from e
    return build(_from_file(data, path), options)


def build(values: dict[str, Any], options: dict[str, Any]) -> ServerConfig:
    """A configuration from the file's ``values`` and the command line's ``options``.

    Raises:
        UsageError: no repository, or a value out of range.
    """
    merged = {**values, **{k: v for k, v in options.items() if v is not None}}
    if merged.get("repo") is None:
        raise UsageError("no repository given", hint="give --repo DIR or repo in [server]")
    limits = merged.pop("limits", Limits())
    retention = merged.pop("retention", Retention())
    return ServerConfig(limits=limits, retention=retention, **merged).check()


def _from_file(data: dict[str, Any], path: Path) -> dict[str, Any]:
    if data.pop("format", FORMAT) != FORMAT:
        raise UsageError(f"{path}: format is not {FORMAT}")
    values: dict[str, Any] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise UsageError(f"{path}: {section} is not a [table]")
        if section in _SECTIONS:
            for key, value in table.items():
                name = _SECTIONS[section].get(key)
                if name is None:
                    raise UsageError(f"{path}: unknown setting {key!r} in [{section}]")
                values[name] = _value(name, value, path)
        elif section in ("limits", "retention"):
            group = Limits if section == "limits" else Retention
            values[section] = _group(group, table, path, section)
        else:
            raise UsageError(f"{path}: unknown section [{section}]")
    return values


def _value(name: str, value: Any, path: Path) -> Any:
    expected = {f.name: f.type for f in fields(ServerConfig)}[name]
    if name in _PATHS:
        if not isinstance(value, str):
            raise UsageError(f"{path}: {name} is not a path")
        return (path.parent / value) if not Path(value).is_absolute() else Path(value)
    if name == "trusted_proxies":
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise UsageError(f"{path}: trusted_proxies is not a list of addresses")
        return tuple(value)
    kind = {"str": str, "int": int, "bool": bool}[str(expected)]
    if type(value) is not kind:
        raise UsageError(f"{path}: {name} is not of type {kind.__name__}")
    return value


def _group(group: type, table: dict[str, Any], path: Path, section: str) -> Any:
    known = {f.name: f.type for f in fields(group)}
    values = {}
    for key, value in table.items():
        if key not in known:
            raise UsageError(f"{path}: unknown setting {key!r} in [{section}]")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or (known[key] == "int" and not isinstance(value, int)):
            raise UsageError(f"{path}: {key} in [{section}] is not a number of type {known[key]}")
        values[key] = value
    return replace(group(), **values)


# --- the admin token ----------------------------------------------------------------------


def read_admin_token(path: Path, *, create: bool = True) -> tuple[str, bool]:
    """The admin token in ``path``, and whether it was made now (a new random one, mode 0600).

    A token file must be private (no access for group or others) and hold at
    least :data:`MIN_TOKEN` characters: it is the key to the whole fleet.

    Raises:
        UsageError: unreadable, readable by others, or too short.
    """
    import secrets  # noqa: PLC0415 - only when a token is made

    from suture.fsutil import atomic_write  # noqa: PLC0415

    try:
        st = path.stat()
    except FileNotFoundError:
        if not create:
            raise UsageError(f"no admin token file {path}") from None
        token = "sat_" + secrets.token_urlsafe(32)
        atomic_write(path, token.encode() + b"\n", mode=0o600)
        return token, True
    except OSError as e:
        raise UsageError(f"cannot read the admin token {path}: {e.strerror}") from e
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"the admin token {path} is not a file")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise UsageError(
            f"the admin token {path} may be read by other users (mode "
            f"{stat.S_IMODE(st.st_mode):04o})",
            hint=f"chmod 600 {path}",
        )
    if st.st_uid != os.geteuid() and os.geteuid() != 0:
        raise UsageError(f"the admin token {path} belongs to another user")
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read the admin token {path}: {e}") from e
    if len(token) < MIN_TOKEN or not token.isprintable() or " " in token:
        raise UsageError(
            f"the admin token in {path} is shorter than {MIN_TOKEN} characters or holds spaces",
            hint="remove the file: the server writes a random one",
        )
    return token, False
