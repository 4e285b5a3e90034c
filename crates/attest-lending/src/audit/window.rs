//! Per-window audit counts ([`AuditCounts`], a mergeable monoid) and [`AuditWindows`], a
//! pane store for a 1-hour tumbling window and a 24-hour window sliding (hopping) every few
//! minutes that share one set of panes of the slide's length.
//!
//! An event updates exactly one pane (constant cost, whatever the overlap `size / slide`);
//! a window is the merge of its panes. The auditor uses [`AuditWindows`] for the *open*
//! windows (the live view behind gauges and pages, [`AuditWindows::current`]) and for
//! lateness (records at or below the watermark go to the side output); the *closed* windows
//! that the breach rule sees come from attest-stream's aligned window operators fed the same
//! records (see [`super::operator`]). [`AuditWindows`] closes and evicts windows the same way
//! on its own, which its tests check by hand.

use std::collections::BTreeMap;

use attest_stream::{Collector, Operator, StreamError, Timestamp};
use serde::{Deserialize, Serialize};

use crate::events::ModelRef;

use super::AuditError;

/// The sensitive attributes the auditor groups by, in this order.
pub const ATTRIBUTES: [&str; 3] = ["sex", "race", "age_band"];

/// The group of an applicant whose attribute is erased, missing or unreadable.
pub const UNKNOWN_GROUP: &str = "unknown";

/// Counts of one group in one window.
///
/// Decisions count by decision time; the confusion counts count labelled decisions by the
/// time their outcome was observed. Positive prediction = approve, positive label = repaid:
/// `tp` approved and repaid, `fp` approved and defaulted, `tn` declined and defaulted, `fn_`
/// declined and repaid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTally {
    /// Decisions.
    pub decisions: u64,
    /// Approved decisions.
    pub approved: u64,
    /// Approved, repaid.
    pub tp: u64,
    /// Approved, defaulted.
    pub fp: u64,
    /// Declined, defaulted.
    pub tn: u64,
    /// Declined, repaid.
    pub fn_: u64,
}

impl GroupTally {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &GroupTally) {
        self.decisions += other.decisions;
        self.approved += other.approved;
        self.tp += other.tp;
        self.fp += other.fp;
        self.tn += other.tn;
        self.fn_ += other.fn_;
    }

    /// Labelled decisions.
    pub fn labeled(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// The labelled counts as attest-ai confusion counts (unit weights).
    pub fn confusion(&self) -> attest_ai::fairness::ConfusionCounts {
        attest_ai::fairness::ConfusionCounts {
            tp: self.tp as f64,
            fp: self.fp as f64,
            tn: self.tn as f64,
            fn_: self.fn_ as f64,
            n_tp: self.tp,
            n_fp: self.fp,
            n_tn: self.tn,
            n_fn: self.fn_,
            score_sum: 0.0,
        }
    }

    /// The decisions as confusion counts whose selection rate is the approval rate (approved
    /// as predicted positives, declined as predicted negatives; labels are not used).
    pub fn selection(&self) -> attest_ai::fairness::ConfusionCounts {
        let declined = self.decisions - self.approved.min(self.decisions);
        attest_ai::fairness::ConfusionCounts {
            tp: self.approved as f64,
            tn: declined as f64,
            n_tp: self.approved,
            n_tn: declined,
            ..Default::default()
        }
    }
}

/// Drift counts of one window: decisions per bin of the reference-derived layouts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftCounts {
    /// Decisions counted.
    pub samples: u64,
    /// Per predicted-probability bin.
    pub prediction: Vec<u64>,
    /// Per feature (reference order), per bin.
    pub features: Vec<Vec<u64>>,
    /// Per feature, decisions where it was missing.
    pub missing: Vec<u64>,
}

fn add_into(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

fn bump(v: &mut Vec<u64>, i: usize) {
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    v[i] += 1;
}

impl DriftCounts {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &DriftCounts) {
        self.samples += other.samples;
        add_into(&mut self.prediction, &other.prediction);
        if self.features.len() < other.features.len() {
            self.features.resize(other.features.len(), Vec::new());
        }
        for (a, b) in self.features.iter_mut().zip(&other.features) {
            add_into(a, b);
        }
        add_into(&mut self.missing, &other.missing);
    }

    fn add(&mut self, s: &DriftSample) {
        self.samples += 1;
        if let Some(b) = s.prediction {
            bump(&mut self.prediction, b as usize);
        }
        if self.features.len() < s.features.len() {
            self.features.resize(s.features.len(), Vec::new());
        }
        for (i, b) in s.features.iter().enumerate() {
            match b {
                Some(b) => bump(&mut self.features[i], *b as usize),
                None => bump(&mut self.missing, i),
            }
        }
    }
}

/// Everything counted for one model in one pane or window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCounts {
    /// attribute → group → counts.
    pub fairness: BTreeMap<String, BTreeMap<String, GroupTally>>,
    /// Drift bin counts (decisions whose model has a reference profile).
    pub drift: DriftCounts,
}

impl AuditCounts {
    /// Adds `other` into `self` (a commutative monoid with `Default` as identity).
    pub fn merge(&mut self, other: &AuditCounts) {
        for (attr, groups) in &other.fairness {
            let mine = self.fairness.entry(attr.clone()).or_default();
            for (g, t) in groups {
                mine.entry(g.clone()).or_default().merge(t);
            }
        }
        self.drift.merge(&other.drift);
    }

    /// Counts one resolved record.
    pub fn add(&mut self, r: &Resolved) {
        for (attr, group) in ATTRIBUTES.iter().zip(&r.groups) {
            let t = self
                .fairness
                .entry((*attr).to_owned())
                .or_default()
                .entry(group.clone())
                .or_default();
            match &r.kind {
                ResolvedKind::Decided { approve, .. } => {
                    t.decisions += 1;
                    t.approved += u64::from(*approve);
                }
                ResolvedKind::Labeled { approve, repaid } => match (approve, repaid) {
                    (true, true) => t.tp += 1,
                    (true, false) => t.fp += 1,
                    (false, false) => t.tn += 1,
                    (false, true) => t.fn_ += 1,
                },
            }
        }
        if let ResolvedKind::Decided { drift: Some(s), .. } = &r.kind {
            self.drift.add(s);
        }
    }

    /// Decisions in the window (counted once, via the first attribute).
    pub fn decisions(&self) -> u64 {
        self.fairness
            .get(ATTRIBUTES[0])
            .map_or(0, |g| g.values().map(|t| t.decisions).sum())
    }

    /// Labelled decisions in the window.
    pub fn labeled(&self) -> u64 {
        self.fairness
            .get(ATTRIBUTES[0])
            .map_or(0, |g| g.values().map(GroupTally::labeled).sum())
    }
}

/// Bin indices of one decision under its model's reference layouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftSample {
    /// Bin of the predicted probability.
    pub prediction: Option<u32>,
    /// Bin of every reference feature (None: missing in the application).
    pub features: Vec<Option<u32>>,
}

/// What a resolved record says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ResolvedKind {
    /// A decision (at decision time).
    Decided {
        /// Approved.
        approve: bool,
        /// Its drift bins, when the model has a reference profile.
        drift: Option<DriftSample>,
    },
    /// A labelled decision (at outcome time).
    Labeled {
        /// Approved.
        approve: bool,
        /// Repaid.
        repaid: bool,
    },
}

/// A joined record with the applicant's groups resolved (one per [`ATTRIBUTES`] entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// The model.
    pub model: ModelRef,
    /// Groups for sex, race, age_band (`unknown` when erased or missing).
    pub groups: [String; 3],
    /// Decision or label.
    pub kind: ResolvedKind,
}

/// Which window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// The tumbling window (1 hour by default).
    Tumbling,
    /// The sliding (hopping) window (24 hours by default).
    Sliding,
}

impl WindowKind {
    /// `tumbling` or `sliding`.
    pub fn as_str(self) -> &'static str {
        match self {
            WindowKind::Tumbling => "tumbling",
            WindowKind::Sliding => "sliding",
        }
    }
}

/// A window: kind and `[start, end)` in event time (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowSpan {
    /// Kind.
    pub kind: WindowKind,
    /// Inclusive start.
    pub start: Timestamp,
    /// Exclusive end.
    pub end: Timestamp,
}

impl WindowSpan {
    /// The label used in gauges: the window's length, e.g. `1h`, `24h`, `5m`.
    pub fn label(&self) -> String {
        duration_label(self.end - self.start)
    }
}

/// `1h`, `24h`, `90m`, `30s`, `1500ms`.
pub fn duration_label(ms: i64) -> String {
    if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A window's counts for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowResult {
    /// The model.
    pub model: ModelRef,
    /// The window.
    pub span: WindowSpan,
    /// The counts.
    pub counts: AuditCounts,
}

/// Window sizes in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowConfig {
    /// Tumbling window size (default 1 hour).
    pub tumbling_ms: i64,
    /// Sliding window size (default 24 hours).
    pub sliding_ms: i64,
    /// Slide, also the pane length (default 5 minutes).
    pub slide_ms: i64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            tumbling_ms: 3_600_000,
            sliding_ms: 86_400_000,
            slide_ms: 300_000,
        }
    }
}

impl WindowConfig {
    /// Checks that both sizes are positive multiples of the slide.
    pub fn validate(&self) -> Result<(), AuditError> {
        if self.slide_ms <= 0 {
            return Err(AuditError::Config("slide must be positive".into()));
        }
        for (name, v) in [("tumbling", self.tumbling_ms), ("sliding", self.sliding_ms)] {
            if v <= 0 || v % self.slide_ms != 0 {
                return Err(AuditError::Config(format!(
                    "{name} window size {v} ms must be a positive multiple of the slide {} ms",
                    self.slide_ms
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ModelPanes {
    model: ModelRef,
    panes: BTreeMap<Timestamp, AuditCounts>,
    next_tumbling_end: Option<Timestamp>,
    next_sliding_end: Option<Timestamp>,
}

/// The serializable state of [`AuditWindows`].
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowsState {
    models: BTreeMap<String, ModelPanes>,
    watermark: Option<Timestamp>,
    max_seen: Option<Timestamp>,
}

/// The windowed audit counts of every model.
#[derive(Debug)]
pub struct AuditWindows {
    cfg: WindowConfig,
    state: WindowsState,
}

fn floor_to(t: Timestamp, step: i64) -> Timestamp {
    t.div_euclid(step) * step
}

impl AuditWindows {
    /// Windows with sizes `cfg` (validated).
    pub fn new(cfg: WindowConfig) -> Result<Self, AuditError> {
        cfg.validate()?;
        Ok(AuditWindows {
            cfg,
            state: WindowsState::default(),
        })
    }

    /// The sizes.
    pub fn config(&self) -> WindowConfig {
        self.cfg
    }

    /// The largest event time seen.
    pub fn max_seen(&self) -> Option<Timestamp> {
        self.state.max_seen
    }

    /// Whether a record at `time` is late (at or below the last watermark).
    pub fn is_late(&self, time: Timestamp) -> bool {
        self.state.watermark.is_some_and(|w| time <= w)
    }

    /// The state, for a checkpoint.
    pub fn state(&self) -> &WindowsState {
        &self.state
    }

    /// Replaces the state from a checkpoint.
    pub fn set_state(&mut self, state: WindowsState) {
        self.state = state;
    }

    fn merged(
        panes: &BTreeMap<Timestamp, AuditCounts>,
        start: Timestamp,
        end: Timestamp,
    ) -> Option<AuditCounts> {
        let mut range = panes.range(start..end).peekable();
        range.peek()?;
        let mut acc = AuditCounts::default();
        for (_, c) in range {
            acc.merge(c);
        }
        Some(acc)
    }

    /// The open windows as they stand (the tumbling window and the sliding window that hold
    /// the latest event time), per model: the live view for gauges and pages.
    pub fn current(&self) -> Vec<WindowResult> {
        let Some(now) = self.state.max_seen else {
            return Vec::new();
        };
        let t_start = floor_to(now, self.cfg.tumbling_ms);
        let s_end = floor_to(now, self.cfg.slide_ms) + self.cfg.slide_ms;
        let spans = [
            WindowSpan {
                kind: WindowKind::Tumbling,
                start: t_start,
                end: t_start + self.cfg.tumbling_ms,
            },
            WindowSpan {
                kind: WindowKind::Sliding,
                start: s_end - self.cfg.sliding_ms,
                end: s_end,
            },
        ];
        let mut out = Vec::new();
        for m in self.state.models.values() {
            for span in spans {
                if let Some(counts) = Self::merged(&m.panes, span.start, span.end) {
                    out.push(WindowResult {
                        model: m.model.clone(),
                        span,
                        counts,
                    });
                }
            }
        }
        out
    }
}

impl Operator for AuditWindows {
    type In = Resolved;
    type Out = WindowResult;

    fn on_record(
        &mut self,
        record: Resolved,
        time: Timestamp,
        out: &mut Collector<WindowResult, Resolved>,
    ) {
        if self.state.watermark.is_some_and(|w| time <= w) {
            out.late(record, time);
            return;
        }
        self.state.max_seen = Some(self.state.max_seen.map_or(time, |m| m.max(time)));
        let pane = floor_to(time, self.cfg.slide_ms);
        let t_end = floor_to(time, self.cfg.tumbling_ms) + self.cfg.tumbling_ms;
        let s_end = pane + self.cfg.slide_ms;
        let key = record.model.to_string();
        let m = self.state.models.entry(key).or_insert_with(|| ModelPanes {
            model: record.model.clone(),
            panes: BTreeMap::new(),
            next_tumbling_end: None,
            next_sliding_end: None,
        });
        m.next_tumbling_end = Some(m.next_tumbling_end.map_or(t_end, |e| e.min(t_end)));
        m.next_sliding_end = Some(m.next_sliding_end.map_or(s_end, |e| e.min(s_end)));
        m.panes.entry(pane).or_default().add(&record);
    }

    fn on_watermark(&mut self, watermark: Timestamp, out: &mut Collector<WindowResult, Resolved>) {
        if self.state.watermark.is_some_and(|w| watermark <= w) {
            return;
        }
        self.state.watermark = Some(watermark);
        let cfg = self.cfg;
        for m in self.state.models.values_mut() {
            // Tumbling windows that closed.
            while let Some(end) = m.next_tumbling_end.filter(|e| *e <= watermark) {
                let start = end - cfg.tumbling_ms;
                if let Some(counts) = Self::merged(&m.panes, start, end) {
                    out.emit(WindowResult {
                        model: m.model.clone(),
                        span: WindowSpan {
                            kind: WindowKind::Tumbling,
                            start,
                            end,
                        },
                        counts,
                    });
                }
                // Skip empty stretches: the next window with data.
                m.next_tumbling_end = m
                    .panes
                    .range(end..)
                    .next()
                    .map(|(p, _)| floor_to(*p, cfg.tumbling_ms) + cfg.tumbling_ms);
            }
            // Sliding windows that closed.
            while let Some(end) = m.next_sliding_end.filter(|e| *e <= watermark) {
                let start = end - cfg.sliding_ms;
                if let Some(counts) = Self::merged(&m.panes, start, end) {
                    out.emit(WindowResult {
                        model: m.model.clone(),
                        span: WindowSpan {
                            kind: WindowKind::Sliding,
                            start,
                            end,
                        },
                        counts,
                    });
                }
                let next = end + cfg.slide_ms;
                m.next_sliding_end = m
                    .panes
                    .range(next - cfg.sliding_ms..)
                    .next()
                    .map(|(p, _)| next.max(*p + cfg.slide_ms));
            }
            // Panes no open window needs.
            let keep_from = [
                m.next_tumbling_end.map(|e| e - cfg.tumbling_ms),
                m.next_sliding_end.map(|e| e - cfg.sliding_ms),
            ]
            .into_iter()
            .flatten()
            .min();
            match keep_from {
                Some(k) => m.panes = m.panes.split_off(&k),
                None => m.panes.clear(),
            }
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, StreamError> {
        serde_json::to_vec(&self.state).map_err(|e| StreamError::State(e.to_string()))
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StreamError> {
        self.state =
            serde_json::from_slice(snapshot).map_err(|e| StreamError::State(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(group: &str, approve: bool) -> Resolved {
        Resolved {
            model: ModelRef {
                id: "m".into(),
                version: 1,
            },
            groups: [group.into(), UNKNOWN_GROUP.into(), UNKNOWN_GROUP.into()],
            kind: ResolvedKind::Decided {
                approve,
                drift: None,
            },
        }
    }

    fn small() -> WindowConfig {
        WindowConfig {
            tumbling_ms: 100,
            sliding_ms: 300,
            slide_ms: 50,
        }
    }

    #[test]
    fn rejects_sizes_that_are_not_multiples_of_the_slide() {
        assert!(AuditWindows::new(WindowConfig {
            tumbling_ms: 120,
            sliding_ms: 300,
            slide_ms: 50
        })
        .is_err());
        assert!(AuditWindows::new(WindowConfig {
            tumbling_ms: 100,
            sliding_ms: 300,
            slide_ms: 0
        })
        .is_err());
    }

    #[test]
    fn tumbling_and_sliding_windows_by_hand() {
        let mut w = AuditWindows::new(small()).unwrap();
        let mut out = Collector::new();
        w.on_record(rec("F", true), 10, &mut out);
        w.on_record(rec("M", false), 60, &mut out);
        w.on_record(rec("F", false), 120, &mut out);
        w.on_watermark(49, &mut out);
        assert!(out.outputs.is_empty());
        w.on_watermark(100, &mut out);
        // Sliding windows ending at 50 and 100; tumbling [0, 100): 2 decisions.
        let (o, _) = out.drain();
        let spans: Vec<_> = o
            .iter()
            .map(|r| (r.span.kind, r.span.start, r.span.end, r.counts.decisions()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (WindowKind::Tumbling, 0, 100, 2),
                (WindowKind::Sliding, -250, 50, 1),
                (WindowKind::Sliding, -200, 100, 2),
            ]
        );
        // Late: at or below the watermark.
        w.on_record(rec("F", true), 100, &mut out);
        assert_eq!(out.late.len(), 1);
        out.drain();
        w.on_watermark(1_000, &mut out);
        let (o, _) = out.drain();
        let spans: Vec<_> = o
            .iter()
            .map(|r| (r.span.kind, r.span.start, r.span.end, r.counts.decisions()))
            .collect();
        // Tumbling [100, 200): 1; sliding windows ending 150..=400 hold the record at 120
        // (the last one, [100, 400), too), those ending 150 and 200 and 250 and 300 also
        // the records at 10 and 60 while they are inside.
        assert_eq!(spans[0], (WindowKind::Tumbling, 100, 200, 1));
        let sliding: Vec<_> = spans[1..].iter().map(|s| (s.2, s.3)).collect();
        assert_eq!(
            sliding,
            vec![(150, 3), (200, 3), (250, 3), (300, 3), (350, 2), (400, 1)]
        );
        // Everything was emitted; the panes are gone.
        assert!(w.current().is_empty() || w.state.models.values().all(|m| m.panes.is_empty()));
    }

    #[test]
    fn cost_per_event_is_one_pane() {
        let mut w = AuditWindows::new(WindowConfig::default()).unwrap();
        let mut out = Collector::new();
        for i in 0..1_000 {
            w.on_record(
                rec(if i % 2 == 0 { "F" } else { "M" }, i % 3 == 0),
                i * 1_000,
                &mut out,
            );
        }
        // 1000 s of events touch 4 panes of 5 minutes.
        assert_eq!(
            w.state
                .models
                .values()
                .map(|m| m.panes.len())
                .sum::<usize>(),
            4
        );
        let cur = w.current();
        assert_eq!(cur.len(), 2);
        assert!(cur.iter().all(|r| r.counts.decisions() == 1_000));
    }

    #[test]
    fn snapshot_round_trip_gives_the_same_windows() {
        let mut a = AuditWindows::new(small()).unwrap();
        let mut b = AuditWindows::new(small()).unwrap();
        let mut oa = Collector::new();
        let mut ob = Collector::new();
        for i in 0..20 {
            a.on_record(rec("F", i % 2 == 0), i * 17, &mut oa);
            b.on_record(rec("F", i % 2 == 0), i * 17, &mut ob);
            if i == 9 {
                let snap = b.snapshot().unwrap();
                b = AuditWindows::new(small()).unwrap();
                b.restore(&snap).unwrap();
            }
        }
        a.on_watermark(10_000, &mut oa);
        b.on_watermark(10_000, &mut ob);
        assert_eq!(oa.outputs, ob.outputs);
        assert!(!oa.outputs.is_empty());
    }
}
