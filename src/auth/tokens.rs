//! Static bearer tokens for small setups: a TOML file of `[[token]]` entries, each the SHA-256 of a
//! token (never the token), the principal it speaks for and its groups. `pgwarden token new` makes
//! a token, prints it once and appends its entry. The file is read at start.

use std::{
    collections::HashMap,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    call::{Authn, Identity, Principal},
    config::ConfigError,
};

/// What a token starts with, so a leaked one is easy to recognise (secret scanners, logs).
pub const PREFIX: &str = "pgw_";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// Who the token speaks for.
    principal: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
    /// Hex SHA-256 of the token.
    sha256: String,
    /// When it was made (RFC 3339), for people reading the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<String>,
}

/// The token file, indexed by hash.
pub struct Tokens {
    by_hash: HashMap<String, Entry>,
}

/// The hex SHA-256 of a token. Tokens carry 256 random bits, so a fast hash is enough.
fn digest(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Tokens, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read the token file `{}`: {e}; make one with `pgwarden token new NAME --file {}`",
                path.display(),
                path.display()
            ))
        })?;
        let file: TokenFile =
            toml::from_str(&text).map_err(|e| ConfigError(format!("`{}`: {}", path.display(), e.message())))?;
        let mut by_hash: HashMap<String, Entry> = HashMap::new();
        for entry in file.token {
            if entry.sha256.len() != 64 || !entry.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError(format!(
                    "`{}`: the entry for `{}` has no valid `sha256` (64 hex digits)",
                    path.display(),
                    entry.principal
                )));
            }
            if entry.principal.trim().is_empty() {
                return Err(ConfigError(format!(
                    "`{}`: an entry has an empty `principal`",
                    path.display()
                )));
            }
            if entry.groups.iter().any(|g| g.trim().is_empty()) {
                return Err(ConfigError(format!(
                    "`{}`: the entry for `{}` has an empty group name",
                    path.display(),
                    entry.principal
                )));
            }
            let hash = entry.sha256.to_ascii_lowercase();
            if let Some(first) = by_hash.get(&hash) {
                return Err(ConfigError(format!(
                    "`{}`: one token hash is listed for both `{}` and `{}`; keep one entry",
                    path.display(),
                    first.principal,
                    entry.principal
                )));
            }
            by_hash.insert(hash, entry);
        }
        if by_hash.is_empty() {
            return Err(ConfigError(format!(
                "`{}` holds no tokens; make one with `pgwarden token new NAME --file {}`",
                path.display(),
                path.display()
            )));
        }
        Ok(Tokens { by_hash })
    }

    /// Who `token` speaks for, if it is in the file. The token id is the first 12 hex digits of its
    /// hash: enough to tell tokens apart in the audit trail, useless for guessing the token.
    pub fn identify(&self, token: &str) -> Option<Identity> {
        let hash = digest(token);
        let entry = self.by_hash.get(&hash)?;
        Some(Identity {
            principal: Principal::new(entry.principal.clone()),
            display: None,
            groups: entry.groups.clone(),
            via: Authn::Token {
                token_id: hash[..12].to_string(),
            },
            aliases: Vec::new(),
        })
    }
}

/// Makes a token for `principal` in `groups`, appends its hash to `path` (made owner-only when
/// new) and returns the token, which is shown once and stored nowhere.
pub fn new_token(path: &Path, principal: &str, groups: &[String]) -> Result<String, ConfigError> {
    if principal.trim().is_empty() {
        return Err(ConfigError(
            "the token needs a principal name, e.g. `pgwarden token new alice`".into(),
        ));
    }
    if let Some(g) = groups.iter().find(|g| g.trim().is_empty()) {
        return Err(ConfigError(format!("group names must not be empty (got {g:?})")));
    }
    let mut existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(ConfigError(format!("cannot read `{}`: {e}", path.display()))),
    };
    // The file must still parse after the append: refuse to add to a broken one.
    toml::from_str::<TokenFile>(&existing)
        .map_err(|e| ConfigError(format!("`{}` is not a token file: {}", path.display(), e.message())))?;
    let mut random = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
        .map_err(|_| ConfigError("no randomness for a token".into()))?;
    let token = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    );
    let entry = TokenFile {
        token: vec![Entry {
            principal: principal.to_string(),
            groups: groups.to_vec(),
            sha256: digest(&token),
            created: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        }],
    };
    let text = toml::to_string(&entry).map_err(|e| ConfigError(e.to_string()))?;
    if !existing.is_empty() && !existing.ends_with('\n') {
        existing.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ConfigError(format!("cannot write `{}`: {e}", path.display())))?;
    let lead = if existing.is_empty() { "" } else { "\n" };
    f.write_all(format!("{lead}{text}").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| ConfigError(format!("cannot write `{}`: {e}", path.display())))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_identifies_its_principal_and_only_its_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let alice = new_token(&path, "alice", &["dba".into(), "analysts".into()]).unwrap();
        let bob = new_token(&path, "bob", &[]).unwrap();
        assert!(alice.starts_with(PREFIX) && alice.len() > 40, "{alice}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&alice[PREFIX.len()..]) && !text.contains(&bob[PREFIX.len()..]),
            "{text}"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let tokens = Tokens::load(&path).unwrap();
        let a = tokens.identify(&alice).unwrap();
        assert_eq!(a.principal.as_str(), "alice");
        assert_eq!(a.groups, ["dba", "analysts"]);
        assert!(matches!(&a.via, Authn::Token { token_id } if token_id.len() == 12));
        assert_eq!(tokens.identify(&bob).unwrap().principal.as_str(), "bob");
        for wrong in [
            "",
            "pgw_",
            &alice[..alice.len() - 1],
            &format!("{alice} "),
            &alice.to_uppercase(),
        ] {
            assert!(tokens.identify(wrong).is_none(), "{wrong:?}");
        }
    }

    #[test]
    fn a_broken_or_empty_token_file_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "").unwrap();
        assert!(Tokens::load(&path).err().unwrap().0.contains("holds no tokens"));
        std::fs::write(&path, "[[token]]\nprincipal = \"a\"\nsha256 = \"abc\"\n").unwrap();
        assert!(Tokens::load(&path).err().unwrap().0.contains("64 hex digits"));
        std::fs::write(&path, "[[token]]\nprincipal = \"a\"\ntoken = \"pgw_x\"\n").unwrap();
        assert!(Tokens::load(&path).is_err());
        assert!(
            new_token(&path, "b", &[]).is_err(),
            "never appends to a file that does not parse"
        );
        let h = "a".repeat(64);
        let twice = format!(
            "[[token]]\nprincipal = \"a\"\nsha256 = \"{h}\"\n[[token]]\nprincipal = \"root\"\nsha256 = \"{h}\"\n"
        );
        std::fs::write(&path, twice).unwrap();
        assert!(Tokens::load(&path).err().unwrap().0.contains("both `a` and `root`"));
        std::fs::write(
            &path,
            format!("[[token]]\nprincipal = \"a\"\ngroups = [\"\"]\nsha256 = \"{h}\"\n"),
        )
        .unwrap();
        assert!(Tokens::load(&path).err().unwrap().0.contains("empty group"));
    }
}
