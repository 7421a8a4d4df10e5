/*
 * pgwarden review app — keeps the server-rendered pages live (served as /review/static/review.js).
 *
 * Polls the page's `data-live` JSON every 2 s and updates the list of approvals, or one
 * approval's state and votes. Security rules (do not relax): server data goes into the page only
 * through textContent and createElement — never innerHTML or HTML strings (the packet holds the
 * model's words); no inline styles or handlers (strict CSP). The decision form is never touched
 * while it is shown, so a half-typed reason survives; it is hidden once the approval is decided.
 */
'use strict';

(() => {
  const POLL_MS = 2000;
  const HIDDEN = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u061C\u180E\u200B-\u200F\u2028-\u202E\u2060-\u2069\uFEFF]/g;

  /** The server's rule: hidden characters become \u{XXXX}. */
  function visible(value) {
    return String(value ?? '').replace(
      HIDDEN,
      (c) => `\\u{${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}}`,
    );
  }

  function el(tag, text, className) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = visible(text);
    return e;
  }

  function str(v) {
    return typeof v === 'string' ? v : '';
  }

  /** "1 of 2"; all of them once approved (the last approval leaves no vote). */
  const APPROVED = ['approved', 'dry_run', 'executing', 'done', 'failed'];
  function tally(a) {
    const votes = Array.isArray(a.votes) ? a.votes.length : 0;
    const needed = Number.isInteger(a.min_approvals) ? a.min_approvals : 1;
    return `${APPROVED.includes(a.state) ? needed : votes} of ${needed}`;
  }

  const WORD = /^[a-z_]+$/;
  function stateClass(state) {
    return `state state-${WORD.test(str(state)) ? state : 'unknown'}`;
  }

  function riskBadge(risk) {
    const known = ['low', 'medium', 'high', 'critical'].includes(risk) ? risk : 'unknown';
    return el('span', risk, `badge risk-${known}`);
  }

  async function poll(url, apply, status) {
    for (;;) {
      await new Promise((r) => setTimeout(r, POLL_MS));
      try {
        const res = await fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
        const body = await res.json().catch(() => null);
        if (!res.ok) {
          status(body && typeof body.error === 'string' ? body.error : `pgwarden answered HTTP ${res.status}`, true);
          if (res.status === 401) return;
          continue;
        }
        apply(body);
        status(`up to date at ${new Date().toLocaleTimeString()}`, false);
      } catch (_) {
        status('pgwarden cannot be reached; retrying', true);
      }
    }
  }

  // ------------------------------------------------------------ the list page

  function row(a) {
    const p = a.packet && typeof a.packet === 'object' ? a.packet : {};
    const tr = document.createElement('tr');
    tr.dataset.id = str(a.id);
    const link = el('a');
    link.href = `/review/approvals/${encodeURIComponent(str(a.id))}`;
    link.append(el('code', a.fingerprint));
    const cells = [
      link,
      el('span', p.summary),
      el('span', a.requester ?? 'an unverified caller'),
      riskBadge(str(p.risk)),
    ];
    for (const c of cells) {
      const td = document.createElement('td');
      td.append(c);
      tr.append(td);
    }
    tr.append(el('td', a.state_label, stateClass(a.state)));
    tr.append(el('td', tally(a)));
    const td = document.createElement('td');
    const time = el('time', a.expires_at);
    time.dateTime = str(a.expires_at);
    td.append(time);
    tr.append(td);
    return tr;
  }

  function liveList(table) {
    const tbody = table.tBodies[0];
    const empty = document.getElementById('empty');
    const live = document.getElementById('live');
    poll(
      table.dataset.live,
      (body) => {
        const all = Array.isArray(body && body.approvals) ? body.approvals : [];
        tbody.replaceChildren(...all.map(row));
        empty.hidden = all.length > 0;
      },
      (text, bad) => {
        live.textContent = text;
        live.classList.toggle('bad', bad);
      },
    );
  }

  // ------------------------------------------------------------ one approval

  function vote(v) {
    const terms = [];
    if (v.dry_run === true) terms.push('as a dry run');
    if (Number.isInteger(v.max_rows_affected)) terms.push(`row limit ${v.max_rows_affected}`);
    if (typeof v.reason === 'string') terms.push(`“${v.reason}”`);
    return el('li', terms.length ? `${str(v.decided_by)} — ${terms.join(', ')}` : str(v.decided_by));
  }

  function liveApproval(article) {
    const state = document.getElementById('state');
    const votes = document.getElementById('votes');
    const count = document.getElementById('tally');
    const closed = document.getElementById('closed');
    const closedState = document.getElementById('closed-state');
    const form = document.getElementById('decision');
    let last = '';
    poll(
      article.dataset.live,
      (a) => {
        if (!a || typeof a !== 'object') return;
        state.textContent = visible(a.state_label);
        state.className = stateClass(a.state);
        article.dataset.state = str(a.state);
        count.textContent = tally(a);
        const seen = JSON.stringify(a.votes ?? []);
        if (seen !== last) {
          last = seen;
          votes.replaceChildren(...(Array.isArray(a.votes) ? a.votes : []).map(vote));
        }
        if (a.state !== 'pending') {
          closedState.textContent = visible(a.state_label);
          closed.hidden = false;
          if (form) form.hidden = true;
        }
      },
      () => {},
    );
  }

  // After a decision the address is the form's; a reload must not send it again.
  const here = window.location.pathname.match(/^(\/review\/approvals\/[^/]+)\/decision$/);
  if (here) window.history.replaceState(null, '', here[1]);

  const table = document.getElementById('approvals');
  if (table && table.dataset.live) liveList(table);
  const article = document.getElementById('approval');
  if (article && article.dataset.live) liveApproval(article);
})();
