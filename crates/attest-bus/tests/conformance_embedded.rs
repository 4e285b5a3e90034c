//! The broker conformance suite against the embedded broker over a real SQLite store.

mod common;

use std::sync::Arc;

use attest_bus::Broker;

async fn broker() -> Arc<dyn Broker> {
    Arc::new(common::TempEmbedded::new().await)
}

attest_bus::broker_conformance_tests!(broker());
