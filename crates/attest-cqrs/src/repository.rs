use std::marker::PhantomData;
use std::sync::Arc;

use attest_core::{ExpectedVersion, Metadata, NewEvent, StreamId, ValidationError, Version};
use attest_store::{
    AppendResult, Direction, EventStore, Snapshot, SnapshotStore, StoreError, StreamFrom,
};
use thiserror::Error;

use crate::{Aggregate, DomainEvent};

/// Events read per round trip while replaying.
const REPLAY_PAGE: usize = 4096;

/// Why a repository operation failed.
#[derive(Debug, Error)]
pub enum RepoError<E: std::error::Error + 'static> {
    /// The aggregate refused the command.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// The store failed (including a conflict that outlived the retries).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The aggregate id does not make a valid stream id.
    #[error(transparent)]
    InvalidId(#[from] ValidationError),
    /// A stored event could not be decoded into the aggregate's event type.
    #[error("cannot decode event {event_type} at version {version} of {stream}: {reason}")]
    Decode {
        /// The stream.
        stream: StreamId,
        /// Version of the bad event.
        version: Version,
        /// Its type.
        event_type: String,
        /// The decoder's message.
        reason: String,
    },
    /// An event could not be encoded.
    #[error("cannot encode event: {0}")]
    Encode(String),
}

/// An aggregate as loaded: its state and the version it reflects (`None`: no events yet).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// Version of the last applied event.
    pub version: Option<Version>,
    /// Version of the snapshot the load started from, if one was used.
    pub from_snapshot: Option<Version>,
}

/// The result of a command that was accepted.
#[derive(Debug, Clone)]
pub struct CommandOutcome<A: Aggregate> {
    /// The events it produced (empty when the command changed nothing).
    pub events: Vec<A::Event>,
    /// Where they were appended (`None` when there were no events).
    pub append: Option<AppendResult>,
    /// The state after the events.
    pub state: A,
    /// Attempts it took (1 unless a concurrent writer forced a retry).
    pub attempts: usize,
}

/// Loads and saves aggregates of one type.
pub struct Repository<A: Aggregate> {
    store: Arc<dyn EventStore>,
    snapshots: Option<Arc<dyn SnapshotStore>>,
    snapshot_every: u64,
    max_attempts: usize,
    _marker: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Repository {
            store: self.store.clone(),
            snapshots: self.snapshots.clone(),
            snapshot_every: self.snapshot_every,
            max_attempts: self.max_attempts,
            _marker: PhantomData,
        }
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository over `store`, without snapshots, retrying conflicts up to 5 attempts.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Repository {
            store,
            snapshots: None,
            snapshot_every: A::SNAPSHOT_EVERY,
            max_attempts: 5,
            _marker: PhantomData,
        }
    }

    /// Keeps snapshots in `snapshots` every [`Aggregate::SNAPSHOT_EVERY`] events.
    pub fn with_snapshots(mut self, snapshots: Arc<dyn SnapshotStore>) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// Overrides the snapshot interval for this repository (0 disables taking snapshots).
    pub fn snapshot_every(mut self, n: u64) -> Self {
        self.snapshot_every = n;
        self
    }

    /// How many times [`Repository::execute`] tries a command before giving up on conflicts.
    pub fn max_attempts(mut self, n: usize) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The stream of aggregate `id`.
    pub fn stream_id(id: &str) -> Result<StreamId, ValidationError> {
        StreamId::new(format!("{}-{}", A::CATEGORY, id))
    }

    /// Loads aggregate `id`: latest compatible snapshot, then every later event.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, RepoError<A::Error>> {
        let stream = Self::stream_id(id)?;
        let mut state = A::default();
        let mut version = None;
        let mut from_snapshot = None;
        if let Some(snaps) = &self.snapshots {
            match snaps.load_snapshot(&stream).await {
                Ok(Some(s)) if s.state_version == A::STATE_VERSION => {
                    match serde_json::from_slice::<A>(&s.payload) {
                        Ok(st) => {
                            state = st;
                            version = Some(s.version);
                            from_snapshot = Some(s.version);
                        }
                        Err(e) => {
                            tracing::warn!(%stream, error = %e, "ignoring undecodable snapshot")
                        }
                    }
                }
                Ok(Some(s)) => tracing::debug!(
                    %stream,
                    snapshot_state_version = s.state_version,
                    current = A::STATE_VERSION,
                    "ignoring snapshot of another state version"
                ),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%stream, error = %e, "snapshot store failed; replaying the log")
                }
            }
        }
        self.replay(&stream, &mut state, &mut version).await?;
        Ok(Loaded {
            state,
            version,
            from_snapshot,
        })
    }

    /// Loads aggregate `id` by replaying its whole stream, ignoring snapshots.
    pub async fn load_without_snapshot(&self, id: &str) -> Result<Loaded<A>, RepoError<A::Error>> {
        let stream = Self::stream_id(id)?;
        let mut state = A::default();
        let mut version = None;
        self.replay(&stream, &mut state, &mut version).await?;
        Ok(Loaded {
            state,
            version,
            from_snapshot: None,
        })
    }

    async fn replay(
        &self,
        stream: &StreamId,
        state: &mut A,
        version: &mut Option<Version>,
    ) -> Result<(), RepoError<A::Error>> {
        loop {
            let from = version.map_or(0, |v| v + 1);
            let page = match self
                .store
                .read_stream(
                    stream,
                    StreamFrom::Version(from),
                    Direction::Forward,
                    REPLAY_PAGE,
                )
                .await
            {
                Ok(p) => p,
                Err(StoreError::StreamNotFound { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let n = page.len();
            for rec in page {
                let ev: A::Event =
                    serde_json::from_slice(&rec.payload).map_err(|e| RepoError::Decode {
                        stream: stream.clone(),
                        version: rec.version,
                        event_type: rec.event_type.to_string(),
                        reason: e.to_string(),
                    })?;
                state.apply(&ev);
                *version = Some(rec.version);
            }
            if n < REPLAY_PAGE {
                return Ok(());
            }
        }
    }

    /// Appends `events` to aggregate `id` expecting it at `expected` (`None`: no stream yet).
    pub async fn save(
        &self,
        id: &str,
        expected: Option<Version>,
        events: &[A::Event],
        metadata: &Metadata,
    ) -> Result<AppendResult, RepoError<A::Error>> {
        let stream = Self::stream_id(id)?;
        let new_events = events
            .iter()
            .map(|e| {
                NewEvent::json(e.event_type(), e)
                    .map(|n| n.with_metadata(metadata.clone()))
                    .map_err(|e| RepoError::Encode(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let expected = expected.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        Ok(self.store.append(stream, expected, new_events).await?)
    }

    /// Loads `id`, handles `command`, appends the events with the loaded version as the
    /// expectation, and on a conflict reloads and decides again (up to the configured attempts).
    /// Takes a snapshot when the new version crosses a multiple of the snapshot interval.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<CommandOutcome<A>, RepoError<A::Error>>
    where
        A::Command: Clone,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Loaded {
                mut state, version, ..
            } = self.load(id).await?;
            let events = state.handle(command.clone()).map_err(RepoError::Rejected)?;
            if events.is_empty() {
                return Ok(CommandOutcome {
                    events,
                    append: None,
                    state,
                    attempts: attempt,
                });
            }
            match self.save(id, version, &events, &metadata).await {
                Ok(append) => {
                    for e in &events {
                        state.apply(e);
                    }
                    let new_version = append.streams[0].last_version;
                    self.maybe_snapshot(id, version, new_version, &state).await;
                    return Ok(CommandOutcome {
                        events,
                        append: Some(append),
                        state,
                        attempts: attempt,
                    });
                }
                Err(RepoError::Store(StoreError::WrongExpectedVersion { .. }))
                    if attempt < self.max_attempts =>
                {
                    tracing::debug!(id, attempt, "conflict, retrying command on fresh state");
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn maybe_snapshot(&self, id: &str, old: Option<Version>, new: Version, state: &A) {
        let (Some(snaps), n) = (&self.snapshots, self.snapshot_every) else {
            return;
        };
        if n == 0 {
            return;
        }
        // Event counts before and after: version v means v + 1 events.
        let before = old.map_or(0, |v| v + 1);
        let after = new + 1;
        if before / n == after / n {
            return;
        }
        if let Err(e) = self.snapshot_now(id, new, state, snaps.as_ref()).await {
            tracing::warn!(id, error = %e, "could not save snapshot");
        }
    }

    async fn snapshot_now(
        &self,
        id: &str,
        version: Version,
        state: &A,
        snaps: &dyn SnapshotStore,
    ) -> Result<(), RepoError<A::Error>> {
        let payload = serde_json::to_vec(state).map_err(|e| RepoError::Encode(e.to_string()))?;
        snaps
            .save_snapshot(&Snapshot {
                stream: Self::stream_id(id)?,
                version,
                state_version: A::STATE_VERSION,
                payload,
                taken_at: chrono::Utc::now(),
            })
            .await?;
        Ok(())
    }

    /// Loads `id` and stores a snapshot of its current state right away (no-op without a
    /// snapshot store or events). Returns the snapshot's version.
    pub async fn take_snapshot(&self, id: &str) -> Result<Option<Version>, RepoError<A::Error>> {
        let Some(snaps) = self.snapshots.clone() else {
            return Ok(None);
        };
        let loaded = self.load(id).await?;
        let Some(v) = loaded.version else {
            return Ok(None);
        };
        self.snapshot_now(id, v, &loaded.state, snaps.as_ref())
            .await?;
        Ok(Some(v))
    }
}
