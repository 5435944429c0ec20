# SPDX-License-Identifier: AGPL-3.0-or-later
"""The guided conversation, one inbound message at a time: welcome, category, the questionnaire's
questions, the account (texts, locations, media), confirmation, filing, the receipt.

Keys are derived on the server, as on the JavaScript-off form: when the source picks a category
a passphrase is drawn and derived under the argon2 gate; from then on every account message is
sealed at once as a protocol-v2 item bound to those keys (the first as the report, with the
category and the answers as ``fields``; the next ones as messages 2, 3 …; a media item is a
message whose body is the caption and whose attachment is the media's stream). ``enviar`` files
them all in one transaction (:func:`whistle.server.intake.file_report_with_messages`), channel
``whatsapp``; the passphrase then goes to the chat once and is forgotten.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Flask
from flask_babel import gettext
from sqlalchemy import select

from whistle.core.crypto import AttachmentRef, Binding, Envelope, seal_envelope
from whistle.core.enums import Channel, Language
from whistle.core.passphrase import GateBusyError
from whistle.core.questionnaire import AnswerError, Question
from whistle.server import faults, intake
from whistle.server.models import Report
from whistle.server.state import State
from whistle.server.whatsapp import texts
from whistle.server.whatsapp.conversation import (
    ACCOUNT,
    CANCEL,
    CATEGORY,
    CONFIRM,
    DONE,
    ENGLISH,
    FINISH,
    MORE,
    NEW,
    QUESTIONS,
    SEND,
    SKIP,
    SPANISH,
    Conversation,
    Item,
    keyword,
)
from whistle.server.whatsapp.graph import Graph, MediaError
from whistle.server.whatsapp.payload import MEDIA_CAPS, Inbound
from whistle.server.whatsapp.settings import WhatsAppSettings

if TYPE_CHECKING:
    from whistle.server.whatsapp.bridge import Ceilings, Refusal, Spools

log = logging.getLogger("whistle.whatsapp")
MB = 1024 * 1024
_MONTH = re.compile(r"^(\d{1,2})[/.\- ](\d{4})\Z|^(\d{4})[/.\- ](\d{1,2})\Z")
_MEDIA_NAMES = {"es": {"image": "foto", "video": "video", "audio": "audio", "voice": "nota-de-voz",
                       "document": "documento"},
                "en": {"image": "photo", "video": "video", "audio": "audio", "voice": "voice-note",
                       "document": "document"}}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Flow:
    """The steps of a conversation (conversation.py), with what each step does."""

    def __init__(self, app: Flask, settings: WhatsAppSettings, graph: Graph, spools: Spools,
                 ceilings: Ceilings) -> None:
        self.app, self.settings, self.graph = app, settings, graph
        self.spools, self.ceilings = spools, ceilings
        self.state: State = app.extensions["whistle"]

    def say(self, conv: Conversation, fn: Callable[..., str], *args: object) -> str:
        with texts.speaking(self.app, conv.lang):
            return fn(*args)

    # --- one message ------------------------------------------------------------------------

    def handle(self, conv: Conversation, m: Inbound, tag: str) -> tuple[Conversation | None, list[str]]:
        """Apply ``m``; return the conversation (None: forget it) and the texts to send."""
        word = keyword(m.text) if m.kind == "text" else ""
        if word in CANCEL:
            self.spools.close(item.spool for item in conv.items)
            return None, [self.say(conv, texts.cancelled)]
        if word in ENGLISH | SPANISH:
            conv.lang = "en" if word in ENGLISH else "es"
            if conv.step != NEW:
                return conv, self.prompt(conv)
        if conv.step == DONE:
            if conv.passphrase:
                return conv, self.receipt(conv)
            conv = conv.restart()
        if conv.step == NEW:
            refusal = self.ceilings.admit_conversation(tag)
            if refusal is not None:
                return conv, self.refused(conv, refusal)
            conv.step = CATEGORY
            return conv, [self.say(conv, texts.welcome, self.settings.web_address, conv.lang),
                          *self.prompt(conv)]
        if m.kind == "unsupported":
            return conv, [self.say(conv, texts.unsupported)]
        step = {CATEGORY: self.category, QUESTIONS: self.answer, ACCOUNT: self.account,
                CONFIRM: self.confirm}[conv.step]
        return step(conv, m, word, tag)

    def prompt(self, conv: Conversation) -> list[str]:
        """What the current step asks."""
        with texts.speaking(self.app, conv.lang):
            if conv.step == CATEGORY:
                return [texts.category_menu(self.categories())]
            if conv.step == QUESTIONS:
                asked = self.questions(conv)
                return [texts.question(asked[conv.question], conv.question + 1, len(asked), conv.lang)]
            if conv.step == ACCOUNT:
                return [texts.account_prompt()]
            if conv.step == CONFIRM:
                return [texts.confirm(len(conv.items) - conv.media_count, conv.media_count)]
            return []

    def refused(self, conv: Conversation, refusal: Refusal) -> list[str]:
        """A limit's message, once per window and number (a flood gets no flood of answers)."""
        return [self.say(conv, refusal.text, refusal.minutes)] if refusal.tell else []

    def categories(self) -> list[tuple[str, str]]:
        return [(code, gettext(label)) for code, label in self.state.config.categories]

    def questions(self, conv: Conversation) -> tuple[Question, ...]:
        return self.state.config.questionnaire.questions_for(conv.category)

    # --- the steps --------------------------------------------------------------------------

    def category(self, conv: Conversation, m: Inbound, word: str, tag: str) -> tuple[Conversation, list[str]]:
        if m.kind in MEDIA_CAPS:
            return conv, [self.say(conv, texts.media_too_early)]
        with texts.speaking(self.app, conv.lang):
            code = pick(word, self.categories())
        if code is None:
            return conv, [self.say(conv, texts.not_a_category), *self.prompt(conv)]
        refusal = self.ceilings.admit_report(tag)
        if refusal is not None:
            return conv, self.refused(conv, refusal)
        try:
            self.derive(conv)
        except GateBusyError:
            return conv, [self.say(conv, texts.busy)]
        conv.category = code
        conv.step = QUESTIONS if self.questions(conv) else ACCOUNT
        conv.question = 0
        return conv, self.prompt(conv)

    def derive(self, conv: Conversation) -> None:
        """Draw the passphrase and derive the source's keys (under the argon2 gate): the account
        is sealed to them from its first message. A login hash already stored (once in 2^91) is
        replaced by a fresh draw, as on the form."""
        state = self.state
        for _attempt in range(intake.PASSPHRASE_ATTEMPTS):
            phrase, keys = intake.new_passphrase(state.gate, state.secrets.argon2, Language.coerce(conv.lang))
            with state.sessions() as db:
                taken = db.scalar(select(Report.id).where(Report.login_hash == keys.login_hash))
            if taken is None:
                conv.passphrase, conv.login_hash = phrase, b64(keys.login_hash)
                conv.public_key, conv.case_tag = b64(keys.public_key_bytes), b64(keys.case_tag)
                return
        raise intake.PassphraseCollisionError("fresh passphrases kept colliding")

    def answer(self, conv: Conversation, m: Inbound, word: str, tag: str) -> tuple[Conversation, list[str]]:
        asked = self.questions(conv)
        q = asked[conv.question]
        if m.kind != "text":
            return conv, [self.say(conv, texts.media_too_early), *self.prompt(conv)]
        value = parse_answer(q, m.text, word, conv.lang)
        if value is not None:
            conv.answers[q.id] = value
        elif word not in SKIP:
            return conv, [self.say(conv, texts.answer_hint, q)]
        conv.question += 1
        if conv.question >= len(asked):
            conv.step = ACCOUNT
        return conv, self.prompt(conv)

    def account(self, conv: Conversation, m: Inbound, word: str, tag: str) -> tuple[Conversation, list[str]]:
        if word in FINISH:
            if not conv.items:
                return conv, [self.say(conv, texts.nothing_yet)]
            conv.step = CONFIRM
            return conv, self.prompt(conv)
        if len(conv.items) >= self.settings.limits.conversation_items:
            return conv, [self.say(conv, texts.too_many_items)]
        if m.kind in MEDIA_CAPS:
            return conv, self.media(conv, m, tag)
        body = m.text
        if m.kind == "location":
            body = f"{self.say(conv, texts.location_label)} {m.text}"
        if body.strip():
            conv.items.append(Item(sealed=b64(self.seal(conv, body, ()))))
        return conv, []

    def media(self, conv: Conversation, m: Inbound, tag: str) -> list[str]:
        cap = min(MEDIA_CAPS[m.kind], self.state.config.max_upload_mb * MB)
        refusal = self.ceilings.admit_media(tag)
        if refusal is not None:
            return self.refused(conv, refusal)
        try:
            got = self.graph.download(m.media_id, cap, self.state.config.spool_dir)
        except MediaError as exc:
            log.warning("whatsapp media refused: %s", type(exc).__name__)
            too_large = None if exc.too_large is None else exc.too_large // MB
            return [self.say(conv, texts.media_refused, too_large)]
        self.ceilings.charge_media(tag, got.size)
        mime = m.mime_type or got.mime_type
        ref = AttachmentRef(name=attachment_name(m, len(conv.items) + 1, mime, conv.lang),
                            type=mime, size=got.size, key=got.key)
        try:
            sealed = self.seal(conv, m.text, (ref,))
        except Exception:
            got.spool.close()
            raise
        conv.items.append(Item(sealed=b64(sealed), spool=self.spools.add(got.spool)))
        return [self.say(conv, texts.media_received, conv.media_count)]

    def seal(self, conv: Conversation, body: str, refs: tuple[AttachmentRef, ...]) -> bytes:
        """The next item of the case, sealed to the unit key: the report first, then messages."""
        seq = len(conv.items) + 1
        binding = Binding(case_tag=base64.b64decode(conv.case_tag), seq=seq,
                          source_public_key=base64.b64decode(conv.public_key))
        if seq == 1:
            answers = self.state.config.questionnaire.validate_answers(conv.category, conv.answers)
            envelope = Envelope(kind="report", category=conv.category, body=body, attachments=refs,
                                binding=binding, fields=tuple(answers.items()))
            conv.answers = {}  # sealed into the report now
        else:
            envelope = Envelope(kind="message", body=body, attachments=refs, binding=binding)
        return seal_envelope(envelope, self.state.unit_key)

    def confirm(self, conv: Conversation, m: Inbound, word: str,
                tag: str) -> tuple[Conversation | None, list[str]]:
        if word in MORE:
            conv.step = ACCOUNT
            return conv, self.prompt(conv)
        if word not in SEND:
            return conv, self.prompt(conv)
        spools = [self.spools.get(item.spool) if item.spool else None for item in conv.items]
        if any(item.spool and spool is None for item, spool in zip(conv.items, spools, strict=True)):
            self.spools.close(item.spool for item in conv.items)
            return None, [self.say(conv, texts.lost)]
        sealed = [intake.SealedItem(item.sealed_bytes, [spool] if spool is not None else [])
                  for item, spool in zip(conv.items, spools, strict=True)]
        try:
            intake.file_report_with_messages(
                self.state.sessions, login_hash=base64.b64decode(conv.login_hash),
                source_public_key=base64.b64decode(conv.public_key), report=sealed[0],
                messages=sealed[1:], channel=Channel.WHATSAPP)
        except intake.IntakeError as exc:
            # Bound to keys that cannot be used (a 1-in-2^91 collision): nothing can be re-sealed.
            log.error("whatsapp filing refused: %s", type(exc).__name__)
            self.spools.close(item.spool for item in conv.items)
            return None, [self.say(conv, texts.lost)]
        except Exception as exc:
            if not faults.is_unavailable(exc):
                raise
            log.warning("whatsapp filing failed: %s", type(exc).__name__)
            return conv, [self.say(conv, texts.filing_failed)]
        self.spools.close(item.spool for item in conv.items)
        self.ceilings.count_report(tag)
        conv.step, conv.items, conv.answers = DONE, [], {}
        conv.login_hash = conv.public_key = conv.case_tag = conv.category = ""
        return conv, self.receipt(conv)

    def receipt(self, conv: Conversation) -> list[str]:
        return [self.say(conv, texts.receipt, self.settings.web_address), conv.passphrase]


# --- reading answers --------------------------------------------------------------------------


def pick(word: str, choices: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> str | None:
    """The code chosen by ``word`` (a number from 1, a code or a label), else None."""
    if word.isdigit() and 1 <= int(word) <= len(choices):
        return choices[int(word) - 1][0]
    for code, label in choices:
        if word and word in (keyword(code.replace("_", " ")), keyword(code), keyword(label)):
            return code
    return None


def parse_answer(q: Question, text: str, word: str, lang: str) -> str | None:
    """``text`` as an answer to ``q`` (normalised), or None when it is not one."""
    raw = text.strip()
    if q.type in ("choice", "yesno"):
        choices = q.choices(lang)
        if q.type == "yesno":
            choices = (*choices, *q.choices("es" if lang == "en" else "en"),
                       ("yes", "si"), ("unknown", "no se"))
        raw = pick(word, choices) or ""
    elif q.type == "month":
        found = _MONTH.match(raw)
        if found:
            month, year = ((found.group(1), found.group(2)) if found.group(1)
                           else (found.group(4), found.group(3)))
            raw = f"{year}-{int(month):02d}"
    if not raw or word in SKIP and q.type != "yesno":
        return None
    try:
        return q.check(raw)
    except AnswerError:
        return None


def attachment_name(m: Inbound, seq: int, mime: str, lang: str) -> str:
    """A document's own name; otherwise "foto-3.jpg", "nota-de-voz-4.ogg" … (in the chat's language)."""
    if m.kind == "document" and m.filename.strip():
        return m.filename.strip()
    base = mime.split(";")[0].strip().lower()
    ext = ".ogg" if base in ("audio/ogg", "audio/opus") else (mimetypes.guess_extension(base) or "")
    kind = "voice" if m.kind == "audio" and m.voice else m.kind
    return f"{_MEDIA_NAMES.get(lang, _MEDIA_NAMES['es'])[kind]}-{seq}{ext}"
