# SPDX-License-Identifier: AGPL-3.0-or-later
"""``whistle casebook …``: import, serve, replies, export-case, publish, quarantine.

Only ``serve`` imports Flask (the web UI); the others need the standard library and PyNaCl, like
the rest of the workstation's commands. None imports anything of the server.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

from whistle.core.enums import Language
from whistle.core.errors import CommandError
from whistle.workstation.casebook.cli import CASEBOOK_ENV, LOOPBACK
from whistle.workstation.casebook.store import Casebook, CasebookError
from whistle.workstation.render import inert_line


def casebook_dir(args: argparse.Namespace) -> Path:
    """``--casebook``, else ``$WHISTLE_CASEBOOK``, else ``~/whistle-casebook``."""
    given = getattr(args, "casebook", None) or os.environ.get(CASEBOOK_ENV)
    return Path(given) if given else Path.home() / "whistle-casebook"


def _open(args: argparse.Namespace, *, create: bool = False) -> Casebook:
    try:
        return Casebook.open(casebook_dir(args), create=create)
    except CasebookError as exc:
        raise CommandError(str(exc)) from exc


def cmd_import(args: argparse.Namespace) -> int:
    """Import bundles into the casebook; exit status 3 when parts were quarantined (as decrypt)."""
    from whistle.workstation.casebook.importer import import_bundle
    from whistle.workstation.commands import DECRYPT_QUARANTINED, _progress_printer, load_keyring

    keys = load_keyring(args.key, args.passphrase_file)
    quarantined = 0
    with _open(args, create=True) as book:
        for bundle in args.bundle:
            try:
                summary = import_bundle(book, Path(bundle), keys, progress=_progress_printer())
            except CasebookError as exc:
                raise CommandError(f"import failed: {exc}") from exc
            print(f"{inert_line(bundle)}: {summary.items_added} new item(s) in "
                  f"{summary.cases_added} new case(s), {summary.attachments_added} attachment(s) "
                  f"({summary.blobs_added} new file(s)); {summary.items_skipped} item(s) already "
                  "in the casebook" + (f"; {summary.cases_updated} case(s) changed status or "
                                       "outcome on the server" if summary.cases_updated else ""))
            if len(keys) > 1:
                for path, key, count in zip(args.key, keys, summary.opened_by, strict=True):
                    print(f"  key {inert_line(path)} ({key.public_key.fingerprint()}) opened "
                          f"{count} item(s)")
            if summary.quarantined:
                quarantined += len(summary.quarantined)
                print(f"whistle: {len(summary.quarantined)} part(s) of {inert_line(bundle)} "
                      "quarantined, not imported (listed on the casebook's Quarantine page):",
                      file=sys.stderr)
                for entry in summary.quarantined:
                    print(f"  {entry.describe()}", file=sys.stderr)
        cases = book.count("cases")
    print(f"the casebook {inert_line(str(casebook_dir(args)))} holds {cases} case(s)")
    return DECRYPT_QUARANTINED if quarantined else 0


def check_loopback(host: str) -> str:
    """The address to listen on: 127.0.0.1 only; anything else is refused."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise CommandError(f"serve listens on {LOOPBACK} only, not {inert_line(host, 80)}") from exc
    if str(address) != LOOPBACK:
        raise CommandError(f"serve listens on {LOOPBACK} only, not {address}: the casebook holds "
                           "plaintext and must never be reachable from the network")
    return LOOPBACK


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the casebook's web UI on 127.0.0.1 and a free port; print the one-time link."""
    host = check_loopback(args.host)
    root = casebook_dir(args)
    _open(args).close()  # exists, permissions checked, schema current
    signing_key = None
    if args.key:
        from whistle.workstation.commands import load_signing_key

        signing_key = load_signing_key(args.key, args.passphrase_file)
    from werkzeug.serving import make_server

    from whistle.workstation.casebook.web import ServeState, create_app

    fields = _fields(args)
    _refresh_similar(root, fields)
    state = ServeState(root=root, host=host, port=0, token=secrets.token_urlsafe(32),
                       signing_key=signing_key, run_id=secrets.token_hex(16), fields=fields)
    app = create_app(state)
    # The charts and spikes: computed now, in the background, and again after every change.
    precompute = app.extensions["casebook_precompute"]
    precompute.watch()
    server = make_server(host, args.port, app, threaded=True)
    state.port = server.server_port
    print(f"casebook {inert_line(str(root))} at {state.origin}", flush=True)
    print(f"open this link once, in the workstation's browser: {state.login_url()}", flush=True)
    if signing_key is None:
        print("replies are off (no --key): start with --key to seal and sign them", flush=True)
    print("stop with Ctrl-C", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        precompute.stop(timeout=2)
    return 0


def _fields(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from whistle.workstation.casebook.answers import load_fields

    try:
        return load_fields(getattr(args, "questionnaire", None))
    except CasebookError as exc:
        raise CommandError(str(exc)) from exc


def _refresh_similar(root: Path, fields: object) -> None:
    """Bring the similar-reports index up to date before serving (the pages then never wait)."""
    from whistle.workstation.casebook import similar

    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("similar reports are off: scikit-learn is not installed (requirements-casebook.txt)",
              flush=True)
        return
    with Casebook.open(root, create=False) as book:
        if not similar.needs_refresh(book):
            return
        print("indexing the reports imported since the last run for similar reports …", flush=True)
        done = similar.refresh(book, fields, progress=_progress_bar())  # type: ignore[arg-type]
    print(f"similar reports: {done.added} report(s) indexed, {done.total} in all, {done.groups} "
          f"group(s), in {done.seconds:.1f} s", flush=True)


def _progress_bar() -> Callable[[int, int], None] | None:
    from whistle.workstation.commands import _progress_printer

    return _progress_printer()


def cmd_publish(args: argparse.Namespace) -> int:
    """Write the transparency file: suppressed monthly counts, no text, no day, no fine place."""
    from whistle.workstation.casebook import publish
    from whistle.workstation.casebook.store import today

    fields = _fields(args)
    with _open(args) as book:
        try:
            start, to = publish.period_of(args.period_from, args.period_to, today())
            document = publish.transparency(book, fields, start=start, to=to,
                                            threshold=args.threshold, today=today())
            size = publish.write(document, Path(args.out))
        except CasebookError as exc:
            raise CommandError(str(exc)) from exc
    rows = document["series"]
    hidden = sum(1 for r in rows if r.get("suppressed"))
    print(f"transparency file {inert_line(args.out)}: {start} to {to}, {len(rows)} figure(s), "
          f"{hidden} suppressed (below {args.threshold}), {size} bytes. Read it before carrying it "
          "to the server (Administration → Transparency).")
    return 0


def cmd_replies(args: argparse.Namespace) -> int:
    """Collect the replies written in the casebook into a replies file for ``import-replies``."""
    from whistle.workstation.casebook.replies import collect_replies

    with _open(args) as book:
        try:
            added = collect_replies(book, Path(args.out), again=bool(args.again))
        except CasebookError as exc:
            raise CommandError(str(exc)) from exc
    if not added:
        print("no reply waiting to be collected (add --again to write again those not yet on "
              "the server)")
        return 0
    print(f"{added} repl{'y' if added == 1 else 'ies'} written to {inert_line(args.out)}. Carry it "
          "to the server: whistle import-replies")
    return 0


def cmd_export_case(args: argparse.Namespace) -> int:
    """Export one case for the legal file: texts, originals, SHA-256 list, cleaned copies."""
    from whistle.workstation.casebook.export import export_case

    with _open(args) as book:
        try:
            summary = export_case(book, args.case, Path(args.out), lang=Language(args.lang),
                                  clean=not args.no_clean)
        except CasebookError as exc:
            raise CommandError(str(exc)) from exc
    print(f"case exported to {inert_line(str(summary.folder))}: {summary.files} file(s), "
          f"{summary.attachments} original attachment(s) listed in SHA256SUMS")
    if summary.warnings:
        print(f"{summary.warnings} attachment(s) carry identifying metadata: see METADATA.txt")
    if summary.mat2_missing:
        print("whistle: mat2 is not installed (apt install mat2): NO cleaned copies were made",
              file=sys.stderr)
    elif summary.attachments and not args.no_clean:
        print(f"{summary.cleaned} cleaned cop{'y' if summary.cleaned == 1 else 'ies'} in cleaned/ "
              "(made with mat2)")
        for name, reason in summary.not_cleaned:
            print(f"whistle: not cleaned: {inert_line(name)}: {inert_line(reason)}", file=sys.stderr)
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    """List what was quarantined on import."""
    with _open(args) as book:
        rows = book.quarantine()
    for row in rows:
        where = f"item {row['item_id']} (seq {row['seq']}, {row['kind']}) {row['part']}" \
            if row["item_id"] else ""
        print(inert_line(f"{row['imported_on']} {row['bundle']}: report {row['report_id']} {where}: "
                         f"{row['reason']}" + (" (imported later)" if row["resolved"] else "")))
    if not rows:
        print("nothing was quarantined")
    return 0
