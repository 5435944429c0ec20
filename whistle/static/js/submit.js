// SPDX-License-Identifier: AGPL-3.0-or-later
//
// The source pages' script (docs/protocol.md, protocol v2): files a report, or sends a follow-up
// message, encrypted in the browser, with keys the browser derives itself from a passphrase it
// draws. The cryptography runs in js/crypto-worker.js (a Web Worker) so the page stays responsive;
// this file talks to the worker, shows progress and does the HTTP. It also offers
// window.whistlePage to js/followup.js (login, the case page's replies).
//
// Loaded with `defer` by templates/_crypto_scripts.html, whose <script id="whistle-js"> element
// carries every address (url_for) and text (the page's language) as data- attributes.
//
// Without JavaScript the forms post to the server, which derives and seals. With it, this script
// takes the forms over; when the worker cannot run or the derivation fails (no WebAssembly and too
// little memory for the pure-JavaScript fallback), it posts the ordinary form instead and says so.
// It never falls back once anything was sent, and never when the unit key does not check out.
(function () {
  'use strict';

  var root = document.documentElement;
  var script = document.getElementById('whistle-js');
  if (!script) {
    return;
  }
  var C = script.dataset;

  // --- texts and status --------------------------------------------------------------------------

  function camel(name) {
    return name.replace(/-([a-z])/g, function (m, c) { return c.toUpperCase(); });
  }

  // A text of the page: the status box's data-msg-* (per form) first, then the script element's.
  function msg(name) {
    var prop = camel('msg-' + name);
    var box = document.getElementById('js-status');
    return (box && box.dataset[prop]) || C[prop] || '';
  }

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

  // The status box and the bar of the page's progress panel (_macros.html progress_panel), looked
  // up each time: a page swap (login, language) replaces them.
  function statusBox() {
    return document.getElementById('js-status');
  }

  function showStatus(text, state) {
    var box = statusBox();
    if (!box) {
      return;
    }
    // Unhide before changing the text so that screen readers announce the live region.
    box.hidden = false;
    box.textContent = text;
    box.dataset.state = state;
    // In view while the work runs: the panel sits under the form, often below the fold.
    if (typeof box.scrollIntoView === 'function') {
      var rect = box.getBoundingClientRect();
      if (rect.top < 0 || rect.bottom > window.innerHeight) {
        box.scrollIntoView({ block: 'center' });
      }
    }
  }

  // The bytes done and the time left, after the status message. aria-hidden: it changes several
  // times a second, which would drown a screen reader in announcements; the <progress> element
  // carries the same progress for assistive technology.
  function showDetail(text) {
    var box = statusBox();
    if (!box) {
      return;
    }
    var detail = box.querySelector('.status-detail');
    if (!detail) {
      detail = document.createElement('span');
      detail.className = 'status-detail';
      detail.setAttribute('aria-hidden', 'true');
      box.appendChild(detail);
    }
    detail.textContent = text;
  }

  // null hides the bar; a number 0-100 shows it.
  function setProgress(percent) {
    var bar = document.getElementById('upload-progress');
    if (!bar) {
      return;
    }
    if (percent === null) {
      bar.hidden = true;
      bar.value = 0;
      return;
    }
    bar.hidden = false;
    bar.value = Math.max(0, Math.min(100, Math.floor(percent)));
  }

  function showError(text, detail) {
    showStatus(detail ? text + ' ' + detail : text, 'error');
    setProgress(null);
  }

  function hideStatus() {
    var box = statusBox();
    if (box) {
      box.hidden = true;
      box.textContent = '';
      box.dataset.state = 'done';
    }
    setProgress(null);
  }

  // Progress of a transfer step (encrypting, then uploading): the bar, the bytes done and, once
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

  function logError(err) {
    if (window.console && console.error) {
      console.error('whistle:', err);
    }
  }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute('content') || '' : '';
  }

  // Thrown to stop after its message has been shown.
  function Stop() {}

  // --- the worker ------------------------------------------------------------------------------

  var worker = null;
  var workerInfo = null; // the init answer: {wasm, calibration}
  var nextId = 1;
  var pending = {};

  function call(op, args, onProgress, transfer) {
    return ready().then(function () {
      return rawCall(op, args, onProgress, transfer);
    });
  }

  function rawCall(op, args, onProgress, transfer) {
    return new Promise(function (resolve, reject) {
      var id = nextId++;
      pending[id] = { resolve: resolve, reject: reject, progress: onProgress };
      worker.postMessage({ id: id, op: op, args: args }, transfer || []);
    });
  }

  function WorkerFailure(error) {
    this.code = error && error.code || 'error';
    this.message = error && error.message || 'worker error';
  }

  var readyPromise = null;

  // Starts the worker (once) and resolves when its libsodium is ready.
  function ready() {
    if (readyPromise) {
      return readyPromise;
    }
    readyPromise = new Promise(function (resolve, reject) {
      if (typeof Worker !== 'function') {
        reject(new WorkerFailure({ code: 'no_worker', message: 'no Web Worker in this browser' }));
        return;
      }
      try {
        worker = new Worker(C.worker);
      } catch (err) {
        reject(new WorkerFailure({ code: 'no_worker', message: String(err) }));
        return;
      }
      worker.onmessage = function (event) {
        var m = event.data || {};
        var entry = pending[m.id];
        if (!entry) {
          return;
        }
        if (m.type === 'progress') {
          if (entry.progress) {
            entry.progress(m.done, m.total);
          }
          return;
        }
        delete pending[m.id];
        if (m.type === 'result') {
          entry.resolve(m.result);
        } else {
          entry.reject(new WorkerFailure(m.error));
        }
      };
      worker.onerror = function (event) {
        // A script that did not load, or an exception outside a request: every waiting request
        // fails (and the page falls back), none hangs.
        logError(event && event.message);
        var failure = new WorkerFailure({ code: 'worker_failed', message: event && event.message });
        Object.keys(pending).forEach(function (id) {
          pending[id].reject(failure);
          delete pending[id];
        });
        reject(failure);
      };
      rawCall('init', { urls: { sodium: C.sodium, ready: C.ready, wrappers: C.wrappers,
        crypto: C.crypto, pow: C.powScript } }).then(function (info) {
        workerInfo = info;
        resolve(info);
      }, reject);
    });
    return readyPromise;
  }

  // --- HTTP ------------------------------------------------------------------------------------

  async function getJson(url) {
    var response = await fetch(url, { method: 'GET', credentials: 'same-origin',
      headers: { Accept: 'application/json' } });
    if (!response.ok) {
      throw new Error(url + ': HTTP ' + response.status);
    }
    return response.json();
  }

  var paramsPromise = null;

  // The instance's derivation parameters (docs/protocol.md 5.2; cacheable for an hour).
  function params() {
    if (!paramsPromise) {
      paramsPromise = getJson(C.paramsUrl).then(function (data) {
        if (!data || data.v !== 2 || !data.argon2 || !data.passphrase) {
          throw new Error('unsupported derivation parameters');
        }
        return data;
      }, function (err) {
        paramsPromise = null;
        throw err;
      });
    }
    return paramsPromise;
  }

  // How long argon2id will take here, from the worker's calibration (it grows with t × m).
  function estimateDerivationMs(argon2) {
    var cal = workerInfo && workerInfo.calibration;
    if (!cal || !cal.ms) {
      return 3000;
    }
    return cal.ms * (argon2.opslimit * argon2.memlimit) / (cal.opslimit * cal.memlimit);
  }

  // Longer than this (no WebAssembly and no JIT: about 110 s at t=3, 64 MiB in Chromium, see
  // bench/browser_argon2.py), the page leaves the derivation to the server instead and says so.
  var MAX_DERIVATION_MS = 30000;

  // Rejects (a WorkerFailure, so the caller falls back) when the worker's calibration says this
  // derivation would take longer than a source should wait.
  function checkDerivationTime(argon2) {
    if (estimateDerivationMs(argon2) > MAX_DERIVATION_MS) {
      throw new WorkerFailure({ code: 'too_slow',
        message: 'argon2id would take about ' + Math.round(estimateDerivationMs(argon2) / 1000) + ' s' });
    }
  }

  // A derivation in the worker, with the bar moving by the estimate and the time left; resolves
  // to the worker's answer.
  function withDerivationProgress(argon2, work) {
    var estimate = Math.max(200, estimateDerivationMs(argon2));
    var started = Date.now();
    showStatus(msg('deriving'), 'busy');
    setProgress(0);
    function tick() {
      var elapsed = Date.now() - started;
      // Never claims to be done before it is: at most 95 % until the worker answers.
      setProgress(Math.min(95, (elapsed * 100) / estimate));
      var left = msg('left');
      if (left) {
        showDetail(fill(left, { left: formatDuration(Math.max(0, estimate - elapsed) / 1000) }));
      }
    }
    tick();
    var timer = setInterval(tick, 200);
    return work().then(function (result) {
      clearInterval(timer);
      setProgress(100);
      return result;
    }, function (err) {
      clearInterval(timer);
      throw err;
    });
  }

  // A proof of work for this request, solved in the worker, or null if it cannot be had: the
  // server then counts the request against its per-minute ceiling (JavaScript-off rules).
  async function proofOfWork(purpose, url) {
    url = url || C.powUrl;
    if (!url) {
      throw new Error('no proof-of-work address on the page');
    }
    var query = (url.indexOf('?') < 0 ? '?' : '&') + 'purpose=' + encodeURIComponent(purpose);
    var data = await getJson(url + query);
    if (!data || typeof data.challenge !== 'string' || typeof data.difficulty !== 'number') {
      throw new Error('challenge response is malformed');
    }
    var solved = await call('pow', { challenge: data.challenge, difficulty: data.difficulty });
    return data.challenge + '.' + String(solved.nonce);
  }

  async function proofOrNull(purpose, url) {
    showStatus(msg('pow') || msg('uploading'), 'busy');
    try {
      return await proofOfWork(purpose, url);
    } catch (err) {
      logError(err);
      return null;
    }
  }

  // Fetches the unit's keys and has the worker check them against the fingerprints on the page.
  async function checkUnitKey() {
    var data = await getJson(C.unitKeyUrl);
    var shown = document.getElementById('unit-fingerprint');
    var shownSign = document.getElementById('unit-sign-fingerprint');
    try {
      await call('unitKey', { data: data, shown: shown ? shown.textContent : '',
        shownSign: shownSign ? shownSign.textContent : null });
    } catch (err) {
      if (err instanceof WorkerFailure && err.code === 'key_mismatch') {
        showError(msg('key-mismatch'), null);
        throw new Stop();
      }
      throw err;
    }
  }

  // POST multipart with upload progress (XMLHttpRequest: fetch reports none).
  function upload(url, fields, parts, pow) {
    var data = new FormData();
    // Part order is part of the protocol: the sealed envelope, then the attachments in envelope
    // order; the text fields go first.
    Object.keys(fields).forEach(function (name) {
      data.append(name, fields[name]);
    });
    parts.forEach(function (part) {
      data.append(part.name, part.blob, part.filename);
    });
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open('POST', url, true);
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

  // Seals in the worker (progress: bytes encrypted), then uploads with a proof of work (twice at
  // most: a challenge can go stale while the load rises, docs/protocol.md section 7).
  async function sealAndUpload(kind, url, seal, fields, powPurpose) {
    showStatus(msg('encrypting'), 'busy');
    setProgress(0);
    var startedAt = Date.now();
    var sealed = await call('seal', seal, function (done, total) {
      showTransfer(done, total, startedAt);
    });
    var parts = [{ name: kind, blob: new Blob([sealed.sealed], { type: 'application/octet-stream' }),
      filename: kind + '.bin' }];
    sealed.blobs.forEach(function (blob) {
      parts.push({ name: 'attachment', blob: blob, filename: 'attachment.bin' });
    });
    var result = null;
    for (var attempt = 0; attempt < 2; attempt++) {
      var pow = await proofOrNull(powPurpose, null);
      showStatus(msg('uploading'), 'busy');
      setProgress(0);
      result = await upload(url, fields, parts, pow);
      var code = errorCode(result);
      if (!(result.status === 400 && code.indexOf('pow_') === 0)) {
        break;
      }
    }
    return result;
  }

  function errorCode(result) {
    return result && result.body && typeof result.body.error === 'string' ? result.body.error : '';
  }

  function serverMessage(result) {
    return result && result.body && typeof result.body.message === 'string' ? result.body.message : null;
  }

  // --- page swaps (login, the receipt's language links, after a message) -------------------------

  async function fetchPage(url) {
    var response = await fetch(url, { method: 'GET', credentials: 'same-origin',
      headers: { Accept: 'text/html' } });
    if (!response.ok) {
      throw new Error(url + ': HTTP ' + response.status);
    }
    return new DOMParser().parseFromString(await response.text(), 'text/html');
  }

  // Puts another page's header, <main>, footer, title, language and CSRF token into this one.
  // The scripts stay the same (and so does the worker, with the keys in it).
  function swapPage(doc) {
    ['header.site', 'main', 'footer.site'].forEach(function (selector) {
      var mine = document.querySelector(selector);
      var theirs = doc.querySelector(selector);
      if (mine && theirs) {
        mine.replaceWith(document.importNode(theirs, true));
      }
    });
    document.title = doc.title;
    if (doc.documentElement.lang) {
      root.lang = doc.documentElement.lang;
    }
    var meta = document.querySelector('meta[name="csrf-token"]');
    var theirMeta = doc.querySelector('meta[name="csrf-token"]');
    if (meta && theirMeta) {
      meta.setAttribute('content', theirMeta.getAttribute('content') || '');
    }
    // The swapped page's own script texts (the same element, in its language).
    var theirScript = doc.getElementById('whistle-js');
    if (theirScript) {
      Object.keys(theirScript.dataset).forEach(function (name) {
        if (name.indexOf('msg') === 0) {
          C[name] = theirScript.dataset[name];
        }
      });
    }
  }

  // --- the report form -------------------------------------------------------------------------

  // The characters Python's str.isspace() counts as white space (the JavaScript-off form refuses
  // a text made only of them: DataRequired strips with str.strip()). Not \s: that also has
  // U+FEFF and lacks U+001C-U+001F and U+0085, and both paths must apply the same rule.
  var BLANK = /^[\t\n\v\f\r \u001c-\u001f\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/;

  function blankBody(form) {
    var field = form.elements.namedItem('body');
    return field && BLANK.test(field.value || '') ? field : null;
  }

  function formFiles(form) {
    var input = form.elements.namedItem('attachments');
    // A snapshot, so that changing the selection mid-way cannot desynchronise envelope and parts.
    return input && input.files ? Array.prototype.slice.call(input.files) : [];
  }

  // The answers to the deployment's optional questions (templates/_questions.html) that the
  // chosen category asks: the q_<id> fields of the groups whose data-categories name it (or of
  // every category), as [id, text] pairs in page order, empty ones left out — what the server
  // keeps on the JavaScript-off path. They travel only inside the sealed envelope ("fields").
  function formAnswers(form, category) {
    var answers = [];
    Array.prototype.forEach.call(form.querySelectorAll('.question-group'), function (group) {
      var codes = group.dataset.categories;
      if (codes !== undefined && codes.split(' ').indexOf(category) < 0) {
        return;
      }
      Array.prototype.forEach.call(group.querySelectorAll('input[name^="q_"], select[name^="q_"]'),
        function (input) {
          var value = input.value.trim();
          if (value !== '') {
            answers.push([input.name.slice(2), value]);
          }
        });
    });
    return answers;
  }

  // With script the form shows only the questions the chosen category asks.
  function showQuestionsFor(form) {
    var select = form.elements.namedItem('category');
    var category = select ? select.value : '';
    Array.prototype.forEach.call(form.querySelectorAll('.question-group[data-categories]'),
      function (group) {
        group.hidden = group.dataset.categories.split(' ').indexOf(category) < 0;
      });
  }

  // The ordinary form post: the server derives and seals (JavaScript-off path). Only before
  // anything was sent, and never after a key mismatch.
  function fallBack(form, text) {
    showStatus(text, 'fallback');
    setProgress(null);
    root.dataset.whistleJs = 'fallback';
    form.dataset.fallback = 'true';
    // Let the sentence be seen before the page changes.
    setTimeout(function () { HTMLFormElement.prototype.submit.call(form); }, 1500);
  }

  var MAX_DRAWS = 3;

  async function submitReport(form) {
    var fields = form.elements;
    var category = fields.namedItem('category') ? fields.namedItem('category').value : '';
    var body = fields.namedItem('body') ? fields.namedItem('body').value : '';
    var files = formFiles(form);
    var answers = formAnswers(form, category);
    var p;
    var passphrase = null;
    var keys = null;
    var result = null;
    for (var draw = 0; draw < MAX_DRAWS; draw++) {
      try {
        await ready();
        p = await params();
        var lang = Object.prototype.hasOwnProperty.call(p.passphrase, root.lang) ? root.lang : 'es';
        var list = p.passphrase[lang];
        var response = await fetch(list.url, { credentials: 'same-origin' });
        if (!response.ok) {
          throw new Error('word list: HTTP ' + response.status);
        }
        var wordlist = await response.arrayBuffer();
        checkDerivationTime(p.argon2);
        keys = await withDerivationProgress(p.argon2, function () {
          return call('newPassphrase', { argon2: p.argon2, wordlist: wordlist, sha256: list.sha256,
            listSize: list.list_size, words: list.words }, null, [wordlist]);
        });
        passphrase = keys.passphrase;
      } catch (err) {
        // No worker, no WebAssembly and too little memory, a damaged word list: the server
        // derives instead (nothing was sent yet).
        logError(err);
        fallBack(form, msg('fallback'));
        return 'fallback';
      }
      if (draw === 0) {
        await checkUnitKey();
      }
      result = await sealAndUpload('report', form.dataset.uploadUrl,
        { kind: 'report', category: category, fields: answers, body: body, files: files, seq: 1 },
        { login_hash: keys.loginHash, source_public_key: keys.publicKey }, 'submit');
      if (!(result.status === 409 && errorCode(result) === 'passphrase_taken')) {
        break;
      }
      // Someone holds this passphrase already (a 1 in 2^90 chance, or a server that says so):
      // draw another, derive again and seal again (the envelope carries the keys).
      passphrase = null;
    }
    if (result.status === 201 && result.body && result.body.ok === true && passphrase) {
      showReceipt(passphrase);
      return 'done';
    }
    if (result.status === 413) {
      showError(msg('too-large'), null);
    } else {
      showError(msg('error'), serverMessage(result));
    }
    return 'failed';
  }

  // --- the receipt, from memory ----------------------------------------------------------------

  var receiptPassphrase = null;

  // The receipt as a page state of its own: the form's heading and intro go, the tab title and
  // heading are the receipt's, and the address becomes the receipt page's, so that a reload says
  // "this receipt was already shown" instead of showing an empty form (or anything else).
  function showReceipt(passphrase) {
    receiptPassphrase = passphrase;
    var receipt = document.getElementById('receipt');
    var form = document.getElementById('submit-form');
    var intro = document.getElementById('submit-intro');
    document.getElementById('receipt-passphrase').textContent = passphrase;
    if (form) {
      form.hidden = true;
    }
    if (intro) {
      intro.hidden = true;
    }
    hideStatus();
    receipt.hidden = false;
    if (receipt.dataset.title) {
      document.title = receipt.dataset.title;
    }
    if (!receipt.hasAttribute('tabindex')) {
      receipt.setAttribute('tabindex', '-1');
    }
    receipt.focus();
    if (C.receiptUrl && window.history && history.replaceState) {
      history.replaceState(null, '', C.receiptUrl);
    }
    keepReceiptOnLanguageSwitch();
  }

  // The language links swap the receipt's texts for the other language's, rendered by the server
  // (the submission page in that language), and keep the passphrase, which only this page has.
  // If that page cannot be had, the link warns before leaving.
  function keepReceiptOnLanguageSwitch() {
    var links = document.querySelectorAll('nav.lang a[hreflang]');
    Array.prototype.forEach.call(links, function (link) {
      link.addEventListener('click', function (ev) {
        ev.preventDefault();
        var lang = link.getAttribute('hreflang');
        fetchPage(C.submitUrl + '?lang=' + encodeURIComponent(lang)).then(function (doc) {
          if (!doc.getElementById('receipt') || !doc.getElementById('receipt-passphrase')) {
            throw new Error('no receipt on the page');
          }
          swapPage(doc);
          showReceipt(receiptPassphrase);
        }).catch(function (err) {
          logError(err);
          if (window.confirm(msg('leave'))) {
            window.location.assign(link.href);
          }
        });
      });
    });
  }

  // --- the message form (the case page) --------------------------------------------------------

  function caseElement() {
    return document.getElementById('case-conversation');
  }

  function browserSession() {
    var el = caseElement();
    return Boolean(el && el.dataset.browserSession === 'true');
  }

  async function sendMessage(form) {
    var el = caseElement();
    var have = await call('hasKeys', { publicKey: el.dataset.sourcePublicKey });
    if (!have.keys) {
      // The keys are made from the passphrase; followup.js offers the box for it.
      showError(msg('need-passphrase'), null);
      var box = document.querySelector('.unlock-form input');
      if (box) {
        box.focus();
      }
      return 'failed';
    }
    await checkUnitKey();
    var body = form.elements.namedItem('body') ? form.elements.namedItem('body').value : '';
    var files = formFiles(form);
    var seq = parseInt(el.dataset.nextSeq, 10);
    var result = null;
    for (var attempt = 0; attempt < 2; attempt++) {
      result = await sealAndUpload('message', form.dataset.uploadUrl,
        { kind: 'message', body: body, files: files, seq: seq }, { seq: String(seq) }, 'message');
      if (!(result.status === 409 && errorCode(result) === 'stale_seq') || attempt > 0) {
        break;
      }
      // Another message went in first (another tab): the case page knows the next number.
      var fresh = await fetchPage(C.caseUrl);
      var freshCase = fresh.getElementById('case-conversation');
      seq = freshCase ? parseInt(freshCase.dataset.nextSeq, 10) : NaN;
      if (!Number.isSafeInteger(seq)) {
        break;
      }
    }
    if (result.status === 201 && result.body && result.body.ok === true) {
      showStatus(msg('sent'), 'done');
      setProgress(null);
      // The conversation with the new message, without a reload (that would lose the keys).
      var doc = await fetchPage(C.caseUrl);
      swapPage(doc);
      window.dispatchEvent(new CustomEvent('whistle:page'));
      bindForms();
      return 'done';
    }
    if (result.status === 413) {
      showError(msg('too-large'), null);
    } else {
      showError(msg('error'), serverMessage(result));
    }
    return 'failed';
  }

  // --- wiring ----------------------------------------------------------------------------------

  function bindForm(form) {
    if (!form || form.dataset.whistleBound) {
      return;
    }
    form.dataset.whistleBound = 'true';
    var kind = form.dataset.kind === 'message' ? 'message' : 'report';
    var busy = false;
    if (kind === 'report' && form.elements.namedItem('category')) {
      showQuestionsFor(form);
      form.elements.namedItem('category').addEventListener('change', function () {
        showQuestionsFor(form);
      });
    }
    form.addEventListener('submit', function (ev) {
      if (form.dataset.fallback === 'true') {
        return; // the ordinary post, on purpose
      }
      if (kind === 'message' && !browserSession()) {
        // A session the server derived (JavaScript was off, or fell back, at login): the server
        // holds the case's keys and seals the message; the browser has none.
        return;
      }
      ev.preventDefault();
      if (busy) {
        return;
      }
      var blank = blankBody(form);
      if (blank) {
        // The same rule as the JavaScript-off form, with its message; nothing is sealed or sent.
        showError(msg('empty'), null);
        blank.focus();
        return;
      }
      busy = true;
      var button = form.querySelector('button[type="submit"]');
      if (button) {
        button.disabled = true;
      }
      var work = kind === 'report' ? submitReport(form) : sendMessage(form);
      work.then(function (outcome) {
        busy = false;
        if (button && outcome === 'failed') {
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
  }

  function bindForms() {
    bindForm(document.getElementById('submit-form'));
  }

  window.whistlePage = {
    call: call,
    ready: ready,
    params: params,
    msg: msg,
    fill: fill,
    showStatus: showStatus,
    showError: showError,
    hideStatus: hideStatus,
    setProgress: setProgress,
    withDerivationProgress: withDerivationProgress,
    checkDerivationTime: checkDerivationTime,
    proofOfWork: proofOfWork,
    proofOrNull: proofOrNull,
    checkUnitKey: checkUnitKey,
    fetchPage: fetchPage,
    swapPage: swapPage,
    bindForms: bindForms,
    csrfToken: csrfToken,
    logError: logError,
    WorkerFailure: WorkerFailure,
    Stop: Stop,
    info: function () { return workerInfo; }
  };

  bindForms();
  root.dataset.whistleJs = 'loading';

  // The worker (and the 1 MB libsodium it loads) only once the page itself has loaded: nothing
  // the source needs to start typing waits for it.
  function start() {
    ready().then(function () {
      root.dataset.whistleJs = 'ready';
    }, function (err) {
      // The forms still work: they post to the server, which derives and seals.
      root.dataset.whistleJs = 'fallback';
      logError(err);
    });
  }
  if (document.readyState === 'complete') {
    start();
  } else {
    window.addEventListener('load', start);
  }
})();
