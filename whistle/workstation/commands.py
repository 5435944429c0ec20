# SPDX-License-Identifier: AGPL-3.0-or-later
"""The workstation's commands: ``keygen``, ``fingerprint``, ``decrypt`` and ``reply``.

They run on the offline machine that holds the unit's private key, so they import the shared core
(whistle.core) and this package only: no Flask, no database, no server code
(tests/test_workstation_install.py checks it, docs/workstation.md says how to install just this).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path

from whistle.core.crypto import (
    KeyFormatError,
    MissingSigningKeyError,
    UnitKeyFile,
    UnitPublicKey,
    UnitSecretKey,
    UnitSigningKey,
    WrongPassphraseError,
)
from whistle.core.errors import CommandError

PASSPHRASE_ENV = "WHISTLE_KEY_PASSPHRASE"  # noqa: S105 - a variable name, not a secret


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


SIGN_PUB_NAME = "unit-sign.pub"


def cmd_keygen(args: argparse.Namespace) -> int:
    """Workstation: create the unit key and its signing key (or add a signing key to an old file)."""
    directory = Path(args.dir)
    pub, sign_pub, sec = directory / "unit.pub", directory / SIGN_PUB_NAME, directory / "unit.key"
    if args.add_signing_key:
        return _add_signing_key(args, sec, sign_pub)
    if (pub.exists() or sec.exists()) and not args.force:
        raise CommandError(f"{directory} already holds a unit key; use --force to replace it")
    phrase = read_key_passphrase(args.passphrase_file, confirm=True)
    if len(phrase) < 12:
        raise CommandError("choose a key passphrase of at least 12 characters")
    from whistle.core.files import atomic_write

    keys = UnitKeyFile(UnitSecretKey.generate(), UnitSigningKey.generate())
    signing = keys.require_signing_key()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(sec, keys.to_encrypted_json(phrase).encode("utf-8"), mode=0o600)
    atomic_write(pub, keys.secret_key.public_key.to_file_text().encode("ascii"), mode=0o644)
    atomic_write(sign_pub, signing.verify_key.to_file_text().encode("ascii"), mode=0o644)
    print(f"public key:  {pub}  (copy this one to the server's keys/ folder)")
    print(f"signing key: {sign_pub}  (copy this one to the server's keys/ folder too)")
    print(f"private key: {sec}  (stays on this workstation, encrypted under your passphrase; "
          "it holds both private keys)")
    print(f"fingerprint: {keys.secret_key.public_key.fingerprint()}")
    print(f"signing key fingerprint: {signing.verify_key.fingerprint()}")
    return 0


def _add_signing_key(args: argparse.Namespace, sec: Path, sign_pub: Path) -> int:
    """Re-encrypt a version-1 key file with a new signing key; write ``unit-sign.pub``."""
    from whistle.core.files import atomic_write

    phrase = read_key_passphrase(args.passphrase_file)
    try:
        keys = UnitKeyFile.load_encrypted(sec, phrase)
    except WrongPassphraseError as exc:
        raise CommandError(f"wrong passphrase for the private key {sec}") from exc
    except KeyFormatError as exc:
        raise CommandError(str(exc)) from exc
    if keys.signing_key is not None:
        raise CommandError(f"{sec} already holds a signing key ({keys.signing_key.verify_key.fingerprint()})")
    signing = UnitSigningKey.generate()
    atomic_write(sec, UnitKeyFile(keys.secret_key, signing).to_encrypted_json(phrase).encode("utf-8"),
                 mode=0o600)
    atomic_write(sign_pub, signing.verify_key.to_file_text().encode("ascii"), mode=0o644)
    print(f"signing key added to {sec} (same passphrase); public half in {sign_pub}: copy it to "
          "the server's keys/ folder")
    print(f"signing key fingerprint: {signing.verify_key.fingerprint()}")
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    """The fingerprint of a public key file; for ``unit.pub``, the signing key's beside it too."""
    path = Path(args.key)
    print(UnitPublicKey.load(path).fingerprint())
    sign_pub = path.with_name(SIGN_PUB_NAME)
    if path.name != SIGN_PUB_NAME and sign_pub.exists():
        from whistle.core.crypto import UnitVerifyKey

        print(f"signing key ({sign_pub}): {UnitVerifyKey.load(sign_pub).fingerprint()}")
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


# Exit statuses of ``whistle decrypt`` (docs/workstation.md, and ``whistle decrypt --help``):
# 0 everything written, 1 nothing written (cli.main's status for any WhistleError), 3 written
# except the parts listed as quarantined.
DECRYPT_QUARANTINED = 3


def cmd_decrypt(args: argparse.Namespace) -> int:
    """Workstation: decrypt a bundle with one unit key, or several after a key rotation.

    Items that fail are quarantined (listed on stderr and in QUARANTINE.txt, exit status 3) and the
    rest written; ``--strict`` refuses the whole bundle instead (exit status 1, nothing written).
    """
    from whistle.core.enums import Language
    from whistle.workstation.decrypt import BundleDecryptError, decrypt_bundle
    from whistle.workstation.render import inert_line

    keys = load_keyring(args.key, args.passphrase_file)
    out = inert_line(args.out)
    try:
        summary = decrypt_bundle(Path(args.bundle), keys, Path(args.out), progress=_progress_printer(),
                                 strict=bool(args.strict), lang=Language(args.lang))
    except BundleDecryptError as exc:
        raise CommandError(f"decryption failed, nothing written: {inert_line(str(exc))}") from exc
    print(f"decrypted {summary.items} item(s) and {summary.attachments} attachment(s) into "
          f"{len(summary.report_dirs)} report folder(s) under {out}")
    for folder in summary.report_dirs:
        print(f"  {inert_line(str(folder))}")
    if len(keys) > 1:
        # Tells the unit when an old key is no longer needed for new bundles (docs/deploy.md).
        for path, key, count in zip(args.key, keys, summary.opened_by, strict=True):
            print(f"key {inert_line(path)} ({key.public_key.fingerprint()}) opened {count} item(s)")
    if not summary.quarantined:
        return 0
    # stderr, and each line made inert (Quarantined.describe): reasons quote what a source sent.
    print(f"whistle: {len(summary.quarantined)} part(s) quarantined, not written (listed in "
          f"{inert_line(str(summary.quarantine_file))}; the bytes stay in the bundle):", file=sys.stderr)
    for entry in summary.quarantined:
        print(f"  {entry.describe()}", file=sys.stderr)
    return DECRYPT_QUARANTINED


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


def load_unit_keys(key_file: str, passphrase_file: str | None) -> tuple[UnitSecretKey, UnitSigningKey]:
    """Open the unit's key file for both its keys: the unit key (to open the report a reply
    answers) and the signing key; one line telling how to add a signing key if absent."""
    phrase = read_key_passphrase(passphrase_file)
    try:
        keys = UnitKeyFile.load_encrypted(Path(key_file), phrase)
        return keys.secret_key, keys.require_signing_key()
    except WrongPassphraseError as exc:
        raise CommandError(f"wrong passphrase for the private key {key_file}") from exc
    except MissingSigningKeyError as exc:
        folder = Path(key_file).parent
        raise CommandError(
            f"{key_file} has no signing key (made before replies were signed): run 'whistle keygen "
            f"--add-signing-key --dir {folder}', then copy {folder / SIGN_PUB_NAME} to the server's "
            "keys/ folder") from exc


def load_signing_key(key_file: str, passphrase_file: str | None) -> UnitSigningKey:
    """Open the unit's key file for its signing key; one line telling how to add one if absent."""
    return load_unit_keys(key_file, passphrase_file)[1]


def cmd_reply(args: argparse.Namespace) -> int:
    """Workstation: seal a reply to a report's source and sign it.

    The reply is sealed to the source key found **inside** the decrypted report (its seq-1 item,
    which must be in the bundle), with the report's case tag and the reply's number in the case
    (the manifest's count of replies the server holds, plus those for the report already in
    ``--out``, plus 1). A report filed before protocol v2 holds no key: only with
    ``--trust-server-key`` is the reply sealed to the manifest's key (a version-2 reply, with a
    warning). A manifest key that differs from the sealed one is refused: the server's copy was
    changed.
    """
    from whistle.core.bundle import BundleError, BundleReader
    from whistle.core.crypto import CryptoError, b64decode, open_envelope
    from whistle.core.enums import ItemKind
    from whistle.core.replies import RepliesError, append_reply, read_replies_file, seal_reply
    from whistle.workstation.render import inert_line

    try:
        text = Path(args.text_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read the reply text: {exc}") from exc
    with BundleReader(Path(args.bundle)) as bundle:
        matches = [r for r in bundle.reports if r.id == args.report or
                   (len(args.report) >= 8 and r.id.startswith(args.report))]
        if len(matches) != 1:
            raise CommandError(f"report {inert_line(args.report, 80)!r} is "
                               f"{'ambiguous' if matches else 'not'} in this bundle")
        report = matches[0]
        firsts = [i for i in report.items if i.kind == ItemKind.REPORT]
        if not firsts:
            raise CommandError(
                f"the report itself (item 1) of report {report.id} is not in this bundle, only later "
                "messages: the reply is sealed to the key inside it. Export again with "
                "'whistle export --all' and reply from that bundle")
        try:
            sealed = bundle.read_small(firsts[0].envelope)
        except BundleError as exc:
            raise CommandError(f"report {report.id}: {inert_line(str(exc))}") from exc
    # The key is opened only once the report is known, so a typo costs no argon2 derivation.
    secret_key, signing_key = load_unit_keys(args.key, args.passphrase_file)
    try:
        envelope = open_envelope(sealed, secret_key)
    except CryptoError as exc:
        raise CommandError(f"the report item of report {report.id} does not open with this key: "
                           f"{inert_line(str(exc))}") from exc
    if envelope.kind != ItemKind.REPORT:
        raise CommandError(f"the report item of report {report.id} holds a {envelope.kind!r}")
    try:
        manifest_key: bytes | None = b64decode(report.source_public_key, size=32)
    except CryptoError:
        manifest_key = None
    out = Path(args.out)
    binding = envelope.binding
    try:
        if binding is None:
            if not args.trust_server_key or manifest_key is None:
                raise CommandError(
                    f"report {report.id} was filed before protocol v2: it holds no source key, only "
                    "the server's manifest names one, and nothing here can check it. To seal the "
                    "reply to that key anyway, run again with --trust-server-key")
            print(f"whistle: warning: report {report.id} was filed before protocol v2; the reply is "
                  "sealed to the source key the server's manifest gives (a compromised server could "
                  "have changed it)", file=sys.stderr)
            reply = seal_reply(text, report.id, UnitPublicKey(manifest_key), signing_key)
        else:
            if manifest_key != binding.source_public_key:
                raise CommandError(
                    f"the bundle's manifest gives report {report.id} another source key than the one "
                    "sealed in the report: the server's copy was changed (the server would refuse "
                    "this reply, or pass it to someone else). No reply written")
            existing = read_replies_file(out) if out.exists() else []
            seq = report.replies + sum(1 for r in existing if r.report_id == report.id) + 1
            reply = seal_reply(text, report.id, UnitPublicKey(binding.source_public_key), signing_key,
                               case_tag=binding.case_tag, seq=seq)
        count = append_reply(out, reply)
    except (RepliesError, OSError) as exc:
        raise CommandError(inert_line(str(exc))) from exc
    print(f"reply to report {report.id} sealed to its source and signed; {args.out} now holds {count} "
          "repl" + ("y" if count == 1 else "ies") + ". Carry it to the server: whistle import-replies")
    return 0
