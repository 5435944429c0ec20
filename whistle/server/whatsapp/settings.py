# SPDX-License-Identifier: AGPL-3.0-or-later
"""The WhatsApp bridge's configuration: ``WHISTLE_WHATSAPP_*`` variables, read only when
``WHISTLE_INTERFACE=whatsapp`` (docs/whatsapp.md). Missing or bad values raise
:class:`whistle.server.config.ConfigError` with one line: the bridge refuses to start."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from whistle.core.errors import WhistleError

DEFAULT_GRAPH_URL = "https://graph.facebook.com/v21.0"
REQUIRED = ("APP_SECRET", "VERIFY_TOKEN", "ACCESS_TOKEN", "PHONE_NUMBER_ID", "WEB_ADDRESS")
_PHONE_NUMBER_ID = re.compile(r"^[0-9]{1,32}\Z")
_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*\Z")


class WhatsAppSettingsError(WhistleError):
    """One line naming the variable and what to fix (raised as a ConfigError by config.py)."""


@dataclass(frozen=True)
class WhatsAppLimits:
    """Ceilings of the bridge (docs/whatsapp.md, "Limits"). Per number: keyed by an HMAC of the
    number under a secret held only in the bridge's memory. Global: the whole bridge."""

    # One number: messages an hour (a long account with photos is 20-40), reports a day.
    number_messages_per_hour: int = 120
    number_reports_per_day: int = 3
    number_media_mb_per_day: int = 300
    # Everyone together: webhook messages a minute, conversations started an hour, media an hour.
    global_messages_per_minute: int = 600
    global_conversations_per_hour: int = 300
    global_media_mb_per_hour: int = 2048
    # Items a conversation may hold before it is filed (texts and media together).
    conversation_items: int = 60


@dataclass(frozen=True)
class WhatsAppSettings:
    """What the bridge needs to talk to Meta, and what it tells the source."""

    app_secret: str = field(repr=False)
    verify_token: str = field(repr=False)
    access_token: str = field(repr=False)
    phone_number_id: str
    web_address: str
    graph_url: str = DEFAULT_GRAPH_URL
    # Idle minutes before an unfinished conversation is forgotten.
    idle_minutes: int = 30
    # Background threads doing the heavy work (argon2, media downloads, filing).
    threads: int = 4
    # Inbound messages waiting for a thread; beyond this the webhook answers 503 (Meta retries).
    queue: int = 1000
    # How long a fresh message waits for its siblings before it is sealed (out-of-order delivery).
    settle_ms: int = 300
    limits: WhatsAppLimits = field(default_factory=WhatsAppLimits)


def _int(environ: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise WhatsAppSettingsError(f"{name} must be a whole number from {lo} to {hi}, got {raw!r}")
    return value


def load_whatsapp_settings(environ: Mapping[str, str]) -> WhatsAppSettings:
    """The bridge's settings from ``environ``; raise :class:`WhatsAppSettingsError` (one line)."""
    prefix = "WHISTLE_WHATSAPP_"
    missing = [prefix + name for name in REQUIRED if not environ.get(prefix + name, "").strip()]
    if missing:
        raise WhatsAppSettingsError(f"WHISTLE_INTERFACE=whatsapp needs {', '.join(missing)} "
                                    "(docs/whatsapp.md)")
    phone_id = environ[prefix + "PHONE_NUMBER_ID"].strip()
    if not _PHONE_NUMBER_ID.match(phone_id):
        raise WhatsAppSettingsError(f"{prefix}PHONE_NUMBER_ID must be the numeric id Meta shows "
                                    "(not the phone number itself)")
    graph = (environ.get(prefix + "GRAPH_URL", "").strip() or DEFAULT_GRAPH_URL).rstrip("/")
    if not _URL.match(graph):
        raise WhatsAppSettingsError(f"{prefix}GRAPH_URL must be an http(s) URL, got {graph!r}")
    web = environ[prefix + "WEB_ADDRESS"].strip()
    if not _URL.match(web):
        raise WhatsAppSettingsError(f"{prefix}WEB_ADDRESS must be the http(s) address of the source "
                                    f"site (its onion address), got {web!r}")
    defaults = WhatsAppLimits()
    limits = WhatsAppLimits(**{
        name: _int(environ, f"{prefix}LIMIT_{name.upper()}", getattr(defaults, name), 1, 1_000_000)
        for name in WhatsAppLimits.__dataclass_fields__})
    return WhatsAppSettings(
        app_secret=environ[prefix + "APP_SECRET"].strip(),
        verify_token=environ[prefix + "VERIFY_TOKEN"].strip(),
        access_token=environ[prefix + "ACCESS_TOKEN"].strip(),
        phone_number_id=phone_id,
        web_address=web,
        graph_url=graph,
        idle_minutes=_int(environ, prefix + "IDLE_MINUTES", 30, 5, 24 * 60),
        threads=_int(environ, prefix + "THREADS", 4, 1, 64),
        queue=_int(environ, prefix + "QUEUE", 1000, 10, 100_000),
        settle_ms=_int(environ, prefix + "SETTLE_MS", 300, 0, 10_000),
        limits=limits,
    )
