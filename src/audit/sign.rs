//! Signed checkpoints: what makes a cut, emptied or replaced audit file show.
//!
//! The chain alone proves order, not completeness: anyone who can write the file can cut its tail
//! or forge a fresh chain. So, like CloudTrail's digest files and Certificate Transparency's signed
//! tree heads, pgwarden regularly signs the head of the chain (sequence number, hash, time) with an
//! Ed25519 key kept in its own owner-only file, and appends that checkpoint to a file separate from
//! the log. Checkpoints chain to each other too. `pgwarden audit verify --key PUB` then finds a
//! checkpoint beyond the end of the log (a cut tail), one whose head is not the record at its
//! sequence number (an edit re-hashed, a replaced file), and signatures from any other key.

use std::{
    fs::File,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::GENESIS_PREV;

/// What a checkpoint's signature covers: this prefix, then its canonical JSON without `sig`.
const DOMAIN: &[u8] = b"pgwarden audit checkpoint v1\n";
/// What a record's signature covers: this prefix, then its hash (hex).
const RECORD_DOMAIN: &[u8] = b"pgwarden audit record v1\n";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the audit signing key `{path}` cannot be used: {why}")]
    Unusable { path: String, why: String },
    #[error(
        "the audit signing key `{path}` can be read by other users (mode {mode:o}): whoever read it can forge checkpoints. \
         Make a new key (move this one aside; pgwarden makes one on start) and keep the file owner-only"
    )]
    Exposed { path: String, mode: u32 },
    #[error(
        "`{0}` is not an Ed25519 public key; give `ed25519:<base64>` as printed by `pgwarden audit key`, or the `.pub` file"
    )]
    BadPublic(String),
}

/// An Ed25519 public key, written `ed25519:<base64 of its 32 bytes>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ed25519:{}", B64.encode(self.0))
    }
}

impl PublicKey {
    /// `ed25519:<base64>`, or the path of a file holding it (a `.pub` file).
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let bad = || KeyError::BadPublic(text.to_string());
        let inline = text.trim();
        let owned;
        let value = if inline.starts_with("ed25519:") {
            inline
        } else {
            owned = std::fs::read_to_string(inline).map_err(|_| bad())?;
            owned.trim()
        };
        let b64 = value.strip_prefix("ed25519:").ok_or_else(bad)?;
        let bytes = B64.decode(b64).map_err(|_| bad())?;
        Ok(PublicKey(bytes.try_into().map_err(|_| bad())?))
    }

    fn verifies(&self, message: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, self.0).verify(message, sig).is_ok()
    }

    /// Whether `sig` (base64) is this key's signature of a record hash.
    pub fn signed_record(&self, hash: &str, sig: &str) -> bool {
        B64.decode(sig)
            .is_ok_and(|sig| self.verifies(&record_message(hash), &sig))
    }
}

/// The private half, loaded from (or made into) its own `0600` file.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl SigningKey {
    /// Loads the key at `path`, making it (and `<path>.pub`) when there is none. A key readable by
    /// anyone else is refused: it may have been copied.
    pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyError> {
        let unusable = |why: String| KeyError::Unusable {
            path: path.display().to_string(),
            why,
        };
        let make = || {
            let rng = ring::rand::SystemRandom::new();
            Ed25519KeyPair::generate_pkcs8(&rng)
                .map(|doc| doc.as_ref().to_vec())
                .map_err(|_| std::io::Error::other("no randomness for a key"))
        };
        let bytes = match crate::dirs::secret_file(path, make) {
            Ok((bytes, made)) => {
                if made {
                    tracing::info!(
                        "made the audit signing key `{}` (public half in `{}`)",
                        path.display(),
                        public_path(path).display()
                    );
                }
                bytes
            }
            Err(crate::dirs::SecretFileError::Exposed { mode }) => {
                return Err(KeyError::Exposed {
                    path: path.display().to_string(),
                    mode,
                });
            }
            Err(crate::dirs::SecretFileError::Unusable(why)) => return Err(unusable(why)),
        };
        let pair =
            Ed25519KeyPair::from_pkcs8(&bytes).map_err(|e| unusable(format!("not an Ed25519 PKCS#8 key ({e})")))?;
        let public = PublicKey(
            pair.public_key()
                .as_ref()
                .try_into()
                .map_err(|_| unusable("odd public key length".into()))?,
        );
        // The public half beside it, for `audit verify --key` (rewritten: it is derived).
        // Written aside and renamed over whatever is there: never through a symlink or a hard
        // link someone planted, and the file is then ours.
        let public_file = public_path(path);
        let aside = public_file.with_file_name(format!(
            ".{}.{}.tmp",
            public_file.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&aside);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&aside)
            .and_then(|mut f| f.write_all(format!("{public}\n").as_bytes()))
            .and_then(|()| std::fs::rename(&aside, &public_file));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&aside);
            tracing::warn!("cannot write `{}`: {e}", public_file.display());
        }
        Ok(SigningKey { pair, public })
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The signature (base64) of a record's hash.
    pub fn sign_record(&self, hash: &str) -> String {
        B64.encode(self.pair.sign(&record_message(hash)).as_ref())
    }

    /// A signed checkpoint of the chain's head `seq`/`head`, following `prev` (the last line of the
    /// checkpoint file, if any).
    pub fn checkpoint(&self, seq: u64, head: &str, file: &str, prev: Option<&str>) -> Checkpoint {
        let mut cp = Checkpoint {
            v: 1,
            seq,
            head: head.to_string(),
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            file: file.to_string(),
            key: self.public.to_string(),
            prev: prev.map_or_else(|| GENESIS_PREV.to_string(), line_hash),
            sig: String::new(),
        };
        cp.sig = B64.encode(self.pair.sign(&cp.message()).as_ref());
        cp
    }
}

fn record_message(hash: &str) -> Vec<u8> {
    let mut m = RECORD_DOMAIN.to_vec();
    m.extend_from_slice(hash.as_bytes());
    m
}

/// `<key>.pub`.
pub fn public_path(key: &Path) -> PathBuf {
    let mut name = key.file_name().unwrap_or_default().to_os_string();
    name.push(".pub");
    key.with_file_name(name)
}

/// One line of the checkpoint file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub v: u32,
    /// The last record covered, and its hash.
    pub seq: u64,
    pub head: String,
    pub time: String,
    /// The log file's name when it was signed (informative: rotation moves records).
    pub file: String,
    /// The key that signed it.
    pub key: String,
    /// SHA-256 of the checkpoint line before it.
    pub prev: String,
    pub sig: String,
}

impl Checkpoint {
    fn message(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.remove("sig");
        }
        let mut m = DOMAIN.to_vec();
        m.extend_from_slice(value.to_string().as_bytes());
        m
    }

    /// Whether `key` signed exactly this.
    pub fn signed_by(&self, key: &PublicKey) -> bool {
        self.key == key.to_string()
            && B64
                .decode(&self.sig)
                .is_ok_and(|sig| key.verifies(&self.message(), &sig))
    }

    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// SHA-256 (hex) of one checkpoint line, without its newline.
pub fn line_hash(line: &str) -> String {
    Sha256::digest(line.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The last whole line of the checkpoint file, if any. A partial line after it (a write cut
/// short, or junk appended) is skipped however long it is; a line over 64 KiB is no checkpoint.
pub fn last_line(file: &mut File) -> std::io::Result<Option<String>> {
    let line = super::lines_from_end(file, 16 * 1024 * 1024, |line| Some(line.to_vec()))?;
    Ok(line
        .filter(|l| l.len() <= 64 * 1024)
        .and_then(|l| String::from_utf8(l).ok()))
}
