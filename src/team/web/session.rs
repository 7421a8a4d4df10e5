//! The review app's cookies: a signed-in reviewer's session and a sign-in in progress, each sealed
//! (ChaCha20-Poly1305, a key from the session key file) so the browser can neither read nor alter
//! them, and no replica keeps a session table.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

/// The session cookie: who signed in.
pub const SESSION_COOKIE: &str = "pgwarden_review";
/// The sign-in cookie: what the callback must match.
pub const LOGIN_COOKIE: &str = "pgwarden_review_login";
/// A sign-in must come back from the provider within this.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);

/// A signed-in reviewer, as the provider vouched for them at sign-in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub principal: String,
    pub display: Option<String>,
    pub groups: Vec<String>,
    /// Their other names at the provider (`sub`, a verified e-mail): a call made under one of them
    /// (an MCP caller of `[oauth]` is its token's `sub`) is theirs, which they never approve.
    /// Required: a session sealed before it existed is no session.
    pub aliases: Vec<String>,
    /// The form token every POST must carry (CSRF).
    pub csrf: String,
    /// The issuer that signed them in: a session from another provider is not accepted.
    pub issuer: String,
}

/// A sign-in on its way through the provider.
#[derive(Debug, Serialize, Deserialize)]
pub struct Login {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    /// The review app's page to return to.
    pub next: String,
}

/// Seals and opens the cookies.
pub struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    /// Unix seconds after which it is not accepted.
    exp: u64,
    v: T,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Sealer {
    /// A sealer with the key file's bytes (at least 32).
    pub fn new(key: &[u8]) -> Result<Sealer, String> {
        if key.len() < 32 {
            return Err(format!("{} bytes; a session key needs at least 32", key.len()));
        }
        let mut h = Sha256::new();
        h.update(b"pgwarden review cookies v1\0");
        h.update(key);
        let key = UnboundKey::new(&CHACHA20_POLY1305, &h.finalize()[..]).map_err(|_| "an unusable key".to_string())?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        })
    }

    /// `value` sealed for `purpose` (the cookie's name), good for `ttl`.
    pub fn seal<T: Serialize>(&self, purpose: &str, ttl: Duration, value: T) -> Result<String, String> {
        let envelope = Envelope {
            exp: now() + ttl.as_secs(),
            v: value,
        };
        let mut data = serde_json::to_vec(&envelope).map_err(|e| e.to_string())?;
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| "no randomness".to_string())?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.as_bytes()),
                &mut data,
            )
            .map_err(|_| "sealing failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend(data);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// The value sealed for `purpose`, unless it was altered, sealed with another key or for
    /// another purpose, or has expired.
    pub fn open<T: DeserializeOwned>(&self, purpose: &str, text: &str) -> Option<T> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut sealed)
            .ok()?;
        let envelope: Envelope<T> = serde_json::from_slice(plain).ok()?;
        (envelope.exp > now()).then_some(envelope.v)
    }

    /// A fresh random token (256 bits, URL-safe).
    pub fn token(&self) -> String {
        let mut b = [0u8; 32];
        if self.random.fill(&mut b).is_err() {
            // The system's randomness failing is not recoverable; a UUID pair is the fallback.
            return format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        }
        URL_SAFE_NO_PAD.encode(b)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax (the provider's redirect back is a top-level
/// navigation from another site), `Path=/review`, and `Secure` when the app is served over https.
/// An empty `value` deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    let age = if value.is_empty() { 0 } else { max_age.as_secs() };
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/review; HttpOnly; SameSite=Lax; Max-Age={age}{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_cookie_opens_only_unaltered_for_its_purpose_with_its_key_until_it_expires() {
        let s = Sealer::new(&[7u8; 32]).unwrap();
        let sealed = s.seal("a", Duration::from_secs(60), "bob@example.com").unwrap();
        assert!(!sealed.contains("bob"), "readable: {sealed}");
        assert_eq!(s.open::<String>("a", &sealed).as_deref(), Some("bob@example.com"));
        assert_eq!(s.open::<String>("b", &sealed), None, "another purpose");
        assert_eq!(
            Sealer::new(&[8u8; 32]).unwrap().open::<String>("a", &sealed),
            None,
            "another key"
        );
        let mut altered = sealed.clone().into_bytes();
        altered[20] = if altered[20] == b'A' { b'B' } else { b'A' };
        assert_eq!(s.open::<String>("a", &String::from_utf8(altered).unwrap()), None);
        assert_eq!(s.open::<String>("a", "x"), None);
        let gone = s.seal("a", Duration::ZERO, "bob").unwrap();
        assert_eq!(s.open::<String>("a", &gone), None, "expired");
        assert!(Sealer::new(&[1u8; 31]).is_err());
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, "pgwarden_review_login=L; x=1".parse().unwrap());
        h.append(http::header::COOKIE, "pgwarden_review=S".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("S"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), Some("L"));
        assert_eq!(cookie(&h, "pgwarden"), None);
        assert_eq!(
            set_cookie(SESSION_COOKIE, "", Duration::from_secs(5), true),
            "pgwarden_review=; Path=/review; HttpOnly; SameSite=Lax; Max-Age=0; Secure"
        );
    }
}
