//! `requestState` for the 2026-07-28 protocol: sealed (HMAC-SHA256, key made at start-up), bound to
//! the hash of the exact action and caller, with an expiry, and accepted once.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use rmcp::model::{RequestStateCodec, SealOptions};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Sealed {
    nonce: String,
    /// When the prompt was sent (Unix milliseconds), to tell a client's instant "no" from a person's.
    issued_ms: u64,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seals and opens approval states; remembers the ones already used until they expire.
pub struct StateSealer {
    codec: RequestStateCodec,
    used: Mutex<HashMap<String, Instant>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error(
        "the approval state is not valid for this call (forged, altered, expired, or for a different action or caller)"
    )]
    Invalid,
    #[error("this approval was already used; approvals are good for one call")]
    Replayed,
}

impl StateSealer {
    /// A fresh random key: states from another process or an earlier run never open.
    pub fn new() -> StateSealer {
        let key: Vec<u8> = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
            .iter()
            .flat_map(|u| *u.as_bytes())
            .collect();
        StateSealer {
            // 32 random bytes: above the codec's minimum, so this cannot fail.
            codec: RequestStateCodec::try_new(key).expect("a 32-byte key is long enough"),
            used: Mutex::new(HashMap::new()),
        }
    }

    pub fn seal(&self, action_hash: &str, ttl: Duration) -> String {
        let sealed = Sealed {
            nonce: uuid::Uuid::new_v4().simple().to_string(),
            issued_ms: unix_ms(),
        };
        let options = SealOptions::new().associated_data(action_hash.as_bytes()).ttl(ttl);
        self.codec
            .seal_json_with(&sealed, &options)
            .unwrap_or_else(|_| self.codec.seal_with(sealed.nonce.as_bytes(), &options))
    }

    /// Opens a state for `action_hash`, once, and says how long ago the prompt was sent. `ttl`
    /// bounds how long its nonce is remembered.
    pub fn open(&self, state: &str, action_hash: &str, ttl: Duration) -> Result<Duration, StateError> {
        let sealed: Sealed = self
            .codec
            .open_json_with(state, action_hash.as_bytes())
            .map_err(|_| StateError::Invalid)?;
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        used.retain(|_, until| *until > now);
        if used.contains_key(&sealed.nonce) {
            return Err(StateError::Replayed);
        }
        used.insert(sealed.nonce, now + ttl + Duration::from_secs(60));
        Ok(Duration::from_millis(unix_ms().saturating_sub(sealed.issued_ms)))
    }
}

impl Default for StateSealer {
    fn default() -> Self {
        StateSealer::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_opens_once_for_its_own_action_only() {
        let s = StateSealer::new();
        let ttl = Duration::from_secs(60);
        let state = s.seal("hash-a", ttl);
        assert_eq!(s.open(&state, "hash-b", ttl), Err(StateError::Invalid));
        let mut altered = state.clone();
        altered.insert(10, if altered.as_bytes()[10] == b'A' { 'B' } else { 'A' });
        assert_eq!(s.open(&altered, "hash-a", ttl), Err(StateError::Invalid));
        assert_eq!(
            StateSealer::new().open(&state, "hash-a", ttl),
            Err(StateError::Invalid),
            "other key"
        );
        let age = s.open(&state, "hash-a", ttl).expect("opens");
        assert!(
            age < Duration::from_secs(1),
            "how long ago the prompt was sent: {age:?}"
        );
        assert_eq!(s.open(&state, "hash-a", ttl), Err(StateError::Replayed));
        let short = s.seal("hash-a", Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(s.open(&short, "hash-a", ttl), Err(StateError::Invalid), "expired");
    }
}
