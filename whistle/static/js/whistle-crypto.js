// SPDX-License-Identifier: AGPL-3.0-or-later
//
// whistle protocol primitives for the browser (docs/protocol.md): the passphrase and its keys
// (section 4 and protocol v2's case tag), envelopes v1/v2/v3 (section 2), attachment streams
// (section 3) and signed replies (section 9).
//
// A classic script on purpose: no module, no build step. It runs inside js/crypto-worker.js (a
// dedicated Web Worker, which imports it after the vendored sumo libsodium.js build), and node can
// `require` it too (after setting globalThis.sodium), which is how tests/data/*.js and the pytest
// suite exercise this very file. It needs `sodium` and must only be used after
// `await sodium.ready`.
(function (root) {
  'use strict';

  // Protocol constants (section 3 and section 2). Changing any of them breaks compatibility.
  var CHUNK_SIZE = 65536;
  var PAD_BLOCK = 1024;
  var KEY_BYTES = 32;
  var PUBLIC_KEY_BYTES = 32;
  var MAX_BODY_CHARS = 100000;
  // Structured answers (docs/protocol.md section 2): ids like category codes, short texts.
  var FIELD_ID = /^[a-z][a-z0-9_]{0,31}$/;
  var MAX_FIELDS = 32;
  var MAX_FIELD_CHARS = 200;
  var FINGERPRINT_BYTES = 16;
  var CASE_TAG_BYTES = 16;
  var CASE_TAG_CONTEXT = 'whistle-case-tag-v2';
  var DERIVED_BYTES = 64;
  var SIGNATURE_BYTES = 64;
  var REPLY_SIGN_DOMAIN = 'whistle-reply-v2\u0000';
  // How many bytes encryptFile reads from a Blob at once (not part of the protocol).
  var READ_BYTES = 64 * CHUNK_SIZE;

  // Tests (and node) may point us at a specific sodium object; browsers use the global one.
  var explicitSodium = null;

  function useSodium(sodium) {
    explicitSodium = sodium || null;
  }

  function getSodium() {
    var s = explicitSodium || root.sodium;
    if (!s || typeof s.crypto_box_seal !== 'function') {
      throw new Error('libsodium is not loaded or not ready');
    }
    return s;
  }

  function requireBytes(value, length, what) {
    if (!(value instanceof Uint8Array)) {
      throw new TypeError(what + ' must be a Uint8Array');
    }
    if (length !== undefined && value.length !== length) {
      throw new RangeError(what + ' must be ' + length + ' bytes, got ' + value.length);
    }
  }

  function toBase64(bytes) {
    var s = getSodium();
    // libsodium.js defaults to URL-safe without padding; the protocol wants standard with padding.
    return s.to_base64(bytes, s.base64_variants.ORIGINAL);
  }

  function fromBase64(text) {
    var s = getSodium();
    return s.from_base64(text, s.base64_variants.ORIGINAL);
  }

  // Decodes canonical padded standard base64 of exactly `length` bytes, or throws.
  function fromBase64Exact(text, length, what) {
    if (typeof text !== 'string') {
      throw new TypeError(what + ' must be base64 text');
    }
    var raw = fromBase64(text);
    requireBytes(raw, length, what);
    if (toBase64(raw) !== text) {
      throw new RangeError(what + ' is not canonical padded base64');
    }
    return raw;
  }

  function concatBytes(list) {
    var total = 0;
    for (var i = 0; i < list.length; i++) {
      total += list[i].length;
    }
    var out = new Uint8Array(total);
    var offset = 0;
    for (var j = 0; j < list.length; j++) {
      out.set(list[j], offset);
      offset += list[j].length;
    }
    return out;
  }

  function equalBytes(a, b) {
    if (!(a instanceof Uint8Array) || !(b instanceof Uint8Array) || a.length !== b.length) {
      return false;
    }
    var diff = 0;
    for (var i = 0; i < a.length; i++) {
      diff |= a[i] ^ b[i];
    }
    return diff === 0;
  }

  // Browsers send a lone UTF-16 surrogate in a form field as U+FFFD; doing the same here keeps the
  // JavaScript-on and JavaScript-off paths byte-identical, and keeps JSON.stringify from writing a
  // "\udXXX" escape that no UTF-8 reader could round-trip.
  // In /u mode a well-formed surrogate pair is one code point, so this class matches only lone
  // surrogates.
  var LONE_SURROGATE = /[\uD800-\uDFFF]/gu;

  function wellFormed(text) {
    return text.replace(LONE_SURROGATE, '\uFFFD');
  }

  // Python's len(str), which the server uses for the body limit, counts code points.
  function codePointLength(text) {
    return text.length - (text.match(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g) || []).length;
  }

  var encoder = new TextEncoder();

  // --- Section 4: normalising a typed passphrase ------------------------------------------------
  //
  // Exactly whistle.core.passphrase.normalise: NFKD, drop every character whose canonical
  // combining class is not 0 (Python's unicodedata.combining), str.casefold(), every run of
  // white space (Python's str.isspace) and , . ; becomes one space, trimmed.
  // tests/test_crypto_js.py compares the two on every code point Python knows and on tricky
  // texts, so they cannot drift apart.

  // Where str.casefold() differs from str.lower() (generated from Python's unicodedata 14.0:
  // tests/test_crypto_js.py::test_js_casefold_table_matches_python regenerates and compares it).
  // Everywhere else casefold is the full lower-case mapping, which toLowerCase() gives per code
  // point (per code point, so that the final-sigma context rule never applies: casefold has none).
  var CASEFOLD_TABLE = (
    '\u00b5:\u03bc,\u00df:\u0073\u0073,\u0149:\u02bc\u006e,\u017f:\u0073,\u01f0:\u006a\u030c,' +
    '\u0345:\u03b9,\u0390:\u03b9\u0308\u0301,\u03b0:\u03c5\u0308\u0301,\u03c2:\u03c3,' +
    '\u03d0:\u03b2,\u03d1:\u03b8,\u03d5:\u03c6,\u03d6:\u03c0,\u03f0:\u03ba,\u03f1:\u03c1,' +
    '\u03f5:\u03b5,\u0587:\u0565\u0582,\u13a0:\u13a0,\u13a1:\u13a1,\u13a2:\u13a2,\u13a3:\u13a3,' +
    '\u13a4:\u13a4,\u13a5:\u13a5,\u13a6:\u13a6,\u13a7:\u13a7,\u13a8:\u13a8,\u13a9:\u13a9,' +
    '\u13aa:\u13aa,\u13ab:\u13ab,\u13ac:\u13ac,\u13ad:\u13ad,\u13ae:\u13ae,\u13af:\u13af,' +
    '\u13b0:\u13b0,\u13b1:\u13b1,\u13b2:\u13b2,\u13b3:\u13b3,\u13b4:\u13b4,\u13b5:\u13b5,' +
    '\u13b6:\u13b6,\u13b7:\u13b7,\u13b8:\u13b8,\u13b9:\u13b9,\u13ba:\u13ba,\u13bb:\u13bb,' +
    '\u13bc:\u13bc,\u13bd:\u13bd,\u13be:\u13be,\u13bf:\u13bf,\u13c0:\u13c0,\u13c1:\u13c1,' +
    '\u13c2:\u13c2,\u13c3:\u13c3,\u13c4:\u13c4,\u13c5:\u13c5,\u13c6:\u13c6,\u13c7:\u13c7,' +
    '\u13c8:\u13c8,\u13c9:\u13c9,\u13ca:\u13ca,\u13cb:\u13cb,\u13cc:\u13cc,\u13cd:\u13cd,' +
    '\u13ce:\u13ce,\u13cf:\u13cf,\u13d0:\u13d0,\u13d1:\u13d1,\u13d2:\u13d2,\u13d3:\u13d3,' +
    '\u13d4:\u13d4,\u13d5:\u13d5,\u13d6:\u13d6,\u13d7:\u13d7,\u13d8:\u13d8,\u13d9:\u13d9,' +
    '\u13da:\u13da,\u13db:\u13db,\u13dc:\u13dc,\u13dd:\u13dd,\u13de:\u13de,\u13df:\u13df,' +
    '\u13e0:\u13e0,\u13e1:\u13e1,\u13e2:\u13e2,\u13e3:\u13e3,\u13e4:\u13e4,\u13e5:\u13e5,' +
    '\u13e6:\u13e6,\u13e7:\u13e7,\u13e8:\u13e8,\u13e9:\u13e9,\u13ea:\u13ea,\u13eb:\u13eb,' +
    '\u13ec:\u13ec,\u13ed:\u13ed,\u13ee:\u13ee,\u13ef:\u13ef,\u13f0:\u13f0,\u13f1:\u13f1,' +
    '\u13f2:\u13f2,\u13f3:\u13f3,\u13f4:\u13f4,\u13f5:\u13f5,\u13f8:\u13f0,\u13f9:\u13f1,' +
    '\u13fa:\u13f2,\u13fb:\u13f3,\u13fc:\u13f4,\u13fd:\u13f5,\u1c80:\u0432,\u1c81:\u0434,' +
    '\u1c82:\u043e,\u1c83:\u0441,\u1c84:\u0442,\u1c85:\u0442,\u1c86:\u044a,\u1c87:\u0463,' +
    '\u1c88:\ua64b,\u1e96:\u0068\u0331,\u1e97:\u0074\u0308,\u1e98:\u0077\u030a,' +
    '\u1e99:\u0079\u030a,\u1e9a:\u0061\u02be,\u1e9b:\u1e61,\u1e9e:\u0073\u0073,' +
    '\u1f50:\u03c5\u0313,\u1f52:\u03c5\u0313\u0300,\u1f54:\u03c5\u0313\u0301,' +
    '\u1f56:\u03c5\u0313\u0342,\u1f80:\u1f00\u03b9,\u1f81:\u1f01\u03b9,\u1f82:\u1f02\u03b9,' +
    '\u1f83:\u1f03\u03b9,\u1f84:\u1f04\u03b9,\u1f85:\u1f05\u03b9,\u1f86:\u1f06\u03b9,' +
    '\u1f87:\u1f07\u03b9,\u1f88:\u1f00\u03b9,\u1f89:\u1f01\u03b9,\u1f8a:\u1f02\u03b9,' +
    '\u1f8b:\u1f03\u03b9,\u1f8c:\u1f04\u03b9,\u1f8d:\u1f05\u03b9,\u1f8e:\u1f06\u03b9,' +
    '\u1f8f:\u1f07\u03b9,\u1f90:\u1f20\u03b9,\u1f91:\u1f21\u03b9,\u1f92:\u1f22\u03b9,' +
    '\u1f93:\u1f23\u03b9,\u1f94:\u1f24\u03b9,\u1f95:\u1f25\u03b9,\u1f96:\u1f26\u03b9,' +
    '\u1f97:\u1f27\u03b9,\u1f98:\u1f20\u03b9,\u1f99:\u1f21\u03b9,\u1f9a:\u1f22\u03b9,' +
    '\u1f9b:\u1f23\u03b9,\u1f9c:\u1f24\u03b9,\u1f9d:\u1f25\u03b9,\u1f9e:\u1f26\u03b9,' +
    '\u1f9f:\u1f27\u03b9,\u1fa0:\u1f60\u03b9,\u1fa1:\u1f61\u03b9,\u1fa2:\u1f62\u03b9,' +
    '\u1fa3:\u1f63\u03b9,\u1fa4:\u1f64\u03b9,\u1fa5:\u1f65\u03b9,\u1fa6:\u1f66\u03b9,' +
    '\u1fa7:\u1f67\u03b9,\u1fa8:\u1f60\u03b9,\u1fa9:\u1f61\u03b9,\u1faa:\u1f62\u03b9,' +
    '\u1fab:\u1f63\u03b9,\u1fac:\u1f64\u03b9,\u1fad:\u1f65\u03b9,\u1fae:\u1f66\u03b9,' +
    '\u1faf:\u1f67\u03b9,\u1fb2:\u1f70\u03b9,\u1fb3:\u03b1\u03b9,\u1fb4:\u03ac\u03b9,' +
    '\u1fb6:\u03b1\u0342,\u1fb7:\u03b1\u0342\u03b9,\u1fbc:\u03b1\u03b9,\u1fbe:\u03b9,' +
    '\u1fc2:\u1f74\u03b9,\u1fc3:\u03b7\u03b9,\u1fc4:\u03ae\u03b9,\u1fc6:\u03b7\u0342,' +
    '\u1fc7:\u03b7\u0342\u03b9,\u1fcc:\u03b7\u03b9,\u1fd2:\u03b9\u0308\u0300,' +
    '\u1fd3:\u03b9\u0308\u0301,\u1fd6:\u03b9\u0342,\u1fd7:\u03b9\u0308\u0342,' +
    '\u1fe2:\u03c5\u0308\u0300,\u1fe3:\u03c5\u0308\u0301,\u1fe4:\u03c1\u0313,\u1fe6:\u03c5\u0342,' +
    '\u1fe7:\u03c5\u0308\u0342,\u1ff2:\u1f7c\u03b9,\u1ff3:\u03c9\u03b9,\u1ff4:\u03ce\u03b9,' +
    '\u1ff6:\u03c9\u0342,\u1ff7:\u03c9\u0342\u03b9,\u1ffc:\u03c9\u03b9,\uab70:\u13a0,' +
    '\uab71:\u13a1,\uab72:\u13a2,\uab73:\u13a3,\uab74:\u13a4,\uab75:\u13a5,\uab76:\u13a6,' +
    '\uab77:\u13a7,\uab78:\u13a8,\uab79:\u13a9,\uab7a:\u13aa,\uab7b:\u13ab,\uab7c:\u13ac,' +
    '\uab7d:\u13ad,\uab7e:\u13ae,\uab7f:\u13af,\uab80:\u13b0,\uab81:\u13b1,\uab82:\u13b2,' +
    '\uab83:\u13b3,\uab84:\u13b4,\uab85:\u13b5,\uab86:\u13b6,\uab87:\u13b7,\uab88:\u13b8,' +
    '\uab89:\u13b9,\uab8a:\u13ba,\uab8b:\u13bb,\uab8c:\u13bc,\uab8d:\u13bd,\uab8e:\u13be,' +
    '\uab8f:\u13bf,\uab90:\u13c0,\uab91:\u13c1,\uab92:\u13c2,\uab93:\u13c3,\uab94:\u13c4,' +
    '\uab95:\u13c5,\uab96:\u13c6,\uab97:\u13c7,\uab98:\u13c8,\uab99:\u13c9,\uab9a:\u13ca,' +
    '\uab9b:\u13cb,\uab9c:\u13cc,\uab9d:\u13cd,\uab9e:\u13ce,\uab9f:\u13cf,\uaba0:\u13d0,' +
    '\uaba1:\u13d1,\uaba2:\u13d2,\uaba3:\u13d3,\uaba4:\u13d4,\uaba5:\u13d5,\uaba6:\u13d6,' +
    '\uaba7:\u13d7,\uaba8:\u13d8,\uaba9:\u13d9,\uabaa:\u13da,\uabab:\u13db,\uabac:\u13dc,' +
    '\uabad:\u13dd,\uabae:\u13de,\uabaf:\u13df,\uabb0:\u13e0,\uabb1:\u13e1,\uabb2:\u13e2,' +
    '\uabb3:\u13e3,\uabb4:\u13e4,\uabb5:\u13e5,\uabb6:\u13e6,\uabb7:\u13e7,\uabb8:\u13e8,' +
    '\uabb9:\u13e9,\uabba:\u13ea,\uabbb:\u13eb,\uabbc:\u13ec,\uabbd:\u13ed,\uabbe:\u13ee,' +
    '\uabbf:\u13ef,\ufb00:\u0066\u0066,\ufb01:\u0066\u0069,\ufb02:\u0066\u006c,' +
    '\ufb03:\u0066\u0066\u0069,\ufb04:\u0066\u0066\u006c,\ufb05:\u0073\u0074,\ufb06:\u0073\u0074,' +
    '\ufb13:\u0574\u0576,\ufb14:\u0574\u0565,\ufb15:\u0574\u056b,\ufb16:\u057e\u0576,' +
    '\ufb17:\u0574\u056d'
  );
  var CASEFOLD = Object.create(null);
  CASEFOLD_TABLE.split(',').forEach(function (pair) {
    var at = pair.indexOf(':');
    CASEFOLD[pair.slice(0, at)] = pair.slice(at + 1);
  });

  // Python's str.isspace() set (not JavaScript's \s, which has U+FEFF and lacks U+001C-U+001F
  // and U+0085), plus the separators , . and ; of the protocol.
  var SEPARATORS = /[\t\n\v\f\r \u001c-\u001f\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000,.;]+/g;

  // The canonical combining class is not exposed to JavaScript, but canonical reordering reveals
  // it: after U+0345 (class 240, the highest) a character of class 1-239 moves in front; before
  // U+0334 (class 1) one of class 2-240 moves behind. A character of class 0 does neither.
  var combiningCache = Object.create(null);

  function isCombining(ch) {
    var known = combiningCache[ch];
    if (known !== undefined) {
      return known;
    }
    var result = ch.length > 0 && ('\u0345' + ch).normalize('NFD') !== '\u0345' + ch ||
      (ch + '\u0334').normalize('NFD') !== ch + '\u0334';
    combiningCache[ch] = result;
    return result;
  }

  function normalise(typed) {
    if (typeof typed !== 'string') {
      throw new TypeError('a passphrase must be text');
    }
    var out = '';
    // for..of walks code points (a surrogate pair is one character, as in Python).
    for (var ch of typed.normalize('NFKD')) {
      if (isCombining(ch)) {
        continue;
      }
      var folded = CASEFOLD[ch];
      out += folded !== undefined ? folded : ch.toLowerCase();
    }
    return out.replace(SEPARATORS, ' ').replace(/^ +| +$/g, '');
  }

  // --- Section 4 and protocol v2: the source's keys ---------------------------------------------

  // Checks the instance's published argon2 parameters (the params endpoint's "argon2", docs/protocol.md 5.2) and returns
  // them decoded: {salt: Uint8Array(16), opslimit, memlimit}.
  function checkParams(argon2) {
    if (!argon2 || typeof argon2 !== 'object' || argon2.alg !== 'argon2id13' ||
        argon2.bytes !== DERIVED_BYTES) {
      throw new RangeError('unsupported key derivation parameters');
    }
    var salt = argon2.salt instanceof Uint8Array ? argon2.salt : fromBase64(String(argon2.salt));
    if (salt.length !== 16) {
      throw new RangeError('the instance salt must be 16 bytes');
    }
    if (!Number.isSafeInteger(argon2.opslimit) || argon2.opslimit < 1 ||
        !Number.isSafeInteger(argon2.memlimit) || argon2.memlimit < 8192) {
      throw new RangeError('argon2 costs out of range');
    }
    return { salt: salt, opslimit: argon2.opslimit, memlimit: argon2.memlimit };
  }

  // crypto_generichash(16, "whistle-case-tag-v2", key = seed): keyed BLAKE2b.
  function caseTagFor(seed) {
    requireBytes(seed, 32, 'seed');
    var s = getSodium();
    return s.crypto_generichash(CASE_TAG_BYTES, s.from_string(CASE_TAG_CONTEXT), seed);
  }

  // One argon2id derivation of what was typed, as whistle.core.passphrase.derive: bytes 0-31 are
  // the login key (the server stores SHA-256 of it), bytes 32-63 the seed of the source's X25519
  // keypair and of the case tag.
  function deriveSourceKeys(typed, argon2) {
    var params = checkParams(argon2);
    var canonical = normalise(typed);
    if (!canonical) {
      throw new RangeError('empty passphrase');
    }
    if (/[\uD800-\uDFFF]/u.test(canonical)) {
      // Python refuses a lone surrogate (it cannot be UTF-8); so do we, rather than derive from
      // U+FFFD as TextEncoder would.
      throw new RangeError('passphrase is not valid Unicode text');
    }
    var s = getSodium();
    var password = encoder.encode(canonical);
    var out = s.crypto_pwhash(DERIVED_BYTES, password, params.salt, params.opslimit,
      params.memlimit, s.crypto_pwhash_ALG_ARGON2ID13);
    s.memzero(password);
    var loginKey = out.slice(0, 32);
    var seed = out.slice(32, 64);
    s.memzero(out);
    var pair = s.crypto_box_seed_keypair(seed);
    var keys = {
      loginKey: loginKey,
      loginHash: s.crypto_hash_sha256(loginKey),
      publicKey: pair.publicKey,
      secretKey: pair.privateKey,
      caseTag: caseTagFor(seed)
    };
    s.memzero(seed);
    return keys;
  }

  // Overwrites every key of a deriveSourceKeys result.
  function forgetKeys(keys) {
    if (!keys) {
      return;
    }
    var s = getSodium();
    ['loginKey', 'loginHash', 'publicKey', 'secretKey', 'caseTag'].forEach(function (name) {
      if (keys[name] instanceof Uint8Array) {
        s.memzero(keys[name]);
      }
    });
  }

  // The served word list (the wordlist endpoint: one word per line, each ending in LF),
  // checked against the SHA-256 and size that the params endpoint published.
  function parseWordlist(bytes, sha256Hex, listSize) {
    requireBytes(bytes, undefined, 'word list');
    var s = getSodium();
    if (typeof sha256Hex !== 'string' || s.to_hex(s.crypto_hash_sha256(bytes)) !== sha256Hex.toLowerCase()) {
      throw new Error('the word list does not match its published checksum');
    }
    var text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    if (text.length === 0 || text.charAt(text.length - 1) !== '\n') {
      throw new Error('the word list must end in a line feed');
    }
    var words = text.slice(0, -1).split('\n');
    var unique = new Set(words);
    if (words.length !== listSize || unique.size !== words.length || words.some(function (w) {
      // Every word is its own canonical form, without separators: a passphrase as issued is
      // exactly what the derivation normalises it to.
      return !w || normalise(w) !== w || w.indexOf(' ') >= 0;
    })) {
      throw new Error('the word list is damaged');
    }
    return words;
  }

  // `count` words drawn uniformly with libsodium's CSPRNG (randombytes_uniform), joined by spaces.
  function drawPassphrase(words, count) {
    if (!Array.isArray(words) || words.length < 2 || !Number.isSafeInteger(count) || count < 1) {
      throw new RangeError('drawPassphrase needs a word list and a word count');
    }
    var s = getSodium();
    var chosen = [];
    for (var i = 0; i < count; i++) {
      chosen.push(words[s.randombytes_uniform(words.length)]);
    }
    return chosen.join(' ');
  }

  // --- Section 1: fingerprint -------------------------------------------------------------------

  function fingerprint(publicKeyBytes) {
    requireBytes(publicKeyBytes, PUBLIC_KEY_BYTES, 'public key');
    var s = getSodium();
    var hex = s.to_hex(s.crypto_generichash(FINGERPRINT_BYTES, publicKeyBytes, null));
    return hex.toUpperCase().match(/.{4}/g).join(' ');
  }

  // --- Section 2: envelopes ---------------------------------------------------------------------

  function attachmentEntry(a, index) {
    if (!a || typeof a !== 'object') {
      throw new TypeError('attachment ' + index + ' must be an object');
    }
    if (typeof a.name !== 'string') {
      throw new TypeError('attachment ' + index + ': name must be a string');
    }
    var type = a.type === undefined || a.type === null ? '' : a.type;
    if (typeof type !== 'string') {
      throw new TypeError('attachment ' + index + ': type must be a string');
    }
    if (!Number.isSafeInteger(a.size) || a.size < 0) {
      throw new RangeError('attachment ' + index + ': size must be a non-negative integer');
    }
    var key;
    if (typeof a.key === 'string') {
      // Accept an already-encoded key, but only in the exact canonical form a reader expects.
      key = toBase64(fromBase64Exact(a.key, KEY_BYTES, 'attachment ' + index + ' key'));
    } else {
      requireBytes(a.key, KEY_BYTES, 'attachment ' + index + ' key');
      key = toBase64(a.key);
    }
    // Object literal order is the serialisation order; the protocol fixes it.
    return { name: wellFormed(a.name), type: wellFormed(type), size: a.size, key: key };
  }

  // Binding (protocol v2): {caseTag: Uint8Array(16), seq: int >= 1, sourcePublicKey: Uint8Array(32)}.
  function bindingFields(binding) {
    if (!binding || typeof binding !== 'object') {
      throw new TypeError('binding must be {caseTag, seq, sourcePublicKey}');
    }
    requireBytes(binding.caseTag, CASE_TAG_BYTES, 'case tag');
    requireBytes(binding.sourcePublicKey, PUBLIC_KEY_BYTES, 'source public key');
    if (!Number.isSafeInteger(binding.seq) || binding.seq < 1) {
      throw new RangeError('seq must be a positive integer');
    }
    return { caseTag: toBase64(binding.caseTag), seq: binding.seq,
      sourcePublicKey: toBase64(binding.sourcePublicKey) };
  }

  // spec: {kind, category, body, attachments, binding, reportId}. With a binding, a report or a
  // message is a v2 envelope and a reply a v3 one (docs/protocol.md section 2); without, v1
  // (legacy, kept for the tests of old readers). Returns the padded UTF-8 bytes.
  // A report's answers to the deployment's questions: [[id, text], ...] in questionnaire order
  // (or an object, in its key order), empty answers left out; null when there is none.
  function answerFields(fields) {
    if (fields === undefined || fields === null) {
      return null;
    }
    var pairs = Array.isArray(fields) ? fields : Object.keys(fields).map(function (k) {
      return [k, fields[k]];
    });
    var out = {};
    var count = 0;
    pairs.forEach(function (pair) {
      if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' ||
          typeof pair[1] !== 'string') {
        throw new TypeError('fields are [id, text] pairs');
      }
      if (!FIELD_ID.test(pair[0]) || Object.prototype.hasOwnProperty.call(out, pair[0])) {
        throw new RangeError('a field id looks like a category code and appears once');
      }
      var text = wellFormed(pair[1]).normalize('NFC');
      if (text === '') {
        return;
      }
      if (codePointLength(text) > MAX_FIELD_CHARS) {
        throw new RangeError('an answer is at most ' + MAX_FIELD_CHARS + ' characters');
      }
      out[pair[0]] = text;
      count += 1;
    });
    if (count > MAX_FIELDS) {
      throw new RangeError('at most ' + MAX_FIELDS + ' answers');
    }
    return count ? out : null;
  }

  function buildEnvelope(spec) {
    if (!spec || typeof spec !== 'object') {
      throw new TypeError('buildEnvelope needs {kind, category, body, attachments}');
    }
    var kind = spec.kind;
    if (typeof spec.body !== 'string') {
      throw new TypeError('body must be a string');
    }
    var body = wellFormed(spec.body).normalize('NFC');
    if (codePointLength(body) > MAX_BODY_CHARS) {
      throw new RangeError('body is longer than ' + MAX_BODY_CHARS + ' characters');
    }
    var bound = spec.binding === undefined || spec.binding === null ? null : bindingFields(spec.binding);

    var envelope;
    if (kind === 'report' || kind === 'message') {
      var category = spec.category === undefined && kind === 'message' ? '' : spec.category;
      if (typeof category !== 'string') {
        throw new TypeError('category must be a string');
      }
      if (kind === 'message' && category !== '') {
        throw new RangeError('a message envelope has an empty category');
      }
      if (kind === 'report' && !/^[\x21-\x7e]+$/.test(category)) {
        throw new RangeError('a report needs an ASCII category code');
      }
      var attachments = spec.attachments === undefined ? [] : spec.attachments;
      if (!Array.isArray(attachments)) {
        throw new TypeError('attachments must be an array');
      }
      var entries = attachments.map(attachmentEntry);
      var answers = answerFields(spec.fields);
      if (answers && (kind !== 'report' || !bound)) {
        throw new RangeError('only a version-2 report carries structured answers');
      }
      if (bound) {
        if ((kind === 'report') !== (bound.seq === 1)) {
          throw new RangeError('a report is item 1 of its case and a message item 2 or later');
        }
        envelope = { v: 2, kind: kind, case_tag: bound.caseTag, seq: bound.seq,
          source_public_key: bound.sourcePublicKey, category: category };
        if (answers) {
          envelope.fields = answers;  // after category, only when there are answers
        }
        envelope.body = body;
        envelope.attachments = entries;
        envelope.pad = '';
      } else {
        envelope = { v: 1, kind: kind, category: category, body: body, attachments: entries,
          pad: '' };
      }
    } else if (kind === 'reply') {
      if (bound) {
        if (typeof spec.reportId !== 'string' || !/^[0-9a-f]{8,64}$/.test(spec.reportId)) {
          throw new RangeError('a reply names its report (lower-case hex id)');
        }
        envelope = { v: 3, kind: kind, report_id: spec.reportId, case_tag: bound.caseTag,
          seq: bound.seq, source_public_key: bound.sourcePublicKey, body: body, pad: '' };
      } else {
        envelope = { v: 1, kind: kind, body: body, pad: '' };
      }
    } else {
      throw new RangeError('unknown envelope kind: ' + kind);
    }

    // JSON.stringify without an indent is compact and leaves non-ASCII unescaped, as the protocol
    // asks. The length that matters is in UTF-8 bytes, not UTF-16 code units.
    var unpadded = encoder.encode(JSON.stringify(envelope)).length;
    envelope.pad = ' '.repeat((PAD_BLOCK - (unpadded % PAD_BLOCK)) % PAD_BLOCK);
    var bytes = encoder.encode(JSON.stringify(envelope));
    if (bytes.length % PAD_BLOCK !== 0) {
      throw new Error('internal error: envelope padding is off');
    }
    return bytes;
  }

  function sealEnvelope(envelopeBytes, publicKeyBytes) {
    requireBytes(envelopeBytes, undefined, 'envelope');
    requireBytes(publicKeyBytes, PUBLIC_KEY_BYTES, 'public key');
    if (envelopeBytes.length === 0 || envelopeBytes.length % PAD_BLOCK !== 0) {
      throw new RangeError('envelope length must be a non-zero multiple of ' + PAD_BLOCK);
    }
    return getSodium().crypto_box_seal(envelopeBytes, publicKeyBytes);
  }

  // --- Section 9: replies -----------------------------------------------------------------------

  // "whistle-reply-v2" || 0x00 || report_id (ASCII) || 0x00 || recipient (32 bytes) || sealed
  function replySignedBytes(reportId, recipient, sealed) {
    if (typeof reportId !== 'string' || !/^[0-9a-f]{8,64}$/.test(reportId)) {
      throw new RangeError('bad report id');
    }
    requireBytes(recipient, PUBLIC_KEY_BYTES, 'recipient');
    requireBytes(sealed, undefined, 'sealed reply');
    return concatBytes([encoder.encode(REPLY_SIGN_DOMAIN + reportId + '\u0000'), recipient, sealed]);
  }

  var REPLY_V2_KEYS = 'v,kind,report_id,source_public_key,body,pad';
  var REPLY_V3_KEYS = 'v,kind,report_id,case_tag,seq,source_public_key,body,pad';

  // Why a reply is not shown: 'withheld' (nothing shows the unit wrote it for this case: no or a
  // bad signature, another report, key or case, a repeated number) or 'undecryptable' (signed by
  // the unit, but it does not open or parse: the source should ask for it again).
  function ReplyRefused(reason, detail) {
    this.reason = reason;
    this.message = detail;
  }

  // Verifies and opens one sealed reply, as the server does for a JavaScript-off session
  // (docs/protocol.md 9.5), with the source's own keys:
  //   reply: {sealed: Uint8Array, signature: Uint8Array (empty for an unsigned v1 reply)}
  //   ctx:   {reportId, keys (deriveSourceKeys), verifyKey (the unit's Ed25519 key, 32 bytes),
  //           seenSeqs (a Set of the v3 numbers already shown; updated)}
  // Returns {body, seq (null for a v2 reply), version}; throws ReplyRefused.
  function verifyAndOpenReply(reply, ctx) {
    var s = getSodium();
    var keys = ctx.keys;
    requireBytes(ctx.verifyKey, 32, 'unit signing key');
    if (!(reply.signature instanceof Uint8Array) || reply.signature.length !== SIGNATURE_BYTES) {
      throw new ReplyRefused('withheld', 'no signature');
    }
    var signed = replySignedBytes(ctx.reportId, keys.publicKey, reply.sealed);
    if (!s.crypto_sign_verify_detached(reply.signature, signed, ctx.verifyKey)) {
      throw new ReplyRefused('withheld', 'bad signature');
    }
    var raw;
    try {
      raw = s.crypto_box_seal_open(reply.sealed, keys.publicKey, keys.secretKey);
    } catch (err) {
      throw new ReplyRefused('undecryptable', 'does not open');
    }
    var doc;
    try {
      if (raw.length === 0 || raw.length % PAD_BLOCK !== 0) {
        throw new Error('length');
      }
      doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw));
    } catch (err) {
      throw new ReplyRefused('undecryptable', 'not an envelope');
    } finally {
      s.memzero(raw);
    }
    var order = doc && typeof doc === 'object' && !Array.isArray(doc) ? Object.keys(doc).join(',') : '';
    var version = order === REPLY_V2_KEYS ? 2 : order === REPLY_V3_KEYS ? 3 : 0;
    if (version === 0 || doc.v !== version || doc.kind !== 'reply' || typeof doc.body !== 'string' ||
        typeof doc.pad !== 'string' || /[^ ]/.test(doc.pad)) {
      throw new ReplyRefused('undecryptable', 'not a reply envelope');
    }
    var key;
    try {
      key = fromBase64Exact(doc.source_public_key, PUBLIC_KEY_BYTES, 'source_public_key');
    } catch (err) {
      throw new ReplyRefused('withheld', 'bad source key');
    }
    if (doc.report_id !== ctx.reportId || !equalBytes(key, keys.publicKey)) {
      throw new ReplyRefused('withheld', 'another report or recipient');
    }
    var seq = null;
    if (version === 3) {
      var tag;
      try {
        tag = fromBase64Exact(doc.case_tag, CASE_TAG_BYTES, 'case_tag');
      } catch (err) {
        throw new ReplyRefused('withheld', 'bad case tag');
      }
      if (!equalBytes(tag, keys.caseTag)) {
        throw new ReplyRefused('withheld', 'forged (wrong case tag)');
      }
      if (!Number.isSafeInteger(doc.seq) || doc.seq < 1) {
        throw new ReplyRefused('withheld', 'bad number');
      }
      if (ctx.seenSeqs && ctx.seenSeqs.has(doc.seq)) {
        throw new ReplyRefused('withheld', 'replayed (number ' + doc.seq + ' seen before)');
      }
      if (ctx.seenSeqs) {
        ctx.seenSeqs.add(doc.seq);
      }
      seq = doc.seq;
    }
    return { body: doc.body, seq: seq, version: version };
  }

  // --- Section 3: attachment streams ------------------------------------------------------------

  function newAttachmentKey() {
    return getSodium().crypto_secretstream_xchacha20poly1305_keygen();
  }

  // The one place that decides how a plaintext of `size` bytes is cut, shared by the Blob and the
  // byte-array encryptors so both produce the same layout: full chunks tagged MESSAGE, then a
  // shorter (possibly empty) chunk tagged FINAL. Always ending on a short chunk means a size that
  // is a multiple of CHUNK_SIZE (including 0) gets an empty FINAL chunk, which readers accept.
  function chunkRanges(size) {
    var ranges = [];
    var start = 0;
    for (;;) {
      var end = Math.min(start + CHUNK_SIZE, size);
      var final = end - start < CHUNK_SIZE;
      ranges.push({ start: start, end: end, final: final });
      if (final) {
        return ranges;
      }
      start = end;
    }
  }

  function ciphertextSize(plaintextSize) {
    var s = getSodium();
    var chunks = Math.floor(plaintextSize / CHUNK_SIZE) + 1;
    return s.crypto_secretstream_xchacha20poly1305_HEADERBYTES + plaintextSize +
      chunks * s.crypto_secretstream_xchacha20poly1305_ABYTES;
  }

  // A push stream. Where the module's heap functions are there (WebAssembly and the wasm2js
  // fallback alike) it keeps one input and one output buffer in the module's heap for the whole
  // stream and calls the C function directly: the wrapper's push allocates, copies and frees on
  // every chunk. Both give the same bytes (tests/data/js_envelope_check.js compares them).
  function startStream(key) {
    requireBytes(key, KEY_BYTES, 'attachment key');
    var s = getSodium();
    var init = s.crypto_secretstream_xchacha20poly1305_init_push(key);
    var ABYTES = s.crypto_secretstream_xchacha20poly1305_ABYTES;
    var TAG_FINAL = s.crypto_secretstream_xchacha20poly1305_TAG_FINAL;
    var TAG_MESSAGE = s.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
    var lib = s.libsodium;
    var direct = lib && typeof lib._malloc === 'function' && typeof lib._free === 'function' &&
      typeof lib._crypto_secretstream_xchacha20poly1305_push === 'function' && lib.HEAPU8;
    var input = 0;
    var output = 0;
    var STATE_BYTES = lib && typeof lib._crypto_secretstream_xchacha20poly1305_statebytes === 'function'
      ? lib._crypto_secretstream_xchacha20poly1305_statebytes() : 52;
    if (direct) {
      input = lib._malloc(CHUNK_SIZE);
      output = lib._malloc(CHUNK_SIZE + ABYTES);
      direct = input !== 0 && output !== 0;
    }
    // pushAll's buffers in the module's heap: `capacity` plaintext bytes, and room for the
    // ciphertext of that many bytes cut in chunks.
    var groupIn = 0;
    var groupOut = 0;
    var capacity = 0;
    function freeGroup() {
      if (groupIn) {
        lib.HEAPU8.fill(0, groupIn, groupIn + capacity);
        lib._free(groupIn);
        lib._free(groupOut);
        groupIn = groupOut = capacity = 0;
      }
    }
    function reserve(bytes) {
      if (bytes <= capacity) {
        return;
      }
      freeGroup();
      groupIn = lib._malloc(bytes);
      groupOut = lib._malloc(bytes + (Math.floor(bytes / CHUNK_SIZE) + 1) * ABYTES);
      if (!groupIn || !groupOut) {
        throw new Error('out of memory');
      }
      capacity = bytes;
    }
    function close() {
      freeGroup();
      if (input) {
        lib.HEAPU8.fill(0, input, input + CHUNK_SIZE);
        lib._free(input);
        input = 0;
      }
      if (output) {
        lib._free(output);
        output = 0;
      }
      if (init.state !== null) {
        // The wrapper's state lives in the module's heap too: wipe it (the key is in it).
        if (lib && lib.HEAPU8 && typeof init.state === 'number') {
          lib.HEAPU8.fill(0, init.state, init.state + STATE_BYTES);
          if (typeof lib._free === 'function') {
            lib._free(init.state);
          }
        }
        init.state = null;
      }
    }
    return {
      header: init.header,
      push: function (chunk, final) {
        if (chunk.length > CHUNK_SIZE) {
          throw new RangeError('a chunk is at most ' + CHUNK_SIZE + ' bytes');
        }
        var tag = final ? TAG_FINAL : TAG_MESSAGE;
        if (!direct) {
          return s.crypto_secretstream_xchacha20poly1305_push(init.state, chunk, null, tag);
        }
        var heap = lib.HEAPU8; // re-read: the heap may have grown
        heap.set(chunk, input);
        if (lib._crypto_secretstream_xchacha20poly1305_push(init.state, output, 0, input,
          chunk.length, 0, 0, 0, 0, tag) !== 0) {
          throw new Error('crypto_secretstream_xchacha20poly1305_push failed');
        }
        heap = lib.HEAPU8;
        return heap.slice(output, output + chunk.length + ABYTES);
      },
      // Encrypts `buf` as consecutive chunks (a chunk shorter than CHUNK_SIZE is the FINAL one
      // and must be the last) and appends the ciphertext to `parts`: with the heap functions, one
      // copy into the heap and one slice out for the whole buffer, not one per chunk.
      pushAll: function (buf, parts) {
        var off;
        var len;
        if (!direct) {
          for (off = 0; off < buf.length; off += CHUNK_SIZE) {
            len = Math.min(CHUNK_SIZE, buf.length - off);
            parts.push(this.push(buf.subarray(off, off + len), len < CHUNK_SIZE));
          }
          return;
        }
        if (buf.length === 0) {
          return;
        }
        reserve(buf.length);
        lib.HEAPU8.set(buf, groupIn);
        var written = 0;
        for (off = 0; off < buf.length; off += CHUNK_SIZE) {
          len = Math.min(CHUNK_SIZE, buf.length - off);
          if (lib._crypto_secretstream_xchacha20poly1305_push(init.state, groupOut + written, 0,
            groupIn + off, len, 0, 0, 0, 0, len < CHUNK_SIZE ? TAG_FINAL : TAG_MESSAGE) !== 0) {
            throw new Error('crypto_secretstream_xchacha20poly1305_push failed');
          }
          written += len + ABYTES;
        }
        parts.push(lib.HEAPU8.slice(groupOut, groupOut + written));
        lib.HEAPU8.fill(0, groupIn, groupIn + buf.length);
      },
      close: close
    };
  }

  function encryptBytes(plaintext, key) {
    requireBytes(plaintext, undefined, 'plaintext');
    var stream = startStream(key);
    try {
      var ranges = chunkRanges(plaintext.length);
      var parts = [stream.header];
      for (var i = 0; i < ranges.length; i++) {
        var r = ranges[i];
        parts.push(stream.push(plaintext.subarray(r.start, r.end), r.final));
      }
      return concatBytes(parts);
    } finally {
      stream.close();
    }
  }

  // Reads blob[start, end) as bytes. Blob.arrayBuffer() reads off the main thread, so the next
  // slice can be read while this one is encrypted (encryptFile); FileReaderSync (workers) and
  // FileReader are for engines without it.
  function readSlice(blob, start, end) {
    var slice = blob.slice(start, end);
    if (typeof slice.arrayBuffer === 'function') {
      return slice.arrayBuffer().then(function (b) { return new Uint8Array(b); });
    }
    if (typeof FileReaderSync === 'function') {
      return Promise.resolve(new Uint8Array(new FileReaderSync().readAsArrayBuffer(slice)));
    }
    return new Promise(function (resolve, reject) {
      var reader = new FileReader();
      reader.onload = function () { resolve(new Uint8Array(reader.result)); };
      reader.onerror = function () { reject(reader.error || new Error('could not read file')); };
      reader.readAsArrayBuffer(slice);
    });
  }

  // Encrypts a Blob or File (section 3) and resolves to a Blob of the ciphertext. onProgress(done,
  // total) is called after each read of READ_BYTES.
  //
  // Fast enough to keep up with a raw push loop over chunks already in memory (bench/browser.py):
  // the file is read READ_BYTES at a time, the next read runs while this one is encrypted, the
  // chunks go through the module's heap without the wrapper's per-call allocations
  // (startStream), and the plaintext is wiped with a native fill.
  async function encryptFile(file, key, onProgress) {
    if (!file || typeof file.slice !== 'function' || typeof file.size !== 'number') {
      throw new TypeError('encryptFile needs a Blob or File');
    }
    var size = file.size;
    var stream = startStream(key);
    // A list of chunk arrays, never one buffer holding the whole file: the Blob constructor lets
    // the browser keep (or spill) the parts as it likes.
    var parts = [stream.header];
    var next = readSlice(file, 0, Math.min(READ_BYTES, size));
    try {
      if (onProgress) {
        onProgress(0, size);
      }
      var start = 0;
      for (;;) {
        var end = Math.min(start + READ_BYTES, size);
        var buf = await next;
        next = end < size ? readSlice(file, end, Math.min(end + READ_BYTES, size)) : null;
        if (buf.length !== end - start) {
          throw new Error('file changed while it was being read');
        }
        // Every read but the last is a multiple of CHUNK_SIZE, so the one chunk shorter than
        // CHUNK_SIZE (FINAL) can only be the file's last.
        stream.pushAll(buf, parts);
        // Do not leave plaintext copies lying around in the JS heap longer than needed.
        buf.fill(0);
        if (onProgress) {
          onProgress(end, size);
        }
        if (end === size) {
          break;
        }
        start = end;
      }
      if (size % CHUNK_SIZE === 0) {
        // A multiple of CHUNK_SIZE (0 included) ends with an empty FINAL chunk (chunkRanges).
        parts.push(stream.push(new Uint8Array(0), true));
      }
    } finally {
      if (next) {
        // A failed encryption still waits for the read it started, and wipes it.
        next.then(function (b) { b.fill(0); }, function () {});
      }
      stream.close();
    }
    return new Blob(parts, { type: 'application/octet-stream' });
  }

  var api = {
    CHUNK_SIZE: CHUNK_SIZE,
    PAD_BLOCK: PAD_BLOCK,
    CASE_TAG_CONTEXT: CASE_TAG_CONTEXT,
    useSodium: useSodium,
    normalise: normalise,
    checkParams: checkParams,
    caseTagFor: caseTagFor,
    deriveSourceKeys: deriveSourceKeys,
    forgetKeys: forgetKeys,
    parseWordlist: parseWordlist,
    drawPassphrase: drawPassphrase,
    fingerprint: fingerprint,
    buildEnvelope: buildEnvelope,
    sealEnvelope: sealEnvelope,
    replySignedBytes: replySignedBytes,
    verifyAndOpenReply: verifyAndOpenReply,
    ReplyRefused: ReplyRefused,
    newAttachmentKey: newAttachmentKey,
    chunkRanges: chunkRanges,
    ciphertextSize: ciphertextSize,
    startStream: startStream,
    encryptBytes: encryptBytes,
    encryptFile: encryptFile,
    toBase64: toBase64,
    fromBase64: fromBase64,
    fromBase64Exact: fromBase64Exact,
    equalBytes: equalBytes
  };

  root.whistleCrypto = api;
  if (typeof module !== 'undefined' && module && module.exports) {
    module.exports = api;
  }
})(typeof globalThis !== 'undefined' ? globalThis : self);
