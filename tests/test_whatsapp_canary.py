# SPDX-License-Identifier: AGPL-3.0-or-later
"""The canary test of the WhatsApp channel: the bridge runs as deployed (gunicorn with
deploy/gunicorn-whatsapp.conf.py, whistle's worker, its own temporary folder and log files),
Meta's webhooks arrive signed over loopback, the Graph API is the stand-in. The phone number, the
profile name, WhatsApp's message ids (they embed the number), every text, caption, file name and
file content, the answers, the passphrase and the keys derived from it must appear in no byte
the bridge wrote: data folder (database, WAL, secrets), temporary folder, logs — and with the
real backends PostgreSQL's files and every Redis value — neither halfway through the
conversation (everything sealed, waiting for the confirmation) nor after filing. The export is
decrypted at the end, so the test fails if the canaries never went in.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    REPO,
    Workstation,
    b64,
    find_needles,
    free_port,
    report_folders,
    stop_process,
    written_files,
)
from whatsapp_standin import (
    VERIFY_TOKEN,
    GraphStandIn,
    media,
    sign,
    start_standin,
    text,
    webhook,
    whatsapp_environ,
)

from whistle.core.passphrase import derive
from whistle.server.config import Config, load_config
from whistle.server.db import make_engine, make_sessionmaker
from whistle.server.export import export_bundle
from whistle.server.instance import load_or_create_secrets
from whistle.workstation.decrypt import decrypt_bundle

CONF = REPO / "deploy" / "gunicorn-whatsapp.conf.py"


@pytest.fixture
def standin() -> Iterator[GraphStandIn]:
    s = start_standin()
    yield s
    s.close()


class Bridge:
    def __init__(self, url: str, standin: GraphStandIn) -> None:
        self.url, self.standin = url, standin

    def deliver(self, *messages: dict[str, object], name: str = "Source") -> None:
        body = webhook(*messages, name=name)
        req = urllib.request.Request(self.url + "/whatsapp/webhook", data=body,  # noqa: S310
                                     headers={"X-Hub-Signature-256": sign(body),
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
            assert resp.status == 200

    def say(self, number: str, *messages: dict[str, object], answers: int = 1, name: str = "Source") -> None:
        """Deliver and wait until the bridge has sent ``answers`` more texts to ``number``."""
        before = len(self.standin.texts_to(number))
        self.deliver(*messages, name=name)
        deadline = time.monotonic() + 30
        while len(self.standin.texts_to(number)) < before + answers:
            assert time.monotonic() < deadline, self.standin.texts_to(number)
            time.sleep(0.02)


@pytest.mark.slow
def test_whatsapp_canary_nothing_at_rest(environ: dict[str, str], tmp_path: Path,
                                         standin: GraphStandIn, workstation: Workstation) -> None:
    tag = secrets.token_hex(5)
    number = "5939" + str(int(tag, 16))[:8].rjust(8, "7")
    name = f"CANARY-NAME-{tag}"
    env = environ | whatsapp_environ(standin)
    config: Config = load_config(env, cwd=tmp_path)
    load_or_create_secrets(config, time_cost=1, memory_cost_kib=8)
    port = free_port()
    server_tmp = tmp_path / "server-tmp"
    server_tmp.mkdir()
    logs = [tmp_path / "bridge.out", tmp_path / "bridge.err"]
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith(("WHISTLE_", "GUNICORN_"))}
    proc_env.update(env, WHISTLE_BIND=f"127.0.0.1:{port}", TMPDIR=str(server_tmp), PYTHONUNBUFFERED="1")
    with logs[0].open("wb") as out, logs[1].open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(CONF), "wsgi:app"],
                                env=proc_env, stdout=out, stderr=err, cwd=REPO, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/whatsapp/webhook?hub.mode=subscribe&"  # noqa: S310
                                       f"hub.verify_token={VERIFY_TOKEN}&hub.challenge=1", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None and time.monotonic() < deadline, logs[1].read_text()
                time.sleep(0.1)
        bridge = Bridge(url, standin)
        account = f"CANARY-ACCOUNT-{tag} no me entregaron nada"
        later = f"CANARY-LATER-{tag}"
        caption = f"CANARY-CAPTION-{tag}"
        facility = f"CANARY-FACILITY-{tag}"
        doc_name = f"CANARY-DOC-{tag}.pdf"
        photo = f"CANARY-PHOTO-{tag}".encode() * 20_000
        document = f"CANARY-PDF-{tag}".encode() * 5_000
        ids: list[str] = []

        def msg(m: dict[str, object]) -> dict[str, object]:
            ids.append(str(m["id"]))
            return m

        bridge.say(number, msg(text(number, "hola")), answers=2, name=name)
        bridge.say(number, msg(text(number, "2")), name=name)
        for answer in ("19", facility, "2025-03", "0"):
            bridge.say(number, msg(text(number, answer)), name=name)
        bridge.deliver(msg(text(number, account)), name=name)
        bridge.say(number, msg(media(number, "image", standin.add_media(photo, "image/jpeg"),
                                     "image/jpeg", caption=caption)), name=name)
        bridge.say(number, msg(media(number, "document", standin.add_media(document, "application/pdf"),
                                     "application/pdf", filename=doc_name)), name=name)
        bridge.deliver(msg(text(number, later)), name=name)
        bridge.say(number, msg(text(number, "listo")), name=name)

        needles = {
            "phone number": number.encode(),
            "profile name": name.encode(),
            "account text": account.encode(),
            "later text": later.encode(),
            "caption": caption.encode(),
            "facility answer": facility.encode(),
            "document name": doc_name.encode(),
            "photo content": f"CANARY-PHOTO-{tag}".encode(),
            "document content": f"CANARY-PDF-{tag}".encode(),
        }
        needles |= {f"message id {n}": i.encode() for n, i in enumerate(ids)}
        scratch = tmp_path / "scratch-mid"
        scratch.mkdir()
        # Halfway: everything sealed and waiting for "enviar", in the bridge's state (and Redis).
        files = written_files([config.data_dir, server_tmp], logs, scratch)
        assert find_needles(files, needles) == []

        bridge.say(number, msg(text(number, "enviar")), answers=2, name=name)
        passphrase = standin.texts_to(number)[-1]
        keys = derive(passphrase, config_secrets(config))
        needles |= {
            "passphrase": passphrase.encode(),
            "passphrase words": " ".join(passphrase.split()[2:5]).encode(),
            "secret key": keys.secret_key.encode(),
            "case tag": keys.case_tag,
            "case tag (base64)": b64(keys.case_tag).encode(),
        }
        scratch = tmp_path / "scratch-end"
        scratch.mkdir()
        files = written_files([config.data_dir, server_tmp], logs, scratch)
        assert any(p.name.endswith(".sqlite3") or "postgresql" in str(p) for p in files) or \
            "postgresql" in config.database_url
        assert find_needles(files, needles) == []
    finally:
        stop_process(proc)

    # The canaries went in: the unit reads them all.
    engine = make_engine(config.database_url)
    bundle = tmp_path / "bundle.zip"
    export_bundle(make_sessionmaker(engine), bundle, unit_fingerprint="test")
    engine.dispose()
    out = tmp_path / "out"
    decrypt_bundle(bundle, workstation.secret_key, out)
    (folder,) = report_folders(out)
    assert account in (folder / "report.txt").read_text(encoding="utf-8")
    assert (folder / "attachments" / doc_name).read_bytes() == document
    assert (folder / "attachments" / "foto-2.jpg").read_bytes() == photo
    assert any(later in p.read_text(encoding="utf-8") for p in folder.glob("message-*.txt"))


def config_secrets(config: Config):  # type: ignore[no-untyped-def]
    return load_or_create_secrets(config, time_cost=1, memory_cost_kib=8).argon2
