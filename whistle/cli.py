# SPDX-License-Identifier: AGPL-3.0-or-later
"""The ``whistle`` command.

Workstation commands (``keygen``, ``fingerprint``, ``decrypt``) import no Flask and need no
database; server commands (``init``, ``export``, ``add-investigator``, ``audit verify``, ``run``,
``demo``) import what they need lazily. Every failure is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .bundle import BundleError
from .config import Config, ConfigError, load_config
from .crypto import CryptoError, UnitPublicKey, UnitSecretKey, WrongPassphraseError
from .instance import InstanceError
from .storage import StorageError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

PASSPHRASE_ENV = "WHISTLE_KEY_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
DEMO_DIR = Path("demo-workstation")


class CommandError(Exception):
    """A command cannot proceed; the message is shown as one line."""


def read_key_passphrase(path: str | None, *, confirm: bool = False) -> str:
    """From ``--passphrase-file``, else ``$WHISTLE_KEY_PASSPHRASE``, else the terminal."""
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read passphrase file: {exc}") from exc
        phrase = text.rstrip("\r\n")
    elif os.environ.get(PASSPHRASE_ENV):
        phrase = os.environ[PASSPHRASE_ENV]
    elif sys.stdin.isatty():
        phrase = getpass.getpass("Key passphrase: ")
        if confirm and getpass.getpass("Repeat passphrase: ") != phrase:
            raise CommandError("the passphrases do not match")
    else:
        raise CommandError(f"no key passphrase: use --passphrase-file or set {PASSPHRASE_ENV}")
    if not phrase:
        raise CommandError("the key passphrase is empty")
    return phrase


def cmd_keygen(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    pub, sec = directory / "unit.pub", directory / "unit.key"
    if (pub.exists() or sec.exists()) and not args.force:
        raise CommandError(f"{directory} already holds a unit key; use --force to replace it")
    phrase = read_key_passphrase(args.passphrase_file, confirm=True)
    if len(phrase) < 12:
        raise CommandError("choose a key passphrase of at least 12 characters")
    from .storage import atomic_write

    key = UnitSecretKey.generate()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(sec, key.to_encrypted_json(phrase).encode("utf-8"), mode=0o600)
    atomic_write(pub, key.public_key.to_file_text().encode("ascii"), mode=0o644)
    print(f"public key:  {pub}  (copy this one to the server's keys/ folder)")
    print(f"private key: {sec}  (stays on this workstation, encrypted under your passphrase)")
    print(f"fingerprint: {key.public_key.fingerprint()}")
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    print(UnitPublicKey.load(Path(args.key)).fingerprint())
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    from .workstation import DecryptError, decrypt_bundle

    phrase = read_key_passphrase(args.passphrase_file)
    try:
        key = UnitSecretKey.load_encrypted(Path(args.key), phrase)
    except WrongPassphraseError as exc:
        raise CommandError("wrong passphrase for the private key") from exc
    try:
        summary = decrypt_bundle(Path(args.bundle), key, Path(args.out), progress=_progress_printer())
    except DecryptError as exc:
        raise CommandError(f"decryption failed, nothing written: {exc}") from exc
    print(f"decrypted {summary.items} item(s) and {summary.attachments} attachment(s) into "
          f"{len(summary.report_dirs)} report folder(s) under {args.out}")
    for folder in summary.report_dirs:
        print(f"  {folder}")
    return 0


def _progress_printer() -> Callable[[int, int], None] | None:
    if not sys.stderr.isatty():
        return None
    last = [-1]

    def show(done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        if pct != last[0]:
            last[0] = pct
            bar = "#" * (pct // 4)
            end = "\n" if done >= total else ""
            print(f"\r[{bar:<25}] {pct:3d}%  {done / 1e6:.1f}/{total / 1e6:.1f} MB", end=end,
                  file=sys.stderr, flush=True)

    return show


def _server_config() -> Config:
    return load_config(os.environ)


def cmd_init(args: argparse.Namespace) -> int:
    from .instance import init_instance

    config = _server_config()
    init_instance(config)
    print(f"instance ready in {config.data_dir}")
    if not config.unit_key_path.exists():
        print(f"note: no unit public key yet at {config.unit_key_path}; run 'whistle keygen' "
              "on the workstation and copy unit.pub here")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_bundle
    from .instance import check_key_folder

    unit_key = check_key_folder(_server_config())
    summary = export_bundle(_server_sessions(), Path(args.out),
                            unit_fingerprint=unit_key.fingerprint(), include_all=args.all)
    print(f"exported {summary.items} item(s) of {summary.reports} report(s) to {summary.path}")
    return 0


def _server_sessions() -> sessionmaker[Session]:
    from .db import make_sessionmaker
    from .instance import init_instance

    _, engine = init_instance(_server_config())
    return make_sessionmaker(engine)


def cmd_add_investigator(args: argparse.Namespace) -> int:
    from .accounts import AccountError, create_investigator, totp_qr_terminal
    from .audit import ACCOUNT_CREATE, CLI_ACTOR, record

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
    from .audit import verify

    with _server_sessions()() as db:
        report = verify(db, expect_head=args.expect_head)
    if report.ok:
        print(f"ok: {report.count} entries, head {report.head}")
        return 0
    # stderr, so a cron job that mails its errors reports a broken log.
    print(f"audit log broken at entry {report.first_bad_seq}: {report.reason}", file=sys.stderr)
    return 1


def cmd_reply(args: argparse.Namespace) -> int:
    """Workstation: seal a reply to a report's source, from the bundle's manifest."""
    from .bundle import BundleReader
    from .replies import RepliesError, SealedReply, append_reply, seal_reply

    try:
        text = Path(args.text_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read the reply text: {exc}") from exc
    with BundleReader(Path(args.bundle)) as bundle:
        matches = [r for r in bundle.reports if r.id == args.report or
                   (len(args.report) >= 8 and r.id.startswith(args.report))]
    if len(matches) != 1:
        raise CommandError(f"report {args.report!r} is {'ambiguous' if matches else 'not'} in this bundle")
    report = matches[0]
    recipient = UnitPublicKey.from_base64(report.source_public_key)
    try:
        count = append_reply(Path(args.out), SealedReply(report.id, recipient.encode(),
                                                         seal_reply(text, recipient)))
    except RepliesError as exc:
        raise CommandError(str(exc)) from exc
    print(f"reply to report {report.id} sealed to its source; {args.out} now holds {count} "
          "repl" + ("y" if count == 1 else "ies") + ". Carry it to the server: whistle import-replies")
    return 0


def cmd_import_replies(args: argparse.Namespace) -> int:
    """Server: store the replies of a replies file, all of them or none."""
    from .audit import CLI_ACTOR
    from .cases import import_replies
    from .replies import MAX_REPLIES_FILE_BYTES, RepliesError, parse_replies

    path = Path(args.replies)
    try:
        if path.stat().st_size > MAX_REPLIES_FILE_BYTES:
            raise CommandError("replies file is too large")
        replies = parse_replies(path.read_bytes())
        with _server_sessions().begin() as db:
            count = import_replies(db, replies, CLI_ACTOR)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc}") from exc
    except RepliesError as exc:
        raise CommandError(f"replies refused, nothing imported: {exc}") from exc
    print(f"imported {count} repl{'y' if count == 1 else 'ies'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from werkzeug.serving import run_simple

    from . import create_app

    app = create_app()
    print(f"whistle is serving on http://{args.host}:{args.port}/  (Ctrl+C to stop)")
    run_simple(args.host, args.port, app, threaded=True, use_reloader=False)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Everything a newcomer needs on one machine: a demo key, the instance, the server."""
    config = _server_config()
    if not config.unit_key_path.exists():
        demo_key, demo_pass = DEMO_DIR / "unit.key", DEMO_DIR / "passphrase.txt"
        from .storage import atomic_write

        phrase = os.urandom(18).hex()
        key = UnitSecretKey.generate()
        DEMO_DIR.mkdir(exist_ok=True, mode=0o700)
        atomic_write(demo_pass, (phrase + "\n").encode(), mode=0o600)
        atomic_write(demo_key, key.to_encrypted_json(phrase).encode(), mode=0o600)
        atomic_write(config.unit_key_path, key.public_key.to_file_text().encode(), mode=0o644)
        print(f"demo unit key generated: public {config.unit_key_path}, private {demo_key} "
              f"(passphrase in {demo_pass}). A real unit keeps the private key offline.")
    cmd_init(args)
    return cmd_run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whistle", description="Anonymous encrypted whistleblower drop.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("keygen", help="(workstation) create the unit keypair")
    p.add_argument("--dir", required=True, help="folder for unit.pub and the encrypted unit.key")
    p.add_argument("--passphrase-file", help="file holding the key passphrase")
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("fingerprint", help="show a public key's fingerprint")
    p.add_argument("--key", default="keys/unit.pub")
    p.set_defaults(func=cmd_fingerprint)

    p = sub.add_parser("decrypt", help="(workstation) decrypt an export bundle")
    p.add_argument("bundle")
    p.add_argument("--key", required=True, help="the encrypted private key file (unit.key)")
    p.add_argument("--out", required=True, help="folder to write one sub-folder per report into")
    p.add_argument("--passphrase-file", help="file holding the key passphrase")
    p.set_defaults(func=cmd_decrypt)

    p = sub.add_parser("init", help="(server) create the data folder, secrets and database")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("export", help="(server) write a bundle of encrypted items")
    p.add_argument("--out", required=True)
    p.add_argument("--all", action="store_true", help="include items exported before")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("reply", help="(workstation) seal a reply to a report's source")
    p.add_argument("bundle", help="a bundle holding the report (for its source's public key)")
    p.add_argument("--report", required=True, help="report id (or its first 8+ characters)")
    p.add_argument("--text-file", required=True, help="UTF-8 text of the reply")
    p.add_argument("--out", required=True, help="replies file to create or add to")
    p.set_defaults(func=cmd_reply)

    p = sub.add_parser("import-replies", help="(server) import a replies file from the workstation")
    p.add_argument("replies")
    p.set_defaults(func=cmd_import_replies)

    p = sub.add_parser("add-investigator", help="(server) create an investigator account")
    p.add_argument("name", help="1-64 characters: a-z, 0-9, dot, dash, underscore")
    p.add_argument("--admin", action="store_true", help="may manage accounts in the web UI")
    p.set_defaults(func=cmd_add_investigator)

    p = sub.add_parser("audit", help="(server) the investigators' audit log")
    audit_sub = p.add_subparsers(dest="audit_command", required=True)
    p = audit_sub.add_parser("verify", help="check the hash chain; print the head to record")
    p.add_argument("--expect-head", metavar="HASH",
                   help="a head printed earlier: detects entries removed from the end")
    p.set_defaults(func=cmd_audit_verify)

    for name, func, text in (("run", cmd_run, "(server) serve the drop with the built-in server"),
                             ("demo", cmd_demo, "set up a demo instance and serve it")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=5000)
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CommandError, CryptoError, ConfigError, InstanceError, BundleError, StorageError) as exc:
        # Operators get one clear line, not a traceback.
        print(f"whistle: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
