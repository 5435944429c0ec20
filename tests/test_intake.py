# SPDX-License-Identifier: AGPL-3.0-or-later
"""whistle.server.intake: the one intake path every channel files through.

Called here without any Flask request or application context, as a command-line import or a
chat bridge would. :func:`file_report` files under keys the caller derived (the browser's path:
no argon2); :func:`file_derived_report` draws a passphrase, derives, lets the caller seal and
files (the server-derived paths), retrying a taken passphrase. Both record the channel and fail
with whistle exceptions (never an HTTP abort), storing nothing when they fail.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from sqlalchemy import func, select
from werkzeug.exceptions import HTTPException

from whistle.core import passphrase
from whistle.core.enums import Channel, ItemKind, Language, Status
from whistle.core.errors import WhistleError
from whistle.core.passphrase import DerivationGate, GateBusyError, SourceKeys, derive, wordlist
from whistle.server import intake
from whistle.server.intake import (
    BadSourceKeysError,
    IntakeError,
    LoginTakenError,
    PassphraseCollisionError,
    Receipt,
    file_derived_report,
    file_report,
)
from whistle.server.models import Attachment, Item, Report
from whistle.server.state import State


@dataclass
class Chunks:
    """An attachment's ciphertext as the intake reads it (the uploads' spools do the same)."""

    data: bytes

    def iter_chunks(self) -> Iterator[bytes]:
        yield self.data[:1000]
        yield self.data[1000:]


@pytest.fixture
def state(app: Flask) -> State:
    return app.extensions["whistle"]  # type: ignore[no-any-return]


def _file(state: State, channel: Channel = Channel.BROWSER, language: Language = Language.ES,
          attachments: tuple[Chunks, ...] = (), gate: DerivationGate | None = None,
          sealed: list[SourceKeys] | None = None) -> Receipt:
    def seal(keys: SourceKeys) -> bytes:
        if sealed is not None:
            sealed.append(keys)
        return b"\x01" * 1072

    return file_derived_report(state.sessions, gate or state.gate, state.secrets.argon2, seal=seal,
                               attachments=attachments, channel=channel, language=language)


def _count(state: State) -> int:
    with state.sessions() as db:
        return db.scalar(select(func.count()).select_from(Report)) or 0


@pytest.mark.parametrize("channel", list(Channel))
def test_intake_file_report_returns_receipt_and_stores_channel(state: State, channel: Channel) -> None:
    data = os.urandom(3000)
    receipt = _file(state, channel, attachments=(Chunks(data), Chunks(b"")))
    assert receipt.channel is channel
    words = receipt.passphrase.split()
    assert len(words) == 8 and all(w in wordlist("es") for w in words)  # Spanish: 8 words
    # Shown once, never logged by accident.
    assert receipt.passphrase not in repr(receipt)
    with state.sessions() as db:
        report = db.get(Report, receipt.report_id)
        assert report is not None
        assert report.channel == channel.value and report.status == Status.RECEIVED
        # The receipt's passphrase is the one that logs in.
        assert report.login_hash == derive(receipt.passphrase, state.secrets.argon2).login_hash
        [item] = report.items
        assert item.kind == ItemKind.REPORT and item.channel == channel.value and item.seq == 1
        assert db.scalar(select(func.count()).select_from(Attachment)) == 2


def test_intake_file_report_passphrase_in_requested_language(state: State) -> None:
    receipt = _file(state, language=Language.EN)
    assert all(w in wordlist("en") for w in receipt.passphrase.split())


def test_intake_file_report_busy_gate_raises_whistle_error_and_stores_nothing(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(passphrase, "GATE_WAIT_SECONDS", 0.01)
    gate = DerivationGate(1)
    with gate.slot(), pytest.raises(GateBusyError) as caught:
        _file(state, gate=gate)
    assert isinstance(caught.value, WhistleError) and not isinstance(caught.value, HTTPException)
    assert _count(state) == 0


def test_intake_file_report_retries_a_taken_passphrase(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A passphrase already in use (its login hash is unique) is replaced by a fresh one; the
    failed attempt leaves nothing behind, attachments are read again in full."""
    taken = _file(state).passphrase
    fresh = passphrase.generate("es")
    phrases = iter([taken, taken, fresh])
    monkeypatch.setattr(intake, "generate", lambda lang: next(phrases))
    data = os.urandom(2500)
    sealed: list[SourceKeys] = []
    receipt = _file(state, Channel.SERVER_FORM, attachments=(Chunks(data),), sealed=sealed)
    assert receipt.passphrase == fresh
    # Sealed again for each passphrase tried: the envelope is bound to the keys that are filed.
    expected = derive(fresh, state.secrets.argon2)
    assert len(sealed) == 3 and (sealed[-1].login_hash, sealed[-1].case_tag) == (
        expected.login_hash, expected.case_tag)
    assert _count(state) == 2
    with state.sessions() as db:
        assert db.scalar(select(func.count()).select_from(Item)) == 2
        assert db.scalar(select(func.count()).select_from(Attachment)) == 1


def test_intake_file_report_collision_exhausted_raises_intake_error_and_stores_nothing(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = _file(state).passphrase
    calls = itertools.count(1)

    def same(lang: str) -> str:
        next(calls)
        return taken

    monkeypatch.setattr(intake, "generate", same)
    with pytest.raises(PassphraseCollisionError) as caught:
        _file(state)
    assert isinstance(caught.value, IntakeError) and isinstance(caught.value, WhistleError)
    assert not isinstance(caught.value, HTTPException)
    assert next(calls) == intake.PASSPHRASE_ATTEMPTS + 1
    assert _count(state) == 1


def test_intake_file_report_with_caller_keys_runs_no_argon2(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The browser's path: the caller gives the login hash and public key; nothing derives."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("argon2 ran")

    monkeypatch.setattr(passphrase, "derive", refuse)
    monkeypatch.setattr(state.gate, "derive", refuse)
    login_hash, public_key = os.urandom(32), os.urandom(32)
    report_id = file_report(state.sessions, login_hash=login_hash, source_public_key=public_key,
                            sealed_envelope=b"\x02" * 1072, attachments=(Chunks(b"x" * 1500),),
                            channel=Channel.BROWSER)
    with state.sessions() as db:
        report = db.get(Report, report_id)
        assert report is not None
        assert (report.login_hash, report.source_public_key) == (login_hash, public_key)
        assert report.channel == "browser" and [i.seq for i in report.items] == [1]


def test_intake_file_report_taken_login_hash_raises_and_stores_nothing(state: State) -> None:
    login_hash = os.urandom(32)
    file_report(state.sessions, login_hash=login_hash, source_public_key=os.urandom(32),
                sealed_envelope=b"\x02" * 1072, attachments=(), channel=Channel.BROWSER)
    with state.sessions() as db:
        before = [db.scalar(select(func.count()).select_from(m)) for m in (Report, Item, Attachment)]
    with pytest.raises(LoginTakenError) as caught:
        file_report(state.sessions, login_hash=login_hash, source_public_key=os.urandom(32),
                    sealed_envelope=b"\x03" * 1072, attachments=(Chunks(b"y" * 10),),
                    channel=Channel.BROWSER)
    assert isinstance(caught.value, IntakeError) and not isinstance(caught.value, HTTPException)
    with state.sessions() as db:
        assert [db.scalar(select(func.count()).select_from(m)) for m in (Report, Item, Attachment)] == before


@pytest.mark.parametrize("login_hash, public_key", [
    (b"\0" * 32, b"\1" * 32), (b"\1" * 32, b"\0" * 32), (b"\1" * 31, b"\1" * 32),
    (b"\1" * 32, b"\1" * 33),
])
def test_intake_file_report_malformed_keys_refused(state: State, login_hash: bytes,
                                                   public_key: bytes) -> None:
    with pytest.raises(BadSourceKeysError):
        file_report(state.sessions, login_hash=login_hash, source_public_key=public_key,
                    sealed_envelope=b"\x02" * 1072, attachments=(), channel=Channel.BROWSER)
    assert _count(state) == 0
