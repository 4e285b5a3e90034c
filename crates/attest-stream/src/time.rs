//! Event time and watermarks.
//!
//! Event time is milliseconds since the Unix epoch ([`Timestamp`]). The [`WatermarkTracker`]
//! derives a watermark from the records seen per input partition with bounded
//! out-of-orderness, and excludes partitions that have been idle longer than a timeout so that
//! one quiet partition does not stall the job (Flink's `withIdleness`).

use std::time::{Duration, Instant};

/// Event time in milliseconds since the Unix epoch.
pub type Timestamp = i64;

/// The smallest timestamp: the watermark before any record was seen.
pub const MIN_TIMESTAMP: Timestamp = i64::MIN;

#[derive(Debug, Clone)]
struct PartitionTime {
    max_seen: Timestamp,
    last_activity: Instant,
}

/// Watermarks with bounded out-of-orderness over several input partitions.
///
/// The watermark of a partition is `max event time seen - out_of_orderness - 1`; the job's
/// watermark is the minimum over the active partitions. A partition with no record for longer
/// than the idleness timeout stops holding the watermark back until it produces again. The
/// job's watermark never decreases.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    out_of_orderness: i64,
    idle_timeout: Option<Duration>,
    partitions: Vec<Option<PartitionTime>>,
    current: Timestamp,
}

impl WatermarkTracker {
    /// A tracker for `partitions` inputs tolerating `out_of_orderness` of disorder.
    pub fn new(partitions: usize, out_of_orderness: Duration) -> Self {
        Self {
            out_of_orderness: i64::try_from(out_of_orderness.as_millis()).unwrap_or(i64::MAX),
            idle_timeout: None,
            partitions: vec![None; partitions.max(1)],
            current: MIN_TIMESTAMP,
        }
    }

    /// Excludes partitions idle for longer than `timeout` (processing time).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Records an event time seen on `partition` at processing time `now`.
    pub fn observe(&mut self, partition: usize, time: Timestamp, now: Instant) {
        if partition >= self.partitions.len() {
            self.partitions.resize(partition + 1, None);
        }
        let slot = &mut self.partitions[partition];
        match slot {
            Some(p) => {
                p.max_seen = p.max_seen.max(time);
                p.last_activity = now;
            }
            None => {
                *slot = Some(PartitionTime {
                    max_seen: time,
                    last_activity: now,
                })
            }
        }
    }

    /// Marks `partition` as active at `now` without a record (e.g. it was polled and is
    /// caught up but the source says more will come).
    pub fn touch(&mut self, partition: usize, now: Instant) {
        if let Some(Some(p)) = self.partitions.get_mut(partition) {
            p.last_activity = now;
        }
    }

    /// The watermark at processing time `now`; never smaller than a previous answer.
    ///
    /// A partition that has never produced holds the watermark at its minimum until it is
    /// idle for the timeout (counted from the tracker's first record) — without a timeout,
    /// every partition must produce before time advances.
    pub fn current(&mut self, now: Instant) -> Timestamp {
        let mut min: Option<Timestamp> = None;
        let mut any_active = false;
        for p in &self.partitions {
            match p {
                Some(p) => {
                    let idle = self
                        .idle_timeout
                        .is_some_and(|t| now.saturating_duration_since(p.last_activity) > t);
                    if idle {
                        continue;
                    }
                    any_active = true;
                    let wm = p
                        .max_seen
                        .saturating_sub(self.out_of_orderness)
                        .saturating_sub(1);
                    min = Some(min.map_or(wm, |m: Timestamp| m.min(wm)));
                }
                None => {
                    if self.idle_timeout.is_none() {
                        return self.current;
                    }
                    // Never produced: counts as idle once a timeout is configured and some
                    // other partition has been seen; otherwise it holds time back.
                }
            }
        }
        if !any_active {
            // Everything is idle: keep the last watermark (Flink does the same).
            return self.current;
        }
        if let Some(m) = min {
            if m > self.current {
                self.current = m;
            }
        }
        self.current
    }

    /// The last watermark returned by [`WatermarkTracker::current`].
    pub fn last(&self) -> Timestamp {
        self.current
    }

    /// Restores a watermark from a checkpoint.
    pub fn restore(&mut self, watermark: Timestamp) {
        self.current = self.current.max(watermark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_out_of_orderness_and_idleness() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(2, Duration::from_millis(100))
            .with_idle_timeout(Duration::from_secs(5));
        w.observe(0, 1_000, t0);
        w.observe(1, 500, t0);
        assert_eq!(w.current(t0), 399);
        w.observe(0, 2_000, t0 + Duration::from_secs(6));
        // Partition 1 has been idle for 6 s > 5 s: only partition 0 counts.
        assert_eq!(w.current(t0 + Duration::from_secs(6)), 1_899);
        // It comes back with an old time: the watermark does not go back.
        w.observe(1, 600, t0 + Duration::from_secs(7));
        assert_eq!(w.current(t0 + Duration::from_secs(7)), 1_899);
    }

    #[test]
    fn without_timeout_every_partition_must_produce() {
        let t0 = Instant::now();
        let mut w = WatermarkTracker::new(2, Duration::ZERO);
        w.observe(0, 1_000, t0);
        assert_eq!(w.current(t0), MIN_TIMESTAMP);
        w.observe(1, 2_000, t0);
        assert_eq!(w.current(t0), 999);
    }
}
