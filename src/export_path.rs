//! Where an export may be written: only under the export directory, by a relative path without `..`,
//! never through a symlink that leaves it, and never over an existing file unless overwriting was
//! asked for (and approved). Checked before anything runs.

use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("`path` is empty; give a file name such as `orders.csv` or `2026/q3/orders.csv`")]
    Empty,
    #[error("`path` must be relative to the export directory (got `{0}`); drop the leading `/`")]
    Absolute(String),
    #[error("`path` may not contain `..` or `.` components (got `{0}`); exports stay inside the export directory")]
    Escapes(String),
    #[error("`{0}` leaves the export directory through a symbolic link; pick another path")]
    Symlink(String),
    #[error("`{0}` already exists; pick a new name, or pass `overwrite: true` (the reviewer sees it)")]
    Exists(String),
    #[error("`{0}` is not a plain file name at the end; name the file to write, e.g. `orders.csv`")]
    NotAFile(String),
    #[error("the export directory `{dir}` is not usable: {error}")]
    Dir { dir: String, error: String },
}

/// The checked absolute target for `relative` under `dir` (created when missing), with its parent
/// directories created inside `dir`.
pub fn resolve(dir: &Path, relative: &str, overwrite: bool) -> Result<PathBuf, PathError> {
    let trimmed = relative.trim();
    if trimmed.is_empty() {
        return Err(PathError::Empty);
    }
    let rel = Path::new(trimmed);
    if rel.is_absolute() || trimmed.starts_with('~') {
        return Err(PathError::Absolute(trimmed.into()));
    }
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_os_string()),
            _ => return Err(PathError::Escapes(trimmed.into())),
        }
    }
    if trimmed.ends_with('/') || parts.is_empty() {
        return Err(PathError::NotAFile(trimmed.into()));
    }
    let dir_err = |e: std::io::Error| PathError::Dir {
        dir: dir.display().to_string(),
        error: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(dir_err)?;
    let root = dir.canonicalize().map_err(dir_err)?;
    // Walk down, refusing symlinks at every level, creating missing directories.
    let mut at = root.clone();
    let (file, dirs) = parts.split_last().ok_or(PathError::NotAFile(trimmed.into()))?;
    for d in dirs {
        at.push(d);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return Err(PathError::Symlink(trimmed.into())),
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(PathError::NotAFile(trimmed.into())),
            Err(_) => std::fs::create_dir(&at).map_err(dir_err)?,
        }
    }
    at.push(file);
    match std::fs::symlink_metadata(&at) {
        Ok(m) if m.file_type().is_symlink() => Err(PathError::Symlink(trimmed.into())),
        Ok(m) if !m.is_file() => Err(PathError::NotAFile(trimmed.into())),
        Ok(_) if !overwrite => Err(PathError::Exists(trimmed.into())),
        _ => {
            // Belt and braces: the final parent must still be inside the root.
            let parent = at.parent().and_then(|p| p.canonicalize().ok());
            if parent.is_none_or(|p| !p.starts_with(&root)) {
                return Err(PathError::Symlink(trimmed.into()));
            }
            Ok(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_plain_files_inside_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("exports");
        let ok = resolve(&dir, "q3/orders.csv", false).unwrap();
        assert!(ok.starts_with(dir.canonicalize().unwrap()) && ok.ends_with("q3/orders.csv"));
        std::fs::write(&ok, "x").unwrap();
        assert_eq!(
            resolve(&dir, "q3/orders.csv", false),
            Err(PathError::Exists("q3/orders.csv".into()))
        );
        assert!(resolve(&dir, "q3/orders.csv", true).is_ok());
        std::os::unix::fs::symlink("/tmp", dir.join("out")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link.csv")).unwrap();
        for (bad, want) in [
            ("", PathError::Empty),
            ("/etc/x.csv", PathError::Absolute("/etc/x.csv".into())),
            ("~/x.csv", PathError::Absolute("~/x.csv".into())),
            ("../x.csv", PathError::Escapes("../x.csv".into())),
            ("a/../../x.csv", PathError::Escapes("a/../../x.csv".into())),
            ("./x.csv", PathError::Escapes("./x.csv".into())),
            ("out/x.csv", PathError::Symlink("out/x.csv".into())),
            ("link.csv", PathError::Symlink("link.csv".into())),
            ("q3", PathError::NotAFile("q3".into())),
            ("q3/", PathError::NotAFile("q3/".into())),
        ] {
            assert_eq!(resolve(&dir, bad, true), Err(want), "{bad}");
        }
    }
}
