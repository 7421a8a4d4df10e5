//! `requestState` for the 2026-07-28 protocol: sealed (HMAC-SHA256, key made at start-up), bound to
//! the hash of the exact action and caller, with an expiry. Each carries a nonce the approval store
//! takes once (`ApprovalStore::use_nonce`), so a state is accepted once.

use std::time::Duration;

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

/// Seals and opens approval states.
pub struct StateSealer {
    codec: RequestStateCodec,
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
        }
    }

    /// A key shared by every replica (the HTTP config's state key), at least 32 bytes.
    pub fn from_key(key: Vec<u8>) -> Result<StateSealer, String> {
        if key.len() < 32 {
            return Err(format!("{} bytes; a state key needs at least 32", key.len()));
        }
        RequestStateCodec::try_new(key)
            .map(|codec| StateSealer { codec })
            .map_err(|e| e.to_string())
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

    /// Opens a state for `action_hash`: how long ago the prompt was sent, and the state's nonce
    /// (which the caller takes once).
    pub fn open(&self, state: &str, action_hash: &str) -> Result<(Duration, String), StateError> {
        let sealed: Sealed = self
            .codec
            .open_json_with(state, action_hash.as_bytes())
            .map_err(|_| StateError::Invalid)?;
        let age = Duration::from_millis(unix_ms().saturating_sub(sealed.issued_ms));
        Ok((age, sealed.nonce))
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
    fn a_state_opens_for_its_own_action_only_and_names_its_nonce() {
        let s = StateSealer::new();
        let ttl = Duration::from_secs(60);
        let state = s.seal("hash-a", ttl);
        assert_eq!(s.open(&state, "hash-b"), Err(StateError::Invalid));
        let mut altered = state.clone();
        altered.insert(10, if altered.as_bytes()[10] == b'A' { 'B' } else { 'A' });
        assert_eq!(s.open(&altered, "hash-a"), Err(StateError::Invalid));
        assert_eq!(
            StateSealer::new().open(&state, "hash-a"),
            Err(StateError::Invalid),
            "other key"
        );
        let (age, nonce) = s.open(&state, "hash-a").expect("opens");
        assert!(
            age < Duration::from_secs(1),
            "how long ago the prompt was sent: {age:?}"
        );
        assert_eq!(s.open(&state, "hash-a").unwrap().1, nonce, "the same nonce each time");
        assert_ne!(
            s.open(&s.seal("hash-a", ttl), "hash-a").unwrap().1,
            nonce,
            "a new one per state"
        );
        let short = s.seal("hash-a", Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(s.open(&short, "hash-a"), Err(StateError::Invalid), "expired");
    }
}
