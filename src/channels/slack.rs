//! `[slack]`: the Slack app that posts approvals with Approve / Dry run / Deny buttons and takes
//! decisions from its interactivity endpoint (`/slack/interactivity`), each request signed by Slack.
//!
//! ```toml
//! [slack]
//! signing_secret_file = "slack-signing-secret"   # Basic Information → Signing Secret
//! bot_token_file = "slack-bot-token"             # OAuth & Permissions → Bot User OAuth Token (xoxb-…)
//! lookup_email = true                            # unmapped users: their verified e-mail (users:read.email)
//! [slack.users]
//! U0123ABCD = "bob@example.com"                  # a Slack user → a principal
//! U0456EFGH = { principal = "carol", groups = ["dba"] }
//! [slack.groups]
//! dba = ["bob@example.com"]                      # groups of principals, for `group:NAME` reviewers
//! ```

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::{Secret, outbound_url};

/// `[slack]`: the Slack app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The app's signing secret (Basic Information → App Credentials), in a file of its own.
    pub signing_secret_file: PathBuf,
    /// The bot token (`xoxb-…`) that posts and updates messages, in a file of its own.
    pub bot_token_file: PathBuf,
    /// The Web API. Defaults to `https://slack.com/api`.
    #[serde(default = "default_api_base")]
    pub api_base: String,
    /// Slack user ids (`U0123ABCD`) and the principals they decide as, optionally with groups.
    #[serde(default)]
    pub users: BTreeMap<String, SlackUser>,
    /// A user not in `users` decides as their Slack e-mail address, if Slack says it is confirmed
    /// (`users.info`; the bot needs `users:read` and `users:read.email`). Defaults to false: only
    /// users in `users` may decide.
    #[serde(default)]
    pub lookup_email: bool,
    /// Groups of principals (`dba = ["bob@example.com"]`), for rules naming `group:NAME`; added to
    /// the groups a `users` entry gives.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// Only requests from this workspace (`T0123ABCD`) are taken. Defaults to any workspace the
    /// app is installed in.
    pub team_id: Option<String>,
    /// Read from `signing_secret_file` at start.
    #[serde(skip)]
    pub signing_secret: Secret,
    /// Read from `bot_token_file` at start.
    #[serde(skip)]
    pub bot_token: Secret,
}

/// A `[slack.users]` entry: a principal, or a principal with groups.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a principal (`\"bob@example.com\"`) or a table `{ principal = \"bob\", groups = [\"dba\"] }`"
)]
pub enum SlackUser {
    Principal(String),
    Full {
        principal: String,
        #[serde(default)]
        groups: Vec<String>,
    },
}

impl SlackUser {
    pub fn principal(&self) -> &str {
        match self {
            SlackUser::Principal(p) | SlackUser::Full { principal: p, .. } => p,
        }
    }

    pub fn groups(&self) -> &[String] {
        match self {
            SlackUser::Principal(_) => &[],
            SlackUser::Full { groups, .. } => groups,
        }
    }
}

fn default_api_base() -> String {
    "https://slack.com/api".into()
}

impl SlackConfig {
    /// Makes relative paths relative to the config's directory, reads the secrets and checks the
    /// values.
    pub fn resolve(&mut self, dir: &Path) -> Result<(), String> {
        self.signing_secret_file = dir.join(&self.signing_secret_file);
        self.bot_token_file = dir.join(&self.bot_token_file);
        self.signing_secret = Secret::read(&self.signing_secret_file, "the Slack app's signing secret")?;
        self.bot_token = Secret::read(&self.bot_token_file, "the Slack bot token (xoxb-…)")?;
        if !self.bot_token.expose().starts_with("xoxb-") {
            return Err(format!(
                "`{}` does not hold a bot token; copy the Bot User OAuth Token (`xoxb-…`) from the app's OAuth & Permissions page",
                self.bot_token_file.display()
            ));
        }
        outbound_url(&self.api_base, "api_base")?;
        self.api_base = self.api_base.trim_end_matches('/').to_string();
        for (id, user) in &self.users {
            if !is_user_id(id) {
                return Err(format!(
                    "`users`: `{id}` is not a Slack user id (like `U0123ABCD`; a member's profile → ⋮ → Copy member ID)"
                ));
            }
            if user.principal().trim().is_empty() || user.groups().iter().any(|g| g.trim().is_empty()) {
                return Err(format!("`users.{id}`: the principal and group names must not be empty"));
            }
        }
        for (group, members) in &self.groups {
            if group.trim().is_empty() || members.iter().any(|m| m.trim().is_empty()) {
                return Err(format!("`groups.{group}`: group and member names must not be empty"));
            }
        }
        if self.users.is_empty() && !self.lookup_email {
            return Err("no Slack user may decide: map users in `[slack.users]` or set `lookup_email = true`".into());
        }
        Ok(())
    }

    /// The groups `principal` is in: the `users` entry's and those of `groups`.
    pub fn groups_of(&self, principal: &str, entry: Option<&SlackUser>) -> Vec<String> {
        let mut groups: Vec<String> = entry.map(|u| u.groups().to_vec()).unwrap_or_default();
        for (group, members) in &self.groups {
            if members.iter().any(|m| m == principal) && !groups.contains(group) {
                groups.push(group.clone());
            }
        }
        groups
    }
}

/// `U…` or `W…` (Enterprise Grid) and letters or digits.
fn is_user_id(id: &str) -> bool {
    id.len() >= 3 && matches!(id.as_bytes()[0], b'U' | b'W') && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, dir: &Path) -> Result<SlackConfig, String> {
        let mut c: SlackConfig = toml::from_str(text).map_err(|e| e.message().to_string())?;
        c.resolve(dir).map(|()| c)
    }

    #[test]
    fn users_map_to_principals_with_groups_and_mistakes_say_what_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "8f742231b10e8888abcd99yyyzzz85a5\n").unwrap();
        std::fs::write(dir.path().join("token"), "xoxb-1-2-3\n").unwrap();
        let base = "signing_secret_file = \"secret\"\nbot_token_file = \"token\"\n";
        let c = parse(
            &format!(
                "{base}[users]\nU0BOB = \"bob@example.com\"\nU0CAROL = {{ principal = \"carol\", groups = [\"ops\"] }}\n\
                 [groups]\ndba = [\"bob@example.com\", \"carol\"]\n"
            ),
            dir.path(),
        )
        .unwrap();
        assert_eq!(c.api_base, "https://slack.com/api");
        assert_eq!(c.signing_secret.expose(), "8f742231b10e8888abcd99yyyzzz85a5");
        assert!(!format!("{c:?}").contains("xoxb-1"), "secrets stay out of Debug");
        assert_eq!(c.groups_of("bob@example.com", c.users.get("U0BOB")), ["dba"]);
        assert_eq!(c.groups_of("carol", c.users.get("U0CAROL")), ["ops", "dba"]);

        let err = |extra: &str| parse(&format!("{base}{extra}"), dir.path()).err().unwrap();
        assert!(err("").contains("no Slack user may decide"));
        assert!(err("[users]\nbob = \"bob\"\n").contains("not a Slack user id"));
        assert!(err("[users]\nU0BOB = 3\n").contains("a principal"));
        assert!(err("lookup_email = true\napi_base = \"http://slack.example/api\"\n").contains("https"));
        std::fs::write(dir.path().join("token"), "xoxp-user-token").unwrap();
        assert!(err("lookup_email = true\n").contains("Bot User OAuth Token"));
        std::fs::remove_file(dir.path().join("token")).unwrap();
        assert!(err("lookup_email = true\n").contains("cannot read the Slack bot token"));
    }
}
