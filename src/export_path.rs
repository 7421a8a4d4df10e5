//! Where an export may be written: only under the export directory, by a relative path without `..`,
//! never through a symlink that leaves it, and never over an existing file unless overwriting was
//! asked for (and approved). Checked before anything runs.

use std::{
    ffi::OsString,
    os::fd::OwnedFd,
    path::{Component, Path, PathBuf},
};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, mkdirat, openat, renameat, statat, unlinkat};

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

/// The export directory, opened once: every export is created relative to this handle, so
/// swapping the directory (or a parent) for a symbolic link later cannot move the file elsewhere.
#[derive(Debug)]
pub struct ExportRoot {
    dir: OwnedFd,
    /// As configured, for messages and results.
    pub path: PathBuf,
}

/// A checked place for one export: its parent directory's handle and file name.
#[derive(Debug)]
pub struct Target {
    parent: OwnedFd,
    name: OsString,
    /// The path to show (the configured directory joined with the relative path).
    pub path: PathBuf,
}

/// A file being written beside its target, renamed into place when complete.
pub struct Partial {
    pub file: std::fs::File,
    name: OsString,
}

impl ExportRoot {
    /// Creates `dir` when missing and opens it.
    pub fn open(dir: &Path) -> Result<ExportRoot, PathError> {
        let dir_err = |e: std::io::Error| PathError::Dir {
            dir: dir.display().to_string(),
            error: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        let fd = openat(
            CWD,
            dir,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| dir_err(e.into()))?;
        Ok(ExportRoot {
            dir: fd,
            path: dir.to_path_buf(),
        })
    }

    /// The checked target for `relative` beneath the directory: no absolute path, no `..`, no
    /// symbolic link at any level (each directory is opened relative to the last with
    /// `O_NOFOLLOW`, missing ones created), and no existing file unless `overwrite`.
    pub fn resolve(&self, relative: &str, overwrite: bool) -> Result<Target, PathError> {
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
        let dir_err = |e: rustix::io::Errno| PathError::Dir {
            dir: self.path.display().to_string(),
            error: std::io::Error::from(e).to_string(),
        };
        let (file, dirs) = parts.split_last().ok_or(PathError::NotAFile(trimmed.into()))?;
        let mut at = rustix::io::dup(&self.dir).map_err(dir_err)?;
        for d in dirs {
            let open = |at: &OwnedFd| {
                openat(
                    at,
                    d.as_os_str(),
                    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            };
            at = match open(&at) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) => {
                    mkdirat(&at, d.as_os_str(), Mode::from_raw_mode(0o700)).map_err(dir_err)?;
                    open(&at).map_err(dir_err)?
                }
                // O_NOFOLLOW on a symbolic link, or a file where a directory should be.
                Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                    return Err(match kind(&at, d) {
                        Some(FileType::Symlink) => PathError::Symlink(trimmed.into()),
                        _ => PathError::NotAFile(trimmed.into()),
                    });
                }
                Err(e) => return Err(dir_err(e)),
            };
        }
        match kind(&at, file) {
            Some(FileType::Symlink) => return Err(PathError::Symlink(trimmed.into())),
            Some(FileType::RegularFile) if !overwrite => return Err(PathError::Exists(trimmed.into())),
            Some(FileType::RegularFile) | None => {}
            Some(_) => return Err(PathError::NotAFile(trimmed.into())),
        }
        Ok(Target {
            parent: at,
            name: file.clone(),
            path: self.path.join(rel),
        })
    }
}

/// What `name` in `dir` is, without following a symbolic link; `None` when absent.
fn kind(dir: &OwnedFd, name: &std::ffi::OsStr) -> Option<FileType> {
    statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .map(|st| FileType::from_raw_mode(st.st_mode))
}

impl Target {
    /// A new owner-only (`0600`) file beside the target, created relative to its directory handle.
    pub fn create_partial(&self) -> std::io::Result<Partial> {
        let mut name = OsString::from(".");
        name.push(&self.name);
        name.push(format!(".{}.partial", uuid::Uuid::new_v4().simple()));
        let fd = openat(
            &self.parent,
            name.as_os_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(Partial {
            file: std::fs::File::from(fd),
            name,
        })
    }

    /// Puts a finished file in place; refused (and removed) when a file appeared at the target
    /// meanwhile and `overwrite` was not approved.
    pub fn commit(&self, partial: &Partial, overwrite: bool) -> Result<(), String> {
        if !overwrite && kind(&self.parent, &self.name).is_some() {
            self.discard(partial);
            return Err("appeared while the export ran; the rows were not written over it".into());
        }
        renameat(
            &self.parent,
            partial.name.as_os_str(),
            &self.parent,
            self.name.as_os_str(),
        )
        .map_err(|e| {
            self.discard(partial);
            format!(
                "the finished file could not be put in place: {}",
                std::io::Error::from(e)
            )
        })
    }

    /// Removes a partial file.
    pub fn discard(&self, partial: &Partial) {
        let _ = unlinkat(&self.parent, partial.name.as_os_str(), AtFlags::empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_plain_files_inside_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("exports");
        let root = ExportRoot::open(&dir).unwrap();
        let resolve = |p: &str, o: bool| root.resolve(p, o).map(|t| t.path);
        let ok = resolve("q3/orders.csv", false).unwrap();
        assert_eq!(ok, dir.join("q3/orders.csv"));
        std::fs::write(&ok, "x").unwrap();
        assert_eq!(
            resolve("q3/orders.csv", false),
            Err(PathError::Exists("q3/orders.csv".into()))
        );
        assert!(resolve("q3/orders.csv", true).is_ok());
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
            assert_eq!(resolve(bad, true), Err(want), "{bad}");
        }
    }

    /// Issue 16 item 16: the export directory swapped for a symbolic link while the prompt was open
    /// sent the file outside it. The directory is opened once; the file follows the handle.
    #[test]
    fn a_directory_swapped_for_a_link_after_opening_does_not_move_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("exports");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let root = ExportRoot::open(&dir).unwrap();
        let target = root.resolve("sub/out.csv", false).unwrap();
        // The attacker moves the real directory away and puts a link in its place.
        let moved = tmp.path().join("moved");
        std::fs::rename(&dir, &moved).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
        let mut partial = target.create_partial().unwrap();
        use std::io::Write;
        partial.file.write_all(b"rows\n").unwrap();
        target.commit(&partial, false).unwrap();
        assert_eq!(std::fs::read_to_string(moved.join("sub/out.csv")).unwrap(), "rows\n");
        assert!(
            std::fs::read_dir(&elsewhere).unwrap().next().is_none(),
            "nothing written through the link"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(moved.join("sub/out.csv"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A later resolve also stays beneath the handle.
        let again = root.resolve("sub/second.csv", false).unwrap();
        let p = again.create_partial().unwrap();
        again.commit(&p, false).unwrap();
        assert!(moved.join("sub/second.csv").exists());
    }
}
