/*
 * pgwarden review console — main script (served as /console.js, loaded by /).
 *
 * Long-polls GET /api/pending?since=<generation> and renders one card per
 * approval (pending first, newest first; decided ones compact). A pending card
 * lets the person Approve / Approve as dry run / Deny through POST /api/decide
 * with the CSRF token from the last poll and the action hash shown in that card.
 *
 * Security rules (do not relax):
 *   - Every piece of server data is rendered with textContent / createElement.
 *     No innerHTML, outerHTML, insertAdjacentHTML, document.write, HTML strings.
 *   - No inline styles or handlers (strict CSP); classes and the `hidden`
 *     attribute only.
 *   - Control, zero-width and bidi characters are made visible again here
 *     (same rule as the server), as a second line of defence.
 * A card's DOM is kept across polls while its state is unchanged, so a
 * half-typed reason or row limit survives.
 */
'use strict';

(() => {
  const MSG_ENDED =
    "This console's session has ended. pgwarden opens a new window at the next approval.";
  const MSG_DOWN =
    'pgwarden is not running (or restarted); pending approvals from before are gone.';
  const RETRY_MS = 5000;
  const RISKS = new Set(['critical', 'high', 'medium', 'low']);
  const STATES = new Set([
    'pending', 'approved', 'dry_run', 'denied', 'expired',
    'cancelled', 'executing', 'done', 'failed',
  ]);

  const $list = document.getElementById('approvals');
  const $status = document.getElementById('status');
  const $client = document.getElementById('client');
  const $empty = document.getElementById('empty');

  let generation = 0;
  let csrf = '';
  let ended = false;
  let offline = false;
  let uid = 0;
  /** approval_id -> card record (see buildCard) */
  const cards = new Map();

  // ---------------------------------------------------------------- helpers

  /** Same rule as the server's `visible()`: hidden characters become \u{XXXX}. */
  const HIDDEN =
    /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u200B-\u200F\u202A-\u202E\u2066-\u2069\uFEFF]/g;
  function visible(value) {
    return String(value ?? '').replace(
      HIDDEN,
      (c) => `\\u{${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}}`,
    );
  }

  /** createElement + optional class + text (always through textContent). */
  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = visible(text);
    return e;
  }

  function str(v) {
    return typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v);
  }

  function sleep(ms) {
    return new Promise((r) => setTimeout(r, ms));
  }

  /** RFC 3339 -> Date (fractions beyond milliseconds trimmed for strict parsers). */
  function parseTime(s) {
    if (typeof s !== 'string' || !s) return null;
    const t = Date.parse(s.replace(/(\.\d{3})\d+/, '$1'));
    return Number.isFinite(t) ? new Date(t) : null;
  }

  function timeText(d) {
    const sameDay = d.toDateString() === new Date().toDateString();
    return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function expiryText(d) {
    if (!d) return 'Expiry time unknown';
    const ms = d.getTime() - Date.now();
    if (ms <= 0) return `Expired at ${timeText(d)}`;
    const min = Math.floor(ms / 60000);
    const rel = min < 1 ? 'in less than a minute' : `in ${min} min`;
    return `Expires at ${timeText(d)} (${rel})`;
  }

  /** Accepts {name, tags} or the serde tuple form [name, tags]. */
  function tableEntry(t) {
    if (Array.isArray(t)) return { name: str(t[0]), tags: Array.isArray(t[1]) ? t[1] : [] };
    if (t && typeof t === 'object') {
      return { name: str(t.name), tags: Array.isArray(t.tags) ? t.tags : [] };
    }
    return { name: str(t), tags: [] };
  }

  function rowsText(n) {
    const r = Math.round(n);
    return `~${r.toLocaleString()} ${r === 1 ? 'row' : 'rows'} (planner estimate)`;
  }

  function riskClass(risk) {
    return RISKS.has(risk) ? `risk-${risk}` : 'risk-unknown';
  }

  function setStatus(text, isError) {
    if ($status.textContent !== text) $status.textContent = text;
    $status.classList.toggle('is-error', Boolean(isError));
  }

  async function readJson(res) {
    try {
      return await res.json();
    } catch (_) {
      return null;
    }
  }

  function errorText(body, res) {
    if (body && typeof body.error === 'string' && body.error) return visible(body.error);
    return `pgwarden answered HTTP ${res.status}.`;
  }

  // ---------------------------------------------------------------- cards

  function signature(a) {
    // Pending cards are keyed on state + hash only, so a changing label does
    // not wipe what the person is typing; decided cards also on their label.
    const base = `${str(a.state)}\u0000${str(a.action_hash)}`;
    return a.state === 'pending' ? base : `${base}\u0000${str(a.state_label)}`;
  }

  function factRow(dl, term, value) {
    if (!value) return;
    dl.append(el('dt', null, term), el('dd', null, value));
  }

  function badges(p) {
    const wrap = el('p', 'badges');
    const risk = str(p.risk);
    wrap.append(el('span', `badge ${riskClass(risk)}`, `Risk: ${risk || 'unknown'}`));
    if (p.category) wrap.append(el('span', 'badge category', str(p.category)));
    return wrap;
  }

  function sqlBlock(sql) {
    const pre = el('pre', 'sql');
    const code = el('code', null, sql);
    pre.append(code);
    return pre;
  }

  function buildPending(a, rec) {
    const p = a.packet && typeof a.packet === 'object' ? a.packet : {};
    const n = ++uid;
    const art = el('article', `card is-pending ${riskClass(str(p.risk))}`);
    const headingId = `card-h-${n}`;
    art.setAttribute('aria-labelledby', headingId);

    const head = el('div', 'card-head');
    const h2 = el('h2', null, p.summary || 'Approval requested');
    h2.id = headingId;
    head.append(h2);
    art.append(head, badges(p));

    const fp = el('p', 'fingerprint');
    fp.append(
      document.createTextNode('Fingerprint '),
      el('strong', 'fp', a.fingerprint || '—'),
      el('span', 'fp-hint', ' — check it matches the one in your chat'),
    );
    art.append(fp);

    const reasons = Array.isArray(p.reasons) ? p.reasons : [];
    if (reasons.length) {
      art.append(el('h3', null, 'Why this needs a person'));
      const ul = el('ul');
      for (const r of reasons) ul.append(el('li', null, r));
      art.append(ul);
    }

    const tables = Array.isArray(p.tables) ? p.tables.map(tableEntry) : [];
    if (tables.length) {
      art.append(el('h3', null, 'Tables'));
      const ul = el('ul');
      for (const t of tables) {
        const li = el('li');
        li.append(el('span', null, t.name));
        for (const tag of t.tags) li.append(el('span', 'tag', tag));
        ul.append(li);
      }
      art.append(ul);
    }

    const details = Array.isArray(p.details) ? p.details : [];
    if (details.length) {
      art.append(el('h3', null, 'Details'));
      const ul = el('ul');
      for (const d of details) ul.append(el('li', null, d));
      art.append(ul);
    }

    const dl = el('dl', 'facts');
    if (typeof p.estimated_rows === 'number' && Number.isFinite(p.estimated_rows)) {
      factRow(dl, 'Estimated rows', rowsText(p.estimated_rows));
    }
    factRow(dl, 'Requested by', str(p.requested_by));
    factRow(dl, 'Decided by', str(p.rule));
    factRow(dl, 'Rule reason', str(p.rule_reason));
    if (dl.childElementCount) art.append(dl);

    if (typeof p.intent === 'string' && p.intent.trim()) {
      const box = el('div', 'intent');
      box.setAttribute('role', 'note');
      box.append(el('p', 'intent-label', 'From the AI — unverified'), el('p', 'intent-text', p.intent));
      art.append(box);
    }

    art.append(el('h3', null, 'Exact SQL'), sqlBlock(str(p.sql)));

    const expires = parseTime(a.expires_at);
    const expiry = el('p', 'expiry', expiryText(expires));
    art.append(expiry);

    // Controls: no <form>, so Enter in a field never presses Approve.
    const controls = el('div', 'controls');
    controls.setAttribute('role', 'group');
    controls.setAttribute('aria-label', 'Decision');
    const fields = el('div', 'fields');

    const rowsField = el('div', 'field');
    const rowsLabel = el('label', null, 'Row limit');
    const rows = document.createElement('input');
    rows.type = 'number';
    rows.min = '0';
    rows.step = '1';
    rows.inputMode = 'numeric';
    rows.id = `rows-${n}`;
    rowsLabel.htmlFor = rows.id;
    const rowsHint = el('p', 'hint', 'Empty = no limit. Whole number of rows the statement may change.');
    rowsHint.id = `rows-hint-${n}`;
    rows.setAttribute('aria-describedby', rowsHint.id);
    rowsField.append(rowsLabel, rows, rowsHint);

    const reasonField = el('div', 'field grow');
    const reasonLabel = el('label', null, 'Reason');
    const reason = document.createElement('input');
    reason.type = 'text';
    reason.id = `reason-${n}`;
    reason.autocomplete = 'off';
    reasonLabel.htmlFor = reason.id;
    const reasonHint = el('p', 'hint', 'Optional; recorded in the audit trail.');
    reasonHint.id = `reason-hint-${n}`;
    reason.setAttribute('aria-describedby', reasonHint.id);
    reasonField.append(reasonLabel, reason, reasonHint);

    fields.append(rowsField, reasonField);

    const buttons = el('div', 'buttons');
    const mk = (text, cls, decision) => {
      const b = el('button', cls, text);
      b.type = 'button';
      b.addEventListener('click', () => decide(rec, decision));
      buttons.append(b);
      return b;
    };
    const btns = [
      mk('Approve', 'approve', 'approve'),
      mk('Approve as dry run', 'dry-run', 'dry_run'),
      mk('Deny', 'deny', 'deny'),
    ];

    const msg = el('p', 'card-message');
    msg.setAttribute('role', 'status');
    msg.setAttribute('aria-live', 'polite');

    controls.append(fields, buttons, msg);
    art.append(controls);

    Object.assign(rec, {
      el: art, rows, reason, buttons: btns, inputs: [rows, reason], msg, expiry, expires,
    });
    if (ended || offline) setDisabled(rec, true);
  }

  function buildDecided(a, rec) {
    const p = a.packet && typeof a.packet === 'object' ? a.packet : {};
    const state = STATES.has(a.state) ? a.state : 'unknown';
    const art = el('article', `card is-decided state-${state}`);
    const n = ++uid;
    const h2 = el('h2', null, p.summary || 'Approval');
    h2.id = `card-h-${n}`;
    art.setAttribute('aria-labelledby', h2.id);
    art.append(h2, el('p', 'state-label', a.state_label || a.state || 'Decided'));
    const meta = [];
    if (a.fingerprint) meta.push(`Fingerprint ${str(a.fingerprint)}`);
    if (p.risk) meta.push(`risk ${str(p.risk)}`);
    if (p.category) meta.push(str(p.category));
    const created = parseTime(a.created_at);
    if (created) meta.push(`requested ${timeText(created)}`);
    if (meta.length) art.append(el('p', 'meta', meta.join(' · ')));
    if (p.sql) {
      const det = el('details');
      det.append(el('summary', null, 'SQL'), sqlBlock(str(p.sql)));
      art.append(det);
    }
    Object.assign(rec, { el: art, buttons: [], inputs: [], msg: null, expiry: null, expires: null });
  }

  function buildCard(a) {
    const rec = {
      id: a.approval_id,
      hash: str(a.action_hash),
      state: str(a.state),
      sig: signature(a),
      busy: false,
    };
    if (a.state === 'pending') buildPending(a, rec);
    else buildDecided(a, rec);
    return rec;
  }

  function setDisabled(rec, disabled) {
    for (const b of rec.buttons) b.disabled = disabled;
    for (const i of rec.inputs) i.disabled = disabled;
  }

  function showCardMessage(rec, text, kind) {
    if (!rec.msg) return;
    rec.msg.textContent = text;
    rec.msg.classList.toggle('is-error', kind === 'error');
    rec.msg.classList.toggle('is-ok', kind === 'ok');
  }

  // ---------------------------------------------------------------- decide

  /** '' -> null; a whole number >= 0 -> number; anything else -> undefined (invalid). */
  function parseRowLimit(input) {
    if (input.validity && input.validity.badInput) return undefined;
    const v = input.value.trim();
    if (v === '') return null;
    if (!/^\d+$/.test(v)) return undefined;
    const n = Number(v);
    return Number.isSafeInteger(n) ? n : undefined;
  }

  async function decide(rec, decision) {
    if (rec.busy || ended) return;
    let maxRows = null;
    if (decision !== 'deny') {
      maxRows = parseRowLimit(rec.rows);
      if (maxRows === undefined) {
        showCardMessage(rec, 'Row limit must be a whole number of rows, or empty for no limit.', 'error');
        rec.rows.focus();
        return;
      }
    }
    const reasonText = rec.reason.value.trim();
    rec.busy = true;
    setDisabled(rec, true);
    showCardMessage(rec, 'Sending your decision…', null);

    let res;
    try {
      res = await fetch('/api/decide', {
        method: 'POST',
        credentials: 'same-origin',
        cache: 'no-store',
        redirect: 'error',
        headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
        body: JSON.stringify({
          approval_id: rec.id,
          action_hash: rec.hash,
          decision,
          max_rows_affected: maxRows,
          reason: reasonText === '' ? null : reasonText,
        }),
      });
    } catch (_) {
      rec.busy = false;
      showCardMessage(rec, MSG_DOWN, 'error');
      if (!offline && !ended) setDisabled(rec, false);
      return;
    }
    const body = await readJson(res);
    if (res.ok) {
      // Stays disabled; the next poll re-renders the card in its new state.
      const label = body && typeof body.state_label === 'string' && body.state_label
        ? body.state_label
        : 'Decision recorded.';
      showCardMessage(rec, visible(label), 'ok');
      return;
    }
    rec.busy = false;
    if (res.status === 401) {
      endSession();
      return;
    }
    showCardMessage(rec, errorText(body, res), 'error');
    if (!ended && !offline) setDisabled(rec, false);
  }

  // ---------------------------------------------------------------- polling

  function endSession() {
    ended = true;
    setStatus(MSG_ENDED, true);
    for (const rec of cards.values()) setDisabled(rec, true);
    document.title = 'pgwarden review (session ended)';
  }

  function setOffline(value) {
    if (offline === value) return;
    offline = value;
    for (const rec of cards.values()) {
      if (!rec.busy) setDisabled(rec, value || ended);
    }
  }

  function createdMs(a) {
    const d = parseTime(a.created_at);
    return d ? d.getTime() : 0;
  }

  function apply(data) {
    if (typeof data.generation === 'number' || typeof data.generation === 'string') {
      generation = data.generation;
    }
    if (typeof data.csrf === 'string') csrf = data.csrf;
    const client = str(data.client);
    const clientText = client ? `Serving ${visible(client)}` : '';
    if ($client.textContent !== clientText) $client.textContent = clientText;

    const seen = new Set();
    const approvals = (Array.isArray(data.approvals) ? data.approvals : []).filter((a) => {
      if (!a || typeof a !== 'object' || typeof a.approval_id !== 'string') return false;
      if (seen.has(a.approval_id)) return false;
      seen.add(a.approval_id);
      return true;
    });
    approvals.sort((x, y) => {
      const rx = x.state === 'pending' ? 0 : 1;
      const ry = y.state === 'pending' ? 0 : 1;
      return rx - ry || createdMs(y) - createdMs(x);
    });

    approvals.forEach((a, i) => {
      let rec = cards.get(a.approval_id);
      if (!rec || rec.sig !== signature(a)) {
        const fresh = buildCard(a);
        if (rec) rec.el.replaceWith(fresh.el);
        cards.set(a.approval_id, fresh);
        rec = fresh;
      }
      // Move only what is out of place, so a focused field is not disturbed.
      const at = $list.children[i];
      if (at !== rec.el) $list.insertBefore(rec.el, at || null);
    });
    for (const [id, rec] of cards) {
      if (!seen.has(id)) {
        rec.el.remove();
        cards.delete(id);
      }
    }

    const pending = approvals.filter((a) => a.state === 'pending').length;
    document.title = pending > 0 ? `(${pending}) pgwarden review` : 'pgwarden review';
    $empty.hidden = approvals.length > 0;
    if (pending === 0) {
      setStatus('Connected. Nothing is waiting for a decision.', false);
    } else {
      setStatus(
        `Connected. ${pending} ${pending === 1 ? 'approval is' : 'approvals are'} waiting for your decision.`,
        false,
      );
    }
  }

  async function poll() {
    while (!ended) {
      const started = Date.now();
      const before = generation;
      let res;
      try {
        res = await fetch(`/api/pending?since=${encodeURIComponent(String(generation))}`, {
          credentials: 'same-origin',
          cache: 'no-store',
          redirect: 'error',
          headers: { Accept: 'application/json' },
        });
      } catch (_) {
        setOffline(true);
        setStatus(MSG_DOWN, true);
        await sleep(RETRY_MS);
        continue;
      }
      if (res.status === 401) {
        endSession();
        return;
      }
      const body = await readJson(res);
      if (!res.ok || !body || typeof body !== 'object') {
        setStatus(res.ok ? 'pgwarden sent an unreadable answer; retrying.' : errorText(body, res), true);
        await sleep(RETRY_MS);
        continue;
      }
      setOffline(false);
      apply(body);
      // Guard against a server that answers instantly with an unchanged generation.
      if (body.generation === before && Date.now() - started < 250) await sleep(1000);
    }
  }

  // Keep the "Expires at … (in N min)" lines current without re-rendering cards.
  setInterval(() => {
    for (const rec of cards.values()) {
      if (rec.expiry) {
        const t = expiryText(rec.expires);
        if (rec.expiry.textContent !== t) rec.expiry.textContent = t;
      }
    }
  }, 15000);

  poll();
})();
