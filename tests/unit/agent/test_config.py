"""suture.agent.config: defaults, the TOML file, environment and option overrides, bad values."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from suture.agent import config
from suture.agent.config import AgentConfig
from suture.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_every_setting_has_a_parser() -> None:
    assert set(config.PARSERS) == {f.name for f in fields(AgentConfig)}


def test_a_missing_default_file_means_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.toml")
    cfg = config.load(environ={})
    assert cfg == AgentConfig()
    assert cfg.state_dir == Path("/var/lib/suture")
    assert cfg.trusted_root == Path("/etc/suture/root.json")
    assert (cfg.channel, cfg.sticky_level, cfg.auto_update) == ("stable", None, True)


def test_the_file_sets_every_value(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
format = 1
server = "https://patches.example.com/repo"
channel = "testing"
auto_update = false
check_interval = 600
check_jitter = 30
update_delay_hours = 1.5
sticky_level = 4
proxy = "http://proxy.example.com:3128"
state_dir = "/srv/suture"
trusted_root = "/srv/root.json"
""",
    )
    assert config.load(path, environ={}) == AgentConfig(
        server="https://patches.example.com/repo",
        channel="testing",
        auto_update=False,
        check_interval=600,
        check_jitter=30,
        update_delay_hours=1.5,
        sticky_level=4,
        proxy="http://proxy.example.com:3128",
        state_dir=Path("/srv/suture"),
        trusted_root=Path("/srv/root.json"),
    )


def test_environment_overrides_the_file_and_options_override_both(tmp_path: Path) -> None:
    path = write(tmp_path, 'server = "https://a.example"\nchannel = "stable"\n')
    env = {
        "SUTURE_SERVER": "https://b.example",
        "SUTURE_CHANNEL": "testing",
        "SUTURE_STATE_DIR": "/tmp/state",
        "SUTURE_TRUSTED_ROOT": "/tmp/root.json",
        "SUTURE_CACHE": "/ignored",
    }
    cfg = config.load(path, environ=env)
    assert (cfg.server, cfg.channel) == ("https://b.example", "testing")
    assert (cfg.state_dir, cfg.trusted_root) == (Path("/tmp/state"), Path("/tmp/root.json"))
    cfg = config.load(path, environ=env, overrides={"server": "file:///repo", "channel": None})
    assert (cfg.server, cfg.channel) == ("file:///repo", "testing")


def test_the_config_path_comes_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "sticky_level = 2\n")
    assert config.load(environ={config.CONFIG_ENV: str(path)}).sticky_level == 2


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        ('channel = "beta"', "channel", "is not stable or testing"),
        ("check_interval = -1", "check_interval", "is not a number, 0 or more"),
        ("check_interval = 1.5", "check_interval", "is not whole seconds"),
        ("update_delay_hours = nan", "update_delay_hours", "is not a number"),
        ("sticky_level = 0", "sticky_level", "is not a level, 1 or more"),
        ("sticky_level = true", "sticky_level", "is not a level"),
        ("auto_update = 1", "auto_update", "is not true or false"),
        ('server = "ftp://x.example"', "server", "is not a URL"),
        ('proxy = "proxy:3128"', "proxy", "is not a URL"),
        ('state_dir = "relative/dir"', "state_dir", "is not an absolute path"),
        ("trusted_root = 3", "trusted_root", "is not a string"),
        ("chanel = 'stable'", "chanel", "unknown agent setting 'chanel'"),
        ("format = 2", "format", "is of format 2"),
    ],
)
def test_bad_values_are_refused_with_their_source(
    tmp_path: Path, text: str, key: str, says: str
) -> None:
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as e:
        config.load(path, environ={})
    assert e.value.key == key
    assert says in e.value.message
    assert str(path) in e.value.message
    assert e.value.exit_code == 64
    assert e.value.hint


def test_bad_toml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML"):
        config.load(write(tmp_path, "server = \n"), environ={})


def test_a_bad_environment_value_names_the_environment(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^the environment: .*channel") as e:
        config.load(write(tmp_path, "format = 1\n"), environ={"SUTURE_CHANNEL": "nightly"})
    assert e.value.to_dict()["key"] == "channel"


def test_a_named_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    # --config /missing.toml, or $SUTURE_AGENT_CONFIG: a typo must not mean the defaults.
    with pytest.raises(ConfigError, match=r"absent\.toml does not exist") as e:
        config.load(tmp_path / "absent.toml", environ={})
    assert e.value.exit_code == 64
    with pytest.raises(ConfigError, match=r"absent\.toml does not exist"):
        config.load(environ={"SUTURE_AGENT_CONFIG": str(tmp_path / "absent.toml")})


def test_environment_strings_are_parsed(tmp_path: Path) -> None:
    cfg = config.checked(
        AgentConfig(), {"auto_update": "no", "sticky_level": "3", "check_jitter": "5"}
    )
    assert (cfg.auto_update, cfg.sticky_level, cfg.check_jitter) == (False, 3, 5)


def test_to_dict_is_versioned() -> None:
    data = AgentConfig().to_dict()
    assert data["format"] == 1
    assert data["state_dir"] == "/var/lib/suture"
