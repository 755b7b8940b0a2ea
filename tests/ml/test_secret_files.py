"""Settings given as files (``DATABASE_URL_FILE``), as the cluster passes them from mounted Secrets.

The resolution rules are checked on real files; the CLI is run as a process, as a CronJob runs it,
against a real database (SQLite and embedded PostgreSQL).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from ml import db
from ml.errors import BadInputError, ExitCode
from ml.settings import DEFAULT_DATABASE_URL, default_database_url, env_setting


@pytest.fixture(autouse=True)
def no_database_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL_FILE", raising=False)


def test_the_plain_variable_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///laptop.db")
    assert default_database_url() == "sqlite:///laptop.db"


def test_neither_set_gives_the_embedded_default() -> None:
    assert env_setting("DATABASE_URL") is None
    assert default_database_url() == DEFAULT_DATABASE_URL


def test_the_file_is_read_without_its_trailing_newline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "DATABASE_URL"
    secret.write_text("postgresql+psycopg://pc:p%20w@db:5432/purchases\n")
    monkeypatch.setenv("DATABASE_URL_FILE", str(secret))
    assert default_database_url() == "postgresql+psycopg://pc:p%20w@db:5432/purchases"


def test_both_set_is_refused_naming_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "DATABASE_URL"
    secret.write_text("sqlite:///from-file.db")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///from-env.db")
    monkeypatch.setenv("DATABASE_URL_FILE", str(secret))
    with pytest.raises(BadInputError, match="both DATABASE_URL and DATABASE_URL_FILE are set"):
        default_database_url()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"cannot read the file \(No such file or directory\)"),
        (b"\n", "the file is empty"),
        (b"\xff", "the file is not UTF-8 text"),
    ],
)
def test_an_unusable_file_is_refused_naming_the_variable_and_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes | None, message: str
) -> None:
    secret = tmp_path / "DATABASE_URL"
    if content is not None:
        secret.write_bytes(content)
    monkeypatch.setenv("DATABASE_URL_FILE", str(secret))
    with pytest.raises(BadInputError, match=re.escape(f"DATABASE_URL_FILE={secret}: ") + message) as info:
        default_database_url()
    assert info.value.exit_code == ExitCode.BAD_INPUT


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_URL_FILE")}
    return subprocess.run(
        [sys.executable, "-m", "ml", *args],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def purchases_csv(tmp_path: Path, purchases_sample: pd.DataFrame) -> Path:
    path = tmp_path / "purchases.csv"
    purchases_sample.head(50).to_csv(path, index=False)
    return path


def test_db_seed_reaches_the_database_named_in_the_file(tmp_path: Path, database_url: str, purchases_csv: Path) -> None:
    secret = tmp_path / "secrets" / "DATABASE_URL"
    secret.parent.mkdir()
    secret.write_text(database_url + "\n")
    secret.chmod(0o440)  # as the Secret volume mounts it: read-only
    proc = run_cli("db", "seed", "--data", str(purchases_csv), env={"DATABASE_URL_FILE": str(secret)})
    assert proc.returncode == 0, proc.stderr
    counts = db.table_counts(sa.create_engine(database_url))
    assert counts["purchases"] == counts["labels"] == 50


def test_the_cli_refuses_both_settings_with_one_line_and_writes_nothing(tmp_path: Path, purchases_csv: Path) -> None:
    secret = tmp_path / "DATABASE_URL"
    secret.write_text(f"sqlite:///{tmp_path / 'from-file.db'}")
    env = {"DATABASE_URL_FILE": str(secret), "DATABASE_URL": f"sqlite:///{tmp_path / 'from-env.db'}"}
    proc = run_cli("db", "seed", "--data", str(purchases_csv), env=env)
    assert proc.returncode == ExitCode.BAD_INPUT
    assert proc.stderr.strip() == "error: both DATABASE_URL and DATABASE_URL_FILE are set; set only one of them"
    assert not (tmp_path / "from-file.db").exists() and not (tmp_path / "from-env.db").exists()
