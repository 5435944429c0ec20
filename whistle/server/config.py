# SPDX-License-Identifier: AGPL-3.0-or-later
"""Configuration: a frozen dataclass built by the pure function :func:`load_config`.

Everything comes from environment variables with defaults that run on one machine with no setup.
Bad values raise :class:`ConfigError` with one line that says what to fix; the server refuses to
start rather than guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from whistle.core.enums import DEFAULT_CATEGORIES, Language
from whistle.core.errors import WhistleError
from whistle.core.questionnaire import Questionnaire, QuestionnaireError, load_questionnaire

if TYPE_CHECKING:
    from whistle.server.whatsapp.settings import WhatsAppSettings

# The default category labels (one table with the workstation's, in core.enums) are translated at
# request time in :mod:`whistle.server.i18n`.
# The site's languages (core.enums.Language), the default first.
LANGUAGES: tuple[str, ...] = tuple(lang.value for lang in Language)
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class ConfigError(WhistleError):
    """The configuration is invalid; the message says which variable and why."""


@dataclass(frozen=True)
class Limits:
    """Rate limits in flask-limiter's notation ("30 per minute"). None is keyed on an address:
    behind Tor every request comes from 127.0.0.1 (docs/security.md, "Fair limits").

    ``*_global`` are machine ceilings for requests that carry no proof of work (JavaScript off):
    per minute at most, so nobody waits longer than a minute, and a request with a valid proof
    of work is exempt (it paid). ``*_capacity`` is what the machine serves per purpose: the
    proof-of-work difficulty starts rising at half of it. ``*_session`` are per-session ceilings.
    """

    # Submissions and logins each cost one argon2 derivation (64 MiB, 0.26 s): 2 cores give
    # ~460 a minute. Half of that is each purpose's capacity; the ceilings for requests without
    # a proof of work take ~6.5 % of it each.
    submit_global: str = "30 per minute"
    submit_session: str = "5 per hour"
    submit_capacity: str = "240 per minute"
    login_global: str = "30 per minute"
    login_session: str = "20 per hour"
    login_capacity: str = "240 per minute"
    # Messages cost no derivation but database writes of up to WHISTLE_MAX_UPLOAD_MB.
    message_global: str = "30 per minute"
    message_session: str = "30 per hour"
    message_capacity: str = "120 per minute"


@dataclass(frozen=True)
class Quotas:
    """How much sources may upload, checked against the declared length before a body is read
    (whistle/quotas.py). Windows are fixed and aligned to the UTC hour or day, so a counter dates
    nothing more precisely than its window. Each byte quota must hold one upload of the largest
    size allowed (WHISTLE_MAX_UPLOAD_MB), or a source could never send one."""

    # A logged-in source's case, keyed server-side on the report id (a replayed cookie gets no
    # fresh bucket): a few messages a day is normal; 30 is generous and bounds a stolen session.
    case_messages_per_day: int = 30
    case_mb_per_day: int = 1024
    # Anonymous submissions, per session: two full-size reports an hour. A client that drops its
    # cookie gets a new bucket, which is why the global quota exists.
    session_mb_per_hour: int = 1024
    # Everything sources upload, together: what protects the disk. 2 GiB an hour is 48 GiB a day
    # at worst; size it to the free disk and the time an operator needs to notice.
    global_mb_per_hour: int = 2048


@dataclass(frozen=True)
class Config:
    """The whole runtime configuration of one whistle instance."""

    data_dir: Path
    database_url: str
    unit_key_path: Path
    ratelimit_storage: str = "memory://"
    max_upload_mb: int = 500
    max_envelope_bytes: int = 1024 * 1024
    categories: tuple[tuple[str, str], ...] = DEFAULT_CATEGORIES
    default_language: str = "es"
    https: bool = False
    argon2_concurrency: int = 2
    ack_days: int = 7
    feedback_months: int = 3
    limits: Limits = field(default_factory=lambda: Limits())
    quotas: Quotas = field(default_factory=lambda: Quotas())
    # Which pages this process serves: "all" on one machine; in production the source onion
    # service and the investigator onion service (client authorisation) run separate processes.
    interface: str = "all"
    # The structured questions of the submission form (WHISTLE_QUESTIONNAIRE; whistle's default).
    questionnaire: Questionnaire = field(default_factory=lambda: load_questionnaire(None), compare=False)
    # The WhatsApp bridge's settings (WHISTLE_WHATSAPP_*), only with WHISTLE_INTERFACE=whatsapp.
    whatsapp: WhatsAppSettings | None = None

    @property
    def key_dir(self) -> Path:
        return self.unit_key_path.parent

    @property
    def unit_sign_key_path(self) -> Path:
        """The unit's public signing key: ``unit-sign.pub`` beside ``unit.pub``."""
        return self.key_dir / "unit-sign.pub"

    @property
    def secrets_path(self) -> Path:
        return self.data_dir / "secrets.json"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def category_codes(self) -> tuple[str, ...]:
        return tuple(code for code, _ in self.categories)


def _int(environ: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(environ: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = environ.get(name, "").strip() or choices[0]
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _categories(raw: str | None) -> tuple[tuple[str, str], ...]:
    """``code=Label;code=Label``. Labels are shown as given (the deployment's own language)."""
    if raw is None or raw.strip() == "":
        return DEFAULT_CATEGORIES
    result: list[tuple[str, str]] = []
    for part in raw.split(";"):
        if not part.strip():
            continue
        code, sep, label = part.partition("=")
        code, label = code.strip(), label.strip()
        if not sep or not _CODE.match(code) or not label:
            raise ConfigError(
                f"WHISTLE_CATEGORIES entry {part.strip()!r} is not code=Label "
                "(code: lowercase letters, digits, underscore)"
            )
        if code in (c for c, _ in result):
            raise ConfigError(f"WHISTLE_CATEGORIES lists {code!r} twice")
        result.append((code, label))
    if not result:
        raise ConfigError("WHISTLE_CATEGORIES is set but lists no category")
    return tuple(result)


def _limits(environ: Mapping[str, str]) -> Limits:
    from limits import parse_many

    known = {f"WHISTLE_LIMIT_{name.upper()}" for name in Limits.__dataclass_fields__}
    for var in sorted(environ):
        # A limit that no longer exists (WHISTLE_LIMIT_LOGIN_FAILURES_GLOBAL, a global lockout) or
        # a typo would otherwise be ignored in silence: the operator believes it is in force.
        if var.startswith("WHISTLE_LIMIT_") and var not in known:
            raise ConfigError(f"{var} is not a whistle limit (known: {', '.join(sorted(known))})")
    values = {}
    for name in Limits.__dataclass_fields__:
        var = f"WHISTLE_LIMIT_{name.upper()}"
        raw = environ.get(var, "").strip()
        if not raw:
            continue
        try:
            items = parse_many(raw)
        except ValueError:
            raise ConfigError(f"{var} is not a rate limit like '20 per minute;300 per hour'") from None
        # A global ceiling over a longer window would lock everyone out for that long.
        if name.endswith("_global") and any(item.get_expiry() > 60 for item in items):
            raise ConfigError(f"{var} must be per second or per minute, got {raw!r}")
        values[name] = raw
    return Limits(**values)


def _quotas(environ: Mapping[str, str], max_upload_mb: int) -> Quotas:
    """``WHISTLE_QUOTA_<FIELD>`` for each field of :class:`Quotas` (whole numbers)."""
    defaults = Quotas()
    values: dict[str, int] = {}
    for name in Quotas.__dataclass_fields__:
        var = f"WHISTLE_QUOTA_{name.upper()}"
        values[name] = _int(environ, var, getattr(defaults, name), 1, 10_000_000)
        if name.endswith(("_mb_per_day", "_mb_per_hour")) and values[name] < max_upload_mb:
            raise ConfigError(f"{var} must be at least WHISTLE_MAX_UPLOAD_MB ({max_upload_mb}), "
                              f"got {values[name]}")
    return Quotas(**values)


def redis_url(storage_url: str) -> str | None:
    """The redis-py URL for ``WHISTLE_RATELIMIT_STORAGE`` when it names Redis (the limiter's
    ``redis+unix://`` is redis-py's ``unix://``), or None for ``memory://``: every store that
    follows the limiter's storage (counters, source sessions, receipts) decides the same way."""
    if storage_url.startswith(("redis://", "rediss://", "redis+unix://")):
        return storage_url.replace("redis+unix://", "unix://")
    return None


def _questionnaire(environ: Mapping[str, str], base: Path,
                   categories: tuple[tuple[str, str], ...]) -> Questionnaire:
    """WHISTLE_QUESTIONNAIRE (a TOML file, docs/deploy.md). A deployment's own file must name only
    its categories (a typo would never ask the question); whistle's default names the default
    categories, and its questions for a category a deployment does not have are simply not asked."""
    raw = environ.get("WHISTLE_QUESTIONNAIRE", "").strip()
    path = None
    if raw:
        path = Path(raw).expanduser()
        path = (path if path.is_absolute() else base / path).resolve()
    try:
        questionnaire = load_questionnaire(path)
        if path is not None:
            questionnaire.check_categories(code for code, _ in categories)
    except QuestionnaireError as exc:
        raise ConfigError(f"WHISTLE_QUESTIONNAIRE: {exc}") from None
    return questionnaire


def load_config(environ: Mapping[str, str], *, cwd: Path | None = None) -> Config:
    """Build the configuration from ``environ`` (pass ``os.environ``); pure apart from ``cwd``.

    Relative paths are taken relative to ``cwd`` (default: the process's working directory at
    call time, resolved once here so later ``chdir`` calls cannot move the data folder).
    """
    base = (cwd or Path.cwd()).resolve()

    def path(name: str, default: str) -> Path:
        raw = environ.get(name, "").strip() or default
        p = Path(raw).expanduser()
        return (p if p.is_absolute() else base / p).resolve()

    data_dir = path("WHISTLE_DATA_DIR", "instance")
    database_url = environ.get("WHISTLE_DATABASE_URL", "").strip() or (
        f"sqlite:///{data_dir / 'whistle.sqlite3'}"
    )
    if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", database_url):
        raise ConfigError("WHISTLE_DATABASE_URL must be a sqlite:// or postgresql:// URL")
    storage = environ.get("WHISTLE_RATELIMIT_STORAGE", "").strip() or "memory://"
    if not re.match(r"^(memory|redis|rediss|redis\+unix)://", storage):
        raise ConfigError("WHISTLE_RATELIMIT_STORAGE must be memory:// or a redis:// URL")
    language = environ.get("WHISTLE_DEFAULT_LANGUAGE", "").strip() or "es"
    if language not in LANGUAGES:
        raise ConfigError(f"WHISTLE_DEFAULT_LANGUAGE must be one of {', '.join(LANGUAGES)}")
    categories = _categories(environ.get("WHISTLE_CATEGORIES"))
    interface = _choice(environ, "WHISTLE_INTERFACE", ("all", "source", "investigator", "whatsapp"))
    return Config(
        data_dir=data_dir,
        database_url=database_url,
        unit_key_path=path("WHISTLE_UNIT_KEY", "keys/unit.pub"),
        ratelimit_storage=storage,
        max_upload_mb=_int(environ, "WHISTLE_MAX_UPLOAD_MB", 500, 1, 100_000),
        max_envelope_bytes=_int(environ, "WHISTLE_MAX_ENVELOPE_KB", 1024, 2, 16 * 1024) * 1024,
        categories=categories,
        questionnaire=_questionnaire(environ, base, categories),
        default_language=language,
        https=_bool(environ, "WHISTLE_HTTPS", False),
        argon2_concurrency=_int(environ, "WHISTLE_ARGON2_CONCURRENCY", 2, 1, 64),
        ack_days=_int(environ, "WHISTLE_ACK_DAYS", 7, 1, 365),
        feedback_months=_int(environ, "WHISTLE_FEEDBACK_MONTHS", 3, 1, 24),
        limits=_limits(environ),
        quotas=_quotas(environ, _int(environ, "WHISTLE_MAX_UPLOAD_MB", 500, 1, 100_000)),
        interface=interface,
        whatsapp=_whatsapp(environ) if interface == "whatsapp" else None,
    )


def _whatsapp(environ: Mapping[str, str]) -> WhatsAppSettings:
    """The bridge's WHISTLE_WHATSAPP_* settings (whistle/server/whatsapp/settings.py)."""
    from whistle.server.whatsapp.settings import WhatsAppSettingsError, load_whatsapp_settings

    try:
        return load_whatsapp_settings(environ)
    except WhatsAppSettingsError as exc:
        raise ConfigError(str(exc)) from None
