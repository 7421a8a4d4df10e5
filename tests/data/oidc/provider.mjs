// A real OpenID provider for pgwarden's tests: `oidc-provider` (the certified Node implementation),
// issuing JWT access tokens with the client-credentials grant, for whatever resource (audience) the
// client asks for. Each client stands for one person: its id is the token's `sub`, and it carries
// `groups` and `email`. `POST /test/rotate` switches to a new signing key (the old one stays in the
// JWKS only if `?keep=1`). Prints `issuer <url>` on stdout once it listens.
//
// The same people sign in to pgwarden's review app (authorization code with PKCE) through a plain
// login form at `/interaction/<uid>` (user name and password `<name>-password`); the client
// `pgwarden-review` (secret `pgwarden-review-secret`) and the public `pgwarden-review-public` may
// redirect to `http://127.0.0.1:<any port>/review/callback` (loopback redirects of native apps, RFC
// 8252). Their ID tokens carry `sub`; `email`, `name` and `groups` come from the userinfo endpoint
// (scopes `email`, `profile`, `groups`).
import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

// Stdout carries the issuer line only (the test stops reading it then): the provider's notices
// (`console.info`) go to stderr.
console.info = (...args) => console.error(...args);
process.stdout.on('error', () => {});

const PEOPLE = {
  alice: { groups: ['dba'], email: 'alice@example.com', scope: 'pgwarden pgwarden:grant' },
  bob: { groups: [], email: 'bob@example.com', scope: 'pgwarden' },
  carol: { groups: ['dba'], email: 'carol@example.com', scope: 'pgwarden' },
  // Tokens that expire after a second.
  brief: { groups: [], email: 'brief@example.com', scope: 'pgwarden', ttl: 1 },
};

const NAMES = { alice: 'Alice Liddell', bob: 'Bob Builder', carol: 'Carol Danvers', brief: 'Brief' };

// The review app's clients: one confidential, one public (PKCE only).
const REVIEW_CLIENTS = [
  { client_id: 'pgwarden-review', client_secret: 'pgwarden-review-secret', token_endpoint_auth_method: 'client_secret_basic' },
  { client_id: 'pgwarden-review-public', token_endpoint_auth_method: 'none' },
].map((c) => ({
  ...c,
  application_type: 'native',
  grant_types: ['authorization_code'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/review/callback'],
}));

const key = () => {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };
};

function provider(issuer, keys) {
  const p = new Provider(issuer, {
    clients: [
      ...Object.entries(PEOPLE).map(([id, person]) => ({
        client_id: id,
        client_secret: `${id}-secret`,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_post',
        scope: person.scope,
      })),
      ...REVIEW_CLIENTS,
    ],
    scopes: ['openid', 'email', 'profile', 'groups', 'pgwarden', 'pgwarden:grant'],
    claims: {
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    findAccount: (ctx, id) =>
      PEOPLE[id] && {
        accountId: id,
        claims: () => ({
          sub: id,
          email: PEOPLE[id].email,
          email_verified: true,
          name: NAMES[id],
          preferred_username: id,
          groups: PEOPLE[id].groups,
        }),
      },
    pkce: { required: () => true },
    jwks: { keys },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => ({
          scope: PEOPLE[client.clientId]?.scope ?? '',
          audience: resource,
          accessTokenFormat: 'jwt',
          accessTokenTTL: PEOPLE[client.clientId].ttl ?? 600,
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    extraTokenClaims: (ctx, token) => {
      const person = PEOPLE[token.clientId];
      return person ? { groups: person.groups, email: person.email } : undefined;
    },
  });
  p.proxy = false;
  return p;
}

const escape = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

function loginPage(res, uid, client, error) {
  res.writeHead(error ? 401 : 200, { 'Content-Type': 'text/html; charset=utf-8' });
  res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in — test provider</title></head>
<body><main><h1>Sign in to ${escape(client)}</h1>
${error ? `<p role="alert" id="error">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}">
<label for="username">User name</label> <input id="username" name="username" autocomplete="username" required>
<label for="password">Password</label> <input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit" id="sign-in">Sign in</button>
</form></main></body></html>`);
}

async function form(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return Object.fromEntries(new URLSearchParams(body));
}

// The provider's login and consent prompts: a password form for the people above; consent is
// given at once (the review app is the organisation's own).
async function interaction(req, res) {
  const p = current;
  const details = await p.interactionDetails(req, res);
  const { uid, prompt, params, session } = details;
  if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await p.Grant.find(details.grantId)
      : new p.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    const grantId = await grant.save();
    await p.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  if (req.method !== 'POST') {
    loginPage(res, uid, params.client_id);
    return;
  }
  const { username, password } = await form(req);
  if (!PEOPLE[username] || password !== `${username}-password`) {
    loginPage(res, uid, params.client_id, 'Wrong user name or password.');
    return;
  }
  await p.interactionFinished(req, res, { login: { accountId: username } }, { mergeWithLastSubmission: false });
}

let keys = [key()];
let current;
const server = http.createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((e) => {
      res.writeHead(400, { 'Content-Type': 'text/plain' });
      res.end(`interaction failed: ${e.message}`);
    });
    return;
  }
  if (req.method === 'POST' && req.url.startsWith('/test/rotate')) {
    const keep = req.url.includes('keep=1');
    keys = keep ? [key(), ...keys] : [key()];
    current = provider(issuer, keys);
    res.end('rotated');
    return;
  }
  current.callback()(req, res);
});
let issuer;
server.listen(0, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  current = provider(issuer, keys);
  console.log(`issuer ${issuer}`);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
