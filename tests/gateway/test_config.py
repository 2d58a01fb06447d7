from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.config import (
    DEMO_TOML,
    ConfigError,
    Settings,
    demo_settings,
    load_settings,
    parse_listen,
)

ROOT = Path(__file__).resolve().parents[2]


def test_demo_toml_is_the_builtin_default() -> None:
    assert (ROOT / "config" / "demo.toml").read_text() == DEMO_TOML
    from_file = load_settings(str(ROOT / "config" / "demo.toml"), {})
    assert from_file == load_settings(None, {}) == demo_settings()


def test_defaults_are_the_demo() -> None:
    s = load_settings(None, {})
    assert s.database.url == "sqlite+aiosqlite:///smsgw.db"
    assert s.database.auto_migrate is True
    assert s.http.listen == "127.0.0.1:8080"
    assert s.smpp.listen == "127.0.0.1:2775"
    assert s.mqtt is None
    assert [u.kind for u in s.upstreams] == ["simulator"]
    assert [a.system_id for a in s.accounts] == ["demo"]


def test_production_example_is_valid() -> None:
    s = load_settings(str(ROOT / "config" / "gateway.toml"), {})
    assert s.database.url.startswith("postgresql+asyncpg://")
    assert [u.name for u in s.upstreams] == ["agg-a", "agg-b"]
    assert s.upstreams[0].prices["346"] == 0.040


def test_settings_are_frozen() -> None:
    s = demo_settings()
    with pytest.raises(ValueError):
        s.http.listen = "0.0.0.0:1"  # type: ignore[misc]


def test_config_env_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[http]\nlisten = "0.0.0.0:9000"\n')
    s = load_settings(None, {"SMSGW_CONFIG": str(f)})
    assert s.http.listen == "0.0.0.0:9000"
    # a file replaces the demo: no demo account or simulator unless it says so
    assert s.accounts == () and s.upstreams == ()
    # --config wins over SMSGW_CONFIG
    g = tmp_path / "g.toml"
    g.write_text('[http]\nlisten = "0.0.0.0:9001"\n')
    assert load_settings(str(g), {"SMSGW_CONFIG": str(f)}).http.listen == "0.0.0.0:9001"


def test_env_overrides(tmp_path: Path) -> None:
    env = {
        "SMSGW_DATABASE__URL": "postgresql://u@h:5432/db",
        "SMSGW_DATABASE__AUTO_MIGRATE": "false",
        "SMSGW_HTTP__LISTEN": "0.0.0.0:80",
        "SMSGW_UPSTREAMS__0__WINDOW": "7",
        "SMSGW_ACCOUNTS__0__PASSWORD": "1234",  # a TOML integer, wanted as a string
        "SMSGW_MQTT__URL": "mqtt://broker:1883",
        "OTHER": "ignored",
    }
    s = load_settings(None, env)
    assert s.database.url == "postgresql+asyncpg://u@h:5432/db"
    assert s.database.auto_migrate is False
    assert s.http.listen == "0.0.0.0:80"
    assert s.upstreams[0].window == 7
    assert s.accounts[0].password == "1234"
    assert s.mqtt is not None and s.mqtt.topic_prefix == "smsgw"


def test_error_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"SMSGW_UPSTREAMS__0__WINDOW": "0"})
    assert "upstreams[0].window: Input should be greater than 0" in str(info.value)


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[http]\nlisten = "127.0.0.1:8080"\nlisen = "x"\n')
    with pytest.raises(ConfigError, match=r"http\.lisen: unknown key"):
        load_settings(str(f), {})
    with pytest.raises(ConfigError, match=r"database\.bogus: unknown key"):
        load_settings(None, {"SMSGW_DATABASE__BOGUS": "1"})
    with pytest.raises(ConfigError, match=r"nosuch: unknown key"):
        load_settings(None, {"SMSGW_NOSUCH__KEY": "1"})


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[http]\nlisten = "localhost"', "http.listen: expected HOST:PORT"),
        ('[http]\nlisten = "h:99999"', "http.listen: port must be"),
        ('[smpp]\ntls_listen = "0.0.0.0:3550"', "smpp: tls_listen needs both tls_cert and tls_key"),
        ('[database]\nurl = "mysql://x/y"', "database.url: unsupported database 'mysql'"),
        ('[[accounts]]\nsystem_id = "a"\npassword = "p"\nrouting = "fast"', "accounts[0].routing"),
        ('[[upstreams]]\nname = "a"\nport = 2775', "upstreams[0]: system_id is required"),
        (
            '[[upstreams]]\nname = "a"\nkind = "simulator"\nprices = { "x1" = 1.0 }',
            "upstreams[0].prices",
        ),
        (
            '[[upstreams]]\nname = "a"\nkind = "simulator"\n[[upstreams]]\nname = "a"\nkind = "simulator"',
            "upstreams: 'a' appears twice",
        ),
    ],
)
def test_invalid_values(tmp_path: Path, toml: str, expected: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(toml + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings(str(f), {})
    assert expected in str(info.value)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(str(tmp_path / "absent.toml"), {})
    f = tmp_path / "bad.toml"
    f.write_text("[http\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(str(f), {})


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:2775") == ("127.0.0.1", 2775)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen("example.com:80") == ("example.com", 80)
    for bad in ("::1:80", "[::1:80", ":80", "host:", "host:x"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_model_defaults_have_no_accounts() -> None:
    # Settings() alone (a file with no [[accounts]]) must never create a known demo password.
    assert Settings().accounts == ()
    assert tomllib.loads(DEMO_TOML)["accounts"][0]["system_id"] == "demo"
