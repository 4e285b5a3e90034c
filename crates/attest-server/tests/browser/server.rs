//! A real server for the dashboard tests: SQLite store and key vault in a tempdir, the lending
//! service with its built-in default model, the API plus the dashboard pages on an ephemeral
//! loopback port.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use attest_lending::audit::{spawn_auditor, AuditState, AuditorConfig, AuditorHandle};
use attest_lending::{DecisionRequest, DecisionResponse, LendingConfig, LendingService};
use attest_server::dashboard::audit_view::SnapshotAuditSource;
use attest_server::dashboard::Dashboard;
use attest_server::{ApiBuilder, AppState, AuthPolicy, KeyStore, Scope, Server};
use attest_store::sqlite::SqliteStore;
use attest_store::{EventStore, StoreOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The store behind it.
    pub store: Arc<SqliteStore>,
    /// The dashboard (its feed can be awaited).
    pub dashboard: Dashboard,
    /// The application state (e.g. to install an audit source).
    pub state: AppState,
    /// An HTTP client.
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server on a fresh data dir (loopback: API keys optional).
    pub async fn start() -> TestServer {
        Self::start_with(false, &[]).await.0
    }

    /// Starts a server that requires API keys (as on a public address), with one key per
    /// entry of `key_scopes`; returns the keys in that order.
    pub async fn start_requiring_keys(key_scopes: &[&[Scope]]) -> (TestServer, Vec<String>) {
        Self::start_with(true, key_scopes).await
    }

    async fn start_with(require_auth: bool, key_scopes: &[&[Scope]]) -> (TestServer, Vec<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open_default(dir.path(), StoreOptions::default())
            .expect("open sqlite store");
        let lending = LendingService::open(LendingConfig::embedded(store.clone(), dir.path()))
            .await
            .expect("open lending service");
        let keys = KeyStore::open_sqlite(dir.path())
            .await
            .expect("open key store");
        let mut created = Vec::new();
        for scopes in key_scopes {
            let scopes = scopes.iter().copied().collect();
            let key = keys
                .create("browser-test", &scopes)
                .await
                .expect("create key");
            created.push(key.key);
        }
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let policy = AuthPolicy::for_bind(addr, require_auth, &keys)
            .await
            .expect("auth policy");
        let state = AppState::builder(lending, store.clone(), keys, policy).build();
        let dashboard = Dashboard::start(store.clone());
        let router = ApiBuilder::new(state.clone())
            .merge(dashboard.router(&state))
            .build();
        let server = Server::bind(addr, policy, router).await.expect("bind");
        let base = format!("http://{}", server.local_addr());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server
                .run(async {
                    let _ = rx.await;
                })
                .await;
        });
        let srv = TestServer {
            base,
            store,
            dashboard,
            state,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        };
        (srv, created)
    }

    /// `POST /v1/decisions`.
    pub async fn decide(&self, req: &DecisionRequest) -> DecisionResponse {
        let res = self
            .http
            .post(format!("{}/v1/decisions", self.base))
            .json(req)
            .send()
            .await
            .expect("POST /v1/decisions");
        let status = res.status();
        let body = res.text().await.expect("decision body");
        assert!(status.is_success(), "decision failed: {status} {body}");
        serde_json::from_str(&body).expect("decision response")
    }

    /// `POST /v1/decisions/{id}/outcome`.
    pub async fn outcome(&self, id: &str, outcome: &str) {
        let res = self
            .http
            .post(format!("{}/v1/decisions/{id}/outcome", self.base))
            .json(&serde_json::json!({ "outcome": outcome }))
            .send()
            .await
            .expect("POST outcome");
        let status = res.status();
        let body = res.text().await.expect("outcome body");
        assert!(status.is_success(), "outcome failed: {status} {body}");
    }

    /// Waits until the dashboard feed has applied the whole log.
    pub async fn settle(&self) {
        let head = self.store.head_position().await.expect("head");
        assert!(
            self.dashboard
                .feed()
                .wait_for(head, Duration::from_secs(30))
                .await,
            "dashboard feed did not reach position {head}"
        );
    }

    /// Starts the real auditor on this server's store and key vault and installs its
    /// snapshot as the server's audit source.
    pub async fn start_auditor(&self) -> Arc<AuditorHandle> {
        let config = AuditorConfig::embedded(
            self.store.clone(),
            self.state.lending().vault().clone(),
            self._dir.path().join("audit"),
        );
        let handle = Arc::new(spawn_auditor(config).await.expect("spawn auditor"));
        let reader = handle.clone();
        self.state
            .audit()
            .install(Arc::new(SnapshotAuditSource::new(move || {
                reader.snapshot()
            })));
        handle
    }

    /// Waits until the auditor has read the whole log and its snapshot satisfies `done`.
    pub async fn audit_settle(
        &self,
        auditor: &AuditorHandle,
        done: impl Fn(&AuditState) -> bool,
    ) -> Arc<AuditState> {
        let head = self.store.head_position().await.expect("head");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let s = auditor.refresh().await;
            if s.position >= head && done(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "auditor did not catch up to {head}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET` a page: (status, content type, CSP header, body).
    pub async fn get(&self, path: &str) -> (u16, String, String, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        let status = res.status().as_u16();
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let ct = header("content-type");
        let csp = header("content-security-policy");
        (status, ct, csp, res.text().await.expect("body"))
    }

    /// Stops the server and closes the store.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.store.close().await;
    }
}
