//! What the model (and the person reading over its shoulder) is told when no channel at the level
//! the policy requires can reach a person: the level and the setting that asks for it, which
//! channels are missing and why, and what would change it. A pure function, table-tested.

use crate::{classify::Risk, policy::Level};

/// Where the client's own prompt stands for this call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPrompt {
    /// The client can show prompts (the level may still rule them out).
    Available,
    /// The client declared no elicitation capability.
    Unavailable,
    /// `elicitation` is not in `[approval] channels`.
    Off,
}

/// Where the `pgwarden approvals` socket stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminal {
    /// `cli` is not in `[approval] channels`.
    Off,
    /// Enabled, but this process is not listening (why).
    NotListening(String),
    /// Listening (it should then have been offered; kept for completeness).
    Listening,
}

/// Everything the refusal needs to say what is true.
#[derive(Debug, Clone)]
pub struct NoChannel<'a> {
    pub risk: Risk,
    /// The weakest channel level the policy accepts for this call.
    pub level: Level,
    /// The setting that asks for that level (`[approval.min_channel] critical = "local"`, or a rule's).
    pub required_by: &'a str,
    pub client: ClientPrompt,
    /// What became of the client's prompt, when one was shown and did not settle it.
    pub prompt_outcome: Option<&'a str>,
    /// Why the review console could not be shown; `None` when the channel is off.
    pub console_problem: Option<&'a str>,
    pub terminal: Terminal,
}

/// The sentence the model gets (inside "not approved: …"). It never blames the client for a level
/// the policy set, and it ends with the settings that would change the outcome.
pub fn no_channel_message(n: &NoChannel<'_>) -> String {
    let mut missing = Vec::new();
    match n.console_problem {
        Some(why) => missing.push(format!("the review console could not be shown ({why})")),
        None => missing.push("the review console is off (`console` is not in `[approval] channels`)".into()),
    }
    match &n.terminal {
        Terminal::Off => missing.push(
            "the terminal channel is off (`cli` is not in `[approval] channels`), so `pgwarden approvals` cannot decide it"
                .into(),
        ),
        Terminal::NotListening(why) => {
            missing.push(format!("the terminal channel (`pgwarden approvals`) is not listening ({why})"))
        }
        Terminal::Listening => {}
    }
    let missing = missing.join(", and ");
    let terminal_fix = match n.terminal {
        Terminal::Off => {
            "add \"cli\" to `[approval] channels` and approve from another terminal with `pgwarden approvals`"
        }
        _ => "make the terminal channel work (`pgwarden approvals` from another terminal of the same OS user)",
    };
    match n.level {
        Level::Team => format!(
            "the policy requires a verified reviewer other than the requester for this {risk}-risk action ({by}), and \
             that is only possible when pgwarden serves a team over HTTP (`pgwarden serve --http`) with its review \
             app, API or Slack; nobody can approve it here, and a reply in the chat cannot approve it either",
            risk = n.risk.as_str(),
            by = n.required_by,
        ),
        Level::Local => {
            let client = match (n.client, n.prompt_outcome) {
                (_, Some(outcome)) => format!(" ({outcome})"),
                (ClientPrompt::Available, None) => {
                    " — this client's own approval prompt counts only as `client` level, so it was not used".into()
                }
                (ClientPrompt::Unavailable, None) => " — this client cannot show approval prompts either".into(),
                (ClientPrompt::Off, None) => String::new(),
            };
            format!(
                "the policy requires `local` approval for {risk}-risk actions ({by}): a person at this computer must \
                 decide it in pgwarden's review console or with `pgwarden approvals` in a terminal{client}. No local \
                 channel can reach a person here: {missing}. A reply in the chat cannot approve it either. To change \
                 this, the operator can {terminal_fix}; run pgwarden where it can open a browser (or set $BROWSER); or, \
                 if a prompt in the client is enough for this risk, set `[approval.min_channel] {risk} = \"client\"`{rule}",
                risk = n.risk.as_str(),
                by = n.required_by,
                rule = if n.required_by.starts_with("rule") {
                    " and lower that rule's `min_channel`"
                } else {
                    ""
                },
            )
        }
        Level::Client => {
            let client = match (n.client, n.prompt_outcome) {
                (_, Some(outcome)) => outcome.to_string(),
                (ClientPrompt::Off, None) => {
                    "the client's prompt is off (`elicitation` is not in `[approval] channels`)".into()
                }
                _ => "this client cannot show approval prompts (it declared no elicitation capability)".into(),
            };
            format!(
                "{client}, and {missing}, so no person could approve it — a reply in the chat cannot approve it either. \
                 The operator can allow it in the policy, {terminal_fix}, run pgwarden where it can open a browser for \
                 its review console (or set $BROWSER), or use a client that shows MCP approval prompts"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_DESKTOP: &str = "there is no desktop session to open the review console in";

    fn critical(client: ClientPrompt, terminal: Terminal) -> String {
        no_channel_message(&NoChannel {
            risk: Risk::Critical,
            level: Level::Local,
            required_by: "`[approval.min_channel] critical = \"local\"`",
            client,
            prompt_outcome: None,
            console_problem: Some(NO_DESKTOP),
            terminal,
        })
    }

    /// Issue 17 item 2: over SSH a critical action was refused with "this client cannot show
    /// approval prompts" right after the client had shown eight. The refusal now names the level,
    /// the setting that asks for it, each missing local channel and the settings that change it.
    #[test]
    fn a_critical_action_without_a_local_channel_is_refused_with_what_is_true() {
        let m = critical(ClientPrompt::Available, Terminal::Off);
        assert!(!m.contains("cannot show approval prompts"), "{m}");
        for said in [
            "requires `local` approval for critical-risk actions",
            "`[approval.min_channel] critical = \"local\"`",
            "counts only as `client` level",
            NO_DESKTOP,
            "`cli` is not in `[approval] channels`",
            "add \"cli\" to `[approval] channels`",
            "set `[approval.min_channel] critical = \"client\"`",
            "A reply in the chat cannot approve it",
        ] {
            assert!(m.contains(said), "missing {said:?} in: {m}");
        }
        let m = critical(
            ClientPrompt::Unavailable,
            Terminal::NotListening("no runtime directory".into()),
        );
        assert!(m.contains("this client cannot show approval prompts either"), "{m}");
        assert!(m.contains("is not listening (no runtime directory)"), "{m}");
    }

    #[test]
    fn a_rule_that_raises_the_level_is_named_as_the_setting() {
        let m = no_channel_message(&NoChannel {
            risk: Risk::High,
            level: Level::Local,
            required_by: "rule `pii-exports`'s `min_channel = \"local\"`",
            client: ClientPrompt::Available,
            prompt_outcome: None,
            console_problem: None,
            terminal: Terminal::Off,
        });
        assert!(m.contains("rule `pii-exports`'s `min_channel"), "{m}");
        assert!(m.contains("lower that rule's `min_channel`"), "{m}");
        assert!(m.contains("the review console is off"), "{m}");
    }

    #[test]
    fn a_client_level_call_names_the_missing_prompt_only_when_it_is_missing() {
        let m = no_channel_message(&NoChannel {
            risk: Risk::High,
            level: Level::Client,
            required_by: "`[approval.min_channel] high = \"client\"`",
            client: ClientPrompt::Unavailable,
            prompt_outcome: None,
            console_problem: Some(NO_DESKTOP),
            terminal: Terminal::Off,
        });
        assert!(m.starts_with("this client cannot show approval prompts"), "{m}");
        let m = no_channel_message(&NoChannel {
            prompt_outcome: Some("the client declined pgwarden's approval prompt 3 ms after it was sent"),
            client: ClientPrompt::Available,
            ..NoChannel {
                risk: Risk::High,
                level: Level::Client,
                required_by: "",
                client: ClientPrompt::Available,
                prompt_outcome: None,
                console_problem: Some(NO_DESKTOP),
                terminal: Terminal::Off,
            }
        });
        assert!(m.starts_with("the client declined"), "{m}");
        assert!(!m.contains("cannot show approval prompts"), "{m}");
    }
}
