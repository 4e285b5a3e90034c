//! A real server on an ephemeral port over a real SQLite store in a tempdir.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;

use attest_lending::{FeatureKind, LendingConfig, LendingService};
use attest_server::{
    ApiBuilder, AppState, AuthPolicy, CreatedKey, KeyStore, Scope, Server, ServerError,
};
use attest_store::sqlite::SqliteStore;
use attest_store::{DynStore, StoreOptions};
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub base: String,
    pub addr: SocketAddr,
    pub state: AppState,
    pub store: DynStore,
    pub keys: KeyStore,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), ServerError>>>,
    pub dir: tempfile::TempDir,
}

/// Opens the store, service and key table in a fresh tempdir.
pub async fn open_parts() -> (tempfile::TempDir, DynStore, LendingService, KeyStore) {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore =
        SqliteStore::open(dir.path().join("events.db"), StoreOptions::default()).unwrap();
    let lending = LendingService::open(LendingConfig::embedded(store.clone(), dir.path()))
        .await
        .unwrap();
    let keys = KeyStore::open_sqlite(dir.path()).await.unwrap();
    (dir, store, lending, keys)
}

pub fn scopes(s: &[Scope]) -> BTreeSet<Scope> {
    s.iter().copied().collect()
}

/// Starts a server on `bind`, after creating `key_scopes.len()` keys.
pub async fn start_with(
    bind: &str,
    require_auth: bool,
    key_scopes: &[&[Scope]],
) -> Result<(TestServer, Vec<CreatedKey>), ServerError> {
    let (dir, store, lending, keys) = open_parts().await;
    let mut created = Vec::new();
    for s in key_scopes {
        created.push(keys.create("test", &scopes(s)).await.unwrap());
    }
    let bind: SocketAddr = bind.parse().unwrap();
    let policy = AuthPolicy::for_bind(bind, require_auth, &keys).await?;
    let state = AppState::builder(lending, store.clone(), keys.clone(), policy).build();
    let router = ApiBuilder::new(state.clone()).build();
    let server = Server::bind(bind, policy, router).await?;
    let port = server.local_addr().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    Ok((
        TestServer {
            base: format!("http://{addr}"),
            addr,
            state,
            store,
            keys,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
            handle: Some(handle),
            dir,
        },
        created,
    ))
}

/// A loopback server without auth.
pub async fn start() -> TestServer {
    start_with("127.0.0.1:0", false, &[]).await.unwrap().0
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A valid feature map: the midpoint of every feature's range.
    pub fn valid_features(&self) -> Map<String, Value> {
        let schema = self.state.lending().feature_schema();
        assert!(
            !schema.features.is_empty(),
            "the active model has no features"
        );
        schema
            .features
            .iter()
            .map(|f| {
                let lo = if f.min.is_finite() { f.min } else { 0.0 };
                let hi = if f.max.is_finite() { f.max } else { lo + 1.0 };
                let mid = (lo + hi) / 2.0;
                let v = match f.kind {
                    FeatureKind::Integer => serde_json::json!(mid.round() as i64),
                    FeatureKind::Number => serde_json::json!(mid),
                };
                (f.name.clone(), v)
            })
            .collect()
    }

    pub fn valid_request(&self, applicant: &str) -> Value {
        serde_json::json!({
            "applicant_id": applicant,
            "features": self.valid_features(),
            "protected": { "sex": "female", "age_band": "25-34" }
        })
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }
}
