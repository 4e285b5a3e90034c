//! Test support: an embedded broker over a real SQLite store in a temporary directory, and a
//! NATS server of the test's own ([`own_nats`]).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod own_nats;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use attest_bus::embedded::EmbeddedBroker;
use attest_bus::{
    Broker, ConsumerConfig, OutgoingMessage, PublishAck, PullConsumer, Result, StoredMessage,
    StreamConfig,
};
use attest_store::sqlite::SqliteStore;
use attest_store::StoreOptions;

/// An embedded broker that owns (and removes) its temporary directory.
pub struct TempEmbedded {
    pub broker: EmbeddedBroker,
    pub dir: Arc<tempfile::TempDir>,
}

impl TempEmbedded {
    pub async fn new() -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let broker = open_embedded(dir.path()).await;
        TempEmbedded { broker, dir }
    }

    /// Re-opens store and broker from the same files (a process restart).
    pub async fn reopen(dir: Arc<tempfile::TempDir>) -> Self {
        let broker = open_embedded(dir.path()).await;
        TempEmbedded { broker, dir }
    }
}

pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("attest.db")
}

pub async fn open_embedded(dir: &Path) -> EmbeddedBroker {
    let path = db_path(dir);
    let store = SqliteStore::open(
        &path,
        StoreOptions {
            durable: false,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    EmbeddedBroker::open_beside(store, &path).await.unwrap()
}

#[async_trait]
impl Broker for TempEmbedded {
    fn kind(&self) -> &'static str {
        self.broker.kind()
    }
    async fn ensure_stream(&self, config: &StreamConfig) -> Result<()> {
        self.broker.ensure_stream(config).await
    }
    async fn delete_stream(&self, name: &str) -> Result<()> {
        self.broker.delete_stream(name).await
    }
    async fn publish(&self, message: OutgoingMessage) -> Result<PublishAck> {
        self.broker.publish(message).await
    }
    async fn publish_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<PublishAck>> {
        self.broker.publish_batch(messages).await
    }
    async fn consumer(&self, config: &ConsumerConfig) -> Result<Box<dyn PullConsumer>> {
        self.broker.consumer(config).await
    }
    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<()> {
        self.broker.delete_consumer(stream, name).await
    }
    async fn consumers(&self, stream: &str) -> Result<Vec<ConsumerConfig>> {
        self.broker.consumers(stream).await
    }
    async fn streams(&self) -> Result<Vec<String>> {
        self.broker.streams().await
    }
    async fn read_stream(
        &self,
        stream: &str,
        filter: &str,
        from_sequence: u64,
        max: usize,
    ) -> Result<Vec<StoredMessage>> {
        self.broker
            .read_stream(stream, filter, from_sequence, max)
            .await
    }
}

pub async fn nats() -> attest_bus::nats::NatsBroker {
    attest_bus::nats::NatsBroker::connect("nats://127.0.0.1:4222")
        .await
        .expect("NATS at 127.0.0.1:4222")
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", attest_bus::conformance::unique_namespace())
}
