# SPDX-License-Identifier: AGPL-3.0-or-later
"""Upload policy declared on the view (whistle.server.upload_policy): a new upload page works by
carrying its own declaration, with nothing to edit in uploads.py or quotas.py."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from flask import Blueprint, Flask, jsonify, request
from flask.typing import ResponseReturnValue

from whistle.core.crypto import iter_decrypt
from whistle.server import uploads
from whistle.server.quotas import HOUR, counters
from whistle.server.upload_policy import UploadDeclaration
from whistle.server.uploads import CiphertextSpool, EncryptingSpool, UploadPolicy

CANARY = b"PLAINTEXT-CANARY-" * 8
bp = Blueprint("extra", __name__)


@bp.post("/extra/plain")
@uploads.accepts(UploadPolicy.PLAINTEXT, fields=("evidence",))
def plain_upload() -> ResponseReturnValue:
    out = []
    for part in request.files.getlist("evidence"):
        stream = part.stream
        assert isinstance(stream, EncryptingSpool)
        ciphertext = b"".join(stream.iter_chunks())
        plaintext = b"".join(iter_decrypt([ciphertext], stream.key))
        out.append({"sha256": hashlib.sha256(plaintext).hexdigest(),
                    "canary_in_ciphertext": CANARY in ciphertext})
    return jsonify(files=out, fields=sorted(request.files), note=request.form.get("note"))


@bp.post("/extra/sealed")
@uploads.accepts(UploadPolicy.CIPHERTEXT)
def sealed_upload() -> ResponseReturnValue:
    parts = [(name, part.stream) for name, part in request.files.items(multi=True)]
    assert all(isinstance(stream, CiphertextSpool) for _, stream in parts)
    return jsonify(sizes={name: stream.size for name, stream in parts})


@bp.post("/extra/quota")
@uploads.accepts(UploadPolicy.CIPHERTEXT, quota="submit")
def quota_upload() -> ResponseReturnValue:
    return jsonify(ok=True)


@bp.post("/extra/undeclared")
def undeclared() -> ResponseReturnValue:
    return jsonify(fields=sorted(request.files))


@pytest.fixture
def extra(app: Flask) -> Flask:
    app.register_blueprint(bp)
    # These test views carry no CSRF token; CSRF itself is tested on the real pages.
    app.config["WTF_CSRF_ENABLED"] = False
    return app


def test_uploads_plaintext_view_seals_parts_on_arrival(extra: Flask) -> None:
    data = os.urandom(300_000) + CANARY  # past the 64 KiB in-memory buffer, and past one chunk
    resp = extra.test_client().post("/extra/plain", data={
        "evidence": (io.BytesIO(data), "doc.bin"), "note": "hola",
        "other": (io.BytesIO(b"x"), "other.bin"),  # a file field the view did not name: dropped
    })
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["files"] == [{"sha256": hashlib.sha256(data).hexdigest(), "canary_in_ciphertext": False}]
    assert body["fields"] == ["evidence"] and body["note"] == "hola"


def test_uploads_ciphertext_view_spools_every_part(extra: Flask) -> None:
    resp = extra.test_client().post("/extra/sealed", data={
        "a": (io.BytesIO(b"\1" * 200_000), "a"), "b": (io.BytesIO(b"\2" * 10), "b")})
    assert resp.status_code == 200
    assert resp.get_json() == {"sizes": {"a": 200_000, "b": 10}}


def test_uploads_undeclared_view_keeps_the_small_default(extra: Flask) -> None:
    client = extra.test_client()
    # No declaration: a small file part is dropped, a large one refused before it is buffered.
    small = client.post("/extra/undeclared", data={"f": (io.BytesIO(b"x" * 100), "f")})
    assert small.status_code == 200 and small.get_json() == {"fields": []}
    large = client.post("/extra/undeclared", data={"f": (io.BytesIO(b"x" * (64 * 1024 + 1)), "f")})
    assert large.status_code == 413


def test_uploads_declared_quota_counts_the_upload(extra: Flask) -> None:
    store = counters(extra)
    everyone = store.key("gb", "all", HOUR)  # the global hourly bytes every quota counts against
    client = extra.test_client()
    assert client.post("/extra/sealed", data={"f": (io.BytesIO(b"\0" * 1000), "f")}).status_code == 200
    assert store.used(everyone) == 0, "a view without a quota is not charged"
    assert client.post("/extra/quota", data={"f": (io.BytesIO(b"\0" * 1000), "f")}).status_code == 200
    assert store.used(everyone) > 1000


def test_uploads_real_views_carry_their_declarations(app: Flask) -> None:
    def of(endpoint: str) -> UploadDeclaration:
        declaration = getattr(app.view_functions[endpoint], "_whistle_upload", None)
        assert isinstance(declaration, UploadDeclaration), endpoint
        return declaration

    form, api = UploadPolicy.PLAINTEXT, UploadPolicy.CIPHERTEXT
    attachments = frozenset({"attachments"})
    assert of("source.submit") == UploadDeclaration(form, attachments, "submit")
    assert of("source.case") == UploadDeclaration(form, attachments, "message")
    assert of("source.api_submit") == UploadDeclaration(api, None, "submit")
    assert of("source.api_message") == UploadDeclaration(api, None, "message")
    assert of("investigator.upload_replies") == UploadDeclaration(api, frozenset({"replies"}), None)


def test_uploads_accepts_refuses_incomplete_declarations() -> None:
    with pytest.raises(ValueError, match="file fields"):
        uploads.accepts(UploadPolicy.PLAINTEXT)
    with pytest.raises(ValueError, match="quota"):
        uploads.accepts(UploadPolicy.CIPHERTEXT, quota="everything")  # type: ignore[arg-type]
