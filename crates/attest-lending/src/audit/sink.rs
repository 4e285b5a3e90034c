//! Where the auditor's outputs go: breach events and incidents into the event store, with
//! ids derived from the breach, so replays and other processes never duplicate them.

use async_trait::async_trait;
use attest_core::{EventId, ExpectedVersion, NewEvent, StreamId};
use attest_store::{DynStore, StoreError, StreamAppend};
use attest_stream::runtime::{Emitted, Sink};
use attest_stream::StreamError;
use chrono::{DateTime, TimeZone, Utc};

use crate::events::{
    DriftDetected, FairnessThresholdBreached, IncidentOpened, DRIFT_DETECTED,
    FAIRNESS_THRESHOLD_BREACHED, INCIDENT_OPENED,
};
use crate::incident::{incident_id_for, INCIDENT_CATEGORY};

use super::operator::{AuditOutput, Breach, BreachKind};
use super::window::WindowSpan;

/// Stream category of the breach events (`audit-<model>@v<version>`).
pub const AUDIT_CATEGORY: &str = "audit";

/// Namespace of breach event ids.
const BREACH_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x9a41_07c3_5e2d_4b8f_8c16_3f70_d2a9_b5e4);

/// The event id of the breach event of `key`.
pub fn breach_event_id(key: &str) -> EventId {
    EventId::from_uuid(uuid::Uuid::new_v5(
        &BREACH_NAMESPACE,
        format!("breach|{key}").as_bytes(),
    ))
}

fn incident_event_id(key: &str) -> EventId {
    EventId::from_uuid(uuid::Uuid::new_v5(
        &BREACH_NAMESPACE,
        format!("incident|{key}").as_bytes(),
    ))
}

/// The audit stream of a model: `audit-<id>@v<version>`, with characters a stream id does not
/// allow replaced by `_`.
pub fn audit_stream(model: &crate::events::ModelRef) -> Result<StreamId, StreamError> {
    let id: String = model
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.:@~".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    StreamId::new(format!("{AUDIT_CATEGORY}-{id}")).map_err(|e| StreamError::Config(e.to_string()))
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// `1h tumbling window [2026-01-01T10:00:00Z, 2026-01-01T11:00:00Z)`.
pub fn describe_window(w: &WindowSpan) -> String {
    format!(
        "{} {} window [{}, {})",
        w.label(),
        w.kind.as_str(),
        at(w.start).to_rfc3339(),
        at(w.end).to_rfc3339()
    )
}

/// Writes breach events and incidents (closed-window audits stay in the operator state,
/// which the snapshot reads).
pub struct AuditSink {
    store: DynStore,
}

impl AuditSink {
    /// A sink appending to `store`.
    pub fn new(store: DynStore) -> Self {
        AuditSink { store }
    }

    async fn breach(&self, b: &Breach) -> Result<(), StreamError> {
        let detected_at = at(b.window.end);
        let window = describe_window(&b.window);
        let (event, reason, trigger) = match &b.kind {
            BreachKind::Fairness {
                attribute,
                metric,
                value,
                interval,
                threshold,
                samples,
                groups,
            } => {
                // A breach always has its interval (the rule needs it); the point is a safe fallback.
                let iv = interval.map_or((*value, *value), |i| (i.lower, i.upper));
                let payload = FairnessThresholdBreached {
                    model: b.model.clone(),
                    attribute: attribute.clone(),
                    metric: metric.clone(),
                    value: *value,
                    interval: iv,
                    threshold: *threshold,
                    window: window.clone(),
                    samples: *samples,
                    detected_at,
                };
                let reason = format!(
                    "{metric} for {attribute} = {value:.3} (CI {:.3}..{:.3}; groups {} vs {}) against threshold {threshold} over the {window}",
                    iv.0, iv.1, groups.0, groups.1
                );
                (
                    NewEvent::json(FAIRNESS_THRESHOLD_BREACHED, &payload),
                    reason,
                    FAIRNESS_THRESHOLD_BREACHED,
                )
            }
            BreachKind::Drift {
                feature,
                statistic,
                value,
                pvalue,
                threshold,
                samples,
            } => {
                let payload = DriftDetected {
                    model: b.model.clone(),
                    feature: feature.clone(),
                    statistic: statistic.clone(),
                    value: *value,
                    threshold: *threshold,
                    samples: *samples,
                    detected_at,
                };
                let reason = format!(
                    "{statistic} drift of {feature} = {value:.3} (p = {}) above {threshold} over the {window}",
                    pvalue.map_or("n/a".to_owned(), |p| format!("{p:.2e}"))
                );
                (
                    NewEvent::json(DRIFT_DETECTED, &payload),
                    reason,
                    DRIFT_DETECTED,
                )
            }
        };
        let encode =
            |e: attest_core::ValidationError| StreamError::State(format!("encode breach: {e}"));
        let event_id = breach_event_id(&b.key);
        let event = event.map_err(encode)?.with_id(event_id);
        let incident_id = incident_id_for(&b.key);
        let opened = NewEvent::json(
            INCIDENT_OPENED,
            &IncidentOpened {
                incident_id: incident_id.clone(),
                model: b.model.clone(),
                reason,
                trigger: trigger.to_owned(),
                opened_at: detected_at,
            },
        )
        .map_err(encode)?
        .with_id(incident_event_id(&b.key));
        let incident_stream = StreamId::new(format!("{INCIDENT_CATEGORY}-{incident_id}"))
            .map_err(|e| StreamError::Config(e.to_string()))?;
        let appends = vec![
            StreamAppend {
                stream: audit_stream(&b.model)?,
                expected: ExpectedVersion::Any,
                events: vec![event],
            },
            StreamAppend {
                stream: incident_stream,
                expected: ExpectedVersion::NoStream,
                events: vec![opened],
            },
        ];
        match self.store.append_many(appends).await {
            Ok(_) => {
                tracing::warn!(key = %b.key, incident = %incident_id, "audit breach recorded, incident opened");
            }
            // Written before (a replay, or another process): the incident exists, and the
            // breach event went in with it atomically.
            Err(
                StoreError::WrongExpectedVersion { .. } | StoreError::IdempotencyConflict { .. },
            ) => {
                tracing::debug!(key = %b.key, "breach already recorded");
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

#[async_trait]
impl Sink<AuditOutput> for AuditSink {
    async fn write(&mut self, batch: Vec<Emitted<AuditOutput>>) -> Result<(), StreamError> {
        for e in batch {
            match e.value {
                AuditOutput::Closed(_) => {}
                AuditOutput::Breach(b) => self.breach(&b).await?,
            }
        }
        Ok(())
    }
}
