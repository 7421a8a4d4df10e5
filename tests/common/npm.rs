//! Node packages the tests run (the OpenID provider, the browser driver): each installed with npm
//! once per target directory, under `target/<name>`, beside the script that uses it.

use std::path::{Path, PathBuf};

/// An npm package and the script that runs it, kept in `target/<home>`.
pub struct Package {
    /// The directory under `target/`: `oidc-npm`, `browser-npm`.
    pub home: &'static str,
    /// `name@version`, pinned.
    pub spec: &'static str,
    /// The script's file name and text.
    pub script: (&'static str, &'static str),
    /// What needs npm, for the message when it is missing.
    pub needed_for: &'static str,
}

impl Package {
    /// Where the package and its script live.
    pub fn home(&self) -> PathBuf {
        let target = Path::new(super::BIN).parent().and_then(|p| p.parent()).unwrap();
        target.join(self.home)
    }

    /// Writes the script and installs the package unless it is there; the script's path. Test
    /// processes may race: each installs into a private directory, and the first rename wins.
    pub fn install(&self) -> PathBuf {
        let dir = self.home();
        let script = dir.join(self.script.0);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&script, self.script.1).unwrap();
        let modules = dir.join("node_modules");
        let name = self.spec.rsplit_once('@').map_or(self.spec, |(n, _)| n);
        if modules.join(name).join("package.json").exists() {
            return script;
        }
        let scratch = dir.join(format!("install-{}", std::process::id()));
        let out = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(&scratch)
            .arg(self.spec)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "npm (Node.js) is needed {}; `.ci/run` installs it ({e})",
                    self.needed_for
                )
            });
        assert!(
            out.status.success(),
            "npm install {}: {}",
            self.spec,
            String::from_utf8_lossy(&out.stderr)
        );
        if std::fs::rename(scratch.join("node_modules"), &modules).is_err() {
            assert!(modules.exists());
        }
        let _ = std::fs::remove_dir_all(&scratch);
        script
    }
}
