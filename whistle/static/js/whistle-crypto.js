// SPDX-License-Identifier: AGPL-3.0-or-later
//
// whistle protocol v1 primitives for the browser (docs/protocol.md, sections 1-3).
//
// A classic script on purpose: no module, no build step, so it loads from 'self' under the page's
// CSP exactly like the vendored libsodium UMD files it depends on. It needs `sodium` (from
// libsodium-wrappers.js) and must only be used after `await sodium.ready`. Node can `require` it
// too (after setting globalThis.sodium), which is how tests/data/make_js_vectors.js and the
// pytest suite exercise this very file.
(function (root) {
  'use strict';

  // Protocol constants (section 3 and section 2). Changing any of them breaks compatibility.
  var CHUNK_SIZE = 65536;
  var PAD_BLOCK = 1024;
  var KEY_BYTES = 32;
  var PUBLIC_KEY_BYTES = 32;
  var MAX_BODY_CHARS = 100000;
  var FINGERPRINT_BYTES = 16;
  // How many chunks encryptFile reads from a Blob at once (not part of the protocol).
  var READ_CHUNKS = 16;

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
      var raw = fromBase64(a.key);
      requireBytes(raw, KEY_BYTES, 'attachment ' + index + ' key');
      key = toBase64(raw);
      if (key !== a.key) {
        throw new RangeError('attachment ' + index + ': key is not canonical padded base64');
      }
    } else {
      requireBytes(a.key, KEY_BYTES, 'attachment ' + index + ' key');
      key = toBase64(a.key);
    }
    // Object literal order is the serialisation order; the protocol fixes it.
    return { name: wellFormed(a.name), type: wellFormed(type), size: a.size, key: key };
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
      envelope = {
        v: 1,
        kind: kind,
        category: category,
        body: body,
        attachments: attachments.map(attachmentEntry),
        pad: ''
      };
    } else if (kind === 'reply') {
      envelope = { v: 1, kind: kind, body: body, pad: '' };
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
    var chunks = chunkRanges(plaintextSize).length;
    return s.crypto_secretstream_xchacha20poly1305_HEADERBYTES + plaintextSize +
      chunks * s.crypto_secretstream_xchacha20poly1305_ABYTES;
  }

  function startStream(key) {
    requireBytes(key, KEY_BYTES, 'attachment key');
    var s = getSodium();
    var init = s.crypto_secretstream_xchacha20poly1305_init_push(key);
    return {
      header: init.header,
      push: function (chunk, final) {
        var tag = final ? s.crypto_secretstream_xchacha20poly1305_TAG_FINAL
          : s.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
        return s.crypto_secretstream_xchacha20poly1305_push(init.state, chunk, null, tag);
      }
    };
  }

  function encryptBytes(plaintext, key) {
    requireBytes(plaintext, undefined, 'plaintext');
    var stream = startStream(key);
    var ranges = chunkRanges(plaintext.length);
    var parts = [stream.header];
    var total = stream.header.length;
    for (var i = 0; i < ranges.length; i++) {
      var r = ranges[i];
      var c = stream.push(plaintext.subarray(r.start, r.end), r.final);
      parts.push(c);
      total += c.length;
    }
    var out = new Uint8Array(total);
    var offset = 0;
    for (var j = 0; j < parts.length; j++) {
      out.set(parts[j], offset);
      offset += parts[j].length;
    }
    return out;
  }

  function readBlob(blob) {
    if (typeof blob.arrayBuffer === 'function') {
      return blob.arrayBuffer();
    }
    // Older engines (and some privacy-hardened ones) lack Blob.arrayBuffer.
    return new Promise(function (resolve, reject) {
      var reader = new FileReader();
      reader.onload = function () { resolve(reader.result); };
      reader.onerror = function () { reject(reader.error || new Error('could not read file')); };
      reader.readAsArrayBuffer(blob);
    });
  }

  async function encryptFile(file, key, onProgress) {
    if (!file || typeof file.slice !== 'function' || typeof file.size !== 'number') {
      throw new TypeError('encryptFile needs a Blob or File');
    }
    var s = getSodium();
    var stream = startStream(key);
    var ranges = chunkRanges(file.size);
    // A list of chunk arrays, never one buffer holding the whole file: the Blob constructor lets
    // the browser keep (or spill) the parts as it likes.
    var parts = [stream.header];
    if (onProgress) {
      onProgress(0, file.size);
    }
    // The file is read READ_CHUNKS chunks (1 MiB) at a time and pushed chunk by chunk: each read
    // is a round trip to wherever the browser keeps the file, and reading 64 KiB at a time took
    // three times as long as the encryption itself (bench/browser.py). The chunks are the same.
    for (var i = 0; i < ranges.length; i += READ_CHUNKS) {
      var group = ranges.slice(i, i + READ_CHUNKS);
      var start = group[0].start;
      var end = group[group.length - 1].end;
      var buf = new Uint8Array(await readBlob(file.slice(start, end)));
      if (buf.length !== end - start) {
        throw new Error('file changed while it was being read');
      }
      for (var j = 0; j < group.length; j++) {
        var r = group[j];
        parts.push(stream.push(buf.subarray(r.start - start, r.end - start), r.final));
      }
      // Do not leave plaintext copies lying around in the JS heap longer than needed.
      s.memzero(buf);
      if (onProgress) {
        onProgress(end, file.size);
      }
    }
    return new Blob(parts, { type: 'application/octet-stream' });
  }

  var api = {
    CHUNK_SIZE: CHUNK_SIZE,
    PAD_BLOCK: PAD_BLOCK,
    useSodium: useSodium,
    fingerprint: fingerprint,
    buildEnvelope: buildEnvelope,
    sealEnvelope: sealEnvelope,
    newAttachmentKey: newAttachmentKey,
    chunkRanges: chunkRanges,
    ciphertextSize: ciphertextSize,
    encryptBytes: encryptBytes,
    encryptFile: encryptFile,
    toBase64: toBase64,
    fromBase64: fromBase64
  };

  root.whistleCrypto = api;
  if (typeof module !== 'undefined' && module && module.exports) {
    module.exports = api;
  }
})(typeof globalThis !== 'undefined' ? globalThis : self);
