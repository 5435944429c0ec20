# SPDX-License-Identifier: AGPL-3.0-or-later
"""The ``whistle`` command: argument parsing, and the commands that need no server.

Workstation commands (``keygen``, ``fingerprint``, ``decrypt``, ``reply``) and
``onion-client-key`` import no Flask and need no database. The server's commands (``init``,
``export``, ``add-investigator``, ``audit verify``, ``import-replies``, ``backup``, ``restore``,
``upgrade``, ``run``, ``demo``) live in :mod:`whistle.cli_server`, imported only when one runs.
Every failure is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .bundle import BundleError
from .config import ConfigError
from .crypto import CryptoError, UnitPublicKey, UnitSecretKey, WrongPassphraseError
from .instance import InstanceError
from .storage import StorageError

PASSPHRASE_ENV = "WHISTLE_KEY_PASSPHRASE"  # noqa: S105 - a variable name, not a secret


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


def load_keyring(key_files: list[str], passphrase_files: list[str] | None) -> list[UnitSecretKey]:
    """Open the private keys given with ``--key``: one passphrase for all of them (one
    ``--passphrase-file``, ``$WHISTLE_KEY_PASSPHRASE`` or the terminal), or one
    ``--passphrase-file`` per ``--key``, in the same order."""
    files = passphrase_files or []
    if len(files) > 1 and len(files) != len(key_files):
        raise CommandError("give one --passphrase-file for all keys, or one per --key in the same order")
    shared = None if len(files) > 1 else read_key_passphrase(files[0] if files else None)
    keys = []
    for index, path in enumerate(key_files):
        phrase = shared if shared is not None else read_key_passphrase(files[index])
        try:
            keys.append(UnitSecretKey.load_encrypted(Path(path), phrase))
        except WrongPassphraseError as exc:
            which = f" {path}" if len(key_files) > 1 else ""
            raise CommandError(f"wrong passphrase for the private key{which}") from exc
    return keys


def cmd_decrypt(args: argparse.Namespace) -> int:
    """Workstation: decrypt a bundle with one unit key, or several after a key rotation."""
    from .workstation import DecryptError, decrypt_bundle

    keys = load_keyring(args.key, args.passphrase_file)
    try:
        summary = decrypt_bundle(Path(args.bundle), keys, Path(args.out), progress=_progress_printer())
    except DecryptError as exc:
        raise CommandError(f"decryption failed, nothing written: {exc}") from exc
    print(f"decrypted {summary.items} item(s) and {summary.attachments} attachment(s) into "
          f"{len(summary.report_dirs)} report folder(s) under {args.out}")
    for folder in summary.report_dirs:
        print(f"  {folder}")
    if len(keys) > 1:
        # Tells the unit when an old key is no longer needed for new bundles (docs/deploy.md).
        for path, key, count in zip(args.key, keys, summary.opened_by, strict=True):
            print(f"key {path} ({key.public_key.fingerprint()}) opened {count} item(s)")
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


def cmd_onion_client_key(args: argparse.Namespace) -> int:
    """A client authorisation keypair for the investigator onion service (tor's x25519 format)."""
    from .onion import ClientAuthKey, OnionKeyError, check_client_name

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


def _server(name: str) -> Callable[[argparse.Namespace], int]:
    """A server command, imported from whistle.cli_server only when it runs."""

    def run(args: argparse.Namespace) -> int:
        from . import cli_server

        command: Callable[[argparse.Namespace], int] = getattr(cli_server, name)
        return command(args)

    return run


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
    p.add_argument("--key", required=True, action="append",
                   help="an encrypted private key file (unit.key); repeat it for old and new keys "
                        "after a key rotation: each item opens with whichever key fits")
    p.add_argument("--out", required=True, help="folder to write one sub-folder per report into")
    p.add_argument("--passphrase-file", action="append",
                   help="file holding the key passphrase: once for all keys, or once per --key")
    p.set_defaults(func=cmd_decrypt)

    p = sub.add_parser("init", help="(server) create the data folder, secrets and database")
    p.set_defaults(func=_server("cmd_init"))

    p = sub.add_parser("export", help="(server) write a bundle of encrypted items")
    p.add_argument("--out", required=True)
    p.add_argument("--all", action="store_true", help="include items exported before")
    p.set_defaults(func=_server("cmd_export"))

    p = sub.add_parser("reply", help="(workstation) seal a reply to a report's source")
    p.add_argument("bundle", help="a bundle holding the report (for its source's public key)")
    p.add_argument("--report", required=True, help="report id (or its first 8+ characters)")
    p.add_argument("--text-file", required=True, help="UTF-8 text of the reply")
    p.add_argument("--out", required=True, help="replies file to create or add to")
    p.set_defaults(func=cmd_reply)

    p = sub.add_parser("import-replies", help="(server) import a replies file from the workstation")
    p.add_argument("replies")
    p.set_defaults(func=_server("cmd_import_replies"))

    p = sub.add_parser("add-investigator", help="(server) create an investigator account")
    p.add_argument("name", help="1-64 characters: a-z, 0-9, dot, dash, underscore")
    p.add_argument("--admin", action="store_true", help="may manage accounts in the web UI")
    p.set_defaults(func=_server("cmd_add_investigator"))

    p = sub.add_parser("audit", help="(server) the investigators' audit log")
    audit_sub = p.add_subparsers(dest="audit_command", required=True)
    p = audit_sub.add_parser("verify", help="check the hash chain; print the head to record")
    p.add_argument("--expect-head", metavar="HASH",
                   help="a head printed earlier: detects entries removed from the end")
    p.set_defaults(func=_server("cmd_audit_verify"))

    p = sub.add_parser("backup", help="(server) back up the database and instance secrets, "
                                      "proven by a test restore")
    p.add_argument("--out", required=True, help="the backup file to write (a zip)")
    p.set_defaults(func=_server("cmd_backup"))

    p = sub.add_parser("restore", help="(server) restore a backup into an empty database")
    p.add_argument("backup")
    p.add_argument("--force", action="store_true", help="replace a database that holds data")
    p.set_defaults(func=_server("cmd_restore"))

    p = sub.add_parser("upgrade", help="(server) bring the database schema up to this version")
    p.set_defaults(func=_server("cmd_upgrade"))

    p = sub.add_parser("onion-client-key",
                       help="a client authorisation key for the investigator onion service")
    p.add_argument("--name", default="investigator", help="who it is for (names the .auth file)")
    p.add_argument("--onion", help="the investigator onion address, to also print a tor client's "
                                   "auth_private line")
    p.add_argument("--hs-dir", default="/var/lib/tor/whistle-investigator",
                   help="the investigator onion's HiddenServiceDir (for the printed path)")
    p.set_defaults(func=cmd_onion_client_key)

    for name, func, text in (("run", "cmd_run", "(server) serve the drop with the built-in server"),
                             ("demo", "cmd_demo", "set up a demo instance and serve it")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=5000)
        p.set_defaults(func=_server(func))
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
