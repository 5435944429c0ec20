# SPDX-License-Identifier: AGPL-3.0-or-later
"""The arguments of ``whistle casebook …`` (argparse only: whistle.cli adds them to every
``whistle`` run, so this module imports nothing else)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

CASEBOOK_ENV = "WHISTLE_CASEBOOK"
LOOPBACK = "127.0.0.1"


def add_parser(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
               lazy: Callable[[str, str], Callable[[argparse.Namespace], int]]) -> None:
    """The ``casebook`` command and its subcommands; ``lazy(module, name)`` is whistle.cli's
    factory of commands imported only when they run."""

    def run(name: str) -> Callable[[argparse.Namespace], int]:
        return lazy("whistle.workstation.casebook.commands", name)

    p = sub.add_parser("casebook", help="(workstation) the offline casebook: import, serve, "
                                        "replies, export-case, publish")
    cb = p.add_subparsers(dest="casebook_command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--casebook", help=f"the casebook folder (default ${CASEBOOK_ENV}, else "
                                          "~/whistle-casebook)")

    q = cb.add_parser("import", help="import bundles into the casebook",
                      epilog="exit status: 0 everything imported; 3 imported except the parts "
                             "listed as quarantined; 1 nothing imported")
    q.add_argument("bundle", nargs="+")
    q.add_argument("--key", required=True, action="append",
                   help="an encrypted private key file (unit.key); repeat it after a key rotation")
    q.add_argument("--passphrase-file", action="append",
                   help="file holding the key passphrase: once for all keys, or once per --key")
    common(q)
    q.set_defaults(func=run("cmd_import"))

    def questionnaire(q: argparse.ArgumentParser) -> None:
        q.add_argument("--questionnaire", metavar="FILE",
                       help="the deployment's questionnaire (default: the one shipped with whistle): "
                            "which answers are places and the month")

    q = cb.add_parser("serve", help="the casebook's web UI on 127.0.0.1 (one-time link)")
    questionnaire(q)
    q.add_argument("--key", help="unit.key: its signing key signs the replies written in the UI "
                                 "(without it replies are off)")
    q.add_argument("--passphrase-file", help="file holding the key passphrase")
    q.add_argument("--host", default=LOOPBACK, help="must be 127.0.0.1 (anything else is refused)")
    q.add_argument("--port", type=int, default=0, help="default: a free port")
    common(q)
    q.set_defaults(func=run("cmd_serve"))

    q = cb.add_parser("replies", help="collect the replies written in the casebook into a "
                                      "replies file (for whistle import-replies)")
    q.add_argument("--out", required=True, help="replies file to create or add to")
    q.add_argument("--again", action="store_true",
                   help="also write replies collected before that are not yet on the server")
    common(q)
    q.set_defaults(func=run("cmd_replies"))

    q = cb.add_parser("export-case", help="export one case for the legal file")
    q.add_argument("case", help="case id (or its first 8+ characters)")
    q.add_argument("--out", required=True, help="folder to write case-<id>/ into")
    q.add_argument("--lang", choices=("es", "en"), default="es")
    q.add_argument("--no-clean", action="store_true", help="make no cleaned copies")
    common(q)
    q.set_defaults(func=run("cmd_export_case"))

    q = cb.add_parser("publish", help="write the transparency file (suppressed counts only) for "
                                      "the public /transparencia page")
    q.add_argument("--out", required=True, help="the file to write (JSON)")
    q.add_argument("--threshold", type=int, default=5,
                   help="counts below this are suppressed (3 to 1000; default 5)")
    q.add_argument("--from", dest="period_from", metavar="YYYY-MM",
                   help="first month (default: 12 months before --to)")
    q.add_argument("--to", dest="period_to", metavar="YYYY-MM",
                   help="last month (default: the last complete month)")
    questionnaire(q)
    common(q)
    q.set_defaults(func=run("cmd_publish"))

    q = cb.add_parser("quarantine", help="list what was quarantined on import")
    common(q)
    q.set_defaults(func=run("cmd_quarantine"))
