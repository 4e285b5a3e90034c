use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::ids::{EventId, EventType, StreamId};
use crate::{Position, Version};

/// Content type of JSON payloads.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// The schema a payload was written with: a registry subject id and its version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SchemaRef {
    /// Registry subject (usually the event type).
    pub id: String,
    /// Version of the schema within the subject.
    pub version: u32,
}

/// Context that travels with an event: who caused it, in which trace, for which tenant.
///
/// All fields are optional; `traceparent`/`tracestate` follow the W3C Trace Context format and
/// are copied verbatim from the incoming request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Groups every message caused, directly or not, by one originating request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the message (command or event) that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// W3C `traceparent` of the context that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// W3C `tracestate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// Tenant the event belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The user or service that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Further string headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

impl Metadata {
    /// Metadata of an event caused by `cause`: same correlation id (or the cause's id when it
    /// had none), causation id = the cause's event id, same trace context, tenant and actor.
    pub fn caused_by(cause: &RecordedEvent) -> Self {
        let m = &cause.metadata;
        Metadata {
            correlation_id: m
                .correlation_id
                .clone()
                .or_else(|| Some(cause.id.to_string())),
            causation_id: Some(cause.id.to_string()),
            traceparent: m.traceparent.clone(),
            tracestate: m.tracestate.clone(),
            tenant: m.tenant.clone(),
            actor: m.actor.clone(),
            extra: BTreeMap::new(),
        }
    }

    /// Whether every field is empty.
    pub fn is_empty(&self) -> bool {
        self == &Metadata::default()
    }
}

/// An event as a producer hands it to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id; a retry with the same id is recognised by the store and not duplicated.
    pub id: EventId,
    /// What happened.
    pub event_type: EventType,
    /// The schema of the payload, when registered.
    pub schema: Option<SchemaRef>,
    /// MIME type of `payload` (`application/json` by default).
    pub content_type: String,
    /// The encoded payload.
    pub payload: Vec<u8>,
    /// Context.
    pub metadata: Metadata,
}

impl NewEvent {
    /// An event with raw payload bytes and a fresh id.
    pub fn new(
        event_type: impl AsRef<str>,
        content_type: impl Into<String>,
        payload: Vec<u8>,
    ) -> Result<Self, ValidationError> {
        Ok(NewEvent {
            id: EventId::new(),
            event_type: EventType::new(event_type)?,
            schema: None,
            content_type: content_type.into(),
            payload,
            metadata: Metadata::default(),
        })
    }

    /// An event whose payload is `value` encoded as JSON, with a fresh id.
    pub fn json<T: Serialize + ?Sized>(
        event_type: impl AsRef<str>,
        value: &T,
    ) -> Result<Self, ValidationError> {
        let payload =
            serde_json::to_vec(value).map_err(|e| ValidationError::Encode(e.to_string()))?;
        Self::new(event_type, CONTENT_TYPE_JSON, payload)
    }

    /// Replaces the id (for deterministic ids or idempotent retries).
    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    /// Replaces the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the schema reference.
    pub fn with_schema(mut self, schema: SchemaRef) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Size the store accounts for this event: payload plus metadata text.
    pub fn size(&self) -> usize {
        let m = &self.metadata;
        let opt = |o: &Option<String>| o.as_ref().map_or(0, String::len);
        self.payload.len()
            + opt(&m.correlation_id)
            + opt(&m.causation_id)
            + opt(&m.traceparent)
            + opt(&m.tracestate)
            + opt(&m.tenant)
            + opt(&m.actor)
            + m.extra
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// An event as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Unique id, as appended.
    pub id: EventId,
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// Its version within the stream (0 for the first event).
    pub version: Version,
    /// Its position in the global log (gap-free, from 1).
    pub position: Position,
    /// What happened.
    pub event_type: EventType,
    /// Schema of the payload, if registered.
    pub schema: Option<SchemaRef>,
    /// MIME type of `payload`.
    pub content_type: String,
    /// The encoded payload, as appended.
    pub payload: Vec<u8>,
    /// Context, as appended.
    pub metadata: Metadata,
    /// When the store committed it.
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// Decodes the JSON payload.
    pub fn decode_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_event_and_causation() {
        let e = NewEvent::json("UserRegistered", &serde_json::json!({"city": "London"})).unwrap();
        assert_eq!(e.content_type, CONTENT_TYPE_JSON);
        assert!(e.size() >= e.payload.len());
        let rec = RecordedEvent {
            id: e.id,
            stream_id: "user-1".parse().unwrap(),
            version: 0,
            position: 1,
            event_type: e.event_type.clone(),
            schema: None,
            content_type: e.content_type.clone(),
            payload: e.payload.clone(),
            metadata: Metadata {
                traceparent: Some("00-abc-def-01".into()),
                ..Default::default()
            },
            recorded_at: Utc::now(),
        };
        let m = Metadata::caused_by(&rec);
        assert_eq!(m.causation_id.as_deref(), Some(e.id.to_string().as_str()));
        assert_eq!(m.correlation_id, m.causation_id);
        assert_eq!(m.traceparent.as_deref(), Some("00-abc-def-01"));
        let v: serde_json::Value = rec.decode_json().unwrap();
        assert_eq!(v["city"], "London");
    }

    #[test]
    fn bad_event_type_is_rejected() {
        assert!(NewEvent::json("", &1).is_err());
    }
}
