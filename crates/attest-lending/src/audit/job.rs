//! Running the auditor: [`spawn_auditor`] starts the stream job (embedded: one process,
//! checkpoints in `<data_dir>/audit-checkpoints.db`; PostgreSQL: a partition lease decides
//! which process runs it) and a publisher that turns the state into [`AuditState`]
//! snapshots, gauges and the persisted copy.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use attest_store::DynStore;
use attest_stream::runtime::{
    CheckpointStore, Emitted, FnSink, Job, JobConfig, Late, PartitionTask, PostgresCheckpointStore,
    SqliteCheckpointStore, Worker, WorkerConfig, WorkerEvent,
};
use attest_stream::{StreamError, Timestamp};
use chrono::{TimeZone, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::vault::KeyVault;

use super::evaluate::Thresholds;
use super::metrics::AuditMetrics;
use super::operator::{AuditInput, Auditor, LiveView};
use super::persist::SnapshotStore;
use super::reference::{ReferenceSource, StoreReferences, DEFAULT_FINE_BINS};
use super::sink::AuditSink;
use super::source::{decode_raw, AuditRaw, AuditSource, Progress};
use super::state::AuditState;
use super::window::WindowConfig;
use super::AuditError;

/// Where the auditor keeps checkpoints and its persisted snapshot, and how processes share it.
#[derive(Debug, Clone)]
pub enum Backend {
    /// One process: checkpoints in `<data_dir>/audit-checkpoints.db`, snapshot in
    /// `<data_dir>/audit-state.json`.
    Embedded {
        /// Data directory.
        data_dir: PathBuf,
    },
    /// Several processes on one PostgreSQL: checkpoints, the partition lease (one partition:
    /// one owner at a time) and the snapshot in `schema`.
    Postgres {
        /// Connection URL.
        url: String,
        /// Schema for `stream_checkpoints`, `stream_leases`, `audit_snapshots`.
        schema: String,
        /// This process's id among the workers (e.g. `host-pid`).
        owner: String,
        /// Lease duration: a dead owner is replaced after at most this long.
        lease_ttl: Duration,
    },
}

/// How the auditor runs.
#[derive(Clone)]
pub struct AuditorConfig {
    /// The event store holding the lending events (breaches and incidents are appended here).
    pub store: DynStore,
    /// The key vault that opens protected attributes.
    pub vault: KeyVault,
    /// Checkpoints, lease and snapshot location.
    pub backend: Backend,
    /// Reference samples (default: the registry's `ModelVersionRegistered` events in `store`).
    pub references: Option<Arc<dyn ReferenceSource>>,
    /// Window sizes (default 1 h tumbling, 24 h sliding every 5 min).
    pub windows: WindowConfig,
    /// How long a decision waits for its outcome (default 365 days).
    pub join_bound: Duration,
    /// The breach rule.
    pub thresholds: Thresholds,
    /// Job name (checkpoint and lease key; default `lending-auditor`).
    pub job_name: String,
    /// Checkpoint interval (default 1 s).
    pub checkpoint_interval: Duration,
    /// How often the snapshot, gauges and persisted copy are refreshed (default 1 s).
    pub publish_interval: Duration,
    /// Bounded out-of-orderness of event times (default 5 s).
    pub out_of_orderness: Duration,
    /// Fine bins per drift layout (default 50).
    pub fine_bins: usize,
    /// Most events read per poll (default 1024).
    pub max_batch: usize,
    /// Gauges to set (register them in the server's registry first); default: private ones.
    pub metrics: Option<AuditMetrics>,
}

impl std::fmt::Debug for AuditorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditorConfig")
            .field("backend", &self.backend)
            .field("windows", &self.windows)
            .field("join_bound", &self.join_bound)
            .field("thresholds", &self.thresholds)
            .field("job_name", &self.job_name)
            .finish_non_exhaustive()
    }
}

impl AuditorConfig {
    /// Defaults with `backend`.
    pub fn new(store: DynStore, vault: KeyVault, backend: Backend) -> Self {
        AuditorConfig {
            store,
            vault,
            backend,
            references: None,
            windows: WindowConfig::default(),
            join_bound: Duration::from_secs(365 * 24 * 3600),
            thresholds: Thresholds::default(),
            job_name: "lending-auditor".into(),
            checkpoint_interval: Duration::from_secs(1),
            publish_interval: Duration::from_secs(1),
            out_of_orderness: Duration::from_secs(5),
            fine_bins: DEFAULT_FINE_BINS,
            max_batch: 1024,
            metrics: None,
        }
    }

    /// Embedded defaults in `data_dir`.
    pub fn embedded(store: DynStore, vault: KeyVault, data_dir: impl Into<PathBuf>) -> Self {
        Self::new(
            store,
            vault,
            Backend::Embedded {
                data_dir: data_dir.into(),
            },
        )
    }

    /// PostgreSQL defaults (`owner` must be unique per process).
    pub fn postgres(
        store: DynStore,
        vault: KeyVault,
        url: impl Into<String>,
        schema: impl Into<String>,
        owner: impl Into<String>,
    ) -> Self {
        Self::new(
            store,
            vault,
            Backend::Postgres {
                url: url.into(),
                schema: schema.into(),
                owner: owner.into(),
                lease_ttl: Duration::from_secs(10),
            },
        )
    }

    fn validate(&self) -> Result<(), AuditError> {
        self.windows.validate()?;
        let t = &self.thresholds;
        if !(t.confidence > 0.0 && t.confidence < 1.0) {
            return Err(AuditError::Config(format!(
                "confidence must be in (0, 1), got {}",
                t.confidence
            )));
        }
        for (name, v) in [
            (
                "demographic_parity_difference",
                t.demographic_parity_difference,
            ),
            ("disparate_impact_ratio", t.disparate_impact_ratio),
            ("equalized_odds_difference", t.equalized_odds_difference),
            ("psi", t.psi),
            ("ks", t.ks),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(AuditError::Config(format!(
                    "threshold {name} must be finite and >= 0, got {v}"
                )));
            }
        }
        if self.job_name.is_empty() || self.job_name.len() > 200 {
            return Err(AuditError::Config("job name must be 1 to 200 bytes".into()));
        }
        if self.fine_bins < 10 {
            return Err(AuditError::Config("fine_bins must be at least 10".into()));
        }
        if self.publish_interval.is_zero() {
            return Err(AuditError::Config(
                "publish_interval must be positive".into(),
            ));
        }
        Ok(())
    }

    fn join_bound_ms(&self) -> i64 {
        i64::try_from(self.join_bound.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The decoder of the audit job.
type DecodeFn = fn(&AuditRaw) -> Result<(AuditInput, Timestamp), String>;

/// One run of the audit job.
type AuditJob = Job<AuditSource, DecodeFn, Auditor>;

struct Inner {
    config: AuditorConfig,
    references: Arc<dyn ReferenceSource>,
    live: Mutex<Option<LiveView>>,
    progress: Arc<Progress>,
    snapshot: RwLock<Arc<AuditState>>,
    persist: SnapshotStore,
    metrics: AuditMetrics,
    last_saved: Mutex<Option<String>>,
}

impl Inner {
    fn set_live(&self, live: Option<LiveView>) {
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = live;
    }

    /// The live view of the running job, once it holds its restored state.
    fn live(&self) -> Option<LiveView> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(LiveView::is_ready)
    }

    /// Builds one run of the job (restoring from the last checkpoint when it runs).
    fn job(
        self: &Arc<Self>,
        checkpoints: Arc<dyn CheckpointStore>,
        shard: u32,
        stop: watch::Receiver<bool>,
    ) -> Result<AuditJob, StreamError> {
        let c = &self.config;
        let source = AuditSource::new(
            c.store.clone(),
            c.vault.clone(),
            self.references.clone(),
            c.fine_bins,
            self.progress.clone(),
        )?;
        let auditor = Auditor::new(c.windows, c.join_bound_ms(), c.thresholds)
            .map_err(|e| StreamError::Config(e.to_string()))?;
        self.set_live(Some(auditor.live()));
        let config = JobConfig::new(c.job_name.clone())
            .shard(shard)
            .checkpoint_every(c.checkpoint_interval)
            .max_batch(c.max_batch)
            .out_of_orderness(c.out_of_orderness);
        let decode: DecodeFn = decode_raw;
        Ok(Job::new(
            config,
            source,
            decode,
            auditor,
            checkpoints,
            AuditSink::new(c.store.clone()),
        )
        .with_late_sink(FnSink(|batch: Vec<Emitted<Late<AuditInput>>>| {
            tracing::debug!(count = batch.len(), "late audit records");
            Ok(())
        }))
        .with_stop(stop))
    }

    async fn compute(&self, live: &LiveView) -> AuditState {
        let head = match self.config.store.head_position().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the log head for the audit lag");
                0
            }
        };
        let position = self.progress.position.load(Ordering::Relaxed);
        let lag_events = head.saturating_sub(position);
        let lag_seconds = if lag_events > 0 {
            let last = self.progress.recorded_at_ms.load(Ordering::Relaxed);
            ((Utc::now().timestamp_millis() - last).max(0) as f64) / 1000.0
        } else {
            0.0
        };
        AuditState {
            generated_at: Utc::now(),
            owner: true,
            position,
            head_position: head,
            lag_events,
            lag_seconds,
            late_records: live.late_records(),
            pending_outcomes: live.pending_outcomes(),
            max_event_time: live
                .max_event_time()
                .and_then(|t| Utc.timestamp_millis_opt(t).single()),
            thresholds: self.config.thresholds,
            current: live.audits(),
            last_closed: live.last_closed(),
            breaches: live.breaches().into_iter().map(Into::into).collect(),
        }
    }

    /// Refreshes the snapshot and gauges; persists when this process owns the auditor.
    async fn publish(&self) {
        let state = match self.live() {
            Some(live) => {
                let s = self.compute(&live).await;
                // Persist when anything but the clock changed.
                let mark = serde_json::to_string(&(
                    s.position,
                    s.late_records,
                    &s.current,
                    &s.last_closed,
                    &s.breaches,
                ))
                .unwrap_or_default();
                let changed = self
                    .last_saved
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_deref()
                    != Some(mark.as_str());
                if changed {
                    match self.persist.save(&s).await {
                        Ok(()) => {
                            *self.last_saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(mark);
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot persist the audit snapshot"),
                    }
                }
                Some(s)
            }
            None => match self.persist.load().await {
                Ok(Some(mut s)) => {
                    s.owner = false;
                    Some(s)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load the persisted audit snapshot");
                    None
                }
            },
        };
        if let Some(s) = state {
            self.metrics.update(&s);
            *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(s);
        }
    }
}

/// The running auditor: read its state, stop it.
pub struct AuditorHandle {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for AuditorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditorHandle")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl AuditorHandle {
    /// The latest published snapshot (refreshed every `publish_interval`).
    pub fn snapshot(&self) -> Arc<AuditState> {
        self.inner
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Refreshes the snapshot now and returns it.
    pub async fn refresh(&self) -> Arc<AuditState> {
        self.inner.publish().await;
        self.snapshot()
    }

    /// Whether this process runs the auditor at the moment.
    pub fn is_owner(&self) -> bool {
        self.inner
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// The gauges this auditor sets.
    pub fn metrics(&self) -> &AuditMetrics {
        &self.inner.metrics
    }

    /// Stops gracefully: the job flushes and checkpoints, the lease is released, the last
    /// snapshot is persisted.
    pub async fn stop(mut self) -> Result<(), AuditError> {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            if let Err(e) = t.await {
                tracing::warn!(error = %e, "auditor task failed");
            }
        }
        Ok(())
    }
}

impl Drop for AuditorHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn backoff(attempt: &mut u32, stop: &mut watch::Receiver<bool>) -> bool {
    let wait = Duration::from_millis(250u64 << (*attempt).min(7));
    *attempt += 1;
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = stop.changed() => true,
    }
}

async fn run_embedded(inner: Arc<Inner>, data_dir: PathBuf, mut stop: watch::Receiver<bool>) {
    let mut attempt = 0u32;
    loop {
        if *stop.borrow() {
            break;
        }
        let result = async {
            let cps: Arc<dyn CheckpointStore> =
                Arc::new(SqliteCheckpointStore::open(data_dir.join("audit-checkpoints.db")).await?);
            inner.job(cps, 0, stop.clone())?.run().await
        }
        .await;
        inner.publish().await;
        inner.set_live(None);
        match result {
            Ok(report) => {
                tracing::info!(
                    records = report.records,
                    checkpoints = report.checkpoints,
                    "auditor stopped"
                );
                if *stop.borrow() {
                    break;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "auditor failed; restarting from its last checkpoint")
            }
        }
        if backoff(&mut attempt, &mut stop).await {
            break;
        }
    }
}

async fn run_postgres(
    inner: Arc<Inner>,
    url: String,
    schema: String,
    owner: String,
    lease_ttl: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut attempt = 0u32;
    loop {
        if *stop.borrow() {
            break;
        }
        let result = async {
            let coordinator = Arc::new(PostgresCheckpointStore::connect(&url, &schema).await?);
            let worker = Worker::new(
                coordinator.clone(),
                WorkerConfig::new(inner.config.job_name.clone(), owner.clone(), 1)
                    .lease_ttl(lease_ttl),
            );
            let starter = inner.clone();
            let cps: Arc<dyn CheckpointStore> = coordinator.clone();
            let on_event_inner = inner.clone();
            worker
                .run(
                    move |task: PartitionTask| {
                        let inner = starter.clone();
                        let cps = cps.clone();
                        async move {
                            let job = inner
                                .job(cps, task.partition, task.stop.clone())?
                                .with_fence(task.fence.clone());
                            let result = job.run().await;
                            inner.publish().await;
                            result
                        }
                    },
                    move |ev: &WorkerEvent| {
                        tracing::info!(event = ?ev, "auditor lease");
                        if !matches!(ev, WorkerEvent::Claimed { .. }) {
                            on_event_inner.set_live(None);
                        }
                    },
                    stop.clone(),
                )
                .await
        }
        .await;
        inner.set_live(None);
        match result {
            Ok(()) => {
                if *stop.borrow() {
                    break;
                }
            }
            Err(e) => tracing::error!(error = %e, "auditor worker failed; retrying"),
        }
        if backoff(&mut attempt, &mut stop).await {
            break;
        }
    }
}

/// Starts the auditor; returns at once with a handle (the snapshot starts from the persisted
/// copy, if any).
pub async fn spawn_auditor(config: AuditorConfig) -> Result<AuditorHandle, AuditError> {
    config.validate()?;
    let persist = match &config.backend {
        Backend::Embedded { data_dir } => {
            std::fs::create_dir_all(data_dir)
                .map_err(|e| AuditError::Config(format!("data dir {}: {e}", data_dir.display())))?;
            SnapshotStore::file_in(data_dir)
        }
        Backend::Postgres { url, schema, .. } => {
            SnapshotStore::postgres(url, schema, &config.job_name).await?
        }
    };
    let references: Arc<dyn ReferenceSource> = config
        .references
        .clone()
        .unwrap_or_else(|| Arc::new(StoreReferences::new(config.store.clone())));
    let initial = match persist.load().await? {
        Some(mut s) => {
            s.owner = false;
            s
        }
        None => AuditState::empty(config.thresholds, false),
    };
    let metrics = config.metrics.clone().unwrap_or_default();
    metrics.update(&initial);
    let inner = Arc::new(Inner {
        references,
        live: Mutex::new(None),
        progress: Arc::new(Progress::default()),
        snapshot: RwLock::new(Arc::new(initial)),
        persist,
        metrics,
        last_saved: Mutex::new(None),
        config,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let runner = match inner.config.backend.clone() {
        Backend::Embedded { data_dir } => {
            tokio::spawn(run_embedded(inner.clone(), data_dir, stop_rx.clone()))
        }
        Backend::Postgres {
            url,
            schema,
            owner,
            lease_ttl,
        } => tokio::spawn(run_postgres(
            inner.clone(),
            url,
            schema,
            owner,
            lease_ttl,
            stop_rx.clone(),
        )),
    };
    let publisher = {
        let inner = inner.clone();
        let mut stop = stop_rx;
        tokio::spawn(async move {
            let every = inner.config.publish_interval;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => inner.publish().await,
                    _ = stop.changed() => break,
                }
            }
        })
    };
    Ok(AuditorHandle {
        inner,
        stop: stop_tx,
        tasks: vec![runner, publisher],
    })
}
