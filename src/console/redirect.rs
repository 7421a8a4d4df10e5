//! How the sign-in link reaches the browser: a private HTML page (mode 0600, in a 0700 directory of
//! this user) that redirects to the real URL, so the secret is never in a command line or an
//! environment, which other local users can read in `/proc`. Jupyter hands its token over the same way.

use std::{
    fs, io,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

/// A redirect page on disk; removed when dropped (sign-in, expiry, a newer link, console stop).
pub(super) struct RedirectPage {
    path: PathBuf,
}

impl RedirectPage {
    /// Writes a page sending the browser to `url` in `dir`, which is created 0700 if missing and
    /// otherwise must be a directory (not a link) of this user; its mode is tightened to 0700.
    pub(super) fn write(dir: &Path, url: &str) -> io::Result<RedirectPage> {
        private_dir(dir)?;
        let page = RedirectPage {
            path: dir.join(format!("login-{}.html", uuid::Uuid::new_v4().simple())),
        };
        // A fresh random name, never an existing file or a planted link.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&page.path)?;
        file.write_all(html(url).as_bytes())?;
        Ok(page)
    }

    /// The page's `file://` URL: what the browser command is given.
    pub(super) fn file_url(&self) -> io::Result<String> {
        url::Url::from_file_path(&self.path)
            .map(String::from)
            .map_err(|()| io::Error::other(format!("`{}` is not an absolute path", self.path.display())))
    }
}

impl Drop for RedirectPage {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

use crate::dirs::private_dir;

/// `url` is ours (`http://127.0.0.1:PORT/login#k=HEX`): nothing in it needs escaping.
fn html(url: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"0;url={url}\">\n\
         <title>pgwarden review console</title></head>\n<body>\n\
         <script>\nlocation.replace(\"{url}\");\n</script>\n\
         <p>Opening the <a href=\"{url}\">pgwarden review console</a>.</p>\n</body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    #[test]
    fn the_page_is_private_redirects_and_goes_away() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("console");
        let page = RedirectPage::write(&dir, "http://127.0.0.1:1/login#k=abc").unwrap();
        let path = page.path.clone();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .contains("location.replace(\"http://127.0.0.1:1/login#k=abc\")")
        );
        assert!(page.file_url().unwrap().starts_with("file:///"));
        assert!(!page.file_url().unwrap().contains("abc"));
        drop(page);
        assert!(!path.exists());
    }

    #[test]
    fn a_loose_directory_of_ours_is_tightened_and_a_link_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("console");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        drop(RedirectPage::write(&dir, "u").unwrap());
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(RedirectPage::write(&link, "u").is_err());
    }
}
