# SPDX-License-Identifier: AGPL-3.0-or-later
"""whistle.server.config: defaults, overrides and one clear error per bad variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from whistle.server.config import DEFAULT_CATEGORIES, Config, ConfigError, load_config


def test_config_defaults_run_with_no_setup(tmp_path: Path) -> None:
    cfg = load_config({}, cwd=tmp_path)
    base = tmp_path.resolve()
    assert cfg.data_dir == base / "instance"
    assert cfg.database_url == f"sqlite:///{base / 'instance' / 'whistle.sqlite3'}"
    assert cfg.unit_key_path == base / "keys" / "unit.pub"
    assert cfg.key_dir == base / "keys"
    assert cfg.ratelimit_storage == "memory://"
    assert cfg.max_upload_mb == 500
    assert cfg.max_envelope_bytes == 1024 * 1024
    assert cfg.default_language == "es"
    assert cfg.https is False
    assert cfg.argon2_concurrency == 2
    assert cfg.categories == DEFAULT_CATEGORIES
    assert cfg.category_codes == ("poor_service", "medication", "irregularities", "corruption", "other")
    assert cfg.secrets_path == base / "instance" / "secrets.json"
    assert cfg.spool_dir == base / "instance" / "spool"


def test_config_default_cwd_is_process_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config({})
    assert cfg.data_dir == tmp_path.resolve() / "instance"
    # Resolved once: a later chdir does not move the data folder.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cfg.data_dir == tmp_path.resolve() / "instance"


def test_config_data_dir_override_moves_default_database(tmp_path: Path) -> None:
    cfg = load_config({"WHISTLE_DATA_DIR": "/srv/whistle/data"}, cwd=tmp_path)
    assert cfg.data_dir == Path("/srv/whistle/data").resolve()
    assert cfg.database_url == f"sqlite:///{Path('/srv/whistle/data').resolve() / 'whistle.sqlite3'}"


def test_config_relative_paths_are_relative_to_cwd(tmp_path: Path) -> None:
    cfg = load_config({"WHISTLE_DATA_DIR": "data", "WHISTLE_UNIT_KEY": "etc/unit.pub"}, cwd=tmp_path)
    assert cfg.data_dir == tmp_path.resolve() / "data"
    assert cfg.unit_key_path == tmp_path.resolve() / "etc" / "unit.pub"


@pytest.mark.parametrize("name,value,attr,expected", [
    ("WHISTLE_DATABASE_URL", "postgresql://u:p@db/whistle", "database_url", "postgresql://u:p@db/whistle"),
    ("WHISTLE_DATABASE_URL", "postgresql+psycopg://db/w", "database_url", "postgresql+psycopg://db/w"),
    ("WHISTLE_DATABASE_URL", "sqlite:////var/lib/w.db", "database_url", "sqlite:////var/lib/w.db"),
    ("WHISTLE_UNIT_KEY", "/etc/whistle/unit.pub", "unit_key_path", Path("/etc/whistle/unit.pub").resolve()),
    ("WHISTLE_RATELIMIT_STORAGE", "redis://localhost:6379/0", "ratelimit_storage",
     "redis://localhost:6379/0"),
    ("WHISTLE_RATELIMIT_STORAGE", "rediss://cache:6380", "ratelimit_storage", "rediss://cache:6380"),
    ("WHISTLE_MAX_UPLOAD_MB", "20", "max_upload_mb", 20),
    ("WHISTLE_MAX_UPLOAD_MB", " 1 ", "max_upload_mb", 1),
    ("WHISTLE_MAX_ENVELOPE_KB", "64", "max_envelope_bytes", 64 * 1024),
    ("WHISTLE_DEFAULT_LANGUAGE", "en", "default_language", "en"),
    ("WHISTLE_HTTPS", "true", "https", True),
    ("WHISTLE_HTTPS", "1", "https", True),
    ("WHISTLE_ARGON2_CONCURRENCY", "8", "argon2_concurrency", 8),
    ("WHISTLE_CATEGORIES", "fraude=Fraude; acoso = Acoso laboral ;", "categories",
     (("fraude", "Fraude"), ("acoso", "Acoso laboral"))),
])
def test_config_env_var_overrides(tmp_path: Path, name: str, value: str, attr: str, expected: object) -> None:
    cfg = load_config({name: value}, cwd=tmp_path)
    assert getattr(cfg, attr) == expected
    assert getattr(load_config({}, cwd=tmp_path), attr) != expected


@pytest.mark.parametrize("value,expected", [
    ("1", True), ("true", True), ("YES", True), (" on ", True),
    ("0", False), ("false", False), ("No", False), ("off", False),
])
def test_config_https_accepts_usual_booleans(tmp_path: Path, value: str, expected: bool) -> None:
    assert load_config({"WHISTLE_HTTPS": value}, cwd=tmp_path).https is expected


@pytest.mark.parametrize("name", [
    "WHISTLE_DATA_DIR", "WHISTLE_DATABASE_URL", "WHISTLE_UNIT_KEY", "WHISTLE_RATELIMIT_STORAGE",
    "WHISTLE_MAX_UPLOAD_MB", "WHISTLE_DEFAULT_LANGUAGE", "WHISTLE_CATEGORIES", "WHISTLE_HTTPS",
])
def test_config_empty_value_means_default(tmp_path: Path, name: str) -> None:
    assert load_config({name: ""}, cwd=tmp_path) == load_config({}, cwd=tmp_path)
    assert load_config({name: "   "}, cwd=tmp_path) == load_config({}, cwd=tmp_path)


@pytest.mark.parametrize("name,value", [
    ("WHISTLE_MAX_UPLOAD_MB", "lots"),
    ("WHISTLE_MAX_UPLOAD_MB", "1.5"),
    ("WHISTLE_MAX_UPLOAD_MB", "20MB"),
    ("WHISTLE_MAX_UPLOAD_MB", "0"),
    ("WHISTLE_MAX_UPLOAD_MB", "-5"),
    ("WHISTLE_MAX_UPLOAD_MB", "100001"),
    ("WHISTLE_MAX_ENVELOPE_KB", "1"),
    ("WHISTLE_MAX_ENVELOPE_KB", "x"),
    ("WHISTLE_ARGON2_CONCURRENCY", "0"),
    ("WHISTLE_ARGON2_CONCURRENCY", "65"),
    ("WHISTLE_DATABASE_URL", "mysql://u@db/w"),
    ("WHISTLE_DATABASE_URL", "/var/lib/whistle.sqlite3"),
    ("WHISTLE_DATABASE_URL", "sqlite:/relative.db"),
    ("WHISTLE_RATELIMIT_STORAGE", "memcached://localhost:11211"),
    ("WHISTLE_RATELIMIT_STORAGE", "memory"),
    ("WHISTLE_DEFAULT_LANGUAGE", "fr"),
    ("WHISTLE_DEFAULT_LANGUAGE", "ES"),
    ("WHISTLE_HTTPS", "maybe"),
    ("WHISTLE_CATEGORIES", "fraude"),
    ("WHISTLE_CATEGORIES", "Fraude=Fraude"),
    ("WHISTLE_CATEGORIES", "fraude="),
    ("WHISTLE_CATEGORIES", "=Fraude"),
    ("WHISTLE_CATEGORIES", "fra ude=Fraude"),
    ("WHISTLE_CATEGORIES", ";;"),
    ("WHISTLE_CATEGORIES", "fraude=Fraude;fraude=Otra vez"),
    # Removed with the global lockouts (issue 8): refused rather than silently ignored.
    ("WHISTLE_LIMIT_LOGIN_FAILURES_GLOBAL", "120 per hour"),
    ("WHISTLE_LIMIT_SUBMIT_GLOBAL", "600 per hour"),
    ("WHISTLE_LIMIT_SUBMT_SESSION", "5 per hour"),
])
def test_config_bad_value_raises_configerror_naming_the_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({name: value}, cwd=tmp_path)
    assert name in str(info.value)


def test_config_duplicate_category_message_names_the_code(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'fraude' twice"):
        load_config({"WHISTLE_CATEGORIES": "fraude=Fraude;acoso=Acoso;fraude=Otra"}, cwd=tmp_path)


def test_config_out_of_range_message_gives_the_range(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="between 1 and"):
        load_config({"WHISTLE_MAX_UPLOAD_MB": "0"}, cwd=tmp_path)


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config({}, cwd=tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.max_upload_mb = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.data_dir = tmp_path  # type: ignore[misc]
    assert isinstance(cfg, Config) and cfg.max_upload_mb == 500


def test_config_load_is_pure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"WHISTLE_MAX_UPLOAD_MB": "42", "WHISTLE_CATEGORIES": "a=A;b=B"}
    snapshot = dict(environ)
    assert load_config(environ, cwd=tmp_path) == load_config(environ, cwd=tmp_path)
    assert environ == snapshot  # not modified
    # The process environment is not consulted: only the mapping passed in counts.
    monkeypatch.setenv("WHISTLE_MAX_UPLOAD_MB", "7")
    monkeypatch.setenv("WHISTLE_DATA_DIR", str(tmp_path / "from-os-environ"))
    monkeypatch.setenv("WHISTLE_DEFAULT_LANGUAGE", "klingon")
    cfg = load_config({}, cwd=tmp_path)
    assert cfg.max_upload_mb == 500
    assert cfg.data_dir == tmp_path.resolve() / "instance"
    assert cfg.default_language == "es"
