//! The auditor's source: the `loanapplication` category of the global log, with each record
//! resolved for the operator — groups through the key vault, drift bins through the model's
//! reference profile. Resolution is I/O, so it happens here (async), not in the operator.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use attest_core::{Category, RecordedEvent, StreamId};
use attest_store::{Direction, DynStore, LogFilter, StoreError, StreamFrom};
use attest_stream::runtime::{RawRecord, Source, SourceRecord, StoreSource};
use attest_stream::{StreamError, Timestamp};

use crate::events::{ModelRef, SealedAttributes, LOAN_APPLICATION_SUBMITTED, LOAN_CATEGORY};
use crate::vault::KeyVault;
use crate::LendingError;

use super::operator::{AuditInput, DecisionRef};
use super::record::{decode, LendingRecord, Submitted};
use super::reference::{ReferenceProfile, ReferenceSource};
use super::window::UNKNOWN_GROUP;

/// Submissions remembered between a submission and its decision (normally in the same
/// batch); beyond this the map is cleared and the store is asked instead.
const RECENT_LIMIT: usize = 100_000;

/// A log event with the operator input resolved from it.
#[derive(Debug, Clone)]
pub struct AuditRaw {
    /// The event.
    pub event: RecordedEvent,
    /// The resolved input, or why the event could not be decoded.
    pub input: Result<AuditInput, String>,
    /// Event time (ms).
    pub time: Timestamp,
}

impl RawRecord for AuditRaw {
    fn payload(&self) -> &[u8] {
        &self.event.payload
    }
    fn record_id(&self) -> Option<String> {
        Some(self.event.id.to_string())
    }
    fn recorded_at(&self) -> Option<Timestamp> {
        Some(self.event.recorded_at.timestamp_millis())
    }
}

/// Where the source is, for lag: the last position read and its commit time.
#[derive(Debug, Default)]
pub struct Progress {
    /// Global position of the last event read.
    pub position: AtomicU64,
    /// `recorded_at` (ms) of that event.
    pub recorded_at_ms: AtomicI64,
}

/// The resolving source.
pub struct AuditSource {
    inner: StoreSource,
    store: DynStore,
    vault: KeyVault,
    references: Arc<dyn ReferenceSource>,
    fine_bins: usize,
    profiles: HashMap<String, Option<Arc<ReferenceProfile>>>,
    recent: HashMap<String, Submitted>,
    progress: Arc<Progress>,
    head: tokio::sync::watch::Receiver<u64>,
    read: Option<(u64, i64)>,
}

impl AuditSource {
    /// Reads `store`'s `loanapplication` events.
    pub fn new(
        store: DynStore,
        vault: KeyVault,
        references: Arc<dyn ReferenceSource>,
        fine_bins: usize,
        progress: Arc<Progress>,
    ) -> Result<Self, StreamError> {
        let category =
            Category::new(LOAN_CATEGORY).map_err(|e| StreamError::Config(e.to_string()))?;
        Ok(AuditSource {
            inner: StoreSource::new(store.clone(), LogFilter::Category(category)),
            head: store.head_watch(),
            store,
            vault,
            references,
            fine_bins,
            profiles: HashMap::new(),
            recent: HashMap::new(),
            progress,
            read: None,
        })
    }

    fn fail(&self, offset: u64, reason: String) -> StreamError {
        StreamError::Decode {
            source_name: self.inner.name().to_owned(),
            offset,
            reason,
        }
    }

    /// The submission of `decision_id`: remembered, or the first event of its stream.
    async fn submission(&mut self, decision_id: &str) -> Result<Option<Submitted>, StreamError> {
        if let Some(s) = self.recent.remove(decision_id) {
            return Ok(Some(s));
        }
        let Ok(stream) = StreamId::new(format!("{LOAN_CATEGORY}-{decision_id}")) else {
            return Ok(None);
        };
        let first = match self
            .store
            .read_stream(&stream, StreamFrom::Start, Direction::Forward, 1)
            .await
        {
            Ok(mut v) => v.pop(),
            Err(StoreError::StreamNotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let Some(ev) = first.filter(|e| e.event_type.as_str() == LOAN_APPLICATION_SUBMITTED) else {
            return Ok(None);
        };
        match decode(&ev) {
            Ok(Some((LendingRecord::Submitted(s), _))) => Ok(Some(s)),
            _ => Ok(None),
        }
    }

    /// The decision of `decision_id` (model, approval, decision time), read from its stream.
    async fn decision(&mut self, decision_id: &str) -> Result<Option<DecisionRef>, StreamError> {
        let Ok(stream) = StreamId::new(format!("{LOAN_CATEGORY}-{decision_id}")) else {
            return Ok(None);
        };
        let events = match self
            .store
            .read_stream(&stream, StreamFrom::Start, Direction::Forward, 8)
            .await
        {
            Ok(v) => v,
            Err(StoreError::StreamNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        for ev in &events {
            if let Ok(Some((LendingRecord::Decided(d), t))) = decode(ev) {
                return Ok(Some(DecisionRef {
                    model: d.model,
                    approve: d.approve,
                    time: t,
                }));
            }
        }
        Ok(None)
    }

    /// Groups for sex, race, age_band: `unknown` when no attributes were given, the subject
    /// was erased, an attribute is absent or empty, or the seal cannot be opened.
    async fn groups(
        &self,
        offset: u64,
        applicant_id: &str,
        sealed: Option<&SealedAttributes>,
    ) -> Result<[String; 3], StreamError> {
        let unknown = || {
            [
                UNKNOWN_GROUP.to_owned(),
                UNKNOWN_GROUP.to_owned(),
                UNKNOWN_GROUP.to_owned(),
            ]
        };
        let Some(sealed) = sealed else {
            return Ok(unknown());
        };
        match self.vault.decrypt(applicant_id, sealed).await {
            Ok(Some(a)) => {
                let g = |v: Option<String>| {
                    v.filter(|s| !s.trim().is_empty())
                        .unwrap_or_else(|| UNKNOWN_GROUP.to_owned())
                };
                Ok([g(a.sex), g(a.race), g(a.age_band)])
            }
            Ok(None) => Ok(unknown()),
            Err(LendingError::Crypto(reason)) => {
                tracing::warn!(offset, %reason, "protected attributes cannot be opened; counted as unknown");
                Ok(unknown())
            }
            Err(e) => Err(self.fail(offset, format!("key vault: {e}"))),
        }
    }

    async fn profile(
        &mut self,
        offset: u64,
        model: &ModelRef,
    ) -> Result<Option<Arc<ReferenceProfile>>, StreamError> {
        let key = model.to_string();
        if let Some(p) = self.profiles.get(&key) {
            return Ok(p.clone());
        }
        let data = self
            .references
            .reference(model)
            .await
            .map_err(|e| self.fail(offset, format!("reference of {model}: {e}")))?;
        let profile = match data {
            Some(d) => match ReferenceProfile::new(
                model.clone(),
                d.features,
                &d.rows,
                d.predictions.as_deref(),
                self.fine_bins,
            ) {
                Ok(p) => Some(Arc::new(p)),
                Err(e) => {
                    tracing::warn!(model = %model, error = %e, "unusable reference sample; no drift for this model");
                    None
                }
            },
            None => {
                tracing::info!(model = %model, "model not in the registry; no drift for it");
                None
            }
        };
        self.profiles.insert(key, profile.clone());
        Ok(profile)
    }

    async fn resolve(
        &mut self,
        event: &RecordedEvent,
    ) -> Result<(Result<AuditInput, String>, Timestamp), StreamError> {
        let offset = event.position;
        let recorded = event.recorded_at.timestamp_millis();
        let decoded = match decode(event) {
            Ok(d) => d,
            Err(e) => return Ok((Err(e.to_string()), recorded)),
        };
        Ok(match decoded {
            None => (Ok(AuditInput::Other), recorded),
            Some((LendingRecord::Submitted(s), t)) => {
                if self.recent.len() >= RECENT_LIMIT {
                    self.recent.clear();
                }
                self.recent.insert(s.decision_id.clone(), s);
                (Ok(AuditInput::Other), t)
            }
            Some((LendingRecord::Decided(d), t)) => {
                let sub = self.submission(&d.decision_id).await?;
                let groups = self
                    .groups(
                        offset,
                        &d.applicant_id,
                        sub.as_ref().and_then(|s| s.sealed.as_ref()),
                    )
                    .await?;
                let profile = self.profile(offset, &d.model).await?;
                let features = sub.map(|s| s.features).unwrap_or_default();
                let drift = profile.as_ref().map(|p| p.sample(d.probability, &features));
                (
                    Ok(AuditInput::Decided {
                        decision_id: d.decision_id,
                        model: d.model,
                        approve: d.approve,
                        groups,
                        drift,
                        profile,
                    }),
                    t,
                )
            }
            Some((LendingRecord::Observed(o), t)) => {
                let sub = self.submission(&o.decision_id).await?;
                let groups = match &sub {
                    Some(s) => {
                        self.groups(offset, &s.applicant_id, s.sealed.as_ref())
                            .await?
                    }
                    None => self.groups(offset, "", None).await?,
                };
                let decision = self.decision(&o.decision_id).await?;
                (
                    Ok(AuditInput::Observed {
                        decision_id: o.decision_id,
                        repaid: o.repaid,
                        groups,
                        decision,
                    }),
                    t,
                )
            }
        })
    }
}

#[async_trait]
impl Source for AuditSource {
    type Raw = AuditRaw;

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn partitions(&self) -> u32 {
        1
    }

    fn seek(&mut self, after: &BTreeMap<u32, u64>) {
        self.recent.clear();
        self.read = None;
        if let Some(p) = after.get(&0) {
            self.progress.position.store(*p, Ordering::Relaxed);
        }
        self.inner.seek(after);
    }

    async fn poll(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<SourceRecord<AuditRaw>>, StreamError> {
        // A committed head seen before the read: when the read comes back empty, everything
        // up to it (other categories included) has been read.
        let head_before = *self.head.borrow_and_update();
        // The runner polls again only once the previous batch went through the operator and
        // the sinks: that batch is done now.
        if let Some((position, recorded)) = self.read.take() {
            self.progress.position.store(position, Ordering::Relaxed);
            self.progress
                .recorded_at_ms
                .store(recorded, Ordering::Relaxed);
        }
        let batch = self.inner.poll(max, wait).await?;
        if batch.is_empty() {
            self.progress
                .position
                .fetch_max(head_before, Ordering::Relaxed);
        }
        let mut out = Vec::with_capacity(batch.len());
        for rec in batch {
            let (input, time) = self.resolve(&rec.raw).await?;
            self.read = Some((rec.offset, rec.raw.recorded_at.timestamp_millis()));
            out.push(SourceRecord {
                partition: rec.partition,
                offset: rec.offset,
                raw: AuditRaw {
                    event: rec.raw,
                    input,
                    time,
                },
            });
        }
        Ok(out)
    }
}

/// The decoder for [`AuditSource`] records (the source already decoded them).
pub fn decode_raw(raw: &AuditRaw) -> Result<(AuditInput, Timestamp), String> {
    raw.input.clone().map(|i| (i, raw.time))
}
