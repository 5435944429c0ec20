#!/usr/bin/env node
// SPDX-License-Identifier: AGPL-3.0-or-later
//
// Solves proof-of-work challenges with whistle/static/js/pow.js itself on the vendored
// libsodium.js, for tests/test_pow.py. Reads a JSON list of {"challenge": base64, "difficulty": n}
// as the first argument; prints a JSON list of {"nonce", "digest" (hex of the BLAKE2b-256 the
// script computed for the solution), "ms"}.
//
//     node tests/data/js_pow_check.js '[{"challenge": "...", "difficulty": 12}]' [--no-wasm]
'use strict';

const noWasm = process.argv.includes('--no-wasm');
if (noWasm) {
  // As in tests/data/js_envelope_check.js: what Tor Browser's "Safer" level looks like.
  delete globalThis.WebAssembly;
  process.on('unhandledRejection', (err) => {
    if (err instanceof ReferenceError && /WebAssembly/.test(err.message)) {
      return;
    }
    throw err;
  });
}

const path = require('path');
const { loadWhistleCrypto } = require('./make_js_vectors.js');

async function main() {
  const { sodium } = await loadWhistleCrypto();
  const pow = require(path.join(__dirname, '..', '..', 'whistle', 'static', 'js', 'pow.js'));
  const jobs = JSON.parse(process.argv[2]);
  const out = [];
  for (const job of jobs) {
    const challenge = sodium.from_base64(job.challenge, sodium.base64_variants.ORIGINAL);
    const began = process.hrtime.bigint();
    const nonce = job.async ? await pow.solve(challenge, job.difficulty)
      : pow.solveSync(challenge, job.difficulty);
    const ms = Number(process.hrtime.bigint() - began) / 1e6;
    const input = new Uint8Array(challenge.length + 8);
    input.set(challenge, 0);
    new DataView(input.buffer).setBigUint64(challenge.length, BigInt(nonce), true);
    const digest = sodium.to_hex(sodium.crypto_generichash(32, input, null));
    out.push({ nonce, digest, ms, zeros: pow.leadingZeroBits(sodium.from_hex(digest)) });
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
