# SPDX-License-Identifier: AGPL-3.0-or-later
"""Source sessions in Redis keep no clock finer than a bucket: every expiry is an absolute time
on the EXPIRY_BUCKET_SECONDS grid, and logout leaves no key behind.

The computation and the Redis commands are tested on every run (a recording stand-in for the
client); the real Redis test runs where WHISTLE_TEST_REDIS is set (CI's second run).
"""

from __future__ import annotations

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
    key = UnitSecretKey.generate()
    token = store.open("a" * 16, key)
    found = store.get(token)
    assert found is not None and found[0] == "a" * 16 and found[1].encode() == key.encode()
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
    token = store.open("b" * 16, UnitSecretKey.generate())
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
