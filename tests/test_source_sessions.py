# SPDX-License-Identifier: AGPL-3.0-or-later
"""Source sessions in Redis keep no clock finer than a bucket: every expiry is an absolute time
on the EXPIRY_BUCKET_SECONDS grid, and logout leaves no key behind.

The computation and the Redis commands are tested on every run (a recording stand-in for the
client); the real Redis test runs where WHISTLE_TEST_REDIS is set (CI's second run).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import TEST_REDIS

from whistle.core.crypto import UnitSecretKey
from whistle.server.source_sessions import (
    EXPIRY_BUCKET_SECONDS,
    IDLE_SECONDS,
    RedisSourceSessionStore,
    expires_at,
)


@given(now=st.floats(min_value=1.6e9, max_value=4e9, allow_nan=False),
       idle=st.integers(min_value=1, max_value=24 * 3600))
def test_source_sessions_expiry_on_bucket_grid_and_never_early(now: float, idle: int) -> None:
    at = expires_at(now, idle)
    assert at % EXPIRY_BUCKET_SECONDS == 0
    assert now + idle <= at < now + idle + EXPIRY_BUCKET_SECONDS + 1


def test_source_sessions_same_bucket_same_expiry() -> None:
    """Two sources active a few minutes apart inside one bucket cannot be told apart by expiry."""
    start = 1_800_000_000 // EXPIRY_BUCKET_SECONDS * EXPIRY_BUCKET_SECONDS
    assert {expires_at(start + s, IDLE_SECONDS) for s in (1, 60.5, EXPIRY_BUCKET_SECONDS - 1)} == {
        start + IDLE_SECONDS + EXPIRY_BUCKET_SECONDS}


class _Recorder:
    """Stands in for the redis client: keeps values and the expiry arguments it was given."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def set(self, key: str, value: bytes, **kwargs: Any) -> None:
        self.calls.append(("set", kwargs))
        self.values[key] = value

    def getex(self, key: str, **kwargs: Any) -> bytes | None:
        self.calls.append(("getex", kwargs))
        return self.values.get(key)

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def test_source_sessions_redis_commands_use_absolute_rounded_expiry() -> None:
    store = RedisSourceSessionStore("redis://127.0.0.1:1/0", "whistle:test:")  # never connects
    fake = _Recorder()
    store._redis = fake  # type: ignore[assignment]
    key, tag = UnitSecretKey.generate(), os.urandom(16)
    token = store.open("a" * 16, key, tag)
    found = store.get(token)
    assert found is not None and found.report_id == "a" * 16 and found.case_tag == tag
    assert found.secret_key is not None and found.secret_key.encode() == key.encode()
    assert [name for name, _ in fake.calls][:2] == ["set", "getex"]
    for _name, kwargs in fake.calls:
        # Only EXAT: EX/PX would make Redis store now + idle to the millisecond.
        assert set(kwargs) == {"exat"}
        assert kwargs["exat"] % EXPIRY_BUCKET_SECONDS == 0
    store.close(token)
    assert fake.values == {}


@pytest.mark.skipif(not TEST_REDIS, reason="WHISTLE_TEST_REDIS is not set (CI's second run sets it)")
def test_source_sessions_real_redis_expiry_on_bucket_grid() -> None:
    import secrets

    store = RedisSourceSessionStore(TEST_REDIS, f"whistle:test-{secrets.token_hex(4)}:")
    client = store._redis
    token = store.open("b" * 16, UnitSecretKey.generate(), os.urandom(16))
    try:
        (name,) = list(client.scan_iter(match=store._prefix + "*"))
        # PEXPIRETIME (Redis 7): the absolute expiry Redis holds, in milliseconds.
        assert int(client.execute_command("PEXPIRETIME", name)) % (EXPIRY_BUCKET_SECONDS * 1000) == 0
        assert store.get(token) is not None
        assert int(client.execute_command("PEXPIRETIME", name)) % (EXPIRY_BUCKET_SECONDS * 1000) == 0
        assert IDLE_SECONDS - 5 <= int(client.ttl(name)) <= IDLE_SECONDS + EXPIRY_BUCKET_SECONDS
    finally:
        store.close(token)
    # Logout leaves nothing of the source behind.
    assert list(client.scan_iter(match=store._prefix + "*")) == []


def test_source_sessions_server_and_browser_entries() -> None:
    """A server session keeps the secret key and case tag (encrypted, only with the cookie's
    token); a browser session nothing but the report id. Anything half-way is refused."""
    from whistle.server.source_sessions import MemorySourceSessionStore

    store = MemorySourceSessionStore()
    key, tag = UnitSecretKey.generate(), os.urandom(16)
    server = store.get(store.open("c" * 16, key, tag))
    assert server is not None and not server.browser and server.case_tag == tag
    assert server.secret_key is not None and server.secret_key.encode() == key.encode()
    browser = store.get(store.open("d" * 16))
    assert browser is not None and browser.browser and browser == ("d" * 16, None, None)
    # Neither the key nor the tag is in the store in the clear.
    for entry in store._entries.values():
        assert key.encode() not in entry.sealed and tag not in entry.sealed
    with pytest.raises(ValueError):
        store.open("e" * 16, key)
    with pytest.raises(ValueError):
        store.open("e" * 16, None, tag)
    with pytest.raises(ValueError):
        store.open("e" * 16, key, tag[:8])


def test_source_sessions_entry_from_before_case_tags_is_gone() -> None:
    """An entry written before case tags (report id and key only: a server upgraded while a
    source was logged in) is no session: the source logs in again, never a session without tag."""
    from whistle.server.source_sessions import MemorySourceSessionStore

    store = MemorySourceSessionStore()
    token = store.open("f" * 16)
    lookup, box = store._box(token)
    store._put(lookup, bytes(box.encrypt(b"f" * 16 + b"\0" + UnitSecretKey.generate().encode())))
    assert store.get(token) is None
