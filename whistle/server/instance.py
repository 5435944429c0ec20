# SPDX-License-Identifier: AGPL-3.0-or-later
"""The instance: data folder, instance secrets, database, and the fail-closed key checks."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from whistle.core.crypto import (
    SECRET_KEY_FORMAT,
    KeyFormatError,
    UnitPublicKey,
    UnitVerifyKey,
    b64decode,
    b64encode,
    is_version,
)
from whistle.core.errors import WhistleError
from whistle.core.files import atomic_write
from whistle.core.passphrase import Argon2Params, PassphraseError
from whistle.server.config import Config
from whistle.server.db import make_engine
from whistle.server.migrate import MigrationError, upgrade_database

SECRETS_FORMAT = "whistle-instance-secrets"
# Names that mean "a private key lives here": the server must never hold one.
_PRIVATE_HINTS = ("secret", "private", ".key", ".sec", "id_", ".pem", ".asc", ".gpg")
_PUBLIC_OK = (".pub", ".md", ".txt", ".gitignore", ".gitkeep")


class InstanceError(WhistleError):
    """The instance cannot start: missing or malformed key, a private key present, bad secrets."""


@dataclass(frozen=True)
class InstanceSecrets:
    """Created once at install: Flask's secret key, the passphrase salt and argon2 costs."""

    flask_secret_key: str
    argon2: Argon2Params

    @property
    def key_prefix(self) -> str:
        """A Redis key prefix unique to this instance (reveals nothing about the secret)."""
        digest = hashlib.sha256(b"whistle-redis-prefix:" + self.flask_secret_key.encode()).hexdigest()
        return f"whistle:{digest[:16]}:"

    def to_json(self) -> str:
        return json.dumps({
            "format": SECRETS_FORMAT,
            "v": 1,
            "flask_secret_key": self.flask_secret_key,
            "passphrase_salt": b64encode(self.argon2.salt),
            "argon2_time_cost": self.argon2.time_cost,
            "argon2_memory_cost_kib": self.argon2.memory_cost_kib,
            "argon2_parallelism": self.argon2.parallelism,
        }, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> InstanceSecrets:
        try:
            doc = json.loads(text)
            if doc.get("format") != SECRETS_FORMAT or not is_version(doc.get("v"), 1):
                raise ValueError("unknown format")
            return cls(
                flask_secret_key=str(doc["flask_secret_key"]),
                argon2=Argon2Params(
                    salt=b64decode(doc["passphrase_salt"]),
                    time_cost=int(doc["argon2_time_cost"]),
                    memory_cost_kib=int(doc["argon2_memory_cost_kib"]),
                    parallelism=int(doc["argon2_parallelism"]),
                ),
            )
        # OverflowError: a cost of Infinity; RecursionError: deep JSON; PassphraseError: a short
        # salt or costs out of range (Argon2Params).
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError,
                KeyFormatError, PassphraseError) as exc:
            raise InstanceError(f"instance secrets are malformed: {exc}") from exc

    @classmethod
    def generate(cls, *, time_cost: int = 3, memory_cost_kib: int = 64 * 1024) -> InstanceSecrets:
        return cls(
            flask_secret_key=secrets.token_urlsafe(48),
            argon2=Argon2Params(
                salt=secrets.token_bytes(16), time_cost=time_cost, memory_cost_kib=memory_cost_kib
            ),
        )


def check_key_folder(config: Config) -> UnitPublicKey:
    """Load the unit public key, refusing to go on if the key folder holds anything private or if
    the unit's public signing key (``unit-sign.pub``) is missing or malformed."""
    key_dir = config.key_dir
    if key_dir.is_dir():
        for entry in sorted(key_dir.iterdir()):
            _refuse_private(entry)
    try:
        unit_key = UnitPublicKey.load(config.unit_key_path)
    except KeyFormatError as exc:
        raise InstanceError(
            f"{exc}. Create it on the workstation with 'whistle keygen' and copy only unit.pub here."
        ) from exc
    load_unit_sign_key(config)
    return unit_key


def load_unit_sign_key(config: Config) -> UnitVerifyKey:
    """The unit's public signing key: without it no reply can be verified, so the server refuses
    to start rather than store or show replies it cannot check (fail closed)."""
    try:
        return UnitVerifyKey.load(config.unit_sign_key_path)
    except KeyFormatError as exc:
        raise InstanceError(
            f"{exc}. Replies are signed by the unit: copy unit-sign.pub (made by "
            "'whistle keygen', or 'whistle keygen --add-signing-key' for an older key) beside unit.pub."
        ) from exc


def _refuse_private(entry: Path) -> None:
    name = entry.name.lower()
    if entry.is_dir():
        return
    if any(h in name for h in _PRIVATE_HINTS) and not name.endswith(_PUBLIC_OK):
        raise InstanceError(
            f"refusing to start: {entry} looks like a private key. The unit's private key must "
            "never be on the server; move it to the offline workstation."
        )
    try:
        with entry.open("rb") as fh:
            head = fh.read(64 * 1024)
    except OSError as exc:
        raise InstanceError(f"cannot read {entry} in the key folder: {exc}") from exc
    if SECRET_KEY_FORMAT.encode() in head or b"PRIVATE KEY" in head:
        raise InstanceError(
            f"refusing to start: {entry} is a private key file. The unit's private key must "
            "never be on the server; move it to the offline workstation."
        )


def load_or_create_secrets(
    config: Config, *, time_cost: int = 3, memory_cost_kib: int = 64 * 1024
) -> InstanceSecrets:
    """Read the instance secrets, creating them (with the given costs) on first use."""
    path = config.secrets_path
    if path.exists():
        return InstanceSecrets.from_json(path.read_text(encoding="utf-8"))
    secrets_ = InstanceSecrets.generate(time_cost=time_cost, memory_cost_kib=memory_cost_kib)
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, secrets_.to_json().encode("utf-8"), mode=0o600)
    return secrets_


def _sweep_spool(spool: Path) -> None:
    # Spool files are anonymous (O_TMPFILE) and vanish with the process. Where the filesystem
    # lacks that, Python creates then unlinks a named file; a crash in between leaves an empty
    # or ciphertext-only file that no request owns any more.
    for entry in spool.iterdir():
        if entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)


def init_instance(
    config: Config, *, time_cost: int = 3, memory_cost_kib: int = 64 * 1024
) -> tuple[InstanceSecrets, Engine]:
    """Create the data folder, the secrets and the database schema. Idempotent."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(config.data_dir, 0o700)
    config.spool_dir.mkdir(exist_ok=True, mode=0o700)
    _sweep_spool(config.spool_dir)
    secrets_ = load_or_create_secrets(config, time_cost=time_cost, memory_cost_kib=memory_cost_kib)
    engine = make_engine(config.database_url)
    try:
        upgrade_database(engine)
    except MigrationError as exc:
        engine.dispose()
        raise InstanceError(str(exc)) from exc
    return secrets_, engine
