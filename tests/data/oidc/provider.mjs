// A real OpenID provider for pgwarden's tests: `oidc-provider` (the certified Node implementation),
// issuing JWT access tokens with the client-credentials grant, for whatever resource (audience) the
// client asks for. Each client stands for one person: its id is the token's `sub`, and it carries
// `groups` and `email`. `POST /test/rotate` switches to a new signing key (the old one stays in the
// JWKS only if `?keep=1`). Prints `issuer <url>` on stdout once it listens.
import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const PEOPLE = {
  alice: { groups: ['dba'], email: 'alice@example.com', scope: 'pgwarden pgwarden:grant' },
  bob: { groups: [], email: 'bob@example.com', scope: 'pgwarden' },
  // Tokens that expire after a second.
  brief: { groups: [], email: 'brief@example.com', scope: 'pgwarden', ttl: 1 },
};

const key = () => {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };
};

function provider(issuer, keys) {
  const p = new Provider(issuer, {
    clients: Object.entries(PEOPLE).map(([id, person]) => ({
      client_id: id,
      client_secret: `${id}-secret`,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post',
      scope: person.scope,
    })),
    scopes: ['pgwarden', 'pgwarden:grant'],
    jwks: { keys },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => ({
          scope: PEOPLE[client.clientId].scope,
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

let keys = [key()];
let current;
const server = http.createServer((req, res) => {
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
