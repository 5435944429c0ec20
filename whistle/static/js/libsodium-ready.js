// SPDX-License-Identifier: AGPL-3.0-or-later
//
// Load this between vendor/libsodium-sumo/libsodium-sumo.js and vendor/libsodium-sumo/libsodium-wrappers.js
// (js/crypto-worker.js does; the standard build in vendor/libsodium/ has the same bug).
//
// When WebAssembly is unavailable (Tor Browser's "Safer" level, a CSP without 'wasm-unsafe-eval'),
// libsodium.js (0.8.4) switches to its bundled pure-JavaScript module by deleting every property
// of the `libsodium` global, `ready` included, and copying the fallback's properties in. That runs
// in promise jobs, which a browser drains between two classic scripts, so libsodium-wrappers.js
// would then find no `libsodium.ready`, throw ("Cannot read properties of undefined (reading
// 'then')") and never define `sodium`: no encryption at all exactly where the fallback matters.
// `ready` is only ever deleted once the fallback has finished initialising, so an already
// resolved promise is the truthful replacement.
(function (root) {
  'use strict';
  var lib = root.libsodium;
  if (lib && typeof lib === 'object' && !lib.ready) {
    lib.ready = Promise.resolve();
  }
})(typeof globalThis !== 'undefined' ? globalThis : self);
