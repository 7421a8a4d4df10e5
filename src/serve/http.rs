//! MCP over Streamable HTTP (`serve --http ADDR --http-config FILE`): rmcp's service at `/mcp` in an
//! axum router, behind authentication. 2025-era clients get a session (elicitation requests on
//! its stream, kept alive longer than any approval wait); 2026-07-28 clients are served statelessly,
//! and their sealed `requestState` opens on any replica that shares the config's state key.
//!
//! Every request to `/mcp` proves who sent it before rmcp sees it — a JWT from the configured
//! issuer (with RFC 9728 metadata at `/.well-known/oauth-protected-resource…` and 401/403
//! challenges pointing to it) or a static token from the token file — and carries the verified
//! [`Identity`] in its extensions. A session belongs to the principal that opened it. `Host` and
//! `Origin` are checked (DNS rebinding), bodies are capped, and a shutdown lets calls in flight
//! finish.

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use oauth_resource_server::{AuthorizedToken, axum::AuthLayer, mcp::McpToolScopes};
use rmcp::{
    service::{RequestContext, RoleServer},
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};

use crate::{
    approval::StateSealer,
    auth::{Auth, HttpConfig, Verifier, bearer, oauth::Oauth, tokens::Tokens},
    call::Identity,
    pipeline::Databases,
    server::{Identify, PgWarden, Session},
};

/// How long a session may sit idle, at least: a prompt on the session's stream sends nothing while
/// it waits, so the policy's longest approval wait is added on top.
const SESSION_IDLE: Duration = Duration::from_secs(2 * 3600);
/// How long a shutdown waits for calls in flight before it closes what is left.
const GRACE: Duration = Duration::from_secs(30);
const SESSION_HEADER: &str = "mcp-session-id";

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {e}")]
    Bind { addr: SocketAddr, e: std::io::Error },
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
}

/// How many sessions one principal may hold open; opening another closes their oldest.
const SESSIONS_PER_PRINCIPAL: usize = 32;

/// The authentication step's state: the verifier, and which principal owns each session (with
/// each principal's sessions, oldest first).
struct Gate {
    verifier: Arc<Verifier>,
    sessions: Mutex<Owners>,
    manager: Arc<LocalSessionManager>,
}

#[derive(Default)]
struct Owners {
    owner: HashMap<String, String>,
    of: HashMap<String, std::collections::VecDeque<String>>,
}

impl Owners {
    /// Records `id` as `principal`'s; returns the session to close when they hold too many.
    fn open(&mut self, id: String, principal: String) -> Option<String> {
        self.owner.insert(id.clone(), principal.clone());
        let mine = self.of.entry(principal).or_default();
        mine.push_back(id);
        let evicted = (mine.len() > SESSIONS_PER_PRINCIPAL)
            .then(|| mine.pop_front())
            .flatten();
        if let Some(old) = &evicted {
            self.owner.remove(old);
        }
        evicted
    }

    fn close(&mut self, id: &str) {
        if let Some(p) = self.owner.remove(id)
            && let Some(mine) = self.of.get_mut(&p)
        {
            mine.retain(|s| s != id);
            if mine.is_empty() {
                self.of.remove(&p);
            }
        }
    }
}

/// The request's MCP session, when it names one its principal opened here.
#[derive(Clone)]
struct OwnSession(String);

/// The identity the authentication step put on the request, read inside the MCP handler.
struct FromRequest;

impl FromRequest {
    fn parts(ctx: &RequestContext<RoleServer>) -> Option<&http::request::Parts> {
        ctx.extensions.get::<http::request::Parts>()
    }
}

impl Identify for FromRequest {
    fn identify(&self, ctx: &RequestContext<RoleServer>) -> Option<Identity> {
        Self::parts(ctx)?.extensions.get::<Identity>().cloned()
    }

    /// The MCP session, or for a stateless (2026-07-28) request the principal: what a retry or a
    /// `pgwarden_await` must share with the call it continues.
    fn session_id(&self, ctx: &RequestContext<RoleServer>) -> Option<String> {
        let parts = Self::parts(ctx)?;
        match parts.extensions.get::<OwnSession>() {
            Some(OwnSession(id)) => Some(format!("http:{id}")),
            None => {
                let who = parts.extensions.get::<Identity>()?;
                Some(format!("principal:{}", who.principal))
            }
        }
    }
}

/// The state key: made on first start, owner-only; every replica must be given the same file.
pub fn load_sealer(path: &std::path::Path) -> Result<StateSealer, HttpError> {
    let make = || {
        let mut key = vec![0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| std::io::Error::other("no randomness for a key"))?;
        Ok(key)
    };
    let (key, _) = crate::dirs::secret_file(path, make).map_err(|e| {
        HttpError::Config(format!(
            "the state key `{}` cannot be used ({e}); it must be an owner-only file of this user",
            path.display()
        ))
    })?;
    StateSealer::from_key(key).map_err(|e| HttpError::Config(format!("the state key `{}`: {e}", path.display())))
}

/// `--tls-cert` and `--tls-key`: PEM files, the certificate chain leaf first.
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// A rustls server config (ring, TLS 1.2 and 1.3, HTTP/1.1) from the PEM files.
fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, HttpError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let bad = |what: &str, path: &std::path::Path, e: String| {
        HttpError::Config(format!("the TLS {what} `{}` cannot be used: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|i| i.collect())
        .map_err(|e| bad("certificate", &files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("certificate", &files.cert, "no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad("key", &files.key, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| bad("certificate and key", &files.cert, e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `pipeline` on `addr` until `shutdown` completes, then lets calls in flight finish. Plain
/// HTTP on loopback only (behind a proxy that terminates TLS); with `tls`, anywhere.
pub async fn serve(
    pipeline: Arc<Databases>,
    config: HttpConfig,
    addr: SocketAddr,
    tls: Option<TlsFiles>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    if tls.is_none() && !addr.ip().is_loopback() {
        return Err(HttpError::Config(format!(
            "pgwarden serves plain HTTP on loopback only ({addr} is not): give `--tls-cert` and `--tls-key`, or put \
             it behind a proxy that terminates TLS and listen on 127.0.0.1 or [::1]"
        )));
    }
    let tls = tls.as_ref().map(tls_config).transpose()?;
    let sealer = Arc::new(load_sealer(
        config.state_key.as_deref().unwrap_or("state.key".as_ref()),
    )?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| HttpError::Bind { addr, e })?;
    let local = listener.local_addr().map_err(HttpError::Serve)?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let app = router(pipeline, sealer, &config, local, cancel.clone())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("serving MCP at {scheme}://{local}/mcp for {}", config.resource);
    // Announced on stderr for whoever started the process (tests, scripts) with the real port.
    eprintln!("pgwarden: listening on {scheme}://{local}/mcp");
    let sessions = cancel.clone();
    let stop = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; calls in flight may finish for {GRACE:?}");
        // Open streams (a session's GET) never end by themselves: close them after the grace time.
        tokio::spawn(async move {
            tokio::time::sleep(GRACE).await;
            sessions.cancel();
        });
    };
    connections(listener, app, tls.map(tokio_rustls::TlsAcceptor::from), stop).await;
    cancel.cancel();
    Ok(())
}

/// How many connections are served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 1024;
/// How long a connection may take to send a request's headers (and the TLS handshake).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` over HTTP/1.1 (through rustls with `tls`): at most
/// [`MAX_CONNECTIONS`] at once, each handshake and request head bounded by [`HEADER_TIMEOUT`] so a
/// silent or trickling client cannot hold a connection; on `stop`, no new connections while those
/// open finish.
async fn connections(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: impl Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            _ = &mut stop => break,
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let (tls, app, watcher) = (tls.clone(), app.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper_util::service::TowerToHyperService::new(app);
            let http = || {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT);
                b
            };
            let served = match tls {
                None => {
                    let conn = http().serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => return tracing::debug!("TLS handshake failed: {e}"),
                        Err(_) => return tracing::debug!("TLS handshake timed out"),
                    };
                    let conn = http().serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = served {
                tracing::debug!("connection: {e}");
            }
        });
    }
    graceful.shutdown().await;
}

/// The whole HTTP face: `/mcp` behind authentication, and the OAuth metadata outside it.
fn router(
    pipeline: Arc<Databases>,
    sealer: Arc<StateSealer>,
    config: &HttpConfig,
    local: SocketAddr,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<Router, HttpError> {
    let resource = url::Url::parse(&config.resource).map_err(|e| HttpError::Config(e.to_string()))?;
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    hosts.extend(resource.host_str().map(str::to_string));
    hosts.extend(config.allowed_hosts.iter().cloned());
    hosts.push(local.to_string());
    let mut http_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_max_request_body_bytes(config.max_request_bytes)
        .with_cancellation_token(cancel);
    // A request from a web page carries its Origin: only listed origins may call (none by default).
    http_config = http_config
        .with_allowed_origins(config.allowed_origins.clone())
        .enforce_origin_validation();
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(SESSION_IDLE + pipeline.policy().longest_approval_wait());
    let sessions = Arc::new(sessions);
    let identify: Arc<dyn Identify> = Arc::new(FromRequest);
    let approvals = pipeline.approvals().clone();
    let audit = pipeline.audit().clone();
    let mcp = StreamableHttpService::new(
        move || {
            Ok(PgWarden::new(
                pipeline.clone(),
                Session::identified(sealer.clone(), identify.clone()),
            ))
        },
        sessions.clone(),
        http_config,
    );
    let bad = HttpError::Config;
    let verifier = match config
        .auth_mode(std::path::Path::new("the HTTP config"))
        .map_err(|e| bad(e.0))?
    {
        Auth::Oauth(settings) => {
            Verifier::Oauth(Arc::new(Oauth::new(settings, &config.resource).map_err(|e| bad(e.0))?))
        }
        Auth::Tokens(file) => Verifier::Tokens(Tokens::load(&file).map_err(|e| bad(e.0))?),
    };
    let oauth = match &verifier {
        Verifier::Oauth(o) => Some(o.clone()),
        Verifier::Tokens(_) => None,
    };
    let verifier = Arc::new(verifier);
    let team = Arc::new(crate::team::TeamContext {
        approvals,
        audit,
        verifier: verifier.clone(),
        config: Arc::new(config.clone()),
        base: resource.origin().ascii_serialization(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| bad(format!("an HTTP client: {e}")))?,
    });
    let team_routes = crate::team::router(&team).map_err(bad)?;
    crate::team::start(&team);
    let gate = Arc::new(Gate {
        verifier,
        sessions: Mutex::default(),
        manager: sessions,
    });
    let app = Router::new()
        .nest_service("/mcp", mcp)
        .route_layer(axum::middleware::from_fn_with_state(gate, authenticate));
    let app = match oauth {
        Some(o) => {
            o.validator.spawn_background_refresh();
            let mut scopes = McpToolScopes::new()
                .try_body_limit(config.max_request_bytes)
                .map_err(|e| bad(e.to_string()))?;
            for (tool, needed) in &o.settings.tool_scopes {
                scopes = scopes.try_tool(tool, needed.clone()).map_err(|e| bad(e.to_string()))?;
            }
            let auth = AuthLayer::builder()
                .oauth(o.validator.clone())
                .build()
                .map_err(|e| bad(e.to_string()))?;
            app.route_layer(scopes)
                .route_layer(auth)
                .merge(oauth_resource_server::axum::metadata_router(Some(o.validator.clone())))
        }
        None => app,
    };
    // The team surfaces authenticate each in their own way (a bearer token, a sign-in, Slack's
    // signature), outside `/mcp`'s layers.
    Ok(app.merge(team_routes))
}

/// Puts the caller's verified identity on the request, or refuses it; keeps each session to the
/// principal that opened it, and each principal to [`SESSIONS_PER_PRINCIPAL`] sessions.
async fn authenticate(State(gate): State<Arc<Gate>>, mut req: Request, next: Next) -> Response {
    // Two credentials are one too many: which one would speak?
    if req.headers().get_all(header::AUTHORIZATION).iter().count() > 1 {
        return unauthorized(&gate.verifier);
    }
    let identity = match gate.verifier.as_ref() {
        // The OAuth layer in front already checked the token and its scopes.
        Verifier::Oauth(o) => req.extensions().get::<AuthorizedToken>().and_then(|t| o.identity(t)),
        Verifier::Tokens(tokens) => bearer(req.headers()).and_then(|t| tokens.identify(t)),
    };
    let Some(identity) = identity else {
        return unauthorized(&gate.verifier);
    };
    let principal = identity.principal.as_str().to_string();
    let session = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(id) = &session {
        let owner = lock(&gate.sessions).owner.get(id).cloned();
        match owner {
            Some(o) if o != principal => {
                tracing::warn!("refused: session {id} belongs to another principal than {principal}");
                return (StatusCode::FORBIDDEN, "this MCP session belongs to someone else").into_response();
            }
            Some(_) => {
                req.extensions_mut().insert(OwnSession(id.clone()));
            }
            // Not a session opened here (expired, closed, another replica's): rmcp answers for it,
            // and the call is not attributed to it.
            None => {}
        }
    }
    req.extensions_mut().insert(identity);
    let deleting = req.method() == http::Method::DELETE;
    let response = next.run(req).await;
    let created = response.headers().get(SESSION_HEADER).and_then(|v| v.to_str().ok());
    match (&session, created) {
        (None, Some(new)) => {
            let evicted = lock(&gate.sessions).open(new.to_string(), principal);
            if let Some(old) = evicted {
                tracing::info!("closing session {old}: its principal opened more than {SESSIONS_PER_PRINCIPAL}");
                let manager = gate.manager.clone();
                tokio::spawn(async move {
                    use rmcp::transport::streamable_http_server::session::SessionManager;
                    let _ = manager.close_session(&old.into()).await;
                });
            }
        }
        (Some(id), _) if deleting && response.status().is_success() => lock(&gate.sessions).close(id),
        _ => {}
    }
    response
}

/// The owners map, even after a panic elsewhere poisoned its lock (it holds no invariant a panic
/// could break half-way).
fn lock(m: &Mutex<Owners>) -> std::sync::MutexGuard<'_, Owners> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// 401 with the challenge a client needs to find out how to authenticate.
fn unauthorized(verifier: &Verifier) -> Response {
    let challenge = match verifier {
        Verifier::Oauth(o) => o.validator.invalid_token_challenge(),
        Verifier::Tokens(_) => r#"Bearer realm="pgwarden", error="invalid_token""#.to_string(),
    };
    let mut r = (StatusCode::UNAUTHORIZED, "a valid bearer token is required").into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}
