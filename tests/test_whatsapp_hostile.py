# SPDX-License-Identifier: AGPL-3.0-or-later
"""Malformed and hostile webhook bodies, correctly signed (as if the app secret had leaked, or
Meta changed its format): never a 5xx, never an error in the bridge's background, never half a
report, and the bridge still works afterwards."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from whatsapp_standin import (
    PHONE_NUMBER_ID,
    GraphStandIn,
    media,
    sign,
    start_standin,
    text,
    webhook,
    whatsapp_environ,
)

from whistle import create_app
from whistle.server.config import load_config
from whistle.server.instance import load_or_create_secrets
from whistle.server.models import Report

NUMBER = "593987654321"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children,
                                                                       max_size=4),
    max_leaves=12)
fields = st.sampled_from(["id", "from", "timestamp", "type", "text", "image", "audio", "document",
                          "location", "interactive", "group_id", "from_user_id", "context"])
kinds = st.sampled_from(["text", "image", "audio", "document", "video", "location", "sticker",
                         "interactive", "button", "reaction", "unknown", "", "__class__"])


def message(number: str, kind: str, content: object, replace: dict[str, object]) -> dict[str, Any]:
    base: dict[str, Any] = text(number, "x")
    base["type"] = kind
    base[kind] = content
    base.update(replace)
    return base


hostile_messages = st.builds(
    message,
    st.sampled_from([NUMBER, "593900000000", "", "+", "x" * 300, "é"]),
    kinds,
    json_values,
    st.dictionaries(fields, json_values, max_size=3))


def body_from(messages: list[dict[str, Any]], envelope_patch: dict[str, object], raw: bytes | None,
              mode: int) -> bytes:
    if mode == 0 and raw is not None:
        return raw
    doc = json.loads(webhook(*messages) if messages else webhook(text(NUMBER, "x")))
    if mode == 1:
        doc.update(envelope_patch)
    elif mode == 2:
        doc["entry"][0]["changes"][0]["value"].update(envelope_patch)
    elif mode == 3:
        doc["entry"][0]["changes"][0].update(envelope_patch)
    return json.dumps(doc).encode()


bodies = st.builds(body_from, st.lists(hostile_messages, max_size=4),
                   st.dictionaries(st.sampled_from(["object", "entry", "changes", "value", "metadata",
                                                    "messages", "field", "contacts"]), json_values,
                                   max_size=2),
                   st.one_of(st.none(), st.binary(max_size=200)), st.integers(0, 4))


@pytest.fixture
def standin() -> Iterator[GraphStandIn]:
    s = start_standin()
    yield s
    s.close()


@pytest.fixture
def wa_app(environ: dict[str, str], tmp_path: Path, standin: GraphStandIn) -> Iterator[Flask]:
    config = load_config(environ | whatsapp_environ(standin), cwd=tmp_path)
    load_or_create_secrets(config, time_cost=1, memory_cost_kib=8)
    app = create_app(config)
    app.config.update(TESTING=True)
    yield app
    app.extensions["whistle_whatsapp"].close()
    app.extensions["whistle"].engine.dispose()


def deliver(app: Flask, body: bytes) -> int:
    resp = app.test_client().post("/whatsapp/webhook", data=body,
                                  headers={"X-Hub-Signature-256": sign(body)})
    assert app.extensions["whistle_whatsapp"].join(20)
    return int(resp.status_code)


def complete_reports(app: Flask) -> list[list[tuple[int, str]]]:
    """Every report's items as (seq, kind): each must be a whole case, report first, no gap."""
    with app.extensions["whistle"].sessions() as db:
        cases = [sorted((i.seq, i.kind) for i in r.items) for r in db.scalars(select(Report))]
    for items in cases:
        assert [seq for seq, _ in items] == list(range(1, len(items) + 1))
        assert [kind for _, kind in items] == ["report"] + ["message"] * (len(items) - 1)
    return cases


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_whatsapp_hostile_payloads_never_5xx_never_half_a_report(
        wa_app: Flask, standin: GraphStandIn, body: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="whistle.whatsapp")
    # A source in the middle of an account: hostile deliveries land beside it.
    if not getattr(wa_app, "_hostile_ready", False):
        for word in ("hola", "4", *["0"] * len(
                wa_app.extensions["whistle"].config.questionnaire.questions_for("corruption")),
                "relato"):
            assert deliver(wa_app, webhook(text(NUMBER, word))) == 200
        wa_app._hostile_ready = True  # type: ignore[attr-defined]
    assert deliver(wa_app, body) < 500
    assert not [r for r in caplog.records if r.name == "whistle.whatsapp" and r.levelno >= logging.ERROR]
    complete_reports(wa_app)


def test_whatsapp_bridge_still_files_after_hostile_media(wa_app: Flask, standin: GraphStandIn) -> None:
    for word in ("hola", "4", *["0"] * len(
            wa_app.extensions["whistle"].config.questionnaire.questions_for("corruption")), "relato"):
        assert deliver(wa_app, webhook(text(NUMBER, word))) == 200
    # Media the Graph API does not know, a media id that is a path, an absurd MIME type.
    for media_id, mime in (("404404", "image/jpeg"), ("../../etc/passwd", "image/jpeg"),
                           (standin.add_media(b"ok", "x" * 500), "x" * 500)):
        assert deliver(wa_app, webhook(media(NUMBER, "image", media_id, mime))) == 200
    assert deliver(wa_app, webhook(text(NUMBER, "listo"))) == 200
    assert deliver(wa_app, webhook(text(NUMBER, "enviar"))) == 200
    cases = complete_reports(wa_app)
    assert len(cases) == 1 and len(cases[0]) == 2  # the account and the one readable attachment
    assert PHONE_NUMBER_ID  # the stand-in's number id is what the bridge answered for
