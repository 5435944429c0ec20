# SPDX-License-Identifier: AGPL-3.0-or-later
"""The ``whistle`` command: argument parsing only.

Each command's body lives where it runs and is imported only when it runs: the workstation's
(``keygen``, ``fingerprint``, ``decrypt``, ``reply``) in :mod:`whistle.workstation.commands`,
which imports no Flask and needs no database; the server's (``init``, ``export``,
``add-investigator``, ``audit verify``, ``import-replies``, ``backup``, ``restore``, ``upgrade``,
``run``, ``demo``, ``onion-client-key``) in :mod:`whistle.server.commands`. Every failure
whistle raises is a :class:`whistle.core.errors.WhistleError`: one line on stderr, exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from whistle.core.errors import CommandError, WhistleError


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A command whose module is imported only when it runs (no cycle, nothing loaded needlessly)."""

    def run(args: argparse.Namespace) -> int:
        command: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
        return command(args)

    return run


def _server(name: str) -> Callable[[argparse.Namespace], int]:
    command = _lazy("whistle.server.commands", name)

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ModuleNotFoundError as exc:
            # A workstation install (docs/workstation.md) carries no server libraries on purpose:
            # say so in one line instead of a traceback. whistle's own modules missing is a bug.
            if (exc.name or "").partition(".")[0] in ("", "whistle"):
                raise
            raise CommandError(f"this is a server command and this install lacks {exc.name}: "
                               "a workstation install runs keygen, fingerprint, decrypt and reply only"
                               ) from exc

    return run


def _workstation(name: str) -> Callable[[argparse.Namespace], int]:
    return _lazy("whistle.workstation.commands", name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whistle", description="Anonymous encrypted whistleblower drop.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("keygen", help="(workstation) create the unit key and its signing key")
    p.add_argument("--dir", required=True,
                   help="folder for unit.pub, unit-sign.pub and the encrypted unit.key")
    p.add_argument("--passphrase-file", help="file holding the key passphrase")
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p.add_argument("--add-signing-key", action="store_true",
                   help="add a signing key to an existing unit.key made before replies were signed "
                        "(re-encrypts it under the same passphrase, writes unit-sign.pub)")
    p.set_defaults(func=_workstation("cmd_keygen"))

    p = sub.add_parser("fingerprint", help="show a public key's fingerprint")
    p.add_argument("--key", default="keys/unit.pub")
    p.set_defaults(func=_workstation("cmd_fingerprint"))

    p = sub.add_parser(
        "decrypt", help="(workstation) decrypt an export bundle",
        description="Decrypt an export bundle into one folder per report. An item that does not "
                    "open or check out is quarantined: listed on stderr and in OUT/QUARANTINE.txt "
                    "(report, item, reason), and every other item is written.",
        epilog="exit status: 0 everything written; 3 written except the quarantined parts listed; "
               "1 nothing written (unreadable bundle, wrong passphrase, no item opened, or "
               "--strict and any item failed)")
    p.add_argument("bundle")
    p.add_argument("--key", required=True, action="append",
                   help="an encrypted private key file (unit.key); repeat it for old and new keys "
                        "after a key rotation: each item opens with whichever key fits")
    p.add_argument("--out", required=True, help="folder to write one sub-folder per report into")
    p.add_argument("--passphrase-file", action="append",
                   help="file holding the key passphrase: once for all keys, or once per --key")
    p.add_argument("--strict", action="store_true",
                   help="all or nothing: refuse the whole bundle if any item fails (exit status 1, "
                        "nothing written) instead of quarantining it")
    p.add_argument("--lang", choices=("es", "en"), default="es",
                   help="language of report.txt and the message files (default: es, Spanish)")
    p.set_defaults(func=_workstation("cmd_decrypt"))

    p = sub.add_parser("init", help="(server) create the data folder, secrets and database")
    p.set_defaults(func=_server("cmd_init"))

    p = sub.add_parser("export", help="(server) write a bundle of encrypted items")
    p.add_argument("--out", required=True)
    p.add_argument("--all", action="store_true", help="include items exported before")
    p.set_defaults(func=_server("cmd_export"))

    p = sub.add_parser("reply", help="(workstation) seal a reply to a report's source")
    p.add_argument("bundle", help="a bundle holding the report itself (its key and case tag are "
                                  "read from inside it)")
    p.add_argument("--report", required=True, help="report id (or its first 8+ characters)")
    p.add_argument("--text-file", required=True, help="UTF-8 text of the reply")
    p.add_argument("--out", required=True, help="replies file to create or add to")
    p.add_argument("--key", required=True,
                   help="the unit's encrypted private key file (unit.key): its signing key signs the reply")
    p.add_argument("--passphrase-file", help="file holding the key passphrase")
    p.add_argument("--trust-server-key", action="store_true",
                   help="for a report filed before protocol v2 only (it holds no source key): seal "
                        "the reply to the key the bundle's manifest gives, which nothing can check")
    p.set_defaults(func=_workstation("cmd_reply"))

    from whistle.workstation.casebook.cli import add_parser as add_casebook

    add_casebook(sub, _lazy)

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
    p.set_defaults(func=_server("cmd_onion_client_key"))

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
    except WhistleError as exc:
        # Operators get one clear line, not a traceback.
        print(f"whistle: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
