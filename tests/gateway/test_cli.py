from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main


def _env(tmp_path: Path) -> dict[str, str]:
    return {"SMSGW_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "smsgw 0.1.0"


def test_version_console_script() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "smsgw 0.1.0"


def test_db_upgrade_and_accounts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = _env(tmp_path)
    assert main(["db", "upgrade"], env) == 0
    assert (tmp_path / "cli.db").exists()
    capsys.readouterr()

    assert main(["account", "add", "acme", "--password", "pw-secret", "--tps", "7"], env) == 0
    out = capsys.readouterr().out
    api_key = next(
        line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("api_key:")
    )
    assert len(api_key) >= 32

    assert main(["account", "add", "acme", "--password", "x"], env) == 1
    assert "exists already" in capsys.readouterr().err

    assert main(["account", "list"], env) == 0
    listing = capsys.readouterr().out
    assert "acme" in listing and "7" in listing
    assert api_key not in listing and "pw-secret" not in listing


def test_account_add_with_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "f.db"}"\n')
    assert main(["account", "add", "beta", "--password", "pw", "--config", str(config)], {}) == 0
    assert (tmp_path / "f.db").exists()


def test_invalid_config_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade"], {"SMSGW_HTTP__LISTEN": "nope"}) == 2
    err = capsys.readouterr().err
    assert "http.listen" in err and "HOST:PORT" in err


def test_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["account", "add", "--help"]) == 0
    assert "--password" in capsys.readouterr().out
    assert main(["account", "add", "x"]) == 2  # --password is required
    assert main([]) == 2
