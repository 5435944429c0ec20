# SPDX-License-Identifier: AGPL-3.0-or-later
"""Proof of work (whistle/server/pow.py, whistle/static/js/pow.js, docs/protocol.md section 7):
stateless challenges, single use, difficulty that rises with load, and the same bytes in the
browser's libsodium.js and in Python."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import nacl.encoding
import nacl.hash
import pytest
from flask import Flask
from flask.testing import FlaskClient
from support import (
    BrowserKeys,
    FrozenClock,
    Workstation,
    api_payload,
    browser_derive,
    csrf_token,
    make_app,
    pow_token,
)

from whistle.server import pow as proof

DATA = Path(__file__).parent / "data"
POW_CHECK = DATA / "js_pow_check.js"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock()
    monkeypatch.setattr(time, "time", frozen)
    return frozen


def post_report(client: FlaskClient, ws: Workstation, pow_value: str | None,  # type: ignore[no-untyped-def]
                keys: BrowserKeys | None = None):
    headers = {"X-CSRFToken": csrf_token(client)}
    if pow_value is not None:
        headers["X-Whistle-PoW"] = pow_value
    return client.post("/api/v1/reports",
                       data=api_payload(ws.secret_key.public_key, "informe", [], keys=keys),
                       content_type="multipart/form-data", headers=headers)


def challenge_of(token: str) -> bytes:
    return base64.b64decode(token.rpartition(".")[0])


def with_nonce(challenge: bytes, nonce: int) -> str:
    return f"{base64.b64encode(challenge).decode()}.{nonce}"


def test_pow_endpoint_returns_challenge(client: FlaskClient) -> None:
    resp = client.get("/api/v1/pow?purpose=submit")
    assert resp.status_code == 200
    data = resp.get_json()
    assert set(data) == {"challenge", "difficulty", "expires_in"}
    raw = base64.b64decode(data["challenge"], validate=True)  # standard alphabet, padded
    assert len(raw) == proof.CHALLENGE_BYTES and raw[0] == proof.VERSION
    assert data["difficulty"] == proof.BASE_BITS
    assert proof.LIFETIME_SECONDS <= data["expires_in"] <= proof.LIFETIME_SECONDS + 60
    assert client.get("/api/v1/pow?purpose=submit").get_json()["challenge"] != data["challenge"]


def test_pow_endpoint_refuses_unknown_purpose(client: FlaskClient) -> None:
    resp = client.get("/api/v1/pow?purpose=everything")
    assert resp.status_code == 400 and resp.get_json()["error"] == "bad_purpose"


def test_pow_valid_solution_accepted_in_header_and_form(
    client: FlaskClient, workstation: Workstation
) -> None:
    keys = browser_derive(client)
    resp = post_report(client, workstation, pow_token(client, "submit"), keys)
    assert resp.status_code == 201
    login = client.post("/followup", data={"csrf_token": csrf_token(client, "/followup"),
                                           "passphrase": keys.passphrase,
                                           "pow": pow_token(client, "login")})
    assert login.status_code == 302


@pytest.mark.parametrize("defect", ["wrong_nonce", "forged", "purpose", "malformed"])
def test_pow_bad_solution_refused_with_clear_json(
    client: FlaskClient, workstation: Workstation, defect: str
) -> None:
    token = pow_token(client, "login" if defect == "purpose" else "submit")
    challenge = challenge_of(token)
    if defect == "wrong_nonce":
        nonce = next(n for n in range(1000) if proof.leading_zero_bits(
            proof.pow_hash(challenge, n)) < proof.BASE_BITS)
        token, code = with_nonce(challenge, nonce), "pow_unsolved"
    elif defect == "forged":
        # Another difficulty written into the challenge, solved properly: the MAC no longer fits.
        forged = challenge[:2] + bytes([1]) + challenge[3:]
        token, code = with_nonce(forged, proof.solve(forged, 1)), "pow_forged"
    elif defect == "purpose":
        code = "pow_purpose"
    else:
        token, code = "not-a-challenge.12", "pow_malformed"
    resp = post_report(client, workstation, token)
    assert resp.status_code == 400
    body = resp.get_json()
    assert body["error"] == code and body["message"]


def test_pow_challenge_of_another_instance_refused(
    environ: dict[str, str], tmp_path: Path, client: FlaskClient, workstation: Workstation
) -> None:
    other = make_app(environ | {"WHISTLE_DATA_DIR": str(tmp_path / "other")}, tmp_path)
    token = pow_token(other.test_client(), "submit")
    assert post_report(client, workstation, token).get_json()["error"] == "pow_forged"


def test_pow_reused_solution_refused(client: FlaskClient, workstation: Workstation) -> None:
    token = pow_token(client, "submit")
    assert post_report(client, workstation, token).status_code == 201
    resp = post_report(client, workstation, token)
    assert resp.status_code == 400 and resp.get_json()["error"] == "pow_reused"


def test_pow_expired_challenge_refused(client: FlaskClient, workstation: Workstation,
                                       clock: FrozenClock) -> None:
    token = pow_token(client, "submit")
    clock.now += proof.LIFETIME_SECONDS + 60
    resp = post_report(client, workstation, token)
    assert resp.status_code == 400 and resp.get_json()["error"] == "pow_expired"


def test_pow_refusal_on_a_form_is_the_form_page(client: FlaskClient) -> None:
    resp = client.post("/followup", data={"csrf_token": csrf_token(client, "/followup"),
                                          "passphrase": "uno dos tres", "pow": "roto.1"})
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert 'name="passphrase"' in html and 'role="alert"' in html


def test_pow_spent_entry_expires_with_the_challenge_on_a_minute(
    client: FlaskClient, workstation: Workstation, app: Flask, clock: FrozenClock
) -> None:
    from whistle.server.counters import MemoryCounterStore

    clock.now += 13.7
    token = pow_token(client, "submit")
    post_report(client, workstation, token)
    store = app.extensions["whistle_counters"]
    if not isinstance(store, MemoryCounterStore):
        pytest.skip("reads the memory store's entries (Redis: EXPIREAT on the same boundary)")
    spent = [exp for key, (_, exp) in store._entries.items() if ":pow:" in key]
    assert len(spent) == 1 and spent[0] % 60 == 0
    assert spent[0] - clock.now <= proof.LIFETIME_SECONDS + 60


def test_pow_difficulty_rises_with_attempt_rate(
    environ: dict[str, str], tmp_path: Path, workstation: Workstation, clock: FrozenClock
) -> None:
    app = make_app(environ, tmp_path, submit_capacity="4 per minute",
                   submit_global="1000 per minute", submit_session="1000 per minute")
    client = app.test_client()

    def current() -> int:
        return int(client.get("/api/v1/pow?purpose=submit").get_json()["difficulty"])

    seen = [current()]
    easy = pow_token(client, "submit")
    for _ in range(3):
        for _ in range(3):
            assert post_report(app.test_client(), workstation, None).status_code == 201
        seen.append(current())
    assert seen[0] == proof.BASE_BITS
    assert seen == sorted(seen) and seen[-1] >= proof.BASE_BITS + 2 * proof.STEP_BITS
    # Another purpose is not affected by this one's load.
    assert client.get("/api/v1/pow?purpose=login").get_json()["difficulty"] == proof.BASE_BITS
    # A solution at the old, easy difficulty has gone stale; a fresh one is accepted.
    assert post_report(client, workstation, easy).get_json()["error"] == "pow_stale"
    assert post_report(client, workstation, pow_token(client, "submit")).status_code == 201
    # The rate is a moving estimate: two quiet minutes later it is back to the base.
    clock.now += 120
    assert current() == proof.BASE_BITS


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("mode", ["wasm", "no-wasm"])
def test_pow_python_and_js_solutions_agree(client: FlaskClient, workstation: Workstation,
                                           mode: str) -> None:
    """pow.js on the vendored libsodium.js finds the same nonces as Python, its BLAKE2b digest
    equals hashlib's and PyNaCl's, and the server accepts what it solved."""
    data = [client.get("/api/v1/pow?purpose=submit").get_json() for _ in range(3)]
    jobs = [{"challenge": d["challenge"], "difficulty": d["difficulty"], "async": i == 2}
            for i, d in enumerate(data)]
    args = ["node", str(POW_CHECK), json.dumps(jobs)] + (["--no-wasm"] if mode == "no-wasm" else [])
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True)  # noqa: S603
    results = json.loads(out.stdout)
    for job, result in zip(jobs, results, strict=True):
        challenge = base64.b64decode(job["challenge"])
        nonce = int(result["nonce"])
        assert nonce == proof.solve(challenge, int(job["difficulty"]))
        message = challenge + nonce.to_bytes(8, "little")
        assert result["digest"] == hashlib.blake2b(message, digest_size=32).hexdigest()
        assert result["digest"] == nacl.hash.blake2b(message, digest_size=32,
                                                     encoder=nacl.encoding.HexEncoder).decode()
    token = f"{jobs[0]['challenge']}.{results[0]['nonce']}"
    assert post_report(client, workstation, token).status_code == 201
