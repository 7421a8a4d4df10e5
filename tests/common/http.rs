//! The real `pgwarden serve --http` ([`HttpServer`]): started like any test server, on a free
//! loopback port, with an HTTP config written into its directory; MCP clients connect to it with a
//! bearer token, in either protocol era.

use std::{path::PathBuf, time::Duration};

use rmcp::{
    ClientHandler, RoleClient,
    service::RunningService,
    transport::{StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig},
};

use super::{Era, RawServer, server::ServerBuilder};

pub struct HttpServer {
    pub raw: RawServer,
    /// `http://127.0.0.1:<port>/mcp`.
    pub url: String,
}

impl HttpServer {
    /// Starts `builder`'s server over HTTP with `config` (TOML text, without `resource`, which is
    /// `resource`) as its `--http-config`, in `dir` with the files the config names.
    pub async fn start(builder: ServerBuilder<()>, dir: &std::path::Path, resource: &str, config: &str) -> HttpServer {
        let path: PathBuf = dir.join("http.toml");
        std::fs::write(&path, format!("resource = \"{resource}\"\n{config}")).unwrap();
        let raw = builder
            .args(["--http", "127.0.0.1:0", "--http-config"])
            .args([&path])
            .start_raw()
            .await;
        let url = super::wait::poll(Duration::from_secs(60), async || {
            let err = raw.stderr();
            err.lines()
                .find_map(|l| l.strip_prefix("pgwarden: listening on "))
                .map(str::to_string)
        })
        .await
        .unwrap_or_else(|| panic!("waited 60s for the server to listen:\n{}", raw.stderr()));
        HttpServer { raw, url }
    }

    /// [`HttpServer::start`] over HTTPS with a self-signed certificate made in `dir` (see
    /// [`self_signed`]): the server, and the certificate a client must be told to trust.
    pub async fn start_tls(builder: ServerBuilder<()>, dir: &std::path::Path, config: &str) -> (HttpServer, PathBuf) {
        let (cert, key) = self_signed(dir);
        let builder = builder
            .args(["--tls-cert"])
            .args([&cert])
            .args(["--tls-key"])
            .args([&key]);
        let s = HttpServer::start(builder, dir, "https://127.0.0.1/mcp", config).await;
        assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);
        (s, cert)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        let authority = self.url.split('/').nth(2).unwrap_or_default();
        authority
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the URL")
    }

    /// An MCP client with `handler`, authenticating with `token`, in `era`.
    pub async fn connect<H: ClientHandler>(&self, handler: H, token: &str, era: Era) -> RunningService<RoleClient, H> {
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(self.url.as_str()).auth_header(token),
        );
        super::server::handshake(handler, transport, era)
            .await
            .unwrap_or_else(|e| panic!("no MCP session over HTTP: {e}\n{}", self.raw.stderr()))
    }
}

/// A `tools/call` of `tool` with `args` (a JSON object).
pub fn call(tool: &str, args: serde_json::Value) -> rmcp::model::CallToolRequestParams {
    rmcp::model::CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().cloned().unwrap())
}

/// A self-signed certificate for `127.0.0.1` (and its key), made with openssl in `dir`: the
/// `--tls-cert`/`--tls-key` of an HTTPS test server, and what a client must be told to trust.
pub fn self_signed(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (`.ci/run` installs it)");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    (cert, key)
}
