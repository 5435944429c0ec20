// SPDX-License-Identifier: AGPL-3.0-or-later
//
// The source pages' cryptography, in a dedicated Web Worker (docs/protocol.md, protocol v2): the
// argon2id derivation of the source's keys, sealing envelopes and attachments, opening replies
// and the proof of work. The page stays responsive while argon2id holds its 64 MiB for a second
// or two (several without WebAssembly), and the source's secret key and case tag never leave this
// worker: the page only ever gets the passphrase it must show, the login key or its hash, and the
// public key. Nothing is stored anywhere (no IndexedDB, no caches): closing the page forgets all.
//
// The page starts it with `new Worker(url)` and sends {id, op: 'init', args: {urls}} first: the
// script URLs come from the page (data- attributes rendered with url_for), never from here, so
// content-hashed static URLs keep working. Every request is {id, op, args}; every answer is
// {id, type: 'result', result} or {id, type: 'error', error: {code, message}}, with {id, type:
// 'progress', done, total} messages in between for long work.
'use strict';

var wc = null;
var pow = null;
var keys = null; // the derived keys (whistleCrypto.deriveSourceKeys), or null
var unit = null; // {publicKey, verifyKey} once checked against the page's fingerprints

function WorkerError(code, message) {
  this.code = code;
  this.message = message || code;
}

function fail(code, message) {
  throw new WorkerError(code, message);
}

function b64(bytes) {
  return wc.toBase64(bytes);
}

function normaliseSpace(text) {
  return String(text || '').replace(/\s+/g, ' ').trim();
}

// A small derivation, timed, so the page can estimate how long the real one will take: argon2id's
// time grows with opslimit × memlimit.
function calibrate() {
  var s = self.sodium;
  var memlimit = 4 * 1024 * 1024;
  var started = performance.now();
  s.crypto_pwhash(32, 'calibration', new Uint8Array(16), 1, memlimit, s.crypto_pwhash_ALG_ARGON2ID13);
  var ms = performance.now() - started;
  return { ms: ms, opslimit: 1, memlimit: memlimit };
}

var ops = {
  init: async function (args) {
    var urls = args && args.urls;
    if (!urls || !urls.sodium || !urls.ready || !urls.wrappers || !urls.crypto || !urls.pow) {
      fail('init', 'the page gave no script addresses');
    }
    // One synchronous call: no promise job runs between the scripts, so the pure-JavaScript
    // fallback cannot delete `libsodium.ready` before the wrappers read it
    // (vendor/libsodium-sumo/README.md); the shim covers it anyway.
    importScripts(urls.sodium, urls.ready, urls.wrappers, urls.crypto, urls.pow);
    await self.sodium.ready;
    wc = self.whistleCrypto;
    pow = self.whistlePow;
    return { wasm: typeof WebAssembly === 'object', calibration: calibrate() };
  },

  // Submission: draw a passphrase from the served word list, derive its keys and keep them here.
  newPassphrase: function (args) {
    var words = wc.parseWordlist(new Uint8Array(args.wordlist), args.sha256, args.listSize);
    var passphrase = wc.drawPassphrase(words, args.words);
    derive(passphrase, args.argon2);
    return { passphrase: passphrase, loginHash: b64(keys.loginHash), publicKey: b64(keys.publicKey) };
  },

  // Login (or opening a reloaded case): what the source typed. A word count that no passphrase has
  // is answered before any derivation ({wordCount}), as the server does. With `expectPublicKey`
  // the derived key must be that one (the case page's stored key), or nothing is kept.
  derive: function (args) {
    var count = wc.normalise(String(args.typed || '')).split(' ').filter(Boolean).length;
    if (Array.isArray(args.wordCounts) && args.wordCounts.indexOf(count) < 0) {
      return { wordCount: count, derived: false };
    }
    derive(String(args.typed || ''), args.argon2);
    if (args.expectPublicKey && b64(keys.publicKey) !== args.expectPublicKey) {
      forget();
      return { wordCount: count, derived: false, mismatch: true };
    }
    return { wordCount: count, derived: true, loginKey: b64(keys.loginKey),
      publicKey: b64(keys.publicKey) };
  },

  hasKeys: function (args) {
    return { keys: keys !== null && (!args || !args.publicKey || b64(keys.publicKey) === args.publicKey) };
  },

  forget: function () {
    forget();
    return { ok: true };
  },

  // The unit's keys from the unit-key endpoint, trusted only if both fingerprints are the ones the
  // server gives and the ones printed on the page (a swapped key would otherwise go unnoticed
  // until the unit cannot decrypt, or a forged reply would verify).
  unitKey: function (args) {
    var data = args.data || {};
    var publicKey = wc.fromBase64Exact(data.public_key, 32, 'unit key');
    var computed = wc.fingerprint(publicKey);
    var ok = computed === normaliseSpace(data.fingerprint) && computed === normaliseSpace(args.shown);
    var verifyKey = null;
    if (typeof data.signing_public_key === 'string') {
      verifyKey = wc.fromBase64Exact(data.signing_public_key, 32, 'unit signing key');
      var signFp = wc.fingerprint(verifyKey);
      ok = ok && signFp === normaliseSpace(data.signing_fingerprint) &&
        (args.shownSign === null || args.shownSign === undefined ||
         signFp === normaliseSpace(args.shownSign));
    } else if (args.needSign) {
      ok = false;
    }
    if (!ok) {
      fail('key_mismatch', 'the unit key does not match the published fingerprint');
    }
    unit = { publicKey: publicKey, verifyKey: verifyKey };
    return { ok: true };
  },

  // Seal a report (seq 1) or a message (seq >= 2) bound to the derived keys, with its attachments.
  seal: async function (args, progress) {
    if (!keys) {
      fail('no_keys', 'no keys derived in this page');
    }
    if (!unit) {
      fail('no_unit_key', 'the unit key was not checked');
    }
    var files = args.files || [];
    var total = files.reduce(function (sum, f) { return sum + f.size; }, 0);
    var before = 0;
    var entries = [];
    var blobs = [];
    for (var i = 0; i < files.length; i++) {
      var file = files[i];
      var key = wc.newAttachmentKey();
      blobs.push(await wc.encryptFile(file, key, function (done) {
        progress(before + done, total);
      }));
      before += file.size;
      entries.push({ name: file.name || '', type: file.type || '', size: file.size, key: key });
    }
    var envelope = wc.buildEnvelope({
      kind: args.kind,
      category: args.kind === 'report' ? args.category : '',
      fields: args.kind === 'report' ? args.fields : null,
      body: args.body,
      attachments: entries,
      binding: { caseTag: keys.caseTag, seq: args.seq, sourcePublicKey: keys.publicKey }
    });
    var sealed = wc.sealEnvelope(envelope, unit.publicKey);
    // The attachment keys now live only inside the sealed envelope.
    self.sodium.memzero(envelope);
    entries.forEach(function (entry) { self.sodium.memzero(entry.key); });
    return { sealed: sealed, blobs: blobs };
  },

  // Verify and open the case page's sealed replies, in page order.
  openReplies: function (args) {
    if (!keys) {
      fail('no_keys', 'no keys derived in this page');
    }
    if (!unit || !unit.verifyKey) {
      fail('no_unit_key', 'the unit signing key was not checked');
    }
    var ctx = { reportId: args.reportId, keys: keys, verifyKey: unit.verifyKey, seenSeqs: new Set() };
    return args.replies.map(function (item) {
      try {
        var sealed = wc.fromBase64(item.sealed);
        var signature = item.signature ? wc.fromBase64(item.signature) : new Uint8Array(0);
        var opened = wc.verifyAndOpenReply({ sealed: sealed, signature: signature }, ctx);
        return { ok: true, body: opened.body, seq: opened.seq, version: opened.version };
      } catch (err) {
        if (err instanceof wc.ReplyRefused) {
          return { ok: false, reason: err.reason, detail: err.message };
        }
        return { ok: false, reason: 'withheld', detail: 'malformed' };
      }
    });
  },

  // A proof of work (docs/protocol.md section 7) for a challenge the page fetched.
  pow: async function (args) {
    var bytes = wc.fromBase64(args.challenge);
    return { nonce: await pow.solve(bytes, args.difficulty, args.budgetMs || 90000) };
  }
};

function derive(typed, argon2) {
  forget();
  try {
    keys = wc.deriveSourceKeys(typed, argon2);
  } catch (err) {
    keys = null;
    // Out of memory (the pure-JavaScript fallback on a small device) or bad parameters: the page
    // falls back to the server path.
    fail('derive_failed', String(err && err.message || err));
  }
}

function forget() {
  if (keys) {
    wc.forgetKeys(keys);
    keys = null;
  }
}

self.onmessage = function (event) {
  var msg = event.data || {};
  var id = msg.id;
  var op = ops[msg.op];
  var lastProgress = 0;
  function progress(done, total) {
    var now = Date.now();
    // At most ten a second, and always the last one.
    if (done === total || now - lastProgress > 100) {
      lastProgress = now;
      self.postMessage({ id: id, type: 'progress', done: done, total: total });
    }
  }
  Promise.resolve().then(function () {
    if (!op) {
      fail('unknown_op', 'unknown operation');
    }
    if (msg.op !== 'init' && !wc) {
      fail('not_ready', 'the worker was not initialised');
    }
    return op(msg.args || {}, progress);
  }).then(function (result) {
    var transfer = result && result.sealed instanceof Uint8Array ? [result.sealed.buffer] : [];
    self.postMessage({ id: id, type: 'result', result: result }, transfer);
  }, function (err) {
    var code = err instanceof WorkerError ? err.code : 'error';
    self.postMessage({ id: id, type: 'error',
      error: { code: code, message: String(err && err.message || err) } });
  });
};
