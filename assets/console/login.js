/*
 * pgwarden review console — sign-in (served as /login.js, loaded by /login).
 *
 * pgwarden opens http://127.0.0.1:<port>/login#k=<secret>. This script:
 *   1. reads the fragment and strips it from the address bar and history at once,
 *   2. POSTs {"secret": …} to /api/login (same origin, JSON),
 *   3. on 204 goes to / (location.replace, so Back does not return here),
 *      otherwise shows the server's {"error": …} text.
 * Rendering uses textContent only. No inline code (strict CSP).
 */
'use strict';

(() => {
  // Read the fragment, then strip it before anything else can run or fail.
  const hash = String(window.location.hash || '');
  window.history.replaceState(null, '', '/login');

  const NO_SECRET =
    'Open this console from pgwarden: it opens your browser itself when an approval is waiting.';
  const NOT_RUNNING =
    'pgwarden is not running (or restarted); pending approvals from before are gone.';

  const message = document.getElementById('message');

  function show(text, isError) {
    message.textContent = text;
    message.classList.toggle('is-error', Boolean(isError));
  }

  // `#k=<secret>` (other parameters tolerated). Deliberately not URLSearchParams:
  // it would turn a '+' in the secret into a space.
  function secretFrom(fragment) {
    const body = fragment.replace(/^#/, '');
    for (const part of body.split('&')) {
      if (part.startsWith('k=')) {
        try {
          return decodeURIComponent(part.slice(2));
        } catch (_) {
          return '';
        }
      }
    }
    return '';
  }

  async function errorText(res) {
    try {
      const body = await res.json();
      if (body && typeof body.error === 'string' && body.error) return body.error;
    } catch (_) {
      /* not JSON */
    }
    return `Sign-in failed (HTTP ${res.status}).`;
  }

  async function login(secret) {
    let res;
    try {
      res = await fetch('/api/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ secret }),
        credentials: 'same-origin',
        cache: 'no-store',
        redirect: 'error',
      });
    } catch (_) {
      show(NOT_RUNNING, true);
      return;
    }
    if (res.status === 204) {
      window.location.replace('/');
      return;
    }
    show(await errorText(res), true);
  }

  const secret = secretFrom(hash);
  if (!secret) {
    show(NO_SECRET, false);
    return;
  }
  login(secret);
})();
