//! The person in the client: a client that can show approval prompts and answers them from a
//! script, recording what it was shown. The test decides when a slow person answers ([`Reviewer::cue`]).

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use rmcp::{
    ClientHandler, ErrorData, RoleClient,
    model::{
        ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction, Implementation,
        ProtocolVersion,
    },
    service::RequestContext,
};
use serde_json::Value;
use tokio::sync::watch;

/// How the scripted reviewer answers.
#[derive(Clone)]
pub enum Answer {
    Reply(ElicitResult),
    /// Never answers (until the server gives up and cancels the prompt).
    Hang,
    /// Answers when the test cues it ([`Reviewer::cue`]), as a person taking their time would; a
    /// prompt the server withdraws first is closed unanswered.
    OnCue(ElicitResult),
    /// Answers when the test cues it even if the server withdrew the prompt meanwhile (a client that
    /// did not notice the withdrawal).
    LateOnCue(ElicitResult),
}

/// One progress notification: (progress, message).
pub type Progress = (f64, Option<String>);

/// A client that can show prompts and answers them from a script, recording every message shown.
#[derive(Clone)]
pub struct Reviewer {
    pub answer: Arc<Mutex<Answer>>,
    pub seen: Arc<Mutex<Vec<String>>>,
    pub elicitation: bool,
    /// Progress notifications received: (progress, message).
    pub progress: Arc<Mutex<Vec<Progress>>>,
    /// Prompts the server withdrew (cancelled) while they were open.
    pub withdrawn: Arc<Mutex<usize>>,
    /// The `requestedSchema` of every form prompt shown.
    pub forms: Arc<Mutex<Vec<Value>>>,
    /// The protocol version it asks for at `initialize`; defaults to 2025-06-18.
    pub protocol: ProtocolVersion,
    /// Set once the test cues the slow person ([`Answer::OnCue`], [`Answer::LateOnCue`]).
    cued: Arc<watch::Sender<bool>>,
    /// Answers handed back to the client library, withdrawn prompts included.
    answered: Arc<AtomicUsize>,
}

impl Reviewer {
    pub fn new(answer: Answer) -> Reviewer {
        Reviewer {
            answer: Arc::new(Mutex::new(answer)),
            seen: Arc::new(Mutex::new(Vec::new())),
            elicitation: true,
            progress: Arc::new(Mutex::new(Vec::new())),
            withdrawn: Arc::new(Mutex::new(0)),
            forms: Arc::new(Mutex::new(Vec::new())),
            protocol: ProtocolVersion::V_2025_06_18,
            cued: Arc::new(watch::channel(false).0),
            answered: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Answers `decision` (with optional row limit and reason), as a person clicking the form would.
    pub fn says(decision: &str, max_rows_affected: Option<u64>, reason: Option<&str>) -> Reviewer {
        let mut content = serde_json::json!({ "decision": decision });
        if let Some(n) = max_rows_affected {
            content["max_rows_affected"] = n.into();
        }
        if let Some(r) = reason {
            content["reason"] = r.into();
        }
        Reviewer::new(Answer::Reply(
            ElicitResult::new(ElicitationAction::Accept).with_content(content),
        ))
    }

    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn prompts(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// The slow person answers now: every prompt waiting on its cue, and any shown later.
    pub fn cue(&self) {
        self.cued.send_replace(true);
    }

    /// How many answers it has handed back (sent, unless the prompt was withdrawn meanwhile).
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    pub fn withdrawals(&self) -> usize {
        *self.withdrawn.lock().unwrap()
    }

    async fn until_cued(&self) {
        let mut cued = self.cued.subscribe();
        // The sender lives in `self`, so this only ends when cued.
        let _ = cued.wait_for(|c| *c).await;
    }

    async fn reply(&self, answer: Answer, cx: &RequestContext<RoleClient>) -> ElicitResult {
        let withdrawn = || {
            *self.withdrawn.lock().unwrap() += 1;
            ElicitResult::new(ElicitationAction::Cancel)
        };
        match answer {
            Answer::Reply(r) => r,
            Answer::Hang => {
                cx.ct.cancelled().await;
                withdrawn()
            }
            Answer::LateOnCue(r) => {
                self.until_cued().await;
                r
            }
            Answer::OnCue(r) => tokio::select! {
                _ = self.until_cued() => r,
                _ = cx.ct.cancelled() => withdrawn(),
            },
        }
    }
}

impl ClientHandler for Reviewer {
    fn get_info(&self) -> ClientConfig {
        let caps = if self.elicitation {
            ClientCapabilities::builder().enable_elicitation().build()
        } else {
            ClientCapabilities::default()
        };
        ClientConfig::new(caps, Implementation::new("pgwarden-test-reviewer", "1.0"))
            .with_protocol_version(self.protocol.clone())
    }

    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _cx: rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push((params.progress, params.message));
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        cx: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        if let ElicitRequestParams::FormElicitationParams {
            message,
            requested_schema,
            ..
        } = &request
        {
            self.seen.lock().unwrap().push(message.clone());
            self.forms
                .lock()
                .unwrap()
                .push(serde_json::to_value(requested_schema).unwrap());
        }
        let answer = self.answer.lock().unwrap().clone();
        let reply = self.reply(answer, &cx).await;
        self.answered.fetch_add(1, Ordering::SeqCst);
        Ok(reply)
    }
}
