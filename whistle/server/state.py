# SPDX-License-Identifier: AGPL-3.0-or-later
"""What every view shares, built once by the application factory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from flask import current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from whistle.core.crypto import UnitPublicKey, UnitVerifyKey
from whistle.core.passphrase import DerivationGate
from whistle.server.blobstore import BlobStore, sessions_blob_store
from whistle.server.config import Config
from whistle.server.instance import InstanceSecrets
from whistle.server.receipts import OnceStore
from whistle.server.source_sessions import SourceSessionStore


@dataclass(frozen=True)
class State:
    """Stored in ``app.extensions['whistle']``."""

    config: Config
    unit_key: UnitPublicKey
    secrets: InstanceSecrets
    engine: Engine
    sessions: sessionmaker[Session]
    gate: DerivationGate
    source_sessions: SourceSessionStore
    # The unit's public signing key: replies are verified with it on import and before display.
    unit_sign_key: UnitVerifyKey
    # One-time form tokens and receipts waiting to be shown (receipts.py).
    once: OnceStore

    @property
    def blobs(self) -> BlobStore:
        """The blob store: the one every session from ``sessions`` carries."""
        return sessions_blob_store(self.sessions)


def get_state() -> State:
    """The current application's shared state (typed access to ``app.extensions``)."""
    return cast(State, current_app.extensions["whistle"])
