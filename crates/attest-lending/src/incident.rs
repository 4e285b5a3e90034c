//! The `Incident` aggregate: opened by the auditor on a fairness or drift breach, then
//! acknowledged and resolved by people. Stream `incident-<id>`.
//!
//! ```text
//! (none) ──Open──► Open ──Acknowledge──► Acknowledged ──Resolve──► Resolved
//!                    └───────────────────Resolve────────────────────┘
//! ```
//! The auditor appends `IncidentOpened` itself with `ExpectedVersion::NoStream` and an id
//! derived from the breach (see [`incident_id_for`]), so at most one incident exists per
//! breach whatever the number of replays or processes. The full incident process (fallback,
//! human review, notification saga) comes later.

use attest_cqrs::{Aggregate, DomainEvent};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{IncidentOpened, ModelRef, INCIDENT_OPENED};

/// Stream category of incidents (`incident-<id>`).
pub const INCIDENT_CATEGORY: &str = "incident";
/// Event type of [`IncidentAcknowledged`].
pub const INCIDENT_ACKNOWLEDGED: &str = "IncidentAcknowledged";
/// Event type of [`IncidentResolved`].
pub const INCIDENT_RESOLVED: &str = "IncidentResolved";

/// Namespace of incident ids (UUIDv5 names inside it).
const INCIDENT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x2b8e_5c1f_7a64_4e02_9d3b_61a0_c4f7_1e59);

/// The incident id of a breach key: a UUIDv5, the same in every process and replay.
pub fn incident_id_for(breach_key: &str) -> String {
    uuid::Uuid::new_v5(&INCIDENT_NAMESPACE, breach_key.as_bytes()).to_string()
}

/// Someone took the incident in hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentAcknowledged {
    /// Incident id.
    pub incident_id: String,
    /// Who.
    pub acknowledged_by: String,
    /// Optional note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When.
    pub acknowledged_at: DateTime<Utc>,
}

/// The incident was closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentResolved {
    /// Incident id.
    pub incident_id: String,
    /// Who.
    pub resolved_by: String,
    /// What was done.
    pub resolution: String,
    /// When.
    pub resolved_at: DateTime<Utc>,
}

/// Events of the incident aggregate (stored untagged: each payload is its struct; the
/// variants are told apart by their required fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IncidentEvent {
    /// See [`IncidentOpened`].
    Opened(IncidentOpened),
    /// See [`IncidentAcknowledged`].
    Acknowledged(IncidentAcknowledged),
    /// See [`IncidentResolved`].
    Resolved(IncidentResolved),
}

impl DomainEvent for IncidentEvent {
    fn event_type(&self) -> &'static str {
        match self {
            IncidentEvent::Opened(_) => INCIDENT_OPENED,
            IncidentEvent::Acknowledged(_) => INCIDENT_ACKNOWLEDGED,
            IncidentEvent::Resolved(_) => INCIDENT_RESOLVED,
        }
    }
}

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// Opened, nobody on it yet.
    Open,
    /// Someone is on it.
    Acknowledged,
    /// Closed.
    Resolved,
}

/// What can be asked of an incident.
#[derive(Debug, Clone, PartialEq)]
pub enum IncidentCommand {
    /// Open it (normally done by the auditor).
    Open {
        /// Incident id.
        incident_id: String,
        /// The model concerned.
        model: ModelRef,
        /// Why.
        reason: String,
        /// Event type that triggered it.
        trigger: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Take it in hand.
    Acknowledge {
        /// Who.
        by: String,
        /// Optional note.
        note: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Close it.
    Resolve {
        /// Who.
        by: String,
        /// What was done.
        resolution: String,
        /// When.
        at: DateTime<Utc>,
    },
}

/// Why an incident command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncidentError {
    /// Open on an incident that exists.
    #[error("incident {0} is already open")]
    AlreadyOpen(String),
    /// Acknowledge or resolve before it was opened.
    #[error("no such incident")]
    NotOpened,
    /// The command does not apply in the current status.
    #[error("cannot {command} an incident that is {status:?}")]
    InvalidTransition {
        /// The command.
        command: &'static str,
        /// The current status.
        status: IncidentStatus,
    },
    /// A required text is empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
}

/// An incident's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Id (None before it was opened).
    pub id: Option<String>,
    /// Status (None before it was opened).
    pub status: Option<IncidentStatus>,
    /// The model concerned.
    pub model: Option<ModelRef>,
    /// Why it was opened.
    pub reason: String,
    /// The event type that triggered it.
    pub trigger: String,
    /// When it was opened.
    pub opened_at: Option<DateTime<Utc>>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// How it was resolved.
    pub resolution: Option<String>,
}

impl Aggregate for Incident {
    const CATEGORY: &'static str = INCIDENT_CATEGORY;
    type Command = IncidentCommand;
    type Event = IncidentEvent;
    type Error = IncidentError;

    fn handle(&self, command: IncidentCommand) -> Result<Vec<IncidentEvent>, IncidentError> {
        let status = self.status;
        match command {
            IncidentCommand::Open {
                incident_id,
                model,
                reason,
                trigger,
                at,
            } => {
                if let Some(id) = &self.id {
                    return Err(IncidentError::AlreadyOpen(id.clone()));
                }
                Ok(vec![IncidentEvent::Opened(IncidentOpened {
                    incident_id,
                    model,
                    reason,
                    trigger,
                    opened_at: at,
                })])
            }
            IncidentCommand::Acknowledge { by, note, at } => match (status, &self.id) {
                (Some(IncidentStatus::Open), Some(id)) => {
                    if by.trim().is_empty() {
                        return Err(IncidentError::Empty("acknowledged_by"));
                    }
                    Ok(vec![IncidentEvent::Acknowledged(IncidentAcknowledged {
                        incident_id: id.clone(),
                        acknowledged_by: by,
                        note,
                        acknowledged_at: at,
                    })])
                }
                (Some(s), _) => Err(IncidentError::InvalidTransition {
                    command: "acknowledge",
                    status: s,
                }),
                (None, _) => Err(IncidentError::NotOpened),
            },
            IncidentCommand::Resolve { by, resolution, at } => match (status, &self.id) {
                (Some(IncidentStatus::Open | IncidentStatus::Acknowledged), Some(id)) => {
                    if by.trim().is_empty() {
                        return Err(IncidentError::Empty("resolved_by"));
                    }
                    if resolution.trim().is_empty() {
                        return Err(IncidentError::Empty("resolution"));
                    }
                    Ok(vec![IncidentEvent::Resolved(IncidentResolved {
                        incident_id: id.clone(),
                        resolved_by: by,
                        resolution,
                        resolved_at: at,
                    })])
                }
                (Some(s), _) => Err(IncidentError::InvalidTransition {
                    command: "resolve",
                    status: s,
                }),
                (None, _) => Err(IncidentError::NotOpened),
            },
        }
    }

    fn apply(&mut self, event: &IncidentEvent) {
        match event {
            IncidentEvent::Opened(o) => {
                self.id = Some(o.incident_id.clone());
                self.status = Some(IncidentStatus::Open);
                self.model = Some(o.model.clone());
                self.reason = o.reason.clone();
                self.trigger = o.trigger.clone();
                self.opened_at = Some(o.opened_at);
            }
            IncidentEvent::Acknowledged(a) => {
                self.status = Some(IncidentStatus::Acknowledged);
                self.acknowledged_by = Some(a.acknowledged_by.clone());
            }
            IncidentEvent::Resolved(r) => {
                self.status = Some(IncidentStatus::Resolved);
                self.resolution = Some(r.resolution.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_cmd() -> IncidentCommand {
        IncidentCommand::Open {
            incident_id: "i1".into(),
            model: ModelRef {
                id: "credit".into(),
                version: 1,
            },
            reason: "dpd 0.3 > 0.1".into(),
            trigger: "FairnessThresholdBreached".into(),
            at: Utc::now(),
        }
    }

    #[test]
    fn open_acknowledge_resolve() {
        let mut i = Incident::default();
        assert_eq!(
            i.handle(IncidentCommand::Resolve {
                by: "a".into(),
                resolution: "r".into(),
                at: Utc::now()
            }),
            Err(IncidentError::NotOpened)
        );
        for e in i.handle(open_cmd()).unwrap() {
            i.apply(&e);
        }
        assert_eq!(i.status, Some(IncidentStatus::Open));
        assert!(matches!(
            i.handle(open_cmd()),
            Err(IncidentError::AlreadyOpen(_))
        ));
        let ack = IncidentCommand::Acknowledge {
            by: "risk-team".into(),
            note: None,
            at: Utc::now(),
        };
        for e in i.handle(ack.clone()).unwrap() {
            i.apply(&e);
        }
        assert_eq!(i.status, Some(IncidentStatus::Acknowledged));
        assert!(matches!(
            i.handle(ack),
            Err(IncidentError::InvalidTransition { .. })
        ));
        let events = i
            .handle(IncidentCommand::Resolve {
                by: "risk-team".into(),
                resolution: "retrained".into(),
                at: Utc::now(),
            })
            .unwrap();
        // Round trip through JSON as the repository does (untagged payloads).
        for e in &events {
            let json = serde_json::to_vec(e).unwrap();
            let back: IncidentEvent = serde_json::from_slice(&json).unwrap();
            assert_eq!(&back, e);
            i.apply(&back);
        }
        assert_eq!(i.status, Some(IncidentStatus::Resolved));
    }

    #[test]
    fn ids_are_deterministic() {
        assert_eq!(incident_id_for("k"), incident_id_for("k"));
        assert_ne!(incident_id_for("k"), incident_id_for("l"));
    }
}
