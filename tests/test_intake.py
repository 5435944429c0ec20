# SPDX-License-Identifier: AGPL-3.0-or-later
"""whistle.server.intake.file_report: the one intake path every channel files through.

Called here without any Flask request or application context, as a command-line import or a
chat bridge would: it returns a receipt, records the channel, and fails with whistle exceptions
(never an HTTP abort), storing nothing when it fails.
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
from whistle.core.passphrase import DerivationGate, GateBusyError, derive, wordlist
from whistle.server import intake
from whistle.server.intake import IntakeError, PassphraseCollisionError, Receipt, file_report
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
          attachments: tuple[Chunks, ...] = (), gate: DerivationGate | None = None) -> Receipt:
    return file_report(state.sessions, gate or state.gate, state.secrets.argon2,
                       sealed_envelope=b"\x01" * 1072, attachments=attachments, channel=channel,
                       language=language)


def _count(state: State) -> int:
    with state.sessions() as db:
        return db.scalar(select(func.count()).select_from(Report)) or 0


@pytest.mark.parametrize("channel", list(Channel))
def test_intake_file_report_returns_receipt_and_stores_channel(state: State, channel: Channel) -> None:
    data = os.urandom(3000)
    receipt = _file(state, channel, attachments=(Chunks(data), Chunks(b"")))
    assert receipt.channel is channel
    words = receipt.passphrase.split()
    assert len(words) == 7 and all(w in wordlist("es") for w in words)
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
    receipt = _file(state, Channel.SERVER_FORM, attachments=(Chunks(data),))
    assert receipt.passphrase == fresh
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
