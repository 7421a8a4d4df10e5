//! Private directories and secret files of this user (the console's sign-in pages, the approvals
//! socket, signing and sealing keys). A leaf: it uses nothing else in the crate.

use std::{
    fs,
    io::{self, Read, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

/// Makes `dir` a private directory of this user: created 0700 if missing, else it must be a
/// directory (not a link) this user owns, and its mode is tightened to 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let meta = fs::symlink_metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.file_type().is_dir() || meta.uid() != me {
        return Err(io::Error::other(format!(
            "`{}` is not a directory owned by this user (uid {me}); remove it so pgwarden can create it",
            dir.display()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// Other users can read it: whoever did may hold a copy.
    #[error("mode {mode:o}")]
    Exposed { mode: u32 },
    #[error("{0}")]
    Unusable(String),
}

/// The bytes of the secret file at `path`, or of a new one made from `make()` when there is none.
/// An existing file must be owner-only and this user's. A new one is written owner-only aside and
/// hard-linked into place, so two processes starting at once end up with the same secret (the
/// loser reads the winner's).
pub fn secret_file(
    path: &Path,
    make: impl FnOnce() -> io::Result<Vec<u8>>,
) -> Result<(Vec<u8>, bool), SecretFileError> {
    let unusable = |e: io::Error| SecretFileError::Unusable(e.to_string());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(unusable)?;
    }
    if let Some(bytes) = read_secret(path)? {
        return Ok((bytes, false));
    }
    let bytes = make().map_err(unusable)?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()));
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok((bytes, true)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read_secret(path)?.map(|b| (b, false)).ok_or_else(|| unusable(e))
        }
        Err(e) => Err(unusable(e)),
    }
}

/// The secret file's bytes if it exists, checked as [`secret_file`] says.
fn read_secret(path: &Path) -> Result<Option<Vec<u8>>, SecretFileError> {
    let unusable = |e: io::Error| SecretFileError::Unusable(e.to_string());
    let mut f = match fs::OpenOptions::new().read(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unusable(e)),
    };
    let meta = f.metadata().map_err(unusable)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Exposed { mode });
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(SecretFileError::Unusable(format!(
            "it belongs to uid {}, not to the user pgwarden runs as",
            meta.uid()
        )));
    }
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(unusable)?;
    Ok(Some(bytes))
}
