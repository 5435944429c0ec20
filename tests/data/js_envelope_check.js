#!/usr/bin/env node
// SPDX-License-Identifier: AGPL-3.0-or-later
//
// Exercises whistle/static/js/whistle-crypto.js itself (not stored vectors) on the vendored
// sumo libsodium.js, for tests/test_crypto_js.py. Prints one JSON object on stdout, with the envelopes
// it built (base64) so the Python side can check them independently too; exits non-zero on the
// first failed check.
//
//     node tests/data/js_envelope_check.js            # WebAssembly build
//     node tests/data/js_envelope_check.js --no-wasm  # the pure-JavaScript fallback, as in Tor
//                                                      # Browser's "Safer" level
'use strict';

const noWasm = process.argv.includes('--no-wasm');
if (noWasm) {
  // What a browser that blocks WebAssembly looks like to libsodium.js.
  delete globalThis.WebAssembly;
  // libsodium.js's failed WebAssembly attempt rejects a promise nobody awaits before it falls back;
  // a browser only logs that, node would exit on it.
  process.on('unhandledRejection', (err) => {
    if (err instanceof ReferenceError && /WebAssembly/.test(err.message)) {
      return;
    }
    throw err;
  });
}

const { loadWhistleCrypto, pattern } = require('./make_js_vectors.js');

function check(condition, message) {
  if (!condition) {
    throw new Error(`check failed: ${message}`);
  }
}

const REPORT_KEYS = ['v', 'kind', 'category', 'body', 'attachments', 'pad'];
const REPLY_KEYS = ['v', 'kind', 'body', 'pad'];
const ATTACHMENT_KEYS = ['name', 'type', 'size', 'key'];

function sameList(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function checkEnvelope(sodium, bytes, expectKeys, label) {
  check(bytes instanceof Uint8Array, `${label}: bytes`);
  check(bytes.length > 0 && bytes.length % 1024 === 0, `${label}: length ${bytes.length} % 1024`);
  const text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  check(!/\\u[0-9a-fA-F]{4}/.test(text.replace(/"pad":" *"/, '')), `${label}: no \\u escapes`);
  const obj = JSON.parse(text);
  check(sameList(Object.keys(obj), expectKeys), `${label}: key order ${Object.keys(obj)}`);
  // Compact serialisation: re-serialising the parsed object gives back the same bytes.
  check(JSON.stringify(obj) === text, `${label}: compact`);
  check(/^ *$/.test(obj.pad), `${label}: pad is spaces`);
  for (const a of obj.attachments || []) {
    check(sameList(Object.keys(a), ATTACHMENT_KEYS), `${label}: attachment key order`);
    const key = sodium.from_base64(a.key, sodium.base64_variants.ORIGINAL);
    check(key.length === 32, `${label}: attachment key length`);
    check(a.key.endsWith('='), `${label}: attachment key is padded base64`);
  }
  return obj;
}

function decryptStream(sodium, ciphertext, key) {
  const HEADER = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES;
  const CHUNK = 65536 + sodium.crypto_secretstream_xchacha20poly1305_ABYTES;
  const state = sodium.crypto_secretstream_xchacha20poly1305_init_pull(
    ciphertext.subarray(0, HEADER), key);
  const out = [];
  const tags = [];
  for (let off = HEADER; off < ciphertext.length; off += CHUNK) {
    const r = sodium.crypto_secretstream_xchacha20poly1305_pull(
      state, ciphertext.subarray(off, Math.min(off + CHUNK, ciphertext.length)), null);
    check(r, 'chunk authenticates');
    out.push(...r.message);
    tags.push(r.tag);
  }
  return { plaintext: Uint8Array.from(out), tags };
}

async function main() {
  const { sodium, whistleCrypto: wc } = await loadWhistleCrypto();
  check(typeof WebAssembly === (noWasm ? 'undefined' : 'object'), 'WebAssembly as requested');
  const results = { wasm: !noWasm, envelopes: {}, streams: {} };
  const b64 = (bytes) => sodium.to_base64(bytes, sodium.base64_variants.ORIGINAL);

  const unit = sodium.crypto_box_keypair();
  const fp = wc.fingerprint(unit.publicKey);
  check(/^([0-9A-F]{4} ){7}[0-9A-F]{4}$/.test(fp), 'fingerprint format');
  results.fingerprint = { public_key: b64(unit.publicKey), fingerprint: fp };

  const key = wc.newAttachmentKey();
  check(key.length === 32, 'attachment key is 32 bytes');

  // Decomposed "ñ" and "é" must come out NFC; the emoji makes UTF-8 length differ from .length;
  // a lone surrogate must become U+FFFD as a browser's form submission would.
  const body = 'Denuncia: el jefe cobra comisiones — man\u0303ana, cafe\u0301 🦜 \ud800 fin';
  const report = wc.buildEnvelope({
    kind: 'report',
    category: 'poor_service',
    body,
    attachments: [{ name: 'Año 2025 — informe.pdf', type: 'application/pdf', size: 70000, key }],
  });
  const reportObj = checkEnvelope(sodium, report, REPORT_KEYS, 'report');
  check(reportObj.v === 1 && reportObj.kind === 'report', 'report v and kind');
  check(reportObj.body === body.normalize('NFC').replace('\ud800', '\ufffd'), 'report body NFC');
  check(reportObj.body.includes('mañana, café'), 'report body composed');
  check(reportObj.attachments[0].key === b64(key), 'attachment key round trip');
  results.envelopes.report = b64(report);

  const message = wc.buildEnvelope({ kind: 'message', body: 'Seguimiento: ¿hay novedades?' });
  const messageObj = checkEnvelope(sodium, message, REPORT_KEYS, 'message');
  check(messageObj.category === '' && messageObj.attachments.length === 0, 'message fields');
  results.envelopes.message = b64(message);

  const reply = wc.buildEnvelope({ kind: 'reply', body: 'Gracias, lo revisamos. 🦜' });
  checkEnvelope(sodium, reply, REPLY_KEYS, 'reply');
  results.envelopes.reply = b64(reply);

  // Padding boundaries: an envelope whose unpadded form is exactly 1024 bytes gets no pad; one
  // byte more spills into a second block.
  const emptyLength = wc.buildEnvelope({ kind: 'reply', body: '' }).length;
  check(emptyLength === 1024, 'empty reply is one block');
  const skeleton = '{"v":1,"kind":"reply","body":"","pad":""}';
  const room = 1024 - skeleton.length;
  // 'ü' is 2 UTF-8 bytes but .length 1, so this fails if lengths were counted in UTF-16 units.
  const exact = 'ü'.repeat(Math.floor(room / 2)) + 'a'.repeat(room % 2);
  const exactEnv = wc.buildEnvelope({ kind: 'reply', body: exact });
  check(exactEnv.length === 1024, 'exactly one block');
  check(JSON.parse(new TextDecoder().decode(exactEnv)).pad === '', 'no pad when already aligned');
  const over = wc.buildEnvelope({ kind: 'reply', body: exact + 'x' });
  check(over.length === 2048, 'one byte over spills into a second block');
  results.envelopes.reply_exact = b64(exactEnv);
  results.envelopes.reply_over = b64(over);

  const sealed = wc.sealEnvelope(report, unit.publicKey);
  check(sealed.length === report.length + 48, 'sealed length');
  const opened = sodium.crypto_box_seal_open(sealed, unit.publicKey, unit.privateKey);
  check(sodium.compare(opened, report) === 0, 'sealed envelope opens to the envelope');
  results.sealed = { public_key: b64(unit.publicKey), secret_key: b64(unit.privateKey),
    sealed: b64(sealed) };

  // What the protocol says a reader must never be handed.
  const rejects = [
    () => wc.buildEnvelope({ kind: 'note', body: '' }),
    () => wc.buildEnvelope({ kind: 'message', category: 'corruption', body: '' }),
    () => wc.buildEnvelope({ kind: 'report', category: '', body: '' }),
    () => wc.buildEnvelope({ kind: 'report', category: 'x', body: 'a'.repeat(100001) }),
    () => wc.buildEnvelope({ kind: 'report', category: 'x', body: '',
      attachments: [{ name: 'a', type: '', size: 1, key: new Uint8Array(31) }] }),
    () => wc.buildEnvelope({ kind: 'report', category: 'x', body: '',
      attachments: [{ name: 'a', type: '', size: -1, key }] }),
    () => wc.sealEnvelope(new Uint8Array(1000), unit.publicKey),
    () => wc.fingerprint(new Uint8Array(31)),
    () => wc.encryptBytes(new Uint8Array(1), new Uint8Array(16)),
  ];
  rejects.forEach((fn, i) => {
    let threw = false;
    try {
      fn();
    } catch (e) {
      threw = true;
    }
    check(threw, `invalid input ${i} is rejected`);
  });
  // 100,000 characters is the limit in code points: this is 100,000 code points, 200,000 UTF-16.
  wc.buildEnvelope({ kind: 'report', category: 'x', body: '🦜'.repeat(100000) });

  // Streams: encryptBytes and encryptFile (Blob path) must agree on the layout.
  for (const size of [0, 1, 65535, 65536, 65537, 131072, 140000]) {
    const plain = pattern(size);
    const k = wc.newAttachmentKey();
    const viaBytes = wc.encryptBytes(plain, k);
    const progress = [];
    const onProgress = (done, total) => progress.push([done, total]);
    const blob = await wc.encryptFile(new Blob([plain]), k, onProgress);
    const viaBlob = new Uint8Array(await blob.arrayBuffer());
    for (const [label, ct] of [['bytes', viaBytes], ['blob', viaBlob]]) {
      check(ct.length === wc.ciphertextSize(size), `${label} ${size}: length ${ct.length}`);
      const chunks = Math.floor(size / 65536) + 1;
      check(ct.length === 24 + size + 17 * chunks, `${label} ${size}: protocol length`);
      const { plaintext, tags } = decryptStream(sodium, ct, k);
      check(sodium.compare(plaintext, plain) === 0, `${label} ${size}: plaintext`);
      const FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL;
      const MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
      check(tags.length === chunks, `${label} ${size}: chunk count`);
      const expected = (t, i) => t === (i === tags.length - 1 ? FINAL : MESSAGE);
      check(tags.every(expected), `${label} ${size}: tags`);
    }
    check(progress.length > 0 && progress[progress.length - 1][0] === size
      && progress.every(([, total]) => total === size), `progress ${size}`);
    results.streams[size] = { key: b64(k), ciphertext_length: viaBytes.length };
  }
  // Files larger than encryptFile's 4 MiB reads (several reads, the next one running while the
  // last is encrypted; one ending exactly on a read): checked here, not sent back.
  for (const size of [4 * 1048576 + 100, 2 * 4 * 1048576, 2 * 4 * 1048576 + 65536]) {
    const plain = pattern(size);
    const k = wc.newAttachmentKey();
    const viaBlob = new Uint8Array(await (await wc.encryptFile(new Blob([plain]), k)).arrayBuffer());
    const { plaintext, tags } = decryptStream(sodium, viaBlob, k);
    check(sodium.compare(plaintext, plain) === 0, `large ${size}: plaintext`);
    check(viaBlob.length === wc.ciphertextSize(size), `large ${size}: length`);
    check(tags.length === Math.floor(size / 65536) + 1, `large ${size}: chunks`);
  }
  // Only small ones go back to Python; the big ones were checked above.
  const small = wc.newAttachmentKey();
  results.small_stream = { key: b64(small), plaintext_length: 70000,
    ciphertext: b64(wc.encryptBytes(pattern(70000), small)) };

  results.ok = true;
  process.stdout.write(JSON.stringify(results) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
