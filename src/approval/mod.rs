//! Asking a person: the review packet, the form, and the channel that carries them — an
//! `elicitation/create` request mid-call (protocols 2025-06-18/2025-11-25), or an
//! `InputRequiredResult` with a sealed `requestState` that the client answers by retrying the call
//! (2026-07-28). Nothing the model sends can approve anything: only the client's answer to our
//! prompt, bound to the exact action, counts.

pub mod cli;
pub mod form;
pub mod gate;
pub mod hub;
pub mod local;
pub mod memory;
pub mod packet;
pub mod pending;
pub mod reach;
pub mod state;
pub mod surface;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rmcp::{
    Peer,
    model::{
        CancelledNotification, CancelledNotificationParam, ClientResult, ElicitRequest, ElicitRequestParams,
        ElicitResult, ElicitationAction, InputRequest, InputRequests, InputRequiredResult, InputResponses,
        ServerRequest,
    },
    service::{PeerRequestOptions, RequestHandle, RoleServer},
};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

pub use form::Verdict;
pub use packet::ReviewPacket;
pub use state::StateSealer;

use crate::call::Action;

/// The key of our one input request in an `InputRequiredResult`.
const INPUT_KEY: &str = "approval";

/// How this call can reach a person.
pub enum Channel {
    /// An `elicitation/create` request to the client, answered within the call, in the form's
    /// spelling for the client's protocol version.
    Elicit(Peer<RoleServer>, form::Spelling),
    /// 2026-07-28: ask by returning `InputRequiredResult`; the retry carries the answer and our state.
    InputRequired {
        sealer: Arc<StateSealer>,
        state: Option<String>,
        responses: Option<InputResponses>,
    },
    /// The client declared no elicitation capability.
    Unavailable,
}

/// Everything a guarded call can use to get a person's decision.
pub struct Route {
    /// The client's own prompt.
    pub client: Channel,
    /// Pending approvals decided outside the call (console, card); `None` where not offered.
    pub local: Option<LocalRoute>,
    /// Set when `pgwarden_await` runs a stored call a person already approved.
    pub preapproved: Option<Preapproved>,
}

impl Route {
    /// Only the client's prompt.
    pub fn client(channel: Channel) -> Route {
        Route {
            client: channel,
            local: None,
            preapproved: None,
        }
    }
}

/// What the surfaces outside the call (the console, the card, the terminal) need to know about it.
pub struct LocalRoute {
    /// The host renders MCP Apps (declared `io.modelcontextprotocol/ui`).
    pub card_host: bool,
}

/// What a reviewer granted — on any surface, in the client's prompt or later — and what a call
/// runs with: the change itself or only a dry run (rolled back), within a row limit, with the
/// reviewer's reason for the model.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Approved {
    pub dry_run: bool,
    pub max_rows_affected: Option<u64>,
    pub reason: Option<String>,
}

/// A stored call a person approved, being run by `pgwarden_await`.
#[derive(Debug, Clone)]
pub struct Preapproved {
    pub approval_id: String,
    /// The hash the person approved; the call must still hash to it.
    pub hash: String,
    pub approved: Approved,
}

/// How long to ask, and how to read a quick "no".
pub struct Asking {
    /// The prompt's whole life: the rule's `approval_timeout`.
    pub timeout: Duration,
    /// How long the call itself waits for the answer. After it the prompt stays open and the call
    /// becomes a pending approval, so it does not outlive the client's tool-call timeout. `None`:
    /// the call waits out `timeout`.
    pub budget: Option<Duration>,
    /// A decline or dismissal faster than this came from the client, not from a person reading it.
    pub instant_decline: Duration,
}

/// The result of asking.
pub enum Asked {
    Verdict(Verdict),
    /// Return this to the client; the call continues when it retries with the answer.
    InputRequired(InputRequiredResult),
    /// The client declined the prompt without a person: too fast for anyone to have read it.
    Unseen(String),
    /// No answer within the call's budget; the prompt is still open.
    StillOpen(OpenPrompt),
}

/// What came back from a prompt.
#[derive(Debug)]
pub enum Reply {
    /// A person's answer (anything but an explicit approve or dry run is not approval).
    Person(Verdict),
    /// The client declined without a person (see [`Asking::instant_decline`]).
    Unseen(String),
    /// Closed without a choice (`cancel`): within the call that is not approval; for a prompt
    /// that outlived its call it decides nothing (a client may close prompts on its own then).
    Dismissed(String),
    /// No answer: the prompt timed out, the client failed it, or the connection closed.
    NoAnswer(String),
}

impl Reply {
    /// Reads an answer that came `after` the prompt was sent.
    fn read(answer: &ElicitResult, after: Duration, instant_decline: Duration) -> Reply {
        let what = match answer.action {
            ElicitationAction::Decline => "declined",
            ElicitationAction::Cancel => "dismissed",
            _ => return Reply::Person(form::read(answer)),
        };
        if after < instant_decline {
            Reply::Unseen(format!(
                "the client {what} pgwarden's approval prompt {} ms after it was sent — faster than a person can read \
                 it, so it was most likely never shown",
                after.as_millis()
            ))
        } else if answer.action == ElicitationAction::Cancel {
            Reply::Dismissed("the prompt was dismissed without an answer".into())
        } else {
            Reply::Person(form::read(answer))
        }
    }
}

/// An `elicitation/create` request the client has not answered yet. It can outlive the tool call
/// that sent it: a late answer then decides the pending approval the call turned into.
pub struct OpenPrompt {
    handle: RequestHandle<RoleServer>,
    sent: Instant,
    timeout: Duration,
    instant_decline: Duration,
}

impl std::fmt::Debug for OpenPrompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenPrompt").field("id", &self.handle.id).finish()
    }
}

impl OpenPrompt {
    async fn send(peer: &Peer<RoleServer>, params: ElicitRequestParams, asking: &Asking) -> Result<OpenPrompt, String> {
        let request = ServerRequest::ElicitRequest(ElicitRequest::new(params));
        let handle = peer
            .send_request_with_option(request, PeerRequestOptions::no_options())
            .await
            .map_err(|e| format!("the client did not show the prompt ({e})"))?;
        Ok(OpenPrompt {
            handle,
            sent: Instant::now(),
            timeout: asking.timeout,
            instant_decline: asking.instant_decline,
        })
    }

    /// Waits for the answer until `until`, or the prompt's own timeout (after which the client is
    /// told to close it). `None` when `until` came first and the prompt is still open.
    pub async fn reply(&mut self, until: Option<Instant>) -> Option<Reply> {
        let deadline = self.sent + self.timeout;
        let stop = until.map_or(deadline, |u| u.min(deadline));
        match tokio::time::timeout_at(stop.into(), &mut self.handle.rx).await {
            Ok(Ok(Ok(ClientResult::ElicitResult(answer)))) => {
                Some(Reply::read(&answer, self.sent.elapsed(), self.instant_decline))
            }
            Ok(Ok(Ok(_))) => Some(Reply::Person(Verdict::not_approved(
                "the client answered the prompt with something that is not an answer to it",
            ))),
            Ok(Ok(Err(e))) => Some(Reply::NoAnswer(format!(
                "the client answered the prompt with an error, not a decision ({e})"
            ))),
            Ok(Err(_)) => Some(Reply::NoAnswer("the client connection closed before an answer".into())),
            Err(_) if stop < deadline => None,
            Err(_) => {
                let why = format!("no answer within {}", humantime::format_duration(self.timeout));
                self.withdraw(&why).await;
                Some(Reply::NoAnswer(why))
            }
        }
    }

    /// Tells the client the prompt is no longer needed, so it can close it.
    pub async fn withdraw(&self, reason: &str) {
        let notification = CancelledNotification::new(CancelledNotificationParam::new(
            Some(self.handle.id.clone()),
            Some(reason.to_string()),
        ));
        let _ = self.handle.peer.send_notification(notification.into()).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("{0}; nothing was executed")]
    State(#[from] state::StateError),
    #[error(
        "the retried call carries {0}; nothing was executed — approval only comes from answering pgwarden's own prompt"
    )]
    Incomplete(&'static str),
    #[error("the approval prompt could not be built: {0}")]
    Form(String),
}

impl Channel {
    /// True when the client has answered a prompt of ours (a 2026-07-28 retry): no new prompt is built.
    pub fn has_answer(&self) -> bool {
        matches!(
            self,
            Channel::InputRequired { state: Some(_), .. } | Channel::InputRequired { responses: Some(_), .. }
        )
    }

    /// Asks the person, or reads the answer they gave.
    pub async fn ask(
        &self,
        packet: Option<&ReviewPacket>,
        action_hash: &str,
        asking: &Asking,
        nonces: &dyn pending::ApprovalStore,
        ct: &CancellationToken,
    ) -> Result<Asked, ApprovalError> {
        let params = |spelling: form::Spelling| -> Result<ElicitRequestParams, ApprovalError> {
            let packet = packet.ok_or(ApprovalError::Form("no review packet".into()))?;
            Ok(ElicitRequestParams::FormElicitationParams {
                meta: None,
                message: packet.message(),
                requested_schema: form::schema(spelling).map_err(ApprovalError::Form)?,
            })
        };
        match self {
            Channel::Unavailable => Ok(Asked::Verdict(Verdict::not_approved(
                "this client cannot show approval prompts (it declared no elicitation capability)",
            ))),
            Channel::Elicit(peer, spelling) => {
                let mut prompt = match OpenPrompt::send(peer, params(*spelling)?, asking).await {
                    Ok(p) => p,
                    Err(why) => return Ok(Asked::Verdict(Verdict::not_approved(why))),
                };
                let until = asking.budget.map(|b| Instant::now() + b);
                let replied = tokio::select! {
                    r = prompt.reply(until) => Some(r),
                    _ = ct.cancelled() => None,
                };
                Ok(match replied {
                    None => {
                        prompt.withdraw("the tool call was cancelled").await;
                        Asked::Verdict(Verdict::not_approved(
                            "the tool call was cancelled while waiting for approval",
                        ))
                    }
                    Some(None) => Asked::StillOpen(prompt),
                    Some(Some(Reply::Person(v))) => Asked::Verdict(v),
                    Some(Some(Reply::Unseen(why))) => Asked::Unseen(why),
                    Some(Some(Reply::NoAnswer(why) | Reply::Dismissed(why))) => {
                        Asked::Verdict(Verdict::not_approved(why))
                    }
                })
            }
            Channel::InputRequired {
                sealer,
                state,
                responses,
            } => match (state, responses) {
                (None, None) => {
                    let mut requests = InputRequests::new();
                    requests.insert(
                        INPUT_KEY.into(),
                        // Only 2026-07-28 sessions get here.
                        InputRequest::Elicitation(ElicitRequest::new(params(form::Spelling::Titled)?)),
                    );
                    let sealed = sealer.seal(action_hash, asking.timeout);
                    Ok(Asked::InputRequired(InputRequiredResult::new(
                        Some(requests),
                        Some(sealed),
                    )))
                }
                (Some(state), Some(responses)) => {
                    let (age, nonce) = sealer.open(state, action_hash)?;
                    // A state opens once: its nonce is taken for as long as the state could open.
                    if !nonces.use_nonce(&nonce, asking.timeout + Duration::from_secs(60)).await {
                        return Err(state::StateError::Replayed.into());
                    }
                    let answer = responses
                        .get(INPUT_KEY)
                        .cloned()
                        .ok_or(ApprovalError::Incomplete("no answer to pgwarden's approval prompt"))?;
                    Ok(match serde_json::from_value::<ElicitResult>(answer) {
                        Ok(answer) => match Reply::read(&answer, age, asking.instant_decline) {
                            Reply::Unseen(why) => Asked::Unseen(why),
                            Reply::Person(v) => Asked::Verdict(v),
                            Reply::NoAnswer(why) | Reply::Dismissed(why) => Asked::Verdict(Verdict::not_approved(why)),
                        },
                        Err(_) => Asked::Verdict(Verdict::not_approved(
                            "the answer to the approval prompt was unreadable",
                        )),
                    })
                }
                (Some(_), None) => Err(ApprovalError::Incomplete("a request state but no answer")),
                (None, Some(_)) => Err(ApprovalError::Incomplete("an answer without pgwarden's request state")),
            },
        }
    }
}

/// What one approval covers: the tool, the exact SQL, the call's other arguments, and the caller.
pub fn action_hash(action: &Action, extra: &serde_json::Value) -> String {
    let c = &action.caller;
    let canonical = serde_json::json!([
        action.tool,
        action.sql,
        action.intent,
        extra,
        c.principal(),
        c.groups(),
        c.client_name,
        c.client_version,
        c.session_id,
        action.database,
        action.database_at,
    ]);
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{Caller, Tool};

    fn action(sql: &str) -> Action {
        Action {
            tool: Tool::Query,
            sql: Some(sql.into()),
            intent: Some("fix the typo".into()),
            caller: Caller {
                client_name: Some("c".into()),
                client_version: Some("1".into()),
                identity: None,
                session_id: "s".into(),
            },
            database: None,
            database_at: None,
        }
    }

    /// Any byte of the SQL, any argument, the intent and the caller are bound: changing one changes
    /// the hash, so an approval never covers a different action.
    #[test]
    fn every_byte_and_parameter_changes_the_action_hash() {
        let sql = "UPDATE orders SET status = 'x' WHERE id = 1";
        let args = serde_json::json!({ "max_rows": 500 });
        let base = action_hash(&action(sql), &args);
        assert_eq!(base, action_hash(&action(sql), &args), "stable");
        let mut seen = std::collections::HashSet::from([base.clone()]);
        for i in 0..sql.len() {
            for replacement in [b' ', b'2', b';', 0x0b] {
                let mut bytes = sql.as_bytes().to_vec();
                if bytes[i] == replacement {
                    continue;
                }
                bytes[i] = replacement;
                let changed = String::from_utf8(bytes).unwrap();
                assert!(seen.insert(action_hash(&action(&changed), &args)), "{changed:?}");
            }
        }
        assert_ne!(base, action_hash(&action(&format!("{sql} ")), &args), "a trailing byte");
        for other in [
            serde_json::json!({ "max_rows": 501 }),
            serde_json::json!({ "max_rows": "500" }),
            serde_json::json!({}),
        ] {
            assert_ne!(base, action_hash(&action(sql), &other), "{other}");
        }
        let mut a = action(sql);
        a.intent = Some("fix the typo!".into());
        assert_ne!(base, action_hash(&a, &args));
        let mut a = action(sql);
        a.caller.session_id = "t".into();
        assert_ne!(base, action_hash(&a, &args));
        let mut a = action(sql);
        a.tool = Tool::Export;
        assert_ne!(base, action_hash(&a, &args));
    }
}
