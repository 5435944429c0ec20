#!/usr/bin/env node
// SPDX-License-Identifier: AGPL-3.0-or-later
//
// Protocol v2 in whistle/static/js/whistle-crypto.js itself, on the vendored sumo libsodium.js, for
// tests/test_crypto_js.py: reads one JSON request from the file named by the first argument and
// prints one JSON answer, which Python checks against whistle.core.
//
// Request: {"normalise": [text, ...],
//           "derive": {"argon2": {...as /api/v1/params...}, "passphrases": [text, ...]},
//           "seal": {"passphrase": text, "unit_public_key": B64, "category": code, "body": text,
//                    "message_body": text, "message_seq": int},
//           "replies": {"passphrase": text, "report_id": hex, "verify_key": B64,
//                       "items": [{"sealed": B64, "signature": B64}]},
//           "wordlist": {"text": text, "sha256": hex, "size": int, "words": int},
//           "fields": {"passphrase": text, "category": code, "body": text, "fields": [[id, text]],
//                      "bad": [[[id, text], ...], ...]}}
// Answer:  {"normalise": [...], "derive": [{login_hash, public_key, case_tag, login_key}],
//           "seal": {"report": B64 sealed, "message": B64 sealed},
//           "replies": [{ok, body, seq, version} | {ok: false, reason}], "wordlist": {...}}
//
//     node tests/data/js_v2_check.js request.json [--no-wasm]
'use strict';

const fs = require('fs');

const noWasm = process.argv.includes('--no-wasm');
if (noWasm) {
  delete globalThis.WebAssembly;
  process.on('unhandledRejection', (err) => {
    if (err instanceof ReferenceError && /WebAssembly/.test(err.message)) {
      return;
    }
    throw err;
  });
}

const { loadWhistleCrypto } = require('./make_js_vectors.js');

async function main() {
  const request = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const { sodium, whistleCrypto: wc } = await loadWhistleCrypto();
  const b64 = (bytes) => wc.toBase64(bytes);
  const answer = { wasm: typeof WebAssembly === 'object' };

  if (request.normalise) {
    answer.normalise = request.normalise.map((text) => wc.normalise(text));
  }
  if (request.derive) {
    answer.derive = request.derive.passphrases.map((typed) => {
      const keys = wc.deriveSourceKeys(typed, request.derive.argon2);
      return { login_key: b64(keys.loginKey), login_hash: b64(keys.loginHash),
        public_key: b64(keys.publicKey), case_tag: b64(keys.caseTag) };
    });
  }
  if (request.seal) {
    const r = request.seal;
    const keys = wc.deriveSourceKeys(r.passphrase, request.derive.argon2);
    const unit = wc.fromBase64(r.unit_public_key);
    const fileKey = wc.newAttachmentKey();
    const report = wc.buildEnvelope({ kind: 'report', category: r.category, body: r.body,
      attachments: [{ name: 'informe ñ.pdf', type: 'application/pdf', size: 70000, key: fileKey }],
      binding: { caseTag: keys.caseTag, seq: 1, sourcePublicKey: keys.publicKey } });
    const message = wc.buildEnvelope({ kind: 'message', body: r.message_body,
      binding: { caseTag: keys.caseTag, seq: r.message_seq, sourcePublicKey: keys.publicKey } });
    const stream = wc.encryptBytes(new Uint8Array(70000).fill(7), fileKey);
    answer.seal = { report: b64(wc.sealEnvelope(report, unit)),
      message: b64(wc.sealEnvelope(message, unit)), attachment: b64(stream),
      attachment_key: b64(fileKey) };
    const refused = [];
    for (const bad of [
      () => wc.buildEnvelope({ kind: 'report', category: 'x', body: '',
        binding: { caseTag: keys.caseTag, seq: 2, sourcePublicKey: keys.publicKey } }),
      () => wc.buildEnvelope({ kind: 'message', body: '',
        binding: { caseTag: keys.caseTag, seq: 1, sourcePublicKey: keys.publicKey } }),
      () => wc.buildEnvelope({ kind: 'message', body: '',
        binding: { caseTag: new Uint8Array(15), seq: 2, sourcePublicKey: keys.publicKey } }),
    ]) {
      try {
        bad();
        refused.push(false);
      } catch (e) {
        refused.push(true);
      }
    }
    answer.seal.refused = refused;
  }
  if (request.fields) {
    // A report with answers to the deployment's questions (docs/protocol.md section 2).
    const r = request.fields;
    const keys = wc.deriveSourceKeys(r.passphrase, request.derive.argon2);
    const binding = { caseTag: keys.caseTag, seq: 1, sourcePublicKey: keys.publicKey };
    const build = (fields, kind) => wc.buildEnvelope({ kind: kind || 'report', category: r.category,
      fields, body: r.body, binding: kind === 'message' ? { ...binding, seq: 2 } : binding });
    answer.fields = { report: b64(build(r.fields)), empty: b64(build(r.fields.map(([k]) => [k, '']))) };
    answer.fields.refused = r.bad.map((fields) => {
      try {
        build(fields);
        return false;
      } catch (e) {
        return true;
      }
    });
    try {
      wc.buildEnvelope({ kind: 'message', category: '', fields: r.fields, body: r.body,
        binding: { ...binding, seq: 2 } });
      answer.fields.refused.push(false);
    } catch (e) {
      answer.fields.refused.push(true);
    }
  }
  if (request.replies) {
    const r = request.replies;
    const keys = wc.deriveSourceKeys(r.passphrase, request.derive.argon2);
    const ctx = { reportId: r.report_id, keys, verifyKey: wc.fromBase64(r.verify_key),
      seenSeqs: new Set() };
    answer.replies = r.items.map((item) => {
      try {
        const opened = wc.verifyAndOpenReply({ sealed: wc.fromBase64(item.sealed),
          signature: item.signature ? wc.fromBase64(item.signature) : new Uint8Array(0) }, ctx);
        return { ok: true, body: opened.body, seq: opened.seq, version: opened.version };
      } catch (err) {
        if (!(err instanceof wc.ReplyRefused)) {
          throw err;
        }
        return { ok: false, reason: err.reason, detail: err.message };
      }
    });
  }
  if (request.wordlist) {
    const w = request.wordlist;
    const words = wc.parseWordlist(new TextEncoder().encode(w.text), w.sha256, w.size);
    const drawn = [];
    for (let i = 0; i < 20; i++) {
      drawn.push(wc.drawPassphrase(words, w.words));
    }
    let badSum = false;
    try {
      wc.parseWordlist(new TextEncoder().encode(w.text), '00'.repeat(32), w.size);
    } catch (e) {
      badSum = true;
    }
    answer.wordlist = { drawn, refused_bad_checksum: badSum };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
  void sodium;
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
