// SPDX-License-Identifier: AGPL-3.0-or-later
//
// Encrypts a report in the browser before anything leaves it (docs/protocol.md, sections 2, 3, 5).
//
// Loaded with `defer` after vendor/libsodium/libsodium.js, js/libsodium-ready.js,
// vendor/libsodium/libsodium-wrappers.js and js/whistle-crypto.js, in that order. Without
// JavaScript the form posts to the server, which seals it; with JavaScript this script takes the
// form over completely. Once it runs it never lets the form fall through to a plaintext post, even
// when libsodium is missing or the unit key does not check out: a source who chose the encrypted
// path must not be silently downgraded.
(function () {
  'use strict';

  var root = document.documentElement;
  var form = document.getElementById('submit-form');
  if (!form) {
    return;
  }
  var button = document.getElementById('submit-button');
  var statusBox = document.getElementById('js-status');
  var progressBar = document.getElementById('upload-progress');
  var receipt = document.getElementById('receipt');
  var receiptPassphrase = document.getElementById('receipt-passphrase');

  // The same script serves the report form (/submit) and the follow-up message form (/case):
  // data-kind on the form says which envelope to build and which part to send; the page gives
  // the addresses (url_for in the template), so the script never has to know the routes.
  var KIND = form.dataset.kind === 'message' ? 'message' : 'report';
  var UNIT_KEY_URL = form.dataset.unitKeyUrl || '';
  var UPLOAD_URL = form.dataset.uploadUrl || '';
  var POW_URL = form.dataset.powUrl || '';

  root.dataset.whistleJs = 'loading';

  // Start loading libsodium at once; a submit before it is ready simply waits for it.
  var sodiumReady = (async function () {
    var s = window.sodium;
    if (!s || !s.ready || !window.whistleCrypto) {
      throw new Error('libsodium or whistle-crypto.js did not load');
    }
    await s.ready;
    return s;
  })();
  sodiumReady.then(function () {
    root.dataset.whistleJs = 'ready';
  }, function (err) {
    root.dataset.whistleJs = 'error';
    showError(msg('error'), null);
    logError(err);
  });

  function msg(name) {
    // data-msg-key-mismatch -> dataset.msgKeyMismatch
    var prop = 'msg' + name.replace(/(^|-)([a-z])/g, function (m, dash, c) {
      return c.toUpperCase();
    });
    return (statusBox && statusBox.dataset[prop]) || '';
  }

  // The bytes done and the time left, after the status message. aria-hidden: it changes several
  // times a second, which would drown a screen reader in announcements; the <progress> element
  // carries the same progress for assistive technology.
  var statusDetail = null;

  function showStatus(text, state) {
    if (!statusBox) {
      return;
    }
    // Unhide before changing the text so that screen readers announce the live region.
    statusBox.hidden = false;
    statusBox.textContent = text;
    statusBox.dataset.state = state;
    statusDetail = null;
  }

  function showDetail(text) {
    if (!statusBox) {
      return;
    }
    if (!statusDetail || statusDetail.parentNode !== statusBox) {
      statusDetail = document.createElement('span');
      statusDetail.className = 'status-detail';
      statusDetail.setAttribute('aria-hidden', 'true');
      statusBox.appendChild(statusDetail);
    }
    statusDetail.textContent = text;
  }

  // A page template with {name} placeholders (the data-msg-* attributes), filled in.
  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, function (whole, name) {
      return Object.prototype.hasOwnProperty.call(values, name) ? values[name] : whole;
    });
  }

  function formatNumber(value, digits) {
    try {
      // The page's language: "12,0 MB" on a Spanish page.
      return value.toLocaleString(root.lang || undefined,
        { minimumFractionDigits: digits, maximumFractionDigits: digits });
    } catch (e) {
      return value.toFixed(digits);
    }
  }

  // Decimal units, as file managers show sizes: a 50 MB file reads "50.0 MB".
  function formatBytes(bytes) {
    if (bytes >= 1e9) {
      return formatNumber(bytes / 1e9, 2) + ' GB';
    }
    if (bytes >= 1e6) {
      return formatNumber(bytes / 1e6, 1) + ' MB';
    }
    return formatNumber(Math.ceil(bytes / 1e3), 0) + ' KB';
  }

  // Rounded up: an estimate that runs out before the work does reads as a hang.
  function formatDuration(seconds) {
    if (seconds < 60) {
      return Math.max(1, Math.ceil(seconds)) + ' s';
    }
    return Math.ceil(seconds / 60) + ' min';
  }

  // Progress of the current step (encrypting, then uploading): the bar, the bytes done and, once
  // the step has run a second and the rate means something, an estimate of the time left.
  function showTransfer(done, total, startedAt) {
    setProgress(total ? (done * 100) / total : 100);
    var template = msg('progress');
    if (!template || !total) {
      return;
    }
    var text = fill(template, { sent: formatBytes(done), total: formatBytes(total) });
    var elapsed = (Date.now() - startedAt) / 1000;
    var left = msg('left');
    if (left && elapsed >= 1 && done > 0 && done < total) {
      text += ' · ' + fill(left, { left: formatDuration((elapsed * (total - done)) / done) });
    }
    showDetail(text);
  }

  function showError(text, detail) {
    showStatus(detail ? text + ' ' + detail : text, 'error');
    setProgress(null);
  }

  // null hides the bar; a number 0-100 shows it.
  function setProgress(percent) {
    if (!progressBar) {
      return;
    }
    if (percent === null) {
      progressBar.hidden = true;
      progressBar.value = 0;
      return;
    }
    progressBar.hidden = false;
    progressBar.value = Math.max(0, Math.min(100, Math.floor(percent)));
  }

  function logError(err) {
    if (window.console && console.error) {
      console.error('whistle:', err);
    }
  }

  function normaliseSpace(text) {
    return (text || '').replace(/\s+/g, ' ').trim();
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute('content') || '' : '';
  }

  // Thrown to stop a submission after its message has been shown.
  function Stop() {}

  async function fetchUnitKey(sodium) {
    if (!UNIT_KEY_URL || !UPLOAD_URL) {
      // A page without its addresses: refuse rather than guess (and never post the plaintext).
      throw new Error('the form carries no data-unit-key-url or data-upload-url');
    }
    var response = await fetch(UNIT_KEY_URL, {
      method: 'GET',
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { Accept: 'application/json' }
    });
    if (!response.ok) {
      throw new Error('unit key request failed: HTTP ' + response.status);
    }
    var data = await response.json();
    if (!data || typeof data.public_key !== 'string' || typeof data.fingerprint !== 'string') {
      throw new Error('unit key response is malformed');
    }
    var publicKey = sodium.from_base64(data.public_key, sodium.base64_variants.ORIGINAL);
    var computed = window.whistleCrypto.fingerprint(publicKey);
    var shown = document.getElementById('unit-fingerprint');
    // The key is only trusted if it is the one the page told the source about, and the one the
    // server says it is: a swapped key would otherwise go unnoticed until the unit cannot decrypt.
    if (!shown || computed !== normaliseSpace(data.fingerprint) ||
        computed !== normaliseSpace(shown.textContent)) {
      showError(msg('key-mismatch'), null);
      throw new Stop();
    }
    return publicKey;
  }

  async function encryptAttachments(files) {
    var wc = window.whistleCrypto;
    var total = files.reduce(function (sum, f) { return sum + f.size; }, 0);
    var before = 0;
    var entries = [];
    var blobs = [];
    var startedAt = Date.now();
    for (var i = 0; i < files.length; i++) {
      var file = files[i];
      var key = wc.newAttachmentKey();
      blobs.push(await wc.encryptFile(file, key, function (done) {
        showTransfer(before + done, total, startedAt);
      }));
      before += file.size;
      entries.push({ name: file.name, type: file.type || '', size: file.size, key: key });
    }
    return { entries: entries, blobs: blobs };
  }

  // A proof of work for this upload (pow.js), or null if it cannot be had: the server then
  // counts the upload against its per-minute ceiling, as for a JavaScript-off form.
  async function proofOfWork() {
    if (!window.whistlePow) {
      return null;
    }
    showStatus(msg('pow') || msg('uploading'), 'busy');
    try {
      return await window.whistlePow.token(KIND === 'message' ? 'message' : 'submit', POW_URL);
    } catch (err) {
      logError(err);
      return null;
    }
  }

  function upload(sealed, blobs, pow) {
    var data = new FormData();
    // Part order is part of the protocol: the report, then the attachments in envelope order.
    data.append(KIND, new Blob([sealed], { type: 'application/octet-stream' }), KIND + '.bin');
    for (var i = 0; i < blobs.length; i++) {
      data.append('attachment', blobs[i], 'attachment.bin');
    }
    data.append('lang', root.lang || '');

    return new Promise(function (resolve, reject) {
      // XMLHttpRequest rather than fetch: only it reports upload progress.
      var xhr = new XMLHttpRequest();
      xhr.open('POST', UPLOAD_URL, true);
      xhr.setRequestHeader('X-CSRFToken', csrfToken());
      if (pow) {
        xhr.setRequestHeader('X-Whistle-PoW', pow);
      }
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.responseType = 'text';
      var startedAt = Date.now();
      xhr.upload.onprogress = function (ev) {
        if (ev.lengthComputable && ev.total > 0) {
          showTransfer(ev.loaded, ev.total, startedAt);
        }
      };
      xhr.onload = function () {
        var body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch (e) {
          body = null; // a proxy's HTML error page, for instance
        }
        resolve({ status: xhr.status, body: body });
      };
      xhr.onerror = function () { reject(new Error('network error during upload')); };
      xhr.onabort = function () { reject(new Error('upload aborted')); };
      xhr.ontimeout = function () { reject(new Error('upload timed out')); };
      xhr.send(data);
    });
  }

  // The characters Python's str.isspace() counts as white space (the JavaScript-off form refuses
  // a text made only of them: DataRequired strips with str.strip()). Not \s: that also has
  // U+FEFF and lacks U+001C-U+001F and U+0085, and both paths must apply the same rule.
  var BLANK = /^[\t\n\v\f\r \u001c-\u001f\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/;

  // The text box, when its text is empty or only white space (checked before anything is sealed:
  // the server cannot see a sealed text to refuse it).
  function blankBody() {
    var field = form.elements.namedItem('body');
    return field && BLANK.test(field.value || '') ? field : null;
  }

  // The receipt as a page state of its own: the form's heading and intro go with the form, the
  // tab title names the receipt, and the language links re-render this receipt on the server
  // (receipt_url carries a one-time ticket) instead of loading an empty form and losing it.
  function enterReceiptState(receiptUrl) {
    var intro = document.getElementById('submit-intro');
    if (intro) {
      intro.hidden = true;
    }
    if (receipt.dataset.title) {
      document.title = receipt.dataset.title;
    }
    var links = document.querySelectorAll('nav.lang a[hreflang]');
    for (var i = 0; i < links.length; i++) {
      if (typeof receiptUrl === 'string' && receiptUrl.charAt(0) === '/') {
        links[i].setAttribute('href', receiptUrl + (receiptUrl.indexOf('?') < 0 ? '?' : '&') +
          'lang=' + encodeURIComponent(links[i].getAttribute('hreflang')));
      } else {
        // No way back to this receipt: warn before leaving it (the passphrase is shown once).
        links[i].addEventListener('click', warnBeforeLeaving);
      }
    }
  }

  function warnBeforeLeaving(ev) {
    if (!window.confirm(receipt.dataset.leaveWarning || '')) {
      ev.preventDefault();
    }
  }

  function showReceipt(passphrase) {
    receiptPassphrase.textContent = passphrase;
    form.hidden = true;
    setProgress(null);
    if (statusBox) {
      statusBox.hidden = true;
      statusBox.textContent = '';
      statusBox.dataset.state = 'done';
    }
    receipt.hidden = false;
    if (!receipt.hasAttribute('tabindex')) {
      receipt.setAttribute('tabindex', '-1');
    }
    receipt.focus();
  }

  async function submitEncrypted() {
    showStatus(msg('encrypting'), 'busy');
    setProgress(0);
    var sodium = await sodiumReady;
    var wc = window.whistleCrypto;
    var publicKey = await fetchUnitKey(sodium);

    var fields = form.elements;
    var category = fields.namedItem('category') ? fields.namedItem('category').value : '';
    var body = fields.namedItem('body') ? fields.namedItem('body').value : '';
    var fileInput = fields.namedItem('attachments');
    // A snapshot, so that changing the selection mid-way cannot desynchronise envelope and parts.
    var files = fileInput && fileInput.files ? Array.prototype.slice.call(fileInput.files) : [];

    var encrypted = await encryptAttachments(files);
    var envelope = wc.buildEnvelope({
      kind: KIND,
      category: KIND === 'report' ? category : '',
      body: body,
      attachments: encrypted.entries
    });
    var sealed = wc.sealEnvelope(envelope, publicKey);
    // The keys now live only inside the sealed envelope.
    sodium.memzero(envelope);
    encrypted.entries.forEach(function (entry) { sodium.memzero(entry.key); });

    var result = null;
    // Twice at most: a challenge can go stale while the load rises (docs/protocol.md, section 7).
    for (var attempt = 0; attempt < 2; attempt++) {
      var pow = await proofOfWork();
      showStatus(msg('uploading'), 'busy');
      setProgress(0);
      result = await upload(sealed, encrypted.blobs, pow);
      var code = result.body && typeof result.body.error === 'string' ? result.body.error : '';
      if (!(result.status === 400 && code.indexOf('pow_') === 0)) {
        break;
      }
    }
    var serverMessage = result.body && typeof result.body.message === 'string'
      ? result.body.message : null;
    if (KIND === 'message' && result.status === 201 && result.body && result.body.ok === true) {
      showStatus(msg('sent'), 'done');
      setProgress(null);
      // Reload so the conversation shows the new message, as after the JavaScript-off post.
      window.location.assign(window.location.pathname);
      return true;
    }
    if (KIND === 'report' && result.status >= 200 && result.status < 300 && result.body &&
        typeof result.body.passphrase === 'string' && result.body.passphrase) {
      showReceipt(result.body.passphrase);
      enterReceiptState(result.body.receipt_url);
      return true;
    }
    if (result.status === 413) {
      showError(msg('too-large'), null);
    } else {
      showError(msg('error'), serverMessage);
    }
    return false;
  }

  var busy = false;
  form.addEventListener('submit', function (ev) {
    ev.preventDefault();
    if (busy) {
      return;
    }
    var blank = blankBody();
    if (blank) {
      // The same rule as the JavaScript-off form, with its message; nothing is sealed or sent.
      showError(msg('empty'), null);
      blank.focus();
      return;
    }
    busy = true;
    if (button) {
      button.disabled = true;
    }
    submitEncrypted().then(function (done) {
      busy = false;
      if (button && !done) {
        button.disabled = false;
      }
    }, function (err) {
      busy = false;
      if (button) {
        button.disabled = false;
      }
      if (!(err instanceof Stop)) {
        showError(msg('error'), null);
        logError(err);
      }
    });
  });
})();
