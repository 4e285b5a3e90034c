//! Scale-out workers: each takes a fair share of a job's partitions through leases.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::checkpoint::{Fence, Lease, PostgresCheckpointStore};
use super::runner::RunReport;
use crate::StreamError;

/// How a worker takes part in a job.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The job (lease and checkpoint key).
    pub job: String,
    /// This worker's id (unique among the job's workers, e.g. `host-pid`).
    pub owner: String,
    /// Number of partitions of the job.
    pub partitions: u32,
    /// Lease duration: a dead worker's partitions are taken over after at most this long
    /// (default 10 s).
    pub lease_ttl: Duration,
    /// How often leases are renewed and shares rebalanced (default a third of the TTL).
    pub tick: Duration,
}

impl WorkerConfig {
    /// Defaults for worker `owner` of `job` with `partitions` partitions.
    pub fn new(job: impl Into<String>, owner: impl Into<String>, partitions: u32) -> Self {
        WorkerConfig {
            job: job.into(),
            owner: owner.into(),
            partitions: partitions.max(1),
            lease_ttl: Duration::from_secs(10),
            tick: Duration::from_millis(3333),
        }
    }

    /// Sets the lease TTL and a tick of a third of it.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self.tick = ttl / 3;
        self
    }
}

/// One partition handed to the job-starting closure.
#[derive(Debug, Clone)]
pub struct PartitionTask {
    /// The partition (use it as the job's shard).
    pub partition: u32,
    /// The lease to commit under ([`super::Job::with_fence`]).
    pub fence: Fence,
    /// Turns `true` when the worker wants the partition back ([`super::Job::with_stop`]).
    pub stop: watch::Receiver<bool>,
}

/// What a worker did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    /// It took a partition under a lease of this epoch.
    Claimed {
        /// Partition.
        partition: u32,
        /// Lease epoch.
        epoch: i64,
    },
    /// It gave a partition back (rebalance or shutdown) after its job stopped.
    Released {
        /// Partition.
        partition: u32,
    },
    /// Its lease was taken over; its job was aborted.
    Lost {
        /// Partition.
        partition: u32,
    },
    /// The partition's job ended by itself (error or end of input); the lease is released.
    Ended {
        /// Partition.
        partition: u32,
        /// The error, if it failed.
        error: Option<String>,
    },
}

struct Owned {
    lease: Lease,
    stop: watch::Sender<bool>,
    handle: JoinHandle<Result<RunReport, StreamError>>,
}

/// A worker of a scale-out job. Every tick it
/// 1. heartbeats in `stream_members` and counts the live workers `w`;
/// 2. renews its leases (a lease found taken over aborts that partition's job: its commits
///    would be fenced anyway);
/// 3. keeps `ceil(partitions / w)` partitions: gives extras back (graceful stop: flush and a
///    final fenced checkpoint, then release) or claims free / expired ones and starts a job
///    for each through the closure.
///
/// A killed worker stops renewing: after the lease TTL its partitions are claimable, and the
/// survivors take them over from their last checkpoints.
pub struct Worker {
    coordinator: Arc<PostgresCheckpointStore>,
    config: WorkerConfig,
}

impl Worker {
    /// A worker coordinating through `coordinator` (which also stores the checkpoints).
    pub fn new(coordinator: Arc<PostgresCheckpointStore>, config: WorkerConfig) -> Self {
        Worker {
            coordinator,
            config,
        }
    }

    /// Runs until `stop` turns true, starting a job per owned partition with `start`.
    pub async fn run<F, Fut>(
        &self,
        mut start: F,
        on_event: impl Fn(&WorkerEvent) + Send,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), StreamError>
    where
        F: FnMut(PartitionTask) -> Fut,
        Fut: Future<Output = Result<RunReport, StreamError>> + Send + 'static,
    {
        let c = &self.config;
        let job = c.job.as_str();
        let mut owned: BTreeMap<u32, Owned> = BTreeMap::new();
        let result = loop {
            if *stop.borrow() {
                break Ok(());
            }
            if let Err(e) = self.tick(&mut owned, &mut start, &on_event).await {
                break Err(e);
            }
            tokio::select! {
                _ = tokio::time::sleep(c.tick) => {}
                _ = stop.changed() => {}
            }
        };
        // Shutdown: stop every job gracefully, then give the partitions back.
        for (p, o) in std::mem::take(&mut owned) {
            let _ = o.stop.send(true);
            match o.handle.await {
                Ok(Err(e)) => tracing::warn!(job, partition = p, error = %e, "job failed at stop"),
                Err(e) => tracing::warn!(job, partition = p, error = %e, "job task failed"),
                Ok(Ok(_)) => {}
            }
            self.coordinator.release(job, &o.lease).await?;
            on_event(&WorkerEvent::Released { partition: p });
        }
        self.coordinator.leave(job, &c.owner).await?;
        result
    }

    async fn tick<F, Fut>(
        &self,
        owned: &mut BTreeMap<u32, Owned>,
        start: &mut F,
        on_event: &(impl Fn(&WorkerEvent) + Send),
    ) -> Result<(), StreamError>
    where
        F: FnMut(PartitionTask) -> Fut,
        Fut: Future<Output = Result<RunReport, StreamError>> + Send + 'static,
    {
        let c = &self.config;
        let job = c.job.as_str();
        let live = self
            .coordinator
            .heartbeat(job, &c.owner, c.lease_ttl)
            .await?;

        // Jobs that ended by themselves.
        let ended: Vec<u32> = owned
            .iter()
            .filter(|(_, o)| o.handle.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for p in ended {
            if let Some(o) = owned.remove(&p) {
                let error = match o.handle.await {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(e) = &error {
                    tracing::warn!(job, partition = p, error = %e, "partition job failed");
                }
                self.coordinator.release(job, &o.lease).await?;
                on_event(&WorkerEvent::Ended {
                    partition: p,
                    error,
                });
            }
        }

        // Renew, dropping what was taken over.
        let mut lost = Vec::new();
        for (p, o) in owned.iter() {
            if !self.coordinator.renew(job, &o.lease, c.lease_ttl).await? {
                lost.push(*p);
            }
        }
        for p in lost {
            if let Some(o) = owned.remove(&p) {
                o.handle.abort();
                tracing::warn!(job, partition = p, "lease taken over; job aborted");
                on_event(&WorkerEvent::Lost { partition: p });
            }
        }

        let share = c.partitions.div_ceil(live.max(1)) as usize;
        // Give extras back, highest partitions first.
        while owned.len() > share {
            let Some((p, o)) = owned.pop_last() else {
                break;
            };
            let _ = o.stop.send(true);
            match o.handle.await {
                Ok(Err(e)) => tracing::warn!(job, partition = p, error = %e, "job failed at stop"),
                Err(e) => tracing::warn!(job, partition = p, error = %e, "job task failed"),
                Ok(Ok(_)) => {}
            }
            self.coordinator.release(job, &o.lease).await?;
            on_event(&WorkerEvent::Released { partition: p });
        }
        // Claim free ones, starting at an owner-dependent offset so that workers starting
        // together try different partitions first.
        if owned.len() < share {
            let n = c.partitions;
            let offset = super::ids::partition_of(c.owner.as_bytes(), n);
            for k in 0..n {
                if owned.len() >= share {
                    break;
                }
                let p = (offset + k) % n;
                if owned.contains_key(&p) {
                    continue;
                }
                if let Some(lease) = self
                    .coordinator
                    .claim(job, p, &c.owner, c.lease_ttl)
                    .await?
                {
                    let (tx, rx) = watch::channel(false);
                    let task = PartitionTask {
                        partition: p,
                        fence: lease.fence.clone(),
                        stop: rx,
                    };
                    let epoch = lease.fence.epoch;
                    let handle = tokio::spawn(start(task));
                    owned.insert(
                        p,
                        Owned {
                            lease,
                            stop: tx,
                            handle,
                        },
                    );
                    tracing::info!(job, partition = p, epoch, owner = %c.owner, "partition claimed");
                    on_event(&WorkerEvent::Claimed {
                        partition: p,
                        epoch,
                    });
                }
            }
        }
        Ok(())
    }
}
