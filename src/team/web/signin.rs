//! Signing in and out of the review app: `/review/login` starts the code flow (its `state`,
//! `nonce` and PKCE verifier ride in a sealed cookie), `/review/callback` checks the answer and
//! sets the session cookie, a `POST` to `/review/logout` from the app's own page clears it.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{
    Web, html, page,
    session::{LOGIN_COOKIE, LOGIN_TTL, Login, SESSION_COOKIE, Session, cookie, set_cookie},
};
use crate::approval::pending::same_secret;

#[derive(Deserialize)]
pub(super) struct LoginQuery {
    next: Option<String>,
}

/// A page of the review app to return to: nothing else (no other site, no `//host`, no
/// `/review/../` out of the app). The path as a browser resolves it (dot segments, `%2e` too).
pub(super) fn safe_next(next: Option<&str>) -> String {
    let ours = |p: &str| p == "/review" || p.starts_with("/review/");
    let resolved = next
        .filter(|n| ours(n) && !n.contains("//") && !n.contains('\\') && n.chars().all(|c| c.is_ascii_graphic()))
        .and_then(|n| url::Url::parse("http://app.invalid/").ok()?.join(n).ok())
        .filter(|u| u.host_str() == Some("app.invalid") && ours(u.path()) && !u.path().contains("//"));
    match resolved {
        Some(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
        None => "/review".into(),
    }
}

fn unavailable(e: &str) -> Response {
    tracing::warn!("review app: the OpenID provider: {e}");
    html(
        StatusCode::BAD_GATEWAY,
        page::message(
            "Sign-in unavailable",
            None,
            &format!("The organisation's sign-in service cannot be used right now: {e}"),
            Some(("/review/login", "Try again")),
        ),
    )
}

pub(super) async fn login(State(web): State<Arc<Web>>, Query(q): Query<LoginQuery>) -> Response {
    let provider = match web.provider().await {
        Ok(p) => p,
        Err(e) => return unavailable(&e),
    };
    let login = Login {
        state: web.sealer.token(),
        nonce: web.sealer.token(),
        verifier: web.sealer.token(),
        next: safe_next(q.next.as_deref()),
    };
    let url = web
        .flow()
        .authorize_url(&provider, &login.state, &login.nonce, &login.verifier);
    let sealed = match web.sealer.seal(LOGIN_COOKIE, LOGIN_TTL, &login) {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    let mut r = Redirect::to(&url).into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(LOGIN_COOKIE, &sealed, LOGIN_TTL, web.secure)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    iss: Option<String>,
}

pub(super) async fn callback(State(web): State<Arc<Web>>, headers: HeaderMap, Query(q): Query<Callback>) -> Response {
    let failed = |status: StatusCode, why: &str| {
        let mut r = html(
            status,
            page::message("Sign-in failed", None, why, Some(("/review/login", "Sign in again"))),
        );
        if let Ok(v) = HeaderValue::from_str(&set_cookie(LOGIN_COOKIE, "", Duration::ZERO, web.secure)) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
        r
    };
    let Some(login) = cookie(&headers, LOGIN_COOKIE).and_then(|c| web.sealer.open::<Login>(LOGIN_COOKIE, c)) else {
        return failed(
            StatusCode::BAD_REQUEST,
            "this sign-in expired or was started in another browser; start it again",
        );
    };
    if !same_secret(q.state.as_deref().unwrap_or_default(), &login.state) {
        return failed(
            StatusCode::BAD_REQUEST,
            "the answer does not belong to the sign-in this browser started (wrong state)",
        );
    }
    if let Some(iss) = &q.iss
        && *iss != web.config.issuer
    {
        return failed(
            StatusCode::BAD_REQUEST,
            &format!("the answer came from another provider (`{iss}`)"),
        );
    }
    if let Some(error) = &q.error {
        let detail = q.error_description.as_deref().unwrap_or_default();
        return failed(
            StatusCode::FORBIDDEN,
            &format!("the provider did not sign you in: {error} {detail}"),
        );
    }
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty()) else {
        return failed(StatusCode::BAD_REQUEST, "the provider's answer carries no code");
    };
    let provider = match web.provider().await {
        Ok(p) => p,
        Err(e) => return unavailable(&e),
    };
    let who = match web.flow().finish(&provider, code, &login.verifier, &login.nonce).await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("review app: a sign-in failed: {e}");
            return failed(StatusCode::FORBIDDEN, &e);
        }
    };
    tracing::info!(
        "review app: {} signed in (groups: {})",
        who.principal,
        who.groups.join(", ")
    );
    let session = Session {
        principal: who.principal,
        display: who.display,
        groups: who.groups,
        aliases: who.aliases,
        csrf: web.sealer.token(),
        issuer: web.config.issuer.clone(),
    };
    let lifetime = web.config.session_lifetime;
    let sealed = match web.sealer.seal(SESSION_COOKIE, lifetime, &session) {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    let mut r = Redirect::to(&login.next).into_response();
    for c in [
        set_cookie(SESSION_COOKIE, &sealed, lifetime, web.secure),
        set_cookie(LOGIN_COOKIE, "", Duration::ZERO, web.secure),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// `GET /review/logout`: the sign-out button, not the sign-out, so that a link from another site
/// cannot end a reviewer's session.
pub(super) async fn sign_out(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let s = web.session(&headers);
    let body = match s {
        Some(_) => "Use the Sign out button above to sign out of the pgwarden review app.",
        None => "You are not signed in to the pgwarden review app.",
    };
    html(
        StatusCode::OK,
        page::message("Sign out", s.as_ref(), body, Some(("/review", "All approvals"))),
    )
}

/// `POST /review/logout`, from the app's own page only: another site's form cannot end a
/// reviewer's session.
pub(super) async fn logout(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    if let Some(from) = web.cross_site(&headers) {
        return html(
            StatusCode::FORBIDDEN,
            page::message(
                "Not signed out",
                None,
                &format!("The sign-out was sent from another site (`{from}`), not from the review app's own page."),
                Some(("/review/logout", "Sign out")),
            ),
        );
    }
    let mut r = html(
        StatusCode::OK,
        page::message(
            "Signed out",
            None,
            "You are signed out of the pgwarden review app.",
            Some(("/review", "Sign in again")),
        ),
    );
    if let Ok(v) = HeaderValue::from_str(&set_cookie(SESSION_COOKIE, "", Duration::ZERO, web.secure)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_review_apps_own_pages_are_returned_to_after_sign_in() {
        for (next, to) in [
            (Some("/review/approvals/ap_1"), "/review/approvals/ap_1"),
            (Some("/review"), "/review"),
            (None, "/review"),
            (Some("https://evil.example/review"), "/review"),
            (Some("//evil.example/review/"), "/review"),
            (Some("/review//evil.example"), "/review"),
            (Some("/review/\\evil"), "/review"),
            (Some("/reviewer"), "/review"),
            (Some("/review/a b"), "/review"),
            (Some("/review/../../evil"), "/review"),
            (Some("/review/%2e%2e/mcp"), "/review"),
            (Some("/review/.%2E/api/v1/approvals"), "/review"),
            (Some("/review/approvals/../approvals/ap_1"), "/review/approvals/ap_1"),
            (Some("/review/./approvals/ap_1?x=1"), "/review/approvals/ap_1?x=1"),
        ] {
            assert_eq!(safe_next(next), to, "{next:?}");
        }
    }
}
