//! The broker conformance suite against NATS JetStream at 127.0.0.1:4222.

use std::sync::Arc;

use attest_bus::nats::NatsBroker;
use attest_bus::Broker;

async fn broker() -> Arc<dyn Broker> {
    Arc::new(
        NatsBroker::connect("nats://127.0.0.1:4222")
            .await
            .expect("NATS at 127.0.0.1:4222"),
    )
}

attest_bus::broker_conformance_tests!(broker());
