# SPDX-License-Identifier: AGPL-3.0-or-later
"""Client authorisation keys for the investigator onion service, in the format tor reads.

The investigator interface runs behind a v3 onion service with client authorisation: tor hands
out the service's descriptor only to a client holding an x25519 private key whose public half is
listed in ``HiddenServiceDir/authorized_clients/NAME.auth``. Without the key a visitor cannot
even reach the login page. Both halves are the raw 32 key bytes in unpadded RFC 4648 base32
(tor's manual, "CLIENT AUTHORIZATION"). Pure PyNaCl: no Flask, no database, no network.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from nacl.public import PrivateKey

from whistle.core.errors import WhistleError

_ONION = re.compile(r"^[a-z2-7]{56}\Z")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")


class OnionKeyError(WhistleError, ValueError):
    """A client name or onion address cannot be used."""


def tor_base32(raw: bytes) -> str:
    """Base32 as tor writes keys: RFC 4648 alphabet, upper case, no padding."""
    return base64.b32encode(raw).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class ClientAuthKey:
    """One investigator's client authorisation keypair, base32-encoded."""

    public_key: str
    private_key: str

    @classmethod
    def generate(cls) -> ClientAuthKey:
        """A fresh x25519 keypair from the CSPRNG."""
        key = PrivateKey.generate()
        return cls(public_key=tor_base32(bytes(key.public_key)), private_key=tor_base32(bytes(key)))

    def server_line(self) -> str:
        """The one line of the server's ``authorized_clients/NAME.auth`` file."""
        return f"descriptor:x25519:{self.public_key}"

    def client_line(self, onion: str) -> str:
        """The line of a tor client's ``ClientOnionAuthDir/NAME.auth_private`` file."""
        address = onion.strip().lower().removesuffix(".onion")
        if not _ONION.match(address):
            raise OnionKeyError(f"{onion!r} is not a v3 onion address (56 characters a-z, 2-7)")
        return f"{address}:descriptor:x25519:{self.private_key}"


def check_client_name(name: str) -> str:
    """A name for the ``.auth`` file: letters, digits, dot, dash, underscore."""
    if not _NAME.match(name):
        raise OnionKeyError("the client name may hold only letters, digits, '.', '-' and '_' (1-64)")
    return name
