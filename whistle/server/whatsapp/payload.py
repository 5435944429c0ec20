# SPDX-License-Identifier: AGPL-3.0-or-later
"""Webhook requests of the WhatsApp Business Cloud API: the signature, then the messages.

The signature (``X-Hub-Signature-256: sha256=<hex>``, HMAC-SHA256 of the raw body under the app
secret) is checked in constant time by pywa's own validator before a byte of the body is parsed;
a header that is not ASCII hex is refused first (``hmac.compare_digest`` raises on non-ASCII text,
which would have been a 500).

The body is then read strictly and only as far as the bridge needs: every entry, every change,
every message (Meta batches several in one request; pywa's update classes read only the first,
and its user class requires the newer ``user_id`` field, so they are not used here). Anything that
is not the documented shape is skipped, never an error: a signed request from Meta that the bridge
cannot use gets ``200`` all the same (a retry would bring the same bytes).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace

from pywa.utils import webhook_updates_validator

# Media kinds the bridge seals, with WhatsApp's documented size caps (Cloud API "Supported media
# types"): audio 16 MB, document 100 MB, image 5 MB, video 16 MB.
MEDIA_CAPS: dict[str, int] = {
    "audio": 16 * 1024 * 1024,
    "document": 100 * 1024 * 1024,
    "image": 5 * 1024 * 1024,
    "video": 16 * 1024 * 1024,
}
MAX_TEXT_CHARS = 4096          # WhatsApp's own limit for a text message
MAX_NAME_CHARS = 200
MAX_MESSAGES_PER_REQUEST = 1000
_SIGNATURE = re.compile(r"^sha256=[0-9a-fA-F]{64}\Z")
_ID = re.compile(r"^[A-Za-z0-9._:=+/-]{1,256}\Z")
# A sender: a WhatsApp id (digits) or a business-scoped user id ("CC.digits"); a media id: digits
# (it becomes a path of the Graph API, so nothing else may reach the URL).
_SENDER = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
_MEDIA_ID = re.compile(r"^[0-9]{1,32}\Z")
_MIME = re.compile(r"^[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}(;[ -~]{0,120})?\Z")


def signature_ok(app_secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the HMAC-SHA256 of ``body`` under ``app_secret`` (constant time)."""
    if header is None or not _SIGNATURE.match(header):
        return False
    return webhook_updates_validator(app_secret=app_secret, request_body=body,
                                     x_hub_signature=header.lower())


@dataclass(frozen=True)
class Inbound:
    """One message from a source, as far as the bridge uses it.

    ``sender`` is the WhatsApp id (the phone number) or, where Meta sends one instead, the
    business-scoped user id: it is used only to answer and to derive the conversation's keys,
    never stored. ``kind`` is ``text``, one of :data:`MEDIA_CAPS`, ``location`` or ``unsupported``.
    """

    message_id: str = field(repr=False)
    sender: str = field(repr=False)
    timestamp: int
    kind: str
    text: str = field(default="", repr=False)
    media_id: str = field(default="", repr=False)
    mime_type: str = ""
    filename: str = field(default="", repr=False)
    voice: bool = False


def parse(body: bytes, phone_number_id: str) -> list[Inbound]:
    """The messages of a webhook body addressed to ``phone_number_id`` (others are skipped:
    statuses, other numbers of the same app, groups, anything malformed)."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return []
    if not isinstance(doc, dict) or doc.get("object") != "whatsapp_business_account":
        return []
    out: list[Inbound] = []
    for entry in _dicts(doc.get("entry")):
        for change in _dicts(entry.get("changes")):
            value = change.get("value")
            if change.get("field") != "messages" or not isinstance(value, dict):
                continue
            metadata = value.get("metadata")
            if not isinstance(metadata, dict) or str(metadata.get("phone_number_id")) != phone_number_id:
                continue
            for msg in _dicts(value.get("messages")):
                inbound = _message(msg)
                if inbound is not None and len(out) < MAX_MESSAGES_PER_REQUEST:
                    out.append(inbound)
    return out


def _dicts(value: object) -> list[dict[str, object]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _str(doc: dict[str, object], key: str, limit: int) -> str:
    value = doc.get(key)
    return value[:limit] if isinstance(value, str) else ""


def _message(msg: dict[str, object]) -> Inbound | None:
    if "group_id" in msg:
        return None  # the bridge talks to one person at a time
    message_id = msg.get("id")
    sender = msg.get("from") or msg.get("from_user_id")
    stamp = msg.get("timestamp")
    kind = msg.get("type")
    if not (isinstance(message_id, str) and _ID.match(message_id)
            and isinstance(sender, str) and _SENDER.match(sender)
            and isinstance(stamp, str) and stamp.isascii() and stamp.isdigit() and len(stamp) <= 12
            and isinstance(kind, str)):
        return None
    head = Inbound(message_id=message_id, sender=sender, timestamp=int(stamp), kind="unsupported")
    content = msg.get(kind)
    if not isinstance(content, dict):
        return head
    if kind == "text":
        return replace(head, kind="text", text=_str(content, "body", MAX_TEXT_CHARS))
    if kind in ("interactive", "button"):
        # A tapped reply button or list row: its title (or payload) is what the source chose.
        reply = content.get("button_reply") or content.get("list_reply") or content
        text = (_str(reply, "title", 200) or _str(reply, "text", 200)) if isinstance(reply, dict) else ""
        return replace(head, kind="text", text=text)
    if kind == "location":
        parts = [str(content.get(k)) for k in ("latitude", "longitude")
                 if isinstance(content.get(k), (int, float)) and not isinstance(content.get(k), bool)]
        words = [_str(content, k, 300) for k in ("name", "address")]
        text = ", ".join(parts + [w for w in words if w])
        return replace(head, kind="location", text=text)
    if kind in MEDIA_CAPS:
        media_id, mime = content.get("id"), content.get("mime_type")
        if not isinstance(media_id, str) or not _MEDIA_ID.match(media_id):
            return head
        return replace(head, kind=kind, media_id=media_id,
                       mime_type=mime if isinstance(mime, str) and _MIME.match(mime) else "",
                       text=_str(content, "caption", MAX_TEXT_CHARS),
                       filename=_str(content, "filename", MAX_NAME_CHARS),
                       voice=content.get("voice") is True)
    return head
