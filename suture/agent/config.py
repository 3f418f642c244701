"""The agent's configuration: a TOML file, then the environment, then command-line options.

``/etc/suture/agent.toml`` (``$SUTURE_AGENT_CONFIG`` moves it; a missing file
means the defaults), every key optional::

    format = 1
    server = "https://patches.example.com/repo"   # serves metadata/ and targets/
    channel = "stable"                            # or "testing"
    auto_update = true                            # the daemon applies, not only checks
    check_interval = 3600                         # s between check-ins
    check_jitter = 300                            # s, random extra wait (spreads a fleet)
    update_delay_hours = 0                        # h a new level waits after first seen
    sticky_level = 4                              # never go above this level
    proxy = "http://proxy.example.com:3128"
    state_dir = "/var/lib/suture"
    trusted_root = "/etc/suture/root.json"
    timeout = 30                                  # s without a byte before a download fails
    retries = 3                                   # more tries when the server cannot be reached
    retry_backoff = 5                             # s before the first retry, doubled each time
    report = true                                 # check in with the server (http(s) only)
    crash_guard = 600                             # s a new patch must survive before it is trusted
    registration_key = "srk_..."                  # enrols the host with the fleet server once
    host_id = ""                                  # the fleet's name for the host ("": machine id)
    metrics_file = ""                             # node exporter textfile ("": none written)
    userspace = true                              # userspace levels (glibc, OpenSSL) too

Then ``SUTURE_SERVER``, ``SUTURE_CHANNEL``, ``SUTURE_STATE_DIR``,
``SUTURE_TRUSTED_ROOT`` and ``SUTURE_REGISTRATION_KEY`` override the file,
and options override both. An unknown key is an error, so a typo does not
silently keep a default.
"""

from __future__ import annotations

import contextlib
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from suture.errors import ConfigError
from suture.repo.layout import CHANNELS

FORMAT_VERSION = 1
CONFIG_ENV = "SUTURE_AGENT_CONFIG"
DEFAULT_PATH = Path("/etc/suture/agent.toml")
URL_SCHEMES = ("https", "http", "file")  # TUF verifies what plain http serves

# Environment variable -> setting.
ENVIRONMENT = {
    "SUTURE_SERVER": "server",
    "SUTURE_CHANNEL": "channel",
    "SUTURE_STATE_DIR": "state_dir",
    "SUTURE_TRUSTED_ROOT": "trusted_root",
    "SUTURE_REGISTRATION_KEY": "registration_key",
}


@dataclass(frozen=True)
class AgentConfig:
    """What the agent does and where; every value checked by :func:`checked`.

    ``auto_update`` is the daemon's choice between applying and only
    checking; ``suture update`` applies whatever it says.
    """

    server: str = ""  # repository base URL; "" : none configured
    channel: str = "stable"
    auto_update: bool = True
    check_interval: int = 3600  # s
    check_jitter: int = 300  # s
    update_delay_hours: float = 0.0  # h
    sticky_level: int | None = None  # None: follow the newest level
    proxy: str = ""  # http(s) proxy URL for the repository; "" : none
    state_dir: Path = Path("/var/lib/suture")
    trusted_root: Path = Path("/etc/suture/root.json")
    timeout: int = 30  # s, connect and between bytes
    retries: int = 3  # extra tries of a cycle whose server could not be reached
    retry_backoff: float = 5.0  # s before the first retry; doubles each time
    report: bool = True  # send a check-in after each cycle (http(s) servers)
    # s after applying: a host that goes down sooner (not a clean shutdown)
    # does not get that level re-applied at boot; see suture.agent.guard.
    crash_guard: int = 600
    # Enrols the host with the fleet server (which then gives it its own token,
    # kept in state_dir); "": check-ins are not sent to a server that wants one.
    registration_key: str = ""
    host_id: str = ""  # how the fleet server knows this host; "": /etc/machine-id
    # A node exporter textfile collector file (*.prom) written after each cycle; "": none.
    metrics_file: str = ""
    # Userspace levels (libraries of running processes) are looked up, applied,
    # re-applied to new processes by the daemon, and reported.
    userspace: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        data = asdict(self)
        data.update(state_dir=str(self.state_dir), trusted_root=str(self.trusted_root))
        data["registration_key"] = "***" if self.registration_key else ""  # a secret
        return {"format": FORMAT_VERSION, **data}


def _text(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise _bad(key, value, "a string")
    return value


def _url(key: str, value: object) -> str:
    text = _text(key, value)
    parsed = urlparse(text)
    if text and (parsed.scheme not in URL_SCHEMES or not (parsed.netloc or parsed.path)):
        raise _bad(key, value, f"a URL ({', '.join(s + '://' for s in URL_SCHEMES)})")
    return text


def _channel(key: str, value: object) -> str:
    if value not in CHANNELS:
        raise _bad(key, value, " or ".join(CHANNELS))
    return str(value)


def _bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise _bad(key, value, "true or false")


def _seconds(key: str, value: object) -> int:
    number = _number(key, value)
    if number != int(number):
        raise _bad(key, value, "whole seconds")
    return int(number)


def _timeout(key: str, value: object) -> int:
    seconds = _seconds(key, value)
    if seconds < 1:
        raise _bad(key, value, "at least 1 second")
    return seconds


def _count(key: str, value: object) -> int:
    number = _number(key, value)
    if number != int(number):
        raise _bad(key, value, "a whole number, 0 or more")
    return int(number)


def _number(key: str, value: object) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise _bad(key, value, "a number, 0 or more")
    return value


def _level(key: str, value: object) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _bad(key, value, "a level, 1 or more")
    return value


def _path(key: str, value: object) -> Path:
    text = _text(key, str(value) if isinstance(value, Path) else value)
    if not text or not Path(text).is_absolute():
        raise _bad(key, value, "an absolute path")
    return Path(text)


def _optional_path(key: str, value: object) -> str:
    text = _text(key, str(value) if isinstance(value, Path) else value)
    if text and not Path(text).is_absolute():
        raise _bad(key, value, 'an absolute path, or "" for none')
    return text


def _bad(key: str, value: object, expected: str) -> ConfigError:
    return ConfigError(
        f"agent setting {key} = {value!r} is not {expected}",
        key=key,
        hint=f"fix {key} in the agent's configuration file, environment or options",
    )


# Setting -> parser; parsers accept TOML values and strings (environment, options).
PARSERS: dict[str, Callable[[str, object], Any]] = {
    "server": _url,
    "channel": _channel,
    "auto_update": _bool,
    "check_interval": _seconds,
    "check_jitter": _seconds,
    "update_delay_hours": _number,
    "sticky_level": _level,
    "proxy": _url,
    "state_dir": _path,
    "trusted_root": _path,
    "timeout": _timeout,
    "retries": _count,
    "retry_backoff": _number,
    "report": _bool,
    "crash_guard": _seconds,
    "registration_key": _text,
    "host_id": _text,
    "metrics_file": _optional_path,
    "userspace": _bool,
}


def checked(config: AgentConfig, changes: Mapping[str, object]) -> AgentConfig:
    """``config`` with ``changes`` parsed and applied.

    Raises:
        ConfigError: an unknown setting or a bad value.
    """
    parsed: dict[str, Any] = {}
    for key, value in changes.items():
        parser = PARSERS.get(key)
        if parser is None:
            raise ConfigError(
                f"unknown agent setting {key!r}",
                key=key,
                hint=f"the settings are: {', '.join(PARSERS)}",
            )
        parsed[key] = parser(key, value)
    return replace(config, **parsed)


def read_file(path: Path, *, required: bool = False) -> dict[str, Any]:
    """The settings of a TOML file; none when it does not exist and is not ``required``.

    Raises:
        ConfigError: the file is required and missing, cannot be read, is not
            TOML, or is of another format.
    """
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as e:
        if not required:
            return {}
        raise ConfigError(
            f"the agent configuration {path} does not exist",
            hint="give the path of an existing agent.toml (packaging/agent.toml.example "
            "documents every key), or leave the option out for /etc/suture/agent.toml",
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the agent configuration {path}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(
            f"{path} is not valid TOML: {e}", hint="fix the file's syntax (key = value)"
        ) from e
    version = data.pop("format", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"{path} is of format {version!r}; this agent reads format {FORMAT_VERSION}",
            key="format",
            hint="update the agent, or rewrite the file in the documented format",
        )
    return data


def load(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> AgentConfig:
    """The configuration: defaults, the file, the environment, then ``overrides``.

    Args:
        path: the TOML file; default ``$SUTURE_AGENT_CONFIG`` or /etc/suture/agent.toml.
            A file named by either must exist; the default one may be missing.
        environ: the environment (default ``os.environ``).
        overrides: settings from the command line; None values are ignored.

    Raises:
        ConfigError: an unknown setting or a bad value, naming where it came from.
    """
    environ = os.environ if environ is None else environ
    # A file named (the option, the variable) must exist: a typo must not
    # silently mean the defaults. Only the default place may be empty.
    named = path or (Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else None)
    path = named or DEFAULT_PATH
    config = _from(AgentConfig(), read_file(path, required=named is not None), str(path))
    from_env = {key: environ[var] for var, key in ENVIRONMENT.items() if environ.get(var)}
    config = _from(config, from_env, "the environment")
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    return _from(config, given, "the command line")


def _from(config: AgentConfig, changes: Mapping[str, object], where: str) -> AgentConfig:
    try:
        return checked(config, changes)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e.message}", key=e.key, hint=e.hint) from e
