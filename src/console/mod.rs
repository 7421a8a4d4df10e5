//! The local review console: a small web page served by the `pgwarden serve` process itself on
//! 127.0.0.1 (random port), where the person at this computer approves or denies pending calls.
//!
//! The model has no way in. pgwarden opens the browser itself at `/login#k=<secret>`, handing the
//! URL over in a private redirect file (`redirect`), never in argv or the environment, which other
//! local users can read: the one-time
//! secret sits in the URL fragment (never sent in a request line, a log or a Referer), the page
//! trades it for an HttpOnly, SameSite=Strict session cookie, and the secret is never written to
//! stdout, stderr, the audit log or a tool result. Every request must carry our own Host (against
//! DNS rebinding) and, when it has one, our own Origin; state changes also need the session's CSRF
//! token and the action hash the person was shown. No CORS headers are ever sent.

mod http;
mod redirect;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use sha2::{Digest, Sha256};
use tokio::{sync::OnceCell, time::Instant};
use tokio_util::sync::CancellationToken;

use self::redirect::RedirectPage;

use crate::{
    approval::{
        hub::CARD_READY_WITHIN,
        pending::{ApprovalStore, Attestation, Reviewer, State, new_secret, same_secret},
        surface::{Announced, Offer, ReviewSurface},
    },
    call::Surface,
};

/// A login secret is good for one use within this time.
const LOGIN_TTL: Duration = Duration::from_secs(120);
/// Wrong secrets before the current one is thrown away.
const LOGIN_ATTEMPTS: u32 = 5;
/// A console tab that polled this recently is still open: no new tab is launched.
const TAB_ALIVE: Duration = Duration::from_secs(35);

/// The console of this process, started on first need.
pub struct Console {
    store: Arc<dyn ApprovalStore>,
    /// Shown in the page header: which server and client this console serves.
    label: String,
    running: OnceCell<Arc<Shared>>,
    /// A browser command used instead of `$BROWSER` (tests, and embedders that know better).
    browser: Mutex<Option<String>>,
    /// A private directory of this user for the sign-in redirect page (`redirect`).
    dir: PathBuf,
    /// Itself, for the tasks it starts.
    me: std::sync::Weak<Console>,
}

/// What the HTTP handlers share.
struct Shared {
    addr: SocketAddr,
    store: Arc<dyn ApprovalStore>,
    label: String,
    login: Mutex<Login>,
    /// SHA-256 of a session cookie → the session.
    sessions: Mutex<HashMap<Vec<u8>, Session>>,
    last_poll: Mutex<Option<Instant>>,
    /// Cancelled when the console stops: the accept loop ends.
    stop: CancellationToken,
}

#[derive(Default)]
struct Login {
    secret: Option<(String, Instant)>,
    failures: u32,
    /// The redirect page carrying the current secret; deleted with it.
    page: Option<RedirectPage>,
}

/// A browser signed in with a one-time link.
#[derive(Clone)]
struct Session {
    csrf: String,
    /// Who decides, for the audit log: this session, which is all the console authenticated (the
    /// holder of the link), not a claim about which OS user is at the keyboard.
    decider: String,
}

impl Console {
    /// A console that writes its sign-in redirect pages in `dir` (created 0700 when first needed).
    pub fn new(store: Arc<dyn ApprovalStore>, label: String, dir: PathBuf) -> Arc<Console> {
        Arc::new_cyclic(|me| Console {
            store,
            label,
            running: OnceCell::new(),
            browser: Mutex::new(None),
            dir,
            me: me.clone(),
        })
    }

    /// Which server and client this console serves (also what `pgwarden approvals` shows).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Opens the console with `command` (same form as `$BROWSER`) instead of `$BROWSER`.
    pub fn use_browser(&self, command: &str) {
        *self.browser.lock().unwrap_or_else(|p| p.into_inner()) = Some(command.to_string());
    }

    async fn shared(&self) -> std::io::Result<Arc<Shared>> {
        self.running
            .get_or_try_init(|| async {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
                let shared = Arc::new(Shared {
                    addr: listener.local_addr()?,
                    store: self.store.clone(),
                    label: self.label.clone(),
                    login: Mutex::new(Login::default()),
                    sessions: Mutex::new(HashMap::new()),
                    last_poll: Mutex::new(None),
                    stop: CancellationToken::new(),
                });
                tracing::info!(port = shared.addr.port(), "review console listening on 127.0.0.1");
                http::serve(listener, shared.clone());
                Ok(shared)
            })
            .await
            .cloned()
    }

    /// The console's address, starting it if needed.
    pub async fn addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.shared().await?.addr)
    }

    /// Makes sure the person sees the console: if no console tab is open, opens the browser at a
    /// fresh login URL. `Ok(true)` when a browser was launched, `Ok(false)` when a tab is open.
    pub async fn show(&self) -> Result<bool, String> {
        let shared = self
            .shared()
            .await
            .map_err(|e| format!("the review console could not start: {e}"))?;
        if shared.tab_open() {
            return Ok(false);
        }
        let secret = new_secret();
        let url = format!("http://127.0.0.1:{}/login#k={secret}", shared.addr.port());
        let page = RedirectPage::write(&self.dir, &url).map_err(|e| {
            format!(
                "the review console could not write its sign-in page in `{}`: {e}",
                self.dir.display()
            )
        })?;
        let file_url = page
            .file_url()
            .map_err(|e| format!("the review console's sign-in page has no file URL: {e}"))?;
        *shared.lock_login() = Login {
            secret: Some((secret, Instant::now() + LOGIN_TTL)),
            failures: 0,
            page: Some(page),
        };
        // The page goes when the link expires, even if nobody signs in.
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            tokio::time::sleep(LOGIN_TTL).await;
            if let Some(shared) = weak.upgrade() {
                let mut login = shared.lock_login();
                if login.secret.as_ref().is_some_and(|(_, until)| Instant::now() >= *until) {
                    login.secret = None;
                    login.page = None;
                }
            }
        });
        let browser = self.browser.lock().unwrap_or_else(|p| p.into_inner()).clone();
        open_browser(&file_url, browser).await?;
        tracing::info!(port = shared.addr.port(), "opened the review console in the browser");
        Ok(true)
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(shared) = self.running.get() {
            shared.stop.cancel();
            let mut login = shared.lock_login();
            login.secret = None;
            login.page = None;
        }
    }
}

impl Shared {
    fn lock_login(&self) -> std::sync::MutexGuard<'_, Login> {
        self.login.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tab_open(&self) -> bool {
        self.last_poll
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < TAB_ALIVE)
    }

    fn polled(&self) {
        *self.last_poll.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Trades the one-time secret for a session; returns the session cookie.
    fn sign_in(&self, given: &str) -> Result<String, &'static str> {
        let mut login = self.lock_login();
        let Some((secret, until)) = login.secret.clone() else {
            return Err(
                "this sign-in link was already used or has expired; pgwarden opens a new one at the next approval",
            );
        };
        if Instant::now() >= until {
            login.secret = None;
            login.page = None;
            return Err("this sign-in link has expired; pgwarden opens a new one at the next approval");
        }
        if !same_secret(given, &secret) {
            login.failures += 1;
            if login.failures >= LOGIN_ATTEMPTS {
                login.secret = None;
                login.page = None;
                tracing::warn!("review console: too many wrong sign-in secrets; the current link is revoked");
            }
            return Err("wrong sign-in secret");
        }
        login.secret = None;
        login.page = None;
        let cookie = new_secret();
        // A public name for the session (not derived from the cookie), shown in the audit log.
        let id: String = new_secret().chars().take(12).collect();
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        tracing::info!(session = %id, "review console: a browser signed in with the one-time link");
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(
            Sha256::digest(cookie.as_bytes()).to_vec(),
            Session {
                csrf: new_secret(),
                decider: format!("local console session {id} (signed in with the one-time link at {at})"),
            },
        );
        Ok(cookie)
    }

    /// The session this cookie opens.
    fn session(&self, cookie: &str) -> Option<Session> {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(Sha256::digest(cookie.as_bytes()).as_slice())
            .cloned()
    }
}

/// Opens `url` (the redirect page's `file://` URL, never the secret) in the person's browser: `$BROWSER` (a command; `%s` is replaced by the URL, else
/// the URL is appended), else the platform's opener. Nothing it prints reaches our stdout.
async fn open_browser(url: &str, browser: Option<String>) -> Result<(), String> {
    let (program, mut args): (String, Vec<String>) = match browser.map_or_else(|| std::env::var("BROWSER"), Ok) {
        Ok(b) if !b.trim().is_empty() => {
            // Python's convention: alternatives separated by the path separator; the first is used.
            let first = b.split(':').next().unwrap_or_default();
            let mut words = first.split_whitespace().map(str::to_string);
            let program = words.next().unwrap_or_default();
            (program, words.collect())
        }
        _ if cfg!(target_os = "macos") => ("/usr/bin/open".into(), vec![]),
        _ if cfg!(windows) => ("rundll32".into(), vec!["url.dll,FileProtocolHandler".into()]),
        _ => {
            let desktop = ["DISPLAY", "WAYLAND_DISPLAY"]
                .iter()
                .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
            if !desktop {
                return Err(
                    "there is no desktop session to open the review console in (no DISPLAY or WAYLAND_DISPLAY, \
                     and $BROWSER is not set)"
                        .into(),
                );
            }
            ("xdg-open".into(), vec![])
        }
    };
    if args.iter().any(|a| a.contains("%s")) {
        for a in &mut args {
            *a = a.replace("%s", url);
        }
    } else {
        args.push(url.to_string());
    }
    let mut child = tokio::process::Command::new(&program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("the browser could not be started (`{program}`: {e}); set $BROWSER to a browser command")
        })?;
    // Openers return at once; a browser keeps running. Only a quick failure is reported.
    match tokio::time::timeout(Duration::from_secs(3), child.wait()).await {
        Ok(Ok(status)) if !status.success() => Err(format!(
            "the browser command `{program}` failed ({status}); set $BROWSER to a browser command"
        )),
        Ok(_) => Ok(()),
        Err(_) => {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
            Ok(())
        }
    }
}

/// The person signed in to the console: all the console authenticated is the holder of the
/// one-time link, which only this OS user's browser received.
fn reviewer(decider: &str) -> Reviewer {
    Reviewer::attested(Surface::Console, decider, Attestation::Os)
}

#[async_trait::async_trait]
impl ReviewSurface for Console {
    fn id(&self) -> Surface {
        Surface::Console
    }

    fn offers(&self, _: &Offer) -> bool {
        true
    }

    fn place(&self, _: &str) -> String {
        "in the pgwarden review window in their browser".into()
    }

    async fn bring_forward(&self) -> Result<(), String> {
        self.show().await.map(|_| ())
    }

    /// Opens the console, unless a card that may decide is showing the approval: then only if the
    /// card does not report itself on screen within a few seconds.
    async fn announce(&self, a: &Announced<'_>) -> Result<(), String> {
        if !(a.client_may_decide && a.shown_on.contains(&Surface::McpApp)) {
            return self.show().await.map(|_| ());
        }
        let (store, id) = (self.store.clone(), a.id.to_string());
        let Some(console) = self.me.upgrade() else {
            return self.show().await.map(|_| ());
        };
        tokio::spawn(async move {
            tokio::time::sleep(CARD_READY_WITHIN).await;
            if !store.was_shown(&id).await && store.state(&id).await == Some(State::Pending) {
                tracing::info!(
                    approval = id,
                    "the review card did not report ready; opening the console"
                );
                if let Err(e) = console.show().await {
                    tracing::warn!(approval = id, "review console not shown: {e}");
                }
            }
        });
        Ok(())
    }
}
