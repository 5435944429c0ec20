# SPDX-License-Identifier: AGPL-3.0-or-later
"""One source's conversation with the bridge: its steps, what it holds, and the words it obeys.

What a conversation holds is serialised to JSON and encrypted by the store (store.py); it never
holds the number, a plaintext account or an attachment: the account is sealed to the unit key
as each message arrives (``items``), attachments stream into ciphertext spools of this process
(``spool`` names one), and the structured answers wait only until the first account message
seals them into the report envelope.
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field

# The steps, in order. NEW: nothing said yet (the first message is never kept: the source has
# not yet been told that this channel is not anonymous). DONE: filed; the passphrase is kept
# only until the message that carries it has been sent.
NEW, CATEGORY, QUESTIONS = "new", "category", "questions"
ACCOUNT, CONFIRM, DONE = "account", "confirm", "done"
STEPS = (NEW, CATEGORY, QUESTIONS, ACCOUNT, CONFIRM, DONE)
# Hashes of the message ids handled (retried webhooks are recognised), newest last.
MAX_SEEN = 400

# Command words, compared after :func:`keyword` (no accents, lower case, no punctuation); both
# languages are always understood.
CANCEL = frozenset({"cancelar", "cancel", "borrar", "delete"})
FINISH = frozenset({"listo", "lista", "done", "terminar", "termine", "fin", "finish", "finished"})
SEND = frozenset({"enviar", "envia", "send", "si", "yes"})
MORE = frozenset({"mas", "more", "seguir", "continuar", "continue"})
SKIP = frozenset({"0", "saltar", "omitir", "skip", "-", "no se", "nose"})
ENGLISH = frozenset({"english", "ingles", "in english", "en ingles"})
SPANISH = frozenset({"espanol", "spanish", "castellano", "en espanol"})
_PUNCT = re.compile(r"[^\w\s-]+")


def keyword(text: str) -> str:
    """``text`` reduced for comparison with command words: "¡Cancelar!" → "cancelar"."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(_PUNCT.sub(" ", bare).split())[:40]


@dataclass
class Item:
    """One sealed item waiting to be filed: the envelope sealed to the unit key, and the name of
    the spool holding its attachment's ciphertext (media only)."""

    sealed: str  # base64
    spool: str = ""

    @property
    def sealed_bytes(self) -> bytes:
        return base64.b64decode(self.sealed)


@dataclass
class Conversation:
    """The state of one conversation (see the module docstring)."""

    step: str = NEW
    lang: str = "es"
    category: str = ""
    question: int = 0
    answers: dict[str, str] = field(default_factory=dict)
    # The source's keys, derived when the account starts: SHA-256 of the login key, the public
    # key and the case tag (base64). The secret key is never kept: nothing here opens replies.
    login_hash: str = ""
    public_key: str = ""
    case_tag: str = ""
    passphrase: str = ""
    items: list[Item] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    @property
    def media_count(self) -> int:
        return sum(1 for item in self.items if item.spool)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Conversation:
        doc = json.loads(raw.decode("utf-8"))
        items = [Item(**item) for item in doc.pop("items")]
        conv = cls(**doc, items=items)
        if conv.step not in STEPS:
            raise ValueError("unknown step")
        return conv

    def remember(self, message_hash: str) -> bool:
        """Record a handled message; False when it was handled before (a retried webhook)."""
        if message_hash in self.seen:
            return False
        self.seen.append(message_hash)
        del self.seen[:-MAX_SEEN]
        return True

    def restart(self) -> Conversation:
        """A fresh conversation that still recognises the messages this one handled."""
        return Conversation(lang=self.lang, seen=list(self.seen))
