//! Review surfaces: where a person sees a pending approval and decides it. Each implements
//! [`ReviewSurface`] (announce a new approval, withdraw it) and decides through the one
//! [`ApprovalStore::decide`](super::pending::ApprovalStore::decide) with its [`Reviewer`]. The
//! console, the card and the terminal are registered once at start (`Approvals::register`, in
//! `main`); the client's own prompt, still open after its call stopped waiting, is a surface of one
//! approval.
//!
//! A new surface is a `call::Surface` variant (its id, used in policy files, audit records and
//! what the model is told, and its level), one file implementing this trait, and one registration
//! line in `main`.

use async_trait::async_trait;

use super::pending::Reviewer;
use crate::call::{Level, Surface};

/// What a surface needs to know to say whether it can show an approval for this call.
#[derive(Debug, Clone, Copy)]
pub struct Offer {
    /// The host renders MCP Apps views (the card).
    pub card_host: bool,
    /// The weakest level that may decide this call.
    pub level: Level,
}

/// A new pending approval, as the surfaces are told of it.
#[derive(Debug)]
pub struct Announced<'a> {
    pub id: &'a str,
    pub hash: &'a str,
    /// The surfaces already showing it (those registered before this one, and a prompt still open).
    pub shown_on: &'a [Surface],
    /// Whether a surface of `Level::Client` may decide it.
    pub client_may_decide: bool,
}

#[async_trait]
pub trait ReviewSurface: Send + Sync {
    fn id(&self) -> Surface;

    /// Whether it can show an approval for this call now (beyond the policy enabling it).
    fn offers(&self, offer: &Offer) -> bool;

    /// Whether a person deciding here may decide an approval that needs `level`.
    fn may_decide(&self, level: Level) -> bool {
        self.id().level() >= level
    }

    /// Where the person finds the approval `id` here, for the model to tell them: "in the pgwarden
    /// review window in their browser".
    fn place(&self, id: &str) -> String;

    /// Shows a new pending approval; `Err` says why it could not, for the person and the model.
    async fn announce(&self, approval: &Announced<'_>) -> Result<(), String>;

    /// The approval is no longer waiting here (it was decided elsewhere, expired, or could not be
    /// kept): stop showing it.
    async fn withdraw(&self, _id: &str, _why: &str) {}

    /// Brings the surface in front of the person (the review window); `Err` when it has nothing to
    /// bring forward.
    async fn bring_forward(&self) -> Result<(), String> {
        Err(format!("the `{}` surface has no window to open", self.id()))
    }
}

/// A reviewer as the card's tools present one: the person in the chat, vouched for by the host
/// that renders the card, proven by the approval's nonce.
pub fn card_reviewer(nonce: String) -> Reviewer {
    Reviewer::attested(
        Surface::McpApp,
        "the person in the chat client",
        super::pending::Attestation::Host { nonce },
    )
}
