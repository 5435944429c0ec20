# SPDX-License-Identifier: AGPL-3.0-or-later
"""The server's commands: the bodies behind ``whistle init``, ``export``, ``add-investigator``,
``audit verify``, ``import-replies``, ``backup``, ``restore``, ``upgrade``, ``run`` and ``demo``.

:mod:`whistle.cli` holds the argument parsing and the workstation commands, and imports this
module only when a server command runs. Configuration comes from the ``WHISTLE_*`` environment
variables, as for the server itself. Failures are :class:`whistle.cli.CommandError` (one line).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from whistle.core.crypto import UnitKeyFile, UnitSecretKey, UnitSigningKey
from whistle.core.errors import CommandError
from whistle.server.config import Config, load_config

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

DEMO_DIR = Path("demo-workstation")


def _server_config() -> Config:
    return load_config(os.environ)


def _instance_config() -> Config:
    """The configuration of an instance that exists; refuse (one line, nothing created) if not.

    Run from the wrong folder, the default ``./instance`` pointed at an empty place and a command
    quietly made a second instance there: an account the running server never saw. Only ``init``,
    ``demo`` and ``restore`` (which makes an instance from a backup) may start from nothing. The
    instance secrets are the mark of an initialised instance: ``init`` writes them with the
    database, and they are there whatever the database (SQLite or PostgreSQL).
    """
    config = _server_config()
    if not config.secrets_path.is_file():
        where = config.data_dir.resolve()
        raise CommandError(f"no whistle instance in {where} (no {config.secrets_path.name}): run "
                           "this where the instance lives, point WHISTLE_DATA_DIR at its data "
                           "folder, or create one there with 'whistle init'")
    return config


def _server_sessions() -> sessionmaker[Session]:
    from whistle.server.db import make_sessionmaker
    from whistle.server.instance import init_instance

    _, engine = init_instance(_instance_config())
    return make_sessionmaker(engine)


def cmd_init(args: argparse.Namespace) -> int:
    """Create the data folder, the instance secrets and the database."""
    from whistle.server.instance import init_instance

    config = _server_config()
    init_instance(config)
    print(f"instance ready in {config.data_dir}")
    if not config.unit_key_path.exists():
        print(f"note: no unit public key yet at {config.unit_key_path}; run 'whistle keygen' "
              "on the workstation and copy unit.pub here")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a bundle of the encrypted items not exported yet (or all)."""
    from whistle.server.export import export_bundle
    from whistle.server.instance import check_key_folder

    unit_key = check_key_folder(_instance_config())
    summary = export_bundle(_server_sessions(), Path(args.out),
                            unit_fingerprint=unit_key.fingerprint(), include_all=args.all)
    print(f"exported {summary.items} item(s) of {summary.reports} report(s) to {summary.path}")
    return 0


def cmd_add_investigator(args: argparse.Namespace) -> int:
    """Create an investigator account; print its password and TOTP enrolment once."""
    from whistle.server.accounts import AccountError, create_investigator, totp_qr_terminal
    from whistle.server.audit import ACCOUNT_CREATE, CLI_ACTOR, record

    with _server_sessions()() as db:
        try:
            new = create_investigator(db, args.name, is_admin=args.admin)
        except AccountError as exc:
            raise CommandError(str(exc)) from exc
        record(db, CLI_ACTOR, ACCOUNT_CREATE,
               detail=f"account={new.name} admin={'yes' if args.admin else 'no'}")
        db.commit()
    role = "admin" if args.admin else "investigator"
    print(f"{role} account created: {new.name}")
    print(f"password:   {new.password}")
    print(f"TOTP key:   {new.totp_secret}")
    print(f"otpauth:    {new.totp_uri}")
    print("Scan this with the investigator's authenticator app (shown once, nothing else keeps it):")
    print(totp_qr_terminal(new.totp_uri))
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Check the audit log's hash chain; print its head, or where it breaks (exit 1)."""
    from whistle.server.audit import verify

    with _server_sessions()() as db:
        report = verify(db, expect_head=args.expect_head)
    if report.ok:
        print(f"ok: {report.count} entries, head {report.head}")
        return 0
    # stderr, so a cron job that mails its errors reports a broken log.
    print(f"audit log broken at entry {report.first_bad_seq}: {report.reason}", file=sys.stderr)
    return 1


def cmd_import_replies(args: argparse.Namespace) -> int:
    """Store the replies of a replies file, all of them or none."""
    from whistle.core.replies import RepliesError, read_replies_file
    from whistle.server.audit import CLI_ACTOR
    from whistle.server.casework import import_replies
    from whistle.server.instance import check_key_folder, load_unit_sign_key

    path = Path(args.replies)
    config = _instance_config()
    # The same fail-closed checks as the server's start: no private key here, both public keys.
    check_key_folder(config)
    verify_key = load_unit_sign_key(config)
    try:
        # Reads at most the size limit plus one byte: st_size says 0 for /dev/zero or a pipe.
        replies = read_replies_file(path)
        with _server_sessions().begin() as db:
            count = import_replies(db, replies, CLI_ACTOR, verify_key)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc}") from exc
    except RepliesError as exc:
        raise CommandError(f"replies refused, nothing imported: {exc}") from exc
    print(f"imported {count} repl{'y' if count == 1 else 'ies'}")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """Write a backup of the database and instance secrets, proven by a test restore."""
    from whistle.server.backup import BackupError, create_backup

    try:
        summary = create_backup(_instance_config(), Path(args.out))
    except BackupError as exc:
        raise CommandError(str(exc)) from exc
    print(f"backup written to {summary.path}: {summary.rows} rows in {summary.tables} tables, "
          f"{summary.blobs} blobs ({summary.blob_bytes / 1e6:.1f} MB of ciphertext); "
          "a test restore matched every row")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore a backup into the configured database (empty, unless --force)."""
    from whistle.server.backup import BackupError, restore_backup

    try:
        summary = restore_backup(_server_config(), Path(args.backup), force=args.force)
    except BackupError as exc:
        raise CommandError(f"restore refused: {exc}") from exc
    print(f"restored {summary.rows} rows in {summary.tables} tables from {summary.path}; instance "
          "secrets restored with a new session key (everyone logs in again). Restart whistle.")
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    """Bring the database schema up to this version of whistle (Alembic migrations)."""
    from alembic.util import CommandError as AlembicError
    from sqlalchemy.exc import SQLAlchemyError

    from whistle.server.db import make_engine
    from whistle.server.migrate import current_revision, upgrade_database

    config = _instance_config()
    engine = make_engine(config.database_url)
    try:
        before = current_revision(engine)
        upgrade_database(engine)
        after = current_revision(engine)
    except AlembicError as exc:
        # Typically a database migrated by a newer whistle than this one.
        raise CommandError(f"cannot upgrade the database: {exc}") from exc
    except SQLAlchemyError as exc:
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
        raise CommandError(f"upgrade failed, the database is unchanged: {first}") from exc
    finally:
        engine.dispose()
    if before == after:
        print(f"database schema is up to date (revision {after})")
    else:
        print(f"database schema upgraded from revision {before or '(empty)'} to {after}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Serve the drop with Werkzeug's built-in server (development and demos)."""
    from werkzeug.serving import run_simple

    from whistle import create_app

    # Like every command but init, demo and restore: the built-in server on a folder without an
    # instance would quietly start a new, empty one that nobody backs up (``whistle demo`` is the
    # zero-setup path). The app factory itself still creates a missing instance (gunicorn's first
    # start after 'whistle init' on a fresh PostgreSQL database, the tests).
    app = create_app(_instance_config())
    print(f"whistle is serving on http://{args.host}:{args.port}/  (Ctrl+C to stop)")
    run_simple(args.host, args.port, app, threaded=True, use_reloader=False)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Everything a newcomer needs on one machine: a demo key, the instance, the server."""
    config = _server_config()
    if not config.unit_key_path.exists():
        demo_key, demo_pass = DEMO_DIR / "unit.key", DEMO_DIR / "passphrase.txt"
        from whistle.core.files import atomic_write

        phrase = os.urandom(18).hex()
        keys = UnitKeyFile(UnitSecretKey.generate(), UnitSigningKey.generate())
        DEMO_DIR.mkdir(exist_ok=True, mode=0o700)
        atomic_write(demo_pass, (phrase + "\n").encode(), mode=0o600)
        atomic_write(demo_key, keys.to_encrypted_json(phrase).encode(), mode=0o600)
        config.key_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(config.unit_key_path, keys.secret_key.public_key.to_file_text().encode(),
                     mode=0o644)
        atomic_write(config.unit_sign_key_path,
                     keys.require_signing_key().verify_key.to_file_text().encode(), mode=0o644)
        print(f"demo unit key generated: public {config.unit_key_path} and "
              f"{config.unit_sign_key_path}, private {demo_key} (passphrase in {demo_pass}). "
              "A real unit keeps the private key offline.")
    cmd_init(args)
    return cmd_run(args)


def cmd_onion_client_key(args: argparse.Namespace) -> int:
    """A client authorisation keypair for the investigator onion service (tor's x25519 format)."""
    from whistle.server.onion import ClientAuthKey, OnionKeyError, check_client_name

    try:
        name = check_client_name(args.name)
        key = ClientAuthKey.generate()
        client_line = key.client_line(args.onion) if args.onion else None
    except OnionKeyError as exc:
        raise CommandError(str(exc)) from exc
    print(f"Server: this one line goes into {args.hs_dir.rstrip('/')}/authorized_clients/{name}.auth "
          "(then reload tor):")
    print(key.server_line())
    print("Investigator: the private key, for Tor Browser's prompt on the investigator onion "
          "(keep it secret; it is not stored anywhere):")
    print(key.private_key)
    if client_line:
        print(f"or, for a tor client's ClientOnionAuthDir, a file {name}.auth_private holding:")
        print(client_line)
    return 0
