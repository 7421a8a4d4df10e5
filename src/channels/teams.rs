//! `[teams.NAME]`: a Microsoft Teams channel reached through a Workflows webhook ("Send webhook
//! alerts to a channel"); rules send to it with `notify = ["teams:NAME"]`. Teams shows the packet
//! and a link to the review app; the decision is made there (Workflows webhooks are one-way).
//!
//! ```toml
//! [teams.dba]
//! url_file = "teams-dba.url"   # the workflow's URL: it carries its own signature, keep it secret
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Secret, outbound_url};

/// `[teams.NAME]`: a Microsoft Teams Workflows webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsConfig {
    /// A file holding the workflow's HTTP POST URL. Anyone with the URL can post to the channel,
    /// so it is kept like a password.
    pub url_file: PathBuf,
    /// Read from `url_file` at start.
    #[serde(skip)]
    pub url: Secret,
}

impl TeamsConfig {
    /// Makes relative paths relative to the config's directory, reads the URL and checks it.
    pub fn resolve(&mut self, dir: &Path) -> Result<(), String> {
        self.url_file = dir.join(&self.url_file);
        self.url = Secret::read(&self.url_file, "the Teams workflow's URL")?;
        // Said without the URL: it is the secret.
        outbound_url(self.url.expose(), "url_file").map_err(|e| format!("`{}`: {e}", self.url_file.display()))?;
        Ok(())
    }
}
