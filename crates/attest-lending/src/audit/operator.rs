//! The auditor as one deterministic stream operator: the decision ⋈ outcome join, the
//! windowed counts, the evaluation of closed windows and the breach episodes.
//!
//! Breaches are decided on *closed* windows only, so they depend on the input alone (a
//! replay or another process gets the same ones). A breach opens an *episode* per (model,
//! metric, attribute or feature, window kind); the episode stays open while later closed
//! windows of that kind still breach and ends at the first one that does not. Only the start
//! of an episode is emitted — one breach event and one incident per episode, not one per
//! sliding step.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use attest_stream::agg::Aggregator;
use attest_stream::window::{AlignedWindowOperator, EmitMode, HoppingWindows, TumblingWindows};
use attest_stream::{Collector, Operator, StreamError, Timestamp};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::events::ModelRef;

use super::evaluate::{window_audit, Thresholds, WindowAudit};
use super::join::DecisionJoin;
use super::reference::ReferenceProfile;
use super::stats::ConfidenceInterval;
use super::window::{
    AuditCounts, AuditWindows, DriftSample, Resolved, ResolvedKind, WindowConfig, WindowKind,
    WindowResult, WindowSpan, WindowsState,
};
use super::AuditError;

/// One record of the audit job, resolved by the source (groups through the key vault, drift
/// bins through the model's reference profile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AuditInput {
    /// A decision, at its decision time.
    Decided {
        /// Decision id.
        decision_id: String,
        /// The model.
        model: ModelRef,
        /// Approved.
        approve: bool,
        /// Groups for sex, race, age_band.
        groups: [String; 3],
        /// Drift bins (when the model has a reference profile).
        drift: Option<DriftSample>,
        /// The model's reference profile (not serialized: the operator keeps its own copy).
        #[serde(skip)]
        profile: Option<Arc<ReferenceProfile>>,
    },
    /// An outcome, at its observation time.
    Observed {
        /// Decision id.
        decision_id: String,
        /// Repaid.
        repaid: bool,
        /// Groups for sex, race, age_band, resolved when the outcome was read.
        groups: [String; 3],
        /// The decision it observes, looked up in the store by the source (`None`: not
        /// found). The decision is immutable and precedes its outcome in the same stream, so
        /// joining against the store is deterministic and needs no buffer in the operator
        /// state — which would otherwise hold every decision still waiting for its outcome.
        #[serde(default)]
        decision: Option<DecisionRef>,
    },
    /// Any other event of the category (read to advance the position, otherwise ignored).
    Other,
}

/// The decision an outcome refers to, as the source found it in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRef {
    /// The model that decided.
    pub model: ModelRef,
    /// Approved.
    pub approve: bool,
    /// Decision time (ms).
    pub time: Timestamp,
}

/// What a breach is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BreachKind {
    /// A fairness disparity.
    Fairness {
        /// Sensitive attribute.
        attribute: String,
        /// Metric name.
        metric: String,
        /// Value.
        value: f64,
        /// Confidence interval.
        interval: Option<ConfidenceInterval>,
        /// Threshold.
        threshold: f64,
        /// Samples of the two groups compared.
        samples: u64,
        /// The groups compared (higher, lower).
        groups: (String, String),
    },
    /// Drift of a feature or of the prediction.
    Drift {
        /// Feature name or `prediction`.
        feature: String,
        /// `psi` or `ks`.
        statistic: String,
        /// Value.
        value: f64,
        /// p-value.
        pvalue: Option<f64>,
        /// Threshold.
        threshold: f64,
        /// Decisions in the window.
        samples: u64,
    },
}

/// The start of a breach episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breach {
    /// Deterministic key: (model, metric, attribute or feature, window kind, window start).
    pub key: String,
    /// The model.
    pub model: ModelRef,
    /// The first breaching window of the episode.
    pub window: WindowSpan,
    /// Details.
    pub kind: BreachKind,
}

/// What the auditor emits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AuditOutput {
    /// A window closed; its final audit.
    Closed(Box<WindowAudit>),
    /// A breach episode started in that window.
    Breach(Box<Breach>),
}

/// [`AuditCounts`] as an attest-stream aggregation (a commutative monoid).
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditAggregator;

impl Aggregator<Resolved> for AuditAggregator {
    type Acc = AuditCounts;
    type Out = AuditCounts;

    fn init(&self) -> AuditCounts {
        AuditCounts::default()
    }
    fn add(&self, acc: &mut AuditCounts, value: &Resolved) {
        acc.add(value);
    }
    fn merge(&self, acc: &mut AuditCounts, other: &AuditCounts) {
        acc.merge(other);
    }
    fn result(&self, acc: &AuditCounts) -> AuditCounts {
        acc.clone()
    }
}

/// attest-stream's aligned (pane-based) windows keyed by model.
type EngineWindows = AlignedWindowOperator<String, Resolved, AuditAggregator>;

/// The state behind the operator, shared with the live view.
///
/// Closed windows come from attest-stream's aligned window operators (tumbling, and hopping
/// computed from panes with two-stack aggregation); [`AuditWindows`] keeps the same counts
/// in panes of the slide for the *open* windows (the live view), which those operators do
/// not expose, and decides lateness (a record at or below the watermark is late for both).
#[derive(Debug)]
pub struct AuditorCore {
    join: DecisionJoin,
    windows: AuditWindows,
    tumbling: EngineWindows,
    sliding: EngineWindows,
    models: BTreeMap<String, ModelRef>,
    episodes: BTreeMap<String, Timestamp>,
    profiles: BTreeMap<String, Arc<ReferenceProfile>>,
    late: u64,
    /// The last closed window's audit per model and window kind.
    last_closed: BTreeMap<String, WindowAudit>,
    /// Recent breaches, newest first (at most [`RECENT_BREACHES`]).
    breaches: VecDeque<Breach>,
    /// Restored from a checkpoint or fed a record: the state means something.
    ready: bool,
    /// Records counted so far (drives the deterministic evaluation of open windows).
    counted: u64,
    /// Longest time from a decision to its outcome that still joins (ms).
    join_bound_ms: i64,
}

/// Open windows are evaluated for breaches after every this many counted records, so a
/// breach is reported while its window is still open (a one-hour window need not close
/// first); the cadence depends only on the input, so a replay reports the same breaches.
pub const OPEN_WINDOW_EVALUATION_EVERY: u64 = 25;

/// The number of looks an open window's error rate is divided among (see
/// `AuditorCore::evaluate_open`).
pub const OPEN_WINDOW_LOOKS: f64 = 200.0;

/// The thresholds open windows are judged by: the configured ones at the stricter confidence
/// level of [`OPEN_WINDOW_LOOKS`] (used for breach events and for the live view alike, so a
/// window shown as breached is one that raises a breach).
pub fn open_window_thresholds(th: &Thresholds) -> Thresholds {
    Thresholds {
        confidence: 1.0 - (1.0 - th.confidence) / OPEN_WINDOW_LOOKS,
        ..*th
    }
}

/// Breaches kept in the operator state for the snapshot.
pub const RECENT_BREACHES: usize = 100;

#[derive(Serialize)]
struct SnapshotRef<'a> {
    join: &'a DecisionJoin,
    windows: &'a WindowsState,
    tumbling: String,
    sliding: String,
    models: &'a BTreeMap<String, ModelRef>,
    episodes: &'a BTreeMap<String, Timestamp>,
    profiles: BTreeMap<&'a str, &'a ReferenceProfile>,
    late: u64,
    last_closed: &'a BTreeMap<String, WindowAudit>,
    breaches: &'a VecDeque<Breach>,
    counted: u64,
}

#[derive(Deserialize)]
struct SnapshotOwned {
    join: DecisionJoin,
    windows: WindowsState,
    tumbling: String,
    sliding: String,
    models: BTreeMap<String, ModelRef>,
    episodes: BTreeMap<String, Timestamp>,
    profiles: BTreeMap<String, ReferenceProfile>,
    late: u64,
    #[serde(default)]
    last_closed: BTreeMap<String, WindowAudit>,
    #[serde(default)]
    breaches: VecDeque<Breach>,
    #[serde(default)]
    counted: u64,
}

/// A read handle on the auditor's open windows (the live view for gauges and pages).
#[derive(Debug, Clone)]
pub struct LiveView {
    core: Arc<Mutex<AuditorCore>>,
    thresholds: Thresholds,
}

fn lock(core: &Mutex<AuditorCore>) -> MutexGuard<'_, AuditorCore> {
    // A panic while holding the lock cannot leave the counts half-updated in a way that
    // matters more than losing the view; keep serving.
    core.lock().unwrap_or_else(|e| e.into_inner())
}

impl LiveView {
    /// Whether the operator holds meaningful state yet (restored from its checkpoint, or
    /// fed at least one record). Before that, its view would be empty, not current.
    pub fn is_ready(&self) -> bool {
        lock(&self.core).ready
    }

    /// The audits of the open windows (tumbling and sliding) of every model, judged at the
    /// open-window confidence level ([`open_window_thresholds`]).
    pub fn audits(&self) -> Vec<WindowAudit> {
        let strict = open_window_thresholds(&self.thresholds);
        let core = lock(&self.core);
        core.windows
            .current()
            .iter()
            .map(|r| {
                let profile = core.profiles.get(&r.model.to_string()).map(Arc::as_ref);
                window_audit(&r.model, r.span, false, &r.counts, profile, &strict)
            })
            .collect()
    }

    /// The last closed window's audit per model and window kind.
    pub fn last_closed(&self) -> Vec<WindowAudit> {
        lock(&self.core).last_closed.values().cloned().collect()
    }

    /// Recent breaches (episode starts), newest first.
    pub fn breaches(&self) -> Vec<Breach> {
        lock(&self.core).breaches.iter().cloned().collect()
    }

    /// Decisions still waiting for their outcome.
    pub fn pending_outcomes(&self) -> usize {
        lock(&self.core).join.pending()
    }

    /// Late records seen (decisions or outcomes too late for their window, outcomes without
    /// a pending decision).
    pub fn late_records(&self) -> u64 {
        lock(&self.core).late
    }

    /// The largest event time seen.
    pub fn max_event_time(&self) -> Option<Timestamp> {
        lock(&self.core).windows.max_seen()
    }
}

/// The audit operator.
#[derive(Debug)]
pub struct Auditor {
    core: Arc<Mutex<AuditorCore>>,
    thresholds: Thresholds,
}

impl Auditor {
    /// An auditor with these windows, join bound and thresholds.
    pub fn new(
        windows: WindowConfig,
        join_bound_ms: i64,
        thresholds: Thresholds,
    ) -> Result<Self, AuditError> {
        if !(thresholds.confidence > 0.0 && thresholds.confidence < 1.0) {
            return Err(AuditError::Config(format!(
                "confidence must be in (0, 1), got {}",
                thresholds.confidence
            )));
        }
        let ms = |v: i64| std::time::Duration::from_millis(u64::try_from(v).unwrap_or(0));
        windows.validate()?;
        let tumbling = TumblingWindows::of(ms(windows.tumbling_ms))?
            .aggregate(AuditAggregator, EmitMode::Final);
        let sliding = HoppingWindows::of(ms(windows.sliding_ms), ms(windows.slide_ms))?
            .aggregate(AuditAggregator, EmitMode::Final);
        Ok(Auditor {
            core: Arc::new(Mutex::new(AuditorCore {
                join: DecisionJoin::new(join_bound_ms),
                windows: AuditWindows::new(windows)?,
                tumbling,
                sliding,
                models: BTreeMap::new(),
                episodes: BTreeMap::new(),
                profiles: BTreeMap::new(),
                late: 0,
                last_closed: BTreeMap::new(),
                breaches: VecDeque::new(),
                ready: false,
                counted: 0,
                join_bound_ms,
            })),
            thresholds,
        })
    }

    /// The live view on this operator's state.
    pub fn live(&self) -> LiveView {
        LiveView {
            core: self.core.clone(),
            thresholds: self.thresholds,
        }
    }
}

fn candidates(audit: &WindowAudit, th: &Thresholds) -> Vec<(String, Option<BreachKind>)> {
    let kind = audit.window.kind.as_str();
    let model = audit.model.to_string();
    let mut out = Vec::new();
    for f in &audit.fairness {
        for (metric, view) in f.disparities() {
            let key = format!("{model}|{metric}|{}|{kind}", f.attribute);
            let breach = view.filter(|v| v.breached).map(|v| BreachKind::Fairness {
                attribute: f.attribute.clone(),
                metric: metric.to_owned(),
                value: v.value,
                interval: v.interval,
                threshold: v.threshold,
                samples: v.samples,
                groups: v.groups.clone(),
            });
            out.push((key, breach));
        }
    }
    // Drift breaches come from the sliding (24 h) window, as specified; the tumbling window's
    // drift is shown, not alerted on.
    if let Some(d) = audit
        .drift
        .as_ref()
        .filter(|_| audit.window.kind == WindowKind::Sliding)
    {
        for c in d.prediction.iter().chain(&d.features) {
            for (stat, breached, value, pvalue, threshold) in [
                ("psi", c.psi_breached, c.psi, c.psi_pvalue, th.psi),
                ("ks", c.ks_breached, c.ks, c.ks_pvalue, th.ks),
            ] {
                let key = format!("{model}|{stat}|{}|{kind}", c.feature);
                let breach = match (breached, value) {
                    (true, Some(value)) => Some(BreachKind::Drift {
                        feature: c.feature.clone(),
                        statistic: stat.to_owned(),
                        value,
                        pvalue,
                        threshold,
                        samples: d.samples,
                    }),
                    _ => None,
                };
                out.push((key, breach));
            }
        }
    }
    out
}

impl AuditorCore {
    /// Counts a record that is not late in the live panes and both engine windows.
    fn count(&mut self, r: Resolved, time: Timestamp) {
        let key = r.model.to_string();
        if !self.models.contains_key(&key) {
            self.models.insert(key.clone(), r.model.clone());
        }
        let mut panes: Collector<WindowResult, Resolved> = Collector::new();
        self.windows.on_record(r.clone(), time, &mut panes);
        let mut engine = Collector::new();
        self.tumbling
            .on_record((key.clone(), r.clone()), time, &mut engine);
        self.sliding.on_record((key, r), time, &mut engine);
        self.counted += 1;
        let late = engine.late.len() as u64 + panes.late.len() as u64;
        if late > 0 {
            // Not expected: the caller checked the time against the watermark.
            self.late += late;
            tracing::warn!(time, late, "audit record late in the window engine");
        }
    }

    fn close(
        &mut self,
        r: WindowResult,
        th: &Thresholds,
        out: &mut Collector<AuditOutput, AuditInput>,
    ) {
        let profile = self.profiles.get(&r.model.to_string()).map(Arc::as_ref);
        let audit = window_audit(&r.model, r.span, true, &r.counts, profile, th);
        self.consider(&audit, &r, th, true, out);
        self.last_closed.insert(
            format!("{}|{}", audit.model, audit.window.kind.as_str()),
            audit.clone(),
        );
        out.emit(AuditOutput::Closed(Box::new(audit)));
    }
}

impl AuditorCore {
    /// Starts a breach episode for every candidate that breaches and has none open; a closed
    /// window that no longer breaches ends its episode (an open one never does: it may still
    /// change).
    fn consider(
        &mut self,
        audit: &WindowAudit,
        r: &WindowResult,
        th: &Thresholds,
        closed: bool,
        out: &mut Collector<AuditOutput, AuditInput>,
    ) {
        for (key, breach) in candidates(audit, th) {
            match breach {
                Some(kind) => {
                    if self.episodes.contains_key(&key) {
                        continue;
                    }
                    self.episodes.insert(key.clone(), r.span.start);
                    let breach = Breach {
                        key: format!("{key}|{}", r.span.start),
                        model: r.model.clone(),
                        window: r.span,
                        kind,
                    };
                    self.breaches.push_front(breach.clone());
                    self.breaches.truncate(RECENT_BREACHES);
                    out.emit(AuditOutput::Breach(Box::new(breach)));
                }
                None if closed => {
                    self.episodes.remove(&key);
                }
                None => {}
            }
        }
    }

    /// Evaluates the open windows for breaches (see [`OPEN_WINDOW_EVALUATION_EVERY`]).
    ///
    /// An open window is looked at many times as it fills, and every look is another chance
    /// for noise to cross a threshold (the peeking problem of sequential testing). Each look
    /// therefore uses a Bonferroni-style stricter level — the error rate divided by
    /// [`OPEN_WINDOW_LOOKS`] — so that all the looks at one window together are about as
    /// likely to raise a false alarm as the single evaluation of a closed window.
    fn evaluate_open(&mut self, th: &Thresholds, out: &mut Collector<AuditOutput, AuditInput>) {
        let strict = open_window_thresholds(th);
        let th = &strict;
        for r in self.windows.current() {
            let profile = self.profiles.get(&r.model.to_string()).cloned();
            let audit = window_audit(&r.model, r.span, false, &r.counts, profile.as_deref(), th);
            self.consider(&audit, &r, th, false, out);
        }
    }
}

impl Operator for Auditor {
    type In = AuditInput;
    type Out = AuditOutput;

    fn on_record(
        &mut self,
        record: AuditInput,
        time: Timestamp,
        out: &mut Collector<AuditOutput, AuditInput>,
    ) {
        let mut core = lock(&self.core);
        core.ready = true;
        match &record {
            AuditInput::Decided {
                decision_id,
                model,
                approve,
                groups,
                drift,
                profile,
            } => {
                if let Some(p) = profile {
                    core.profiles
                        .entry(model.to_string())
                        .or_insert_with(|| p.clone());
                }
                let _ = decision_id; // outcomes join against the store (see `DecisionRef`)
                if core.windows.is_late(time) {
                    core.late += 1;
                    drop(core);
                    out.late(record, time);
                    return;
                }
                core.count(
                    Resolved {
                        model: model.clone(),
                        groups: groups.clone(),
                        kind: ResolvedKind::Decided {
                            approve: *approve,
                            drift: drift.clone(),
                        },
                    },
                    time,
                );
                if core.counted.is_multiple_of(OPEN_WINDOW_EVALUATION_EVERY) {
                    core.evaluate_open(&self.thresholds, out);
                }
            }
            AuditInput::Observed {
                decision_id: _,
                repaid,
                groups,
                decision,
            } => {
                let joined = decision
                    .as_ref()
                    .filter(|d| time >= d.time && time - d.time <= core.join_bound_ms)
                    .map(|d| (d.model.clone(), d.approve));
                match joined {
                    Some((model, approve)) if !core.windows.is_late(time) => {
                        core.count(
                            Resolved {
                                model,
                                groups: groups.clone(),
                                kind: ResolvedKind::Labeled {
                                    approve,
                                    repaid: *repaid,
                                },
                            },
                            time,
                        );
                        if core.counted.is_multiple_of(OPEN_WINDOW_EVALUATION_EVERY) {
                            core.evaluate_open(&self.thresholds, out);
                        }
                    }
                    _ => {
                        core.late += 1;
                        drop(core);
                        out.late(record, time);
                    }
                }
            }
            AuditInput::Other => {}
        }
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<AuditOutput, AuditInput>) {
        let mut core = lock(&self.core);
        core.ready = true;
        core.join.advance(watermark);
        // The live panes evict what no open window needs (their own closed windows are not
        // used: the engine's are).
        let mut panes: Collector<WindowResult, Resolved> = Collector::new();
        core.windows.on_watermark(watermark, &mut panes);
        let mut closed = Collector::new();
        core.tumbling.on_watermark(watermark, &mut closed);
        let (tumbling, _) = closed.drain();
        core.sliding.on_watermark(watermark, &mut closed);
        let (sliding, _) = closed.drain();
        let results: Vec<WindowResult> = tumbling
            .into_iter()
            .map(|r| (WindowKind::Tumbling, r))
            .chain(sliding.into_iter().map(|r| (WindowKind::Sliding, r)))
            .filter_map(|(kind, r)| {
                let model = core.models.get(&r.key)?.clone();
                Some(WindowResult {
                    model,
                    span: WindowSpan {
                        kind,
                        start: r.start,
                        end: r.end,
                    },
                    counts: r.value,
                })
            })
            .collect();
        for r in results {
            core.close(r, &self.thresholds, out);
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, StreamError> {
        let core = lock(&self.core);
        let b64 = base64::engine::general_purpose::STANDARD;
        let snap = SnapshotRef {
            join: &core.join,
            windows: core.windows.state(),
            tumbling: b64.encode(core.tumbling.snapshot()?),
            sliding: b64.encode(core.sliding.snapshot()?),
            models: &core.models,
            episodes: &core.episodes,
            profiles: core
                .profiles
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_ref()))
                .collect(),
            late: core.late,
            last_closed: &core.last_closed,
            breaches: &core.breaches,
            counted: core.counted,
        };
        serde_json::to_vec(&snap).map_err(|e| StreamError::State(e.to_string()))
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StreamError> {
        let s: SnapshotOwned =
            serde_json::from_slice(snapshot).map_err(|e| StreamError::State(e.to_string()))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let decode = |text: &str| {
            b64.decode(text)
                .map_err(|e| StreamError::State(format!("window snapshot: {e}")))
        };
        let (tumbling, sliding) = (decode(&s.tumbling)?, decode(&s.sliding)?);
        let mut core = lock(&self.core);
        core.tumbling.restore(&tumbling)?;
        core.sliding.restore(&sliding)?;
        core.models = s.models;
        core.join = s.join;
        core.windows.set_state(s.windows);
        core.episodes = s.episodes;
        core.profiles = s
            .profiles
            .into_iter()
            .map(|(k, v)| (k, Arc::new(v)))
            .collect();
        core.late = s.late;
        core.last_closed = s.last_closed;
        core.breaches = s.breaches;
        core.counted = s.counted;
        core.ready = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(i: usize, sex: &str, approve: bool) -> AuditInput {
        AuditInput::Decided {
            decision_id: format!("d{i}"),
            model: ModelRef {
                id: "m".into(),
                version: 1,
            },
            approve,
            groups: [sex.into(), "unknown".into(), "unknown".into()],
            drift: None,
            profile: None,
        }
    }

    fn closed(outs: &[AuditOutput]) -> Vec<(WindowKind, Timestamp, Timestamp, u64)> {
        outs.iter()
            .filter_map(|o| match o {
                AuditOutput::Closed(a) => {
                    Some((a.window.kind, a.window.start, a.window.end, a.decisions))
                }
                AuditOutput::Breach(_) => None,
            })
            .collect()
    }

    fn observed(i: usize, decision: Option<(bool, Timestamp)>) -> AuditInput {
        AuditInput::Observed {
            decision_id: format!("d{i}"),
            repaid: true,
            groups: ["F".into(), "unknown".into(), "unknown".into()],
            decision: decision.map(|(approve, time)| DecisionRef {
                model: ModelRef {
                    id: "m".into(),
                    version: 1,
                },
                approve,
                time,
            }),
        }
    }

    #[test]
    fn outcomes_join_their_decision_within_the_bound_and_are_late_otherwise() {
        let cfg = WindowConfig {
            tumbling_ms: 100_000,
            sliding_ms: 200_000,
            slide_ms: 100_000,
        };
        let mut a = Auditor::new(cfg, 10_000, Thresholds::default()).unwrap();
        let mut out = Collector::new();
        a.on_record(decided(1, "F", true), 1_000, &mut out);
        // Within the bound: counted as a labelled outcome.
        a.on_record(observed(1, Some((true, 1_000))), 5_000, &mut out);
        // Beyond the bound, before its decision, or with no decision found: late.
        a.on_record(observed(2, Some((true, 1_000))), 11_001, &mut out);
        a.on_record(observed(3, Some((true, 9_000))), 8_000, &mut out);
        a.on_record(observed(4, None), 8_000, &mut out);
        let (_, late) = out.drain();
        let late_ids: Vec<String> = late
            .iter()
            .filter_map(|(r, _)| match r {
                AuditInput::Observed { decision_id, .. } => Some(decision_id.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(late_ids, vec!["d2", "d3", "d4"]);
        let labelled: u64 = a
            .live()
            .audits()
            .iter()
            .filter(|w| w.window.kind == WindowKind::Tumbling)
            .map(|w| w.labeled)
            .sum();
        assert_eq!(labelled, 1);
    }

    #[test]
    fn engine_windows_close_with_the_counts_by_hand_and_one_breach_per_episode() {
        let cfg = WindowConfig {
            tumbling_ms: 1_000,
            sliding_ms: 2_000,
            slide_ms: 1_000,
        };
        let th = Thresholds {
            min_group_samples: 10,
            ..Thresholds::default()
        };
        let mut a = Auditor::new(cfg, 10_000, th).unwrap();
        let mut out = Collector::new();
        // 3 seconds, 40 decisions each: men always approved, women never.
        for s in 0..3 {
            for i in 0..40 {
                let t = s * 1_000 + i * 20;
                let sex = if i % 2 == 0 { "F" } else { "M" };
                a.on_record(decided(i as usize, sex, sex == "M"), t, &mut out);
                a.on_watermark(t - 1, &mut out);
            }
        }
        a.on_watermark(10_000, &mut out);
        let (outs, late) = out.drain();
        assert!(late.is_empty());
        let mut c = closed(&outs);
        c.sort();
        assert_eq!(
            c,
            vec![
                (WindowKind::Tumbling, 0, 1_000, 40),
                (WindowKind::Tumbling, 1_000, 2_000, 40),
                (WindowKind::Tumbling, 2_000, 3_000, 40),
                (WindowKind::Sliding, -1_000, 1_000, 40),
                (WindowKind::Sliding, 0, 2_000, 80),
                (WindowKind::Sliding, 1_000, 3_000, 80),
                (WindowKind::Sliding, 2_000, 4_000, 40),
            ]
        );
        // DPD = 1 in every window: one episode (one breach) per metric and window kind.
        let breaches: Vec<&Breach> = outs
            .iter()
            .filter_map(|o| match o {
                AuditOutput::Breach(b) => Some(b.as_ref()),
                AuditOutput::Closed(_) => None,
            })
            .collect();
        let dpd: Vec<_> = breaches
            .iter()
            .filter(|b| b.key.contains("demographic_parity_difference"))
            .map(|b| (b.window.kind, b.window.start))
            .collect();
        assert_eq!(dpd.len(), 2, "{dpd:?}");
        // The live view has evicted everything once all windows closed; state round-trips.
        let snap = a.snapshot().unwrap();
        let mut b = Auditor::new(cfg, 10_000, th).unwrap();
        b.restore(&snap).unwrap();
        assert_eq!(b.live().breaches(), a.live().breaches());
        assert_eq!(b.live().last_closed(), a.live().last_closed());
        assert_eq!(b.live().breaches().len(), breaches.len());
        assert!(b.restore(b"{}").is_err());
    }
}
