# SPDX-License-Identifier: AGPL-3.0-or-later
"""Client authorisation keys for the investigator onion: tor's x25519 format, both halves match.

tests/test_deploy.py also has a real tor load such a key from an ``authorized_clients`` folder.
"""

from __future__ import annotations

import base64
import re

import pytest
from nacl.public import PrivateKey

from whistle.server.onion import ClientAuthKey, OnionKeyError, check_client_name, tor_base32

ONION = "qo237ez233empfkmtiuv2ikccrr3zdhugonrojnbbx7udijgcc6eu2ad"


def _raw(b32: str) -> bytes:
    return base64.b32decode(b32 + "=" * (-len(b32) % 8))


def test_onion_key_halves_match_and_use_tor_base32() -> None:
    key = ClientAuthKey.generate()
    for half in (key.public_key, key.private_key):
        assert re.fullmatch(r"[A-Z2-7]{52}", half), "32 bytes, unpadded upper-case base32"
    assert bytes(PrivateKey(_raw(key.private_key)).public_key) == _raw(key.public_key)
    assert key.server_line() == f"descriptor:x25519:{key.public_key}"
    assert ClientAuthKey.generate().private_key != key.private_key


def test_onion_client_line_accepts_address_with_or_without_suffix() -> None:
    key = ClientAuthKey.generate()
    expected = f"{ONION}:descriptor:x25519:{key.private_key}"
    assert key.client_line(ONION) == expected
    assert key.client_line(f" {ONION.upper()}.onion\n") == expected


@pytest.mark.parametrize("bad", ["", "example.onion", ONION[:-1], ONION + "a", ONION[:-1] + "1"])
def test_onion_client_line_refuses_non_v3_address(bad: str) -> None:
    with pytest.raises(OnionKeyError):
        ClientAuthKey.generate().client_line(bad)


def test_onion_client_name_refuses_paths() -> None:
    assert check_client_name("maria.lopez") == "maria.lopez"
    for bad in ("", "../x", "a/b", "x" * 65, "tab\t"):
        with pytest.raises(OnionKeyError):
            check_client_name(bad)


def test_onion_tor_base32_strips_padding() -> None:
    assert tor_base32(b"\x00" * 32) == "A" * 52
