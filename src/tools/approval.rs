//! What the model sees of approvals decided outside its client: the pending handle a guarded call
//! returns, and `pgwarden_await`. Plus the arguments of the review card's app-only tools.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::approval::hub::PendingInfo;

/// A guarded call's result while a person has not decided yet.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PendingApproval {
    /// `pending_approval`.
    pub status: String,
    /// Always false: nothing ran.
    pub executed: bool,
    /// The handle to pass to `pgwarden_await`.
    pub approval_id: String,
    /// The first 40 bits of the action's hash, shown to the person on every surface.
    pub fingerprint: String,
    /// When the approval expires if nobody decides (RFC 3339).
    pub expires_at: String,
    /// Where the person can decide: `elicitation` (the client's own prompt, still open), `mcp_app`
    /// (a card in this chat), `console` (pgwarden's review window in the browser), `cli`
    /// (`pgwarden approvals` in a terminal of the same OS user) — the ids policy files use.
    pub surfaces: Vec<String>,
    /// The next call to make.
    pub next: NextCall,
    /// The same instructions as the text content.
    pub message: String,
    /// Whether the card in this chat may decide (false when the policy needs a local approval).
    pub can_decide_here: bool,
    /// The review packet, for the card.
    #[schemars(schema_with = "super::object_schema")]
    pub packet: serde_json::Value,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct NextCall {
    pub tool: String,
    #[schemars(schema_with = "super::object_schema")]
    pub arguments: serde_json::Value,
}

impl PendingApproval {
    pub fn new(info: &PendingInfo) -> PendingApproval {
        let wait = info.wait_budget.as_secs();
        let places = info.places.join(", or ");
        let message = format!(
            "NOT EXECUTED — a human must approve this first.\n\
             pgwarden approval {id} · fingerprint {fp} · {summary}\n\
             The person at this computer is being asked {places}. You cannot approve it yourself, and must not retry \
             or rephrase the statement.\n\
             Next: call pgwarden_await {{\"approval_id\":\"{id}\"}} (waits up to {wait} s).\n\
             If it is still pending after that, tell the user what is waiting for their approval (fingerprint {fp}) and \
             end your turn; call pgwarden_await again when they say they have decided.",
            id = info.approval_id,
            fp = info.fingerprint,
            summary = info.packet["summary"].as_str().unwrap_or_default(),
        );
        PendingApproval {
            status: "pending_approval".into(),
            executed: false,
            approval_id: info.approval_id.clone(),
            fingerprint: info.fingerprint.clone(),
            expires_at: info.expires_at.clone(),
            surfaces: info.surfaces.iter().map(|s| s.to_string()).collect(),
            next: NextCall {
                tool: "pgwarden_await".into(),
                arguments: serde_json::json!({ "approval_id": info.approval_id }),
            },
            message,
            can_decide_here: info.can_decide_here,
            packet: for_model(&info.packet),
        }
    }
}

/// The packet as the model may see it: without an estimate meant for the person only.
fn for_model(packet: &serde_json::Value) -> serde_json::Value {
    let mut packet = packet.clone();
    if packet["estimate_for_person_only"] == serde_json::Value::Bool(true)
        && let Some(p) = packet.as_object_mut()
    {
        p.insert("estimated_rows".into(), serde_json::Value::Null);
    }
    packet
}

/// A guarded tool's structured result: its own output, or a pending approval. (Only its schema is
/// used, for the tools' output schemas.)
#[derive(Debug, Serialize, JsonSchema)]
#[allow(clippy::large_enum_variant)]
#[serde(untagged)]
pub enum OrPending<T> {
    Done(T),
    Pending(PendingApproval),
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwaitArgs {
    /// The `approval_id` a call returned with `status: "pending_approval"`.
    pub approval_id: String,
    /// Wait at most this many seconds (the server's own limit, usually 40 s, applies anyway).
    #[serde(default)]
    pub wait_seconds: Option<u64>,
}

/// What `pgwarden_await` found.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AwaitOutput {
    /// `executed`, `pending`, `denied`, `expired`, `cancelled`, `executing`, `done`, `failed` or
    /// `unknown_or_expired`.
    pub status: String,
    /// True only when this call ran the approved action.
    pub executed: bool,
    pub approval_id: String,
    /// True when the wait ran out while the approval was still pending.
    pub timed_out: bool,
    /// What happened and what to do next.
    pub message: String,
    /// The reviewer's reason, when they gave one (a person's words).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reviewer_reason: Option<String>,
    /// The approved call's own result, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::object_schema")]
    pub result: Option<serde_json::Value>,
}

/// Arguments of the card's app-only tools; the nonce comes from the guarded call's result `_meta`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRef {
    pub approval_id: String,
    pub nonce: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewDecision {
    pub approval_id: String,
    pub nonce: String,
    /// The action hash the card showed.
    pub action_hash: String,
    /// `approve`, `dry_run` or `deny`.
    pub decision: String,
    #[serde(default)]
    pub max_rows_affected: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
}
