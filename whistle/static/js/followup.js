// SPDX-License-Identifier: AGPL-3.0-or-later
//
// Coming back, with keys the browser derives (docs/protocol.md, protocol v2): the login form of
// /followup and the case page's sealed replies. Needs js/submit.js (window.whistlePage) and its
// worker, loaded before it by templates/_crypto_scripts.html.
//
// Login: the passphrase is normalised and derived in the worker; only the login key goes to the
// server (the login endpoint, docs/protocol.md 5.3). The case page is then fetched and swapped into this page, and the
// address becomes /case (history.pushState): the keys stay in the worker, in this page's memory,
// never in storage or cookies. A reload of /case therefore has no keys: the page shows the sealed
// replies with a box for the passphrase, which opens them here (no request is made for it).
//
// Replies are verified and opened in the worker (signature by the unit's signing key, report id,
// the source's own key, case tag, no repeated number); anything else is withheld with the same
// words the server uses for a JavaScript-off session.
(function () {
  'use strict';

  var P = window.whistlePage;
  if (!P) {
    return;
  }
  var root = document.documentElement;
  var C = document.getElementById('whistle-js').dataset;
  // Receipts issued before the Spanish word list of issue 11 have 7 words (docs/protocol.md,
  // section 4); today's counts come from the params endpoint.
  var LEGACY_WORDS = 7;

  function wordCounts(params) {
    var counts = [LEGACY_WORDS];
    Object.keys(params.passphrase).forEach(function (lang) {
      var words = params.passphrase[lang].words;
      if (counts.indexOf(words) < 0) {
        counts.push(words);
      }
    });
    return counts;
  }

  // The login form's own texts: "You typed 1 word…" and the plural rendered for 100 words (the
  // server's own translations; the number is put in here).
  function wordCountMessage(form, count) {
    if (count === 1) {
      return form.dataset.msgWordsOne || '';
    }
    return (form.dataset.msgWordsOther || '').replace('100', String(count));
  }

  // --- login -----------------------------------------------------------------------------------

  function fallBackLogin(form) {
    P.showStatus(P.msg('fallback-login'), 'fallback');
    P.setProgress(null);
    form.dataset.fallback = 'true';
    root.dataset.whistleJs = 'fallback';
    setTimeout(function () { HTMLFormElement.prototype.submit.call(form); }, 1500);
  }

  async function login(form) {
    var field = form.elements.namedItem('passphrase');
    var typed = field ? field.value : '';
    var params;
    var result;
    try {
      await P.ready();
      params = await P.params();
      P.checkDerivationTime(params.argon2);
      result = await P.withDerivationProgress(params.argon2, function () {
        return P.call('derive', { typed: typed, argon2: params.argon2,
          wordCounts: wordCounts(params) });
      });
    } catch (err) {
      P.logError(err);
      fallBackLogin(form);
      return 'fallback';
    }
    if (!result.derived) {
      P.showError(wordCountMessage(form, result.wordCount), null);
      return 'failed';
    }
    var pow = await P.proofOrNull('login');
    P.showStatus(P.msg('deriving'), 'busy');
    var headers = { 'X-CSRFToken': P.csrfToken(), Accept: 'application/json',
      'Content-Type': 'application/x-www-form-urlencoded' };
    if (pow) {
      headers['X-Whistle-PoW'] = pow;
    }
    var response = await fetch(C.loginUrl, { method: 'POST', credentials: 'same-origin',
      headers: headers, body: 'login_key=' + encodeURIComponent(result.loginKey) });
    var body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (response.ok && body && body.ok === true) {
      field.value = '';
      await openCase(typeof body.case_url === 'string' && body.case_url.charAt(0) === '/'
        ? body.case_url : C.caseUrl);
      return 'done';
    }
    await P.call('forget', {});
    P.showError(body && typeof body.message === 'string' ? body.message : P.msg('error'), null);
    return 'failed';
  }

  async function openCase(url) {
    var doc = await P.fetchPage(url);
    P.swapPage(doc);
    if (window.history && history.pushState) {
      history.pushState({ whistle: 'case' }, '', url);
    }
    window.scrollTo(0, 0);
    bindPage();
  }

  // Back (or forward) out of a swapped page: load what the address says, keys forgotten.
  window.addEventListener('popstate', function () {
    window.location.reload();
  });

  function bindLogin() {
    var form = document.getElementById('login-form');
    if (!form || form.dataset.whistleBound) {
      return;
    }
    form.dataset.whistleBound = 'true';
    var busy = false;
    form.addEventListener('submit', function (ev) {
      if (form.dataset.fallback === 'true') {
        return;
      }
      ev.preventDefault();
      if (busy) {
        return;
      }
      busy = true;
      var button = form.querySelector('button[type="submit"]');
      if (button) {
        button.disabled = true;
      }
      login(form).then(function (outcome) {
        busy = false;
        if (button && outcome !== 'fallback') {
          button.disabled = false;
        }
      }, function (err) {
        busy = false;
        if (button) {
          button.disabled = false;
        }
        P.showError(P.msg('error'), null);
        P.logError(err);
      });
    });
  }

  // --- the case page ---------------------------------------------------------------------------

  function caseElement() {
    var el = document.getElementById('case-conversation');
    return el && el.dataset.browserSession === 'true' ? el : null;
  }

  function notice(kind, text) {
    var div = document.createElement('div');
    div.className = 'notice notice-' + kind;
    div.setAttribute('role', kind === 'error' || kind === 'warning' ? 'alert' : 'status');
    var p = document.createElement('p');
    p.textContent = text;
    div.appendChild(p);
    return div;
  }

  function render(li, result) {
    li.classList.remove('sealed');
    var status = li.querySelector('.reply-status');
    if (status) {
      status.remove();
    }
    if (result.ok) {
      var div = document.createElement('div');
      div.className = 'reply-body';
      div.textContent = result.body; // text, never HTML
      li.appendChild(div);
      li.dataset.state = 'opened';
    } else if (result.reason === 'undecryptable') {
      // Signed by the unit but does not open: shown, so the source can ask for it again.
      li.appendChild(notice('error', P.msg('undecryptable')));
      li.dataset.state = 'undecryptable';
    } else {
      // Never labelled as the unit's: nothing shows the unit wrote it for this case.
      li.classList.remove('reply');
      li.classList.add('withheld');
      var meta = li.querySelector('.meta');
      if (meta) {
        meta.textContent = meta.textContent.split(' — ')[0].trim() + ' — ' + P.msg('withheld-meta');
      }
      li.appendChild(notice('warning', P.msg('withheld')));
      li.dataset.state = 'withheld';
    }
  }

  async function openReplies(el) {
    var items = Array.prototype.slice.call(el.querySelectorAll('li.entry.sealed'));
    if (items.length) {
      await P.checkUnitKey();
      var results = await P.call('openReplies', { reportId: el.dataset.reportId,
        replies: items.map(function (li) {
          return { sealed: li.dataset.sealed || '', signature: li.dataset.signature || '' };
        }) });
      results.forEach(function (result, i) {
        render(items[i], result);
      });
    }
    var unlock = document.getElementById('unlock-form');
    if (unlock) {
      unlock.remove();
    }
    root.dataset.whistleCase = 'open';
  }

  // A reloaded case page: the keys are gone with the old page. A box for the passphrase, which is
  // derived here and checked against the report's stored key; nothing is sent for it.
  function showUnlock(el) {
    if (document.getElementById('unlock-form')) {
      return;
    }
    var form = document.createElement('form');
    form.id = 'unlock-form';
    form.className = 'unlock-form passphrase-field';
    form.setAttribute('autocomplete', 'off');
    var label = document.createElement('label');
    label.setAttribute('for', 'unlock-passphrase');
    label.textContent = P.msg('unlock');
    var input = document.createElement('input');
    input.type = 'text';
    input.id = 'unlock-passphrase';
    input.className = 'passphrase-input';
    ['autocomplete', 'autocapitalize', 'autocorrect', 'spellcheck'].forEach(function (name, i) {
      input.setAttribute(name, ['off', 'none', 'off', 'false'][i]);
    });
    var button = document.createElement('button');
    button.type = 'submit';
    button.className = 'primary';
    button.textContent = P.msg('unlock-button');
    var line = document.createElement('p');
    line.appendChild(label);
    line.appendChild(input);
    var actions = document.createElement('p');
    actions.appendChild(button);
    var status = document.createElement('p');
    status.className = 'unlock-status';
    status.setAttribute('role', 'status');
    form.appendChild(line);
    form.appendChild(actions);
    form.appendChild(status);
    el.parentNode.insertBefore(form, el);
    root.dataset.whistleCase = 'locked';

    var busy = false;
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      if (busy) {
        return;
      }
      busy = true;
      button.disabled = true;
      status.textContent = P.msg('deriving');
      P.params().then(function (params) {
        return P.withDerivationProgress(params.argon2, function () {
          return P.call('derive', { typed: input.value, argon2: params.argon2,
            expectPublicKey: el.dataset.sourcePublicKey });
        });
      }).then(function (result) {
        P.hideStatus();
        if (!result.derived) {
          status.textContent = P.msg('no-match');
          return null;
        }
        input.value = '';
        status.textContent = '';
        return openReplies(el);
      }).catch(function (err) {
        P.logError(err);
        P.hideStatus();
        status.textContent = P.msg('error');
      }).then(function () {
        busy = false;
        button.disabled = false;
      });
    });
  }

  function bindCase() {
    var el = caseElement();
    if (!el) {
      return;
    }
    P.call('hasKeys', { publicKey: el.dataset.sourcePublicKey }).then(function (have) {
      return have.keys ? openReplies(el) : showUnlock(el);
    }).catch(function (err) {
      P.logError(err);
      showUnlock(el);
    });
  }

  // A page that was swapped in (a message was sent): open its replies again.
  window.addEventListener('whistle:page', bindCase);

  function bindPage() {
    P.bindForms();
    bindLogin();
    bindCase();
  }

  bindPage();
})();
