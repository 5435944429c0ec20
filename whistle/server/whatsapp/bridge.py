# SPDX-License-Identifier: AGPL-3.0-or-later
"""The bridge: the webhook hands it the messages of a signed request and answers at once; a
bounded pool of threads does the slow part (argon2, media downloads, filing) in the background.

- **Idempotent.** A message id already handled or waiting (a retried or duplicated webhook) is
  dropped: hashes of recent ids are kept in this process's memory, and each conversation keeps
  the hashes of its own (conversation.py).
- **In the source's order.** The messages of one conversation are handled by one thread at a
  time, sorted by WhatsApp's timestamp and then arrival; a fresh message waits
  ``WHISTLE_WHATSAPP_SETTLE_MS`` for siblings delivered out of order in parallel requests.
- **Bounded.** At most ``WHISTLE_WHATSAPP_QUEUE`` messages wait; beyond that the webhook answers
  503 and Meta delivers again later (nothing of the refused request is processed twice).
- **Limits** (:class:`Ceilings`): per number, counted under the HMAC tag of the number, and for
  everyone; a source is told once per window that a limit was reached.

The bridge runs in one process (deploy/gunicorn-whatsapp.conf.py): the ciphertext spools of an
unfinished conversation's media live in this process (:class:`Spools`).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from flask import Flask

from whistle.core.crypto import random_id
from whistle.core.errors import WhistleError
from whistle.server.counters import CounterStore, boundary, make_counters, now
from whistle.server.storage import SpoolFile
from whistle.server.whatsapp import texts
from whistle.server.whatsapp.conversation import DONE, Conversation
from whistle.server.whatsapp.flow import Flow
from whistle.server.whatsapp.graph import Graph
from whistle.server.whatsapp.payload import Inbound
from whistle.server.whatsapp.settings import WhatsAppLimits, WhatsAppSettings
from whistle.server.whatsapp.store import BridgeSecret, ConversationKeys, make_conversation_store

log = logging.getLogger("whistle.whatsapp")
MB = 1024 * 1024
RECENT_IDS = 20_000


class QueueFull(WhistleError):
    """More messages are waiting than the bridge holds; the webhook answers 503."""


@dataclass(frozen=True)
class Refusal:
    """A limit was reached: the text to send (given the minutes to wait), and whether to send it
    (only the first time in the window)."""

    text: Callable[[int], str]
    minutes: int
    tell: bool


class Ceilings:
    """Per-number and global ceilings (settings.WhatsAppLimits) over fixed UTC windows."""

    def __init__(self, counters: CounterStore, limits: WhatsAppLimits) -> None:
        self._counters, self._limits = counters, limits
        self._lock = threading.Lock()

    def _refuse(self, tag: str, kind: str, text: Callable[[int], str], ends: int) -> Refusal:
        minutes = max(1, math.ceil((ends - now()) / 60))
        return Refusal(text, minutes, self._counters.add(f"wa:told:{tag}:{kind}:{ends}", ends))

    def admit_message(self, tag: str) -> Refusal | None:
        minute, hour = boundary(now(), 60), boundary(now(), 3600)
        if self._counters.incr(f"wa:g:msg:{minute}", minute) > self._limits.global_messages_per_minute:
            return self._refuse(tag, "gmsg", texts.global_limit, minute)
        if self._counters.incr(f"wa:n:{tag}:msg:{hour}", hour) > self._limits.number_messages_per_hour:
            return self._refuse(tag, "nmsg", texts.number_limit, hour)
        return None

    def admit_conversation(self, tag: str) -> Refusal | None:
        hour = boundary(now(), 3600)
        if self._counters.incr(f"wa:g:conv:{hour}", hour) > self._limits.global_conversations_per_hour:
            return self._refuse(tag, "gconv", texts.global_limit, hour)
        return None

    def admit_report(self, tag: str) -> Refusal | None:
        day = boundary(now(), 86400)
        if self._counters.get(f"wa:n:{tag}:rep:{day}") >= self._limits.number_reports_per_day:
            return self._refuse(tag, "nrep", texts.reports_limit, day)
        return None

    def count_report(self, tag: str) -> None:
        day = boundary(now(), 86400)
        self._counters.incr(f"wa:n:{tag}:rep:{day}", day)

    def admit_media(self, tag: str) -> Refusal | None:
        day, hour = boundary(now(), 86400), boundary(now(), 3600)
        if self._counters.get(f"wa:g:mb:{hour}") >= self._limits.global_media_mb_per_hour:
            return self._refuse(tag, "gmb", texts.global_limit, hour)
        if self._counters.get(f"wa:n:{tag}:mb:{day}") >= self._limits.number_media_mb_per_day:
            return self._refuse(tag, "nmb", texts.number_limit, day)
        return None

    def charge_media(self, tag: str, size: int) -> None:
        mb = max(1, math.ceil(size / MB))
        day, hour = boundary(now(), 86400), boundary(now(), 3600)
        with self._lock:
            for key, ends in ((f"wa:g:mb:{hour}", hour), (f"wa:n:{tag}:mb:{day}", day)):
                self._counters.put(key, self._counters.get(key) + mb, ends)


class Spools:
    """The ciphertext spools of unfinished conversations' media, by random name, in this process.
    A spool not asked for within ``max_age`` seconds (its conversation was forgotten) is closed,
    which frees it: spools are anonymous files."""

    def __init__(self, max_age: float) -> None:
        self._max_age = max_age
        self._items: dict[str, tuple[SpoolFile, float]] = {}
        self._lock = threading.Lock()

    def add(self, spool: SpoolFile) -> str:
        name = random_id()
        with self._lock:
            self._items[name] = (spool, time.monotonic())
        return name

    def get(self, name: str) -> SpoolFile | None:
        with self._lock:
            entry = self._items.get(name)
            if entry is None:
                return None
            self._items[name] = (entry[0], time.monotonic())
            return entry[0]

    def close(self, names: Iterable[str]) -> None:
        with self._lock:
            found = [self._items.pop(name) for name in names if name in self._items]
        for spool, _ in found:
            spool.close()

    def sweep(self) -> None:
        limit = time.monotonic() - self._max_age
        with self._lock:
            old = [name for name, (_, seen) in self._items.items() if seen < limit]
        self.close(old)

    def __len__(self) -> int:
        return len(self._items)


class Bridge:
    """One per bridge process (``app.extensions["whistle_whatsapp"]``)."""

    def __init__(self, app: Flask, settings: WhatsAppSettings, graph: Graph | None = None,
                 secret: BridgeSecret | None = None) -> None:
        state = app.extensions["whistle"]
        config = state.config
        self.app, self.settings = app, settings
        self.secret = secret or BridgeSecret()
        self.store = make_conversation_store(config.ratelimit_storage, state.secrets.key_prefix,
                                              settings.idle_minutes * 60)
        self.graph = graph or Graph(settings)
        # A spool outlives its conversation's idle time by a margin, never much longer.
        self.spools = Spools(settings.idle_minutes * 60 + 600)
        self.ceilings = Ceilings(make_counters(config.ratelimit_storage,
                                               state.secrets.key_prefix), settings.limits)
        self.flow = Flow(app, settings, self.graph, self.spools, self.ceilings)
        self.default_language = config.default_language
        self._lock = threading.Condition()
        self._pending: dict[str, list[tuple[int, float, Inbound]]] = {}
        self._waiting = 0
        self._running: set[str] = set()
        self._inflight: set[str] = set()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._arrival = itertools.count()
        self._pool: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        # Created on first use, in the worker process (threads do not survive gunicorn's fork).
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.settings.threads, thread_name_prefix="whatsapp")
        return self._pool

    # --- the webhook's side -----------------------------------------------------------------

    def submit(self, messages: list[Inbound]) -> None:
        """Queue ``messages`` for the background; raise :class:`QueueFull` when the queue is full
        (those queued before it stay queued: a retry of the request skips them)."""
        start: list[str] = []
        try:
            with self._lock:
                for m in messages:
                    mark = self.secret.message(m.message_id)
                    if mark in self._inflight or mark in self._recent:
                        continue
                    if self._waiting >= self.settings.queue:
                        raise QueueFull("the bridge's queue is full")
                    lookup = self.secret.lookup(m.sender)
                    self._inflight.add(mark)
                    self._pending.setdefault(lookup, []).append((next(self._arrival), time.monotonic(), m))
                    self._waiting += 1
                    if lookup not in self._running:
                        self._running.add(lookup)
                        start.append(lookup)
        finally:
            for lookup in start:
                self._executor().submit(self._drain, lookup)
        if start:
            self.spools.sweep()

    def join(self, timeout: float = 30.0) -> bool:
        """Wait until nothing is queued or running (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._waiting or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    # --- the background's side --------------------------------------------------------------

    def _drain(self, lookup: str) -> None:
        settle = self.settings.settle_ms / 1000
        while True:
            with self._lock:
                batch = self._pending.get(lookup, [])
                first = min((arrived for _, arrived, _ in batch), default=time.monotonic())
            wait = settle - (time.monotonic() - first)
            if wait > 0:
                time.sleep(wait)
            with self._lock:
                batch = self._pending.pop(lookup, [])
                self._waiting -= len(batch)
                if not batch:
                    self._running.discard(lookup)
                    self._lock.notify_all()
                    return
            batch.sort(key=lambda entry: (entry[2].timestamp, entry[0]))
            try:
                self._process([m for _, _, m in batch])
            except Exception as exc:  # noqa: BLE001 - a background thread must not die silently
                # The type only: a message could quote what the source wrote.
                log.error("whatsapp message not handled: %s", type(exc).__name__)
            finally:
                with self._lock:
                    for _, _, m in batch:
                        mark = self.secret.message(m.message_id)
                        self._inflight.discard(mark)
                        self._recent[mark] = None
                    while len(self._recent) > RECENT_IDS:
                        self._recent.popitem(last=False)

    def _process(self, batch: list[Inbound]) -> None:
        """Handle one conversation's messages in order; save or forget it; send the answers."""
        keys = self.secret.keys(batch[0].sender)
        conv = self._load(keys)
        out: list[str] = []
        for m in batch:
            if conv is None:
                conv = Conversation(lang=self.default_language)
            if not conv.remember(self.secret.message(m.message_id)):
                continue
            refusal = self.ceilings.admit_message(keys.tag)
            if refusal is not None:
                out += self.flow.refused(conv, refusal)
                continue
            conv, said = self.flow.handle(conv, m, keys.tag)
            out += said
        if conv is None:
            self.store.drop(keys)
        else:
            self.store.save(keys, conv.to_bytes())
        sent = self._send(batch[-1].sender, out)
        if sent and conv is not None and conv.step == DONE and conv.passphrase:
            conv.passphrase = ""  # noqa: S105 - delivered: forgotten (an empty value, not a password)
            self.store.save(keys, conv.to_bytes())

    def _load(self, keys: ConversationKeys) -> Conversation | None:
        raw = self.store.load(keys)
        if raw is None:
            return None
        try:
            return Conversation.from_bytes(raw)
        except (ValueError, TypeError, KeyError):
            return None

    def _send(self, to: str, out: list[str]) -> bool:
        for text in out:
            try:
                self.graph.send_text(to, text)
            except Exception as exc:  # noqa: BLE001 - pywa's and httpx's errors alike
                log.warning("whatsapp message not sent: %s", type(exc).__name__)
                return False
        return True

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.graph.close()
