// SPDX-License-Identifier: AGPL-3.0-or-later
//
// Proof of work before an expensive request (docs/protocol.md, section 7): find a nonce such that
// BLAKE2b-256(challenge || nonce as 8 bytes little-endian) starts with `difficulty` zero bits.
//
// A classic script, loaded with `defer` after the vendored libsodium files (crypto_generichash is
// BLAKE2b). It offers window.whistlePow.token(purpose, url) to submit.js (which sends the result
// in the X-Whistle-PoW header) and takes over forms marked data-pow="login": it fills their hidden
// `pow` field and then posts them natively. The challenge address comes from the page
// (data-pow-url, from url_for), never from this file. Whatever fails here, the form still posts without the
// field: the server then counts it against its per-minute ceiling instead (JavaScript-off rules).
// Node can `require` this file too (tests/data/js_pow_check.js).
(function (root) {
  'use strict';

  var NONCE_BYTES = 8;
  var HASH_BYTES = 32;
  // How long the solver works before it lets the page breathe (milliseconds).
  var SLICE_MS = 30;
  // A source whose device cannot solve within this long posts without a proof of work.
  var BUDGET_MS = 90000;

  function getSodium() {
    var s = root.sodium;
    if (!s || typeof s.crypto_generichash !== 'function') {
      throw new Error('libsodium is not loaded or not ready');
    }
    return s;
  }

  function leadingZeroBits(digest) {
    var bits = 0;
    for (var i = 0; i < digest.length; i++) {
      if (digest[i] !== 0) {
        return bits + Math.clz32(digest[i]) - 24;
      }
      bits += 8;
    }
    return bits;
  }

  // Writes `nonce` (a safe integer) little-endian into the last 8 bytes of `buffer`.
  function putNonce(buffer, offset, nonce) {
    var low = nonce % 4294967296;
    var high = Math.floor(nonce / 4294967296);
    for (var i = 0; i < 4; i++) {
      buffer[offset + i] = (low >>> (8 * i)) & 255;
      buffer[offset + 4 + i] = (high >>> (8 * i)) & 255;
    }
  }

  // One hasher per challenge. libsodium.js's wrapper allocates and copies on every call, which
  // costs five times the hash itself; where the module's heap functions are there (WebAssembly
  // and the asm.js fallback alike), the input sits in its heap once and only the nonce changes.
  // Checked against the wrapper and PyNaCl by tests/test_pow.py.
  function makeHasher(sodium, challengeBytes) {
    var offset = challengeBytes.length;
    var lib = sodium.libsodium;
    if (lib && typeof lib._malloc === 'function' && typeof lib._free === 'function' &&
        typeof lib._crypto_generichash === 'function' && lib.HEAPU8) {
      var length = offset + NONCE_BYTES;
      var input = lib._malloc(length);
      var output = lib._malloc(HASH_BYTES);
      lib.HEAPU8.set(challengeBytes, input);
      return {
        hash: function (nonce) {
          putNonce(lib.HEAPU8, input + offset, nonce); // HEAPU8 is re-read: memory may grow
          lib._crypto_generichash(output, HASH_BYTES, input, length, 0, 0, 0);
          return lib.HEAPU8.subarray(output, output + HASH_BYTES);
        },
        free: function () {
          lib._free(input);
          lib._free(output);
        }
      };
    }
    var buffer = new Uint8Array(offset + NONCE_BYTES);
    buffer.set(challengeBytes, 0);
    return {
      hash: function (nonce) {
        putNonce(buffer, offset, nonce);
        return sodium.crypto_generichash(HASH_BYTES, buffer, null);
      },
      free: function () {}
    };
  }

  // Tries `count` nonces from `start`; returns the first that meets `difficulty`, or -1.
  function search(hasher, difficulty, start, count) {
    for (var nonce = start; nonce < start + count; nonce++) {
      if (leadingZeroBits(hasher.hash(nonce)) >= difficulty) {
        return nonce;
      }
    }
    return -1;
  }

  // The whole search at once (node, tests): returns the nonce.
  function solveSync(challengeBytes, difficulty) {
    var hasher = makeHasher(getSodium(), challengeBytes);
    try {
      return search(hasher, difficulty, 0, Number.MAX_SAFE_INTEGER);
    } finally {
      hasher.free();
    }
  }

  // In slices, yielding between them so the page stays responsive: resolves to the nonce, or
  // rejects after `budgetMs` (a slow device then posts without: the ceiling's rules apply).
  function solve(challengeBytes, difficulty, budgetMs) {
    var hasher = makeHasher(getSodium(), challengeBytes);
    var started = Date.now();
    var next = 0;
    var batch = 256;
    return new Promise(function (resolve, reject) {
      function step() {
        var began = Date.now();
        while (Date.now() - began < SLICE_MS) {
          var found = search(hasher, difficulty, next, batch);
          if (found >= 0) {
            hasher.free();
            resolve(found);
            return;
          }
          next += batch;
        }
        if (budgetMs && Date.now() - started > budgetMs) {
          hasher.free();
          reject(new Error('proof of work took too long'));
          return;
        }
        setTimeout(step, 0);
      }
      step();
    });
  }

  // Fetches a challenge for `purpose` from `url` (the page's data-pow-url) and solves it:
  // resolves to "challenge.nonce".
  async function token(purpose, url) {
    if (!url) {
      throw new Error('no proof-of-work address (data-pow-url) on the page');
    }
    var s = root.sodium;
    if (!s || !s.ready) {
      throw new Error('libsodium did not load');
    }
    await s.ready;
    var query = (url.indexOf('?') < 0 ? '?' : '&') + 'purpose=' + encodeURIComponent(purpose);
    var response = await fetch(url + query, {
      method: 'GET',
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { Accept: 'application/json' }
    });
    if (!response.ok) {
      throw new Error('challenge request failed: HTTP ' + response.status);
    }
    var data = await response.json();
    if (!data || typeof data.challenge !== 'string' || typeof data.difficulty !== 'number') {
      throw new Error('challenge response is malformed');
    }
    var bytes = getSodium().from_base64(data.challenge, getSodium().base64_variants.ORIGINAL);
    var nonce = await solve(bytes, data.difficulty, BUDGET_MS);
    return data.challenge + '.' + String(nonce);
  }

  function wireForms(doc) {
    var forms = doc.querySelectorAll('form[data-pow]');
    Array.prototype.forEach.call(forms, function (form) {
      var field = form.querySelector('input[name="pow"]');
      if (!field) {
        return;
      }
      var busy = false;
      form.addEventListener('submit', function (ev) {
        ev.preventDefault();
        if (busy) {
          return;
        }
        busy = true;
        var button = form.querySelector('button[type="submit"]');
        if (button) {
          button.disabled = true;
        }
        var status = doc.createElement('p');
        status.setAttribute('role', 'status');
        status.textContent = form.dataset.msgPow || '';
        form.appendChild(status);
        // form.submit() does not fire 'submit' again, and posts whatever the field holds.
        token(form.dataset.pow, form.dataset.powUrl).then(function (value) {
          field.value = value;
          form.submit();
        }, function (err) {
          if (root.console && console.error) {
            console.error('whistle:', err);
          }
          field.value = '';
          form.submit();
        });
      });
    });
  }

  var api = {
    leadingZeroBits: leadingZeroBits,
    solve: solve,
    solveSync: solveSync,
    token: token
  };
  root.whistlePow = api;
  if (typeof module !== 'undefined' && module && module.exports) {
    module.exports = api;
  }
  if (typeof document !== 'undefined') {
    wireForms(document);
  }
})(typeof globalThis !== 'undefined' ? globalThis : self);
