//! The backend-independent part of a projector: feeding batches, retries, parking, rebuilds.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use attest_core::{Position, RecordedEvent};
use attest_store::{EventStore, LogFilter, StoreError, Subscription};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    age_seconds, HandlerError, ParkedEvent, ProjectionError, ProjectionLag, ProjectorOptions,
    RebuildReport, ReplayOutcome,
};

/// Result of one read-model transaction.
pub(crate) enum Commit {
    /// Committed; the checkpoint moved to the last event of the range.
    Done,
    /// The handler failed on the event at this index of the range; nothing was committed.
    Failed { index: usize, error: HandlerError },
    /// The generation is no longer active or building; nothing was committed.
    Retired,
    /// The stored checkpoint is not the one the runner started from (another runner moved it);
    /// nothing was committed.
    Conflict,
}

/// A read-model database as the driver sees it. Every method is one transaction.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// The projection's name.
    fn name(&self) -> &str;
    /// The active generation and its checkpoint.
    async fn active(&self) -> Result<(u64, Position), ProjectionError>;
    /// Applies `events[range]` to `generation`, moving its checkpoint from `from` to the last
    /// event's position, all in one transaction.
    async fn commit(
        &self,
        generation: u64,
        from: Position,
        events: Arc<Vec<RecordedEvent>>,
        range: Range<usize>,
    ) -> Result<Commit, ProjectionError>;
    /// Records `event` as parked and moves the checkpoint from `from` past it.
    async fn park(
        &self,
        generation: u64,
        from: Position,
        event: &RecordedEvent,
        error: String,
        attempts: u32,
    ) -> Result<Commit, ProjectionError>;
    /// Creates a new generation (tables + checkpoint 0, status building).
    async fn create_generation(&self) -> Result<u64, ProjectionError>;
    /// Makes `generation` active if its checkpoint `at` is not behind the active one: views
    /// switched, old tables dropped, in one transaction. `Ok(None)` when it is behind.
    async fn try_switch(
        &self,
        generation: u64,
        at: Position,
    ) -> Result<Option<u64>, ProjectionError>;
    /// Parked events of the active generation.
    async fn parked(&self) -> Result<Vec<ParkedEvent>, ProjectionError>;
    /// Retries a parked event of the active generation.
    async fn replay(
        &self,
        parked: ParkedEvent,
        event: RecordedEvent,
    ) -> Result<ReplayOutcome, ProjectionError>;
}

/// Most events fetched from the store per read.
const READ_PAGE: usize = 2048;

enum Step {
    Continue,
    Restart,
}

/// Aborts a spawned task when dropped, so a cancelled runner leaves no reader behind.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Clone, Copy)]
enum Feed {
    /// Catch-up then live, forever.
    Live,
    /// Until a read comes back empty.
    UntilHead,
}

pub(crate) struct Driver<B: Backend> {
    pub(crate) backend: Arc<B>,
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) options: ProjectorOptions,
}

impl<B: Backend> Clone for Driver<B> {
    fn clone(&self) -> Self {
        Driver {
            backend: self.backend.clone(),
            store: self.store.clone(),
            options: self.options.clone(),
        }
    }
}

impl<B: Backend> Driver<B> {
    /// Reads batches into a small channel so the next read overlaps the current apply.
    fn spawn_reader(
        &self,
        after: Position,
        feed: Feed,
    ) -> (
        mpsc::Receiver<Result<Vec<RecordedEvent>, StoreError>>,
        AbortOnDrop<()>,
    ) {
        // Reads in pages of at most READ_PAGE events; the applier merges the pages already
        // waiting into one transaction of up to `batch_size` events. The channel holds two
        // transactions' worth of pages, so reading runs ahead of applying.
        let batch = READ_PAGE.min(self.options.batch_size.max(1));
        let depth = (2 * self.options.batch_size.max(1)).div_ceil(batch).max(2);
        let (tx, rx) = mpsc::channel(depth);
        let store = self.store.clone();
        let handle = tokio::spawn(async move {
            match feed {
                Feed::UntilHead => {
                    let mut after = after;
                    loop {
                        let page = match store.read_all(after, batch, &LogFilter::All).await {
                            Ok(p) => p,
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        };
                        let Some(last) = page.last() else { return };
                        after = last.position;
                        if tx.send(Ok(page)).await.is_err() {
                            return;
                        }
                    }
                }
                Feed::Live => {
                    let mut sub =
                        Subscription::new(store, after, LogFilter::All).with_page_size(batch);
                    loop {
                        let mut page = Vec::with_capacity(batch);
                        let first = sub.next().await;
                        let res = match first {
                            Ok(e) => {
                                page.push(e);
                                let mut res = Ok(());
                                while page.len() < batch {
                                    match sub.try_next().await {
                                        Ok(Some(e)) => page.push(e),
                                        Ok(None) => break,
                                        Err(e) => {
                                            res = Err(e);
                                            break;
                                        }
                                    }
                                }
                                res
                            }
                            Err(e) => Err(e),
                        };
                        let stop = res.is_err();
                        if !page.is_empty() && tx.send(Ok(page)).await.is_err() {
                            return;
                        }
                        if let Err(e) = res {
                            let _ = tx.send(Err(e)).await;
                        }
                        if stop {
                            return;
                        }
                    }
                }
            }
        });
        (rx, AbortOnDrop(handle))
    }

    /// Applies one batch: fast path in one transaction; on a handler failure, commits the
    /// prefix that succeeded, retries the failing event, parks it if it keeps failing.
    async fn apply(
        &self,
        generation: u64,
        checkpoint: &mut Position,
        events: Vec<RecordedEvent>,
    ) -> Result<Step, ProjectionError> {
        let events = Arc::new(events);
        let n = events.len();
        let mut start = 0;
        while start < n {
            let mut end = n;
            loop {
                match self
                    .backend
                    .commit(generation, *checkpoint, events.clone(), start..end)
                    .await?
                {
                    Commit::Done => {
                        *checkpoint = events[end - 1].position;
                        start = end;
                        break;
                    }
                    Commit::Retired | Commit::Conflict => return Ok(Step::Restart),
                    Commit::Failed { index: 0, error } => {
                        match self
                            .retry_or_park(generation, checkpoint, &events, start, error)
                            .await?
                        {
                            Step::Continue => {
                                start += 1;
                                break;
                            }
                            Step::Restart => return Ok(Step::Restart),
                        }
                    }
                    Commit::Failed { index, .. } => end = start + index,
                }
            }
        }
        Ok(Step::Continue)
    }

    async fn retry_or_park(
        &self,
        generation: u64,
        checkpoint: &mut Position,
        events: &Arc<Vec<RecordedEvent>>,
        at: usize,
        first_error: HandlerError,
    ) -> Result<Step, ProjectionError> {
        let policy = self.options.retry;
        let event = &events[at];
        let mut error = first_error;
        let mut attempts = 1u32;
        while attempts < policy.max_attempts.max(1) {
            let wait = policy.backoff(attempts);
            tracing::warn!(
                projection = self.backend.name(),
                position = event.position,
                event_type = event.event_type.as_str(),
                attempt = attempts,
                error = %error,
                "projection handler failed; retrying in {wait:?}"
            );
            tokio::time::sleep(wait).await;
            attempts += 1;
            match self
                .backend
                .commit(generation, *checkpoint, events.clone(), at..at + 1)
                .await?
            {
                Commit::Done => {
                    *checkpoint = event.position;
                    return Ok(Step::Continue);
                }
                Commit::Failed { error: e, .. } => error = e,
                Commit::Retired | Commit::Conflict => return Ok(Step::Restart),
            }
        }
        tracing::error!(
            projection = self.backend.name(),
            position = event.position,
            event_id = %event.id,
            event_type = event.event_type.as_str(),
            attempts,
            error = %error,
            "projection handler keeps failing; event parked"
        );
        match self
            .backend
            .park(generation, *checkpoint, event, error.to_string(), attempts)
            .await?
        {
            Commit::Done => {
                *checkpoint = event.position;
                Ok(Step::Continue)
            }
            _ => Ok(Step::Restart),
        }
    }

    /// Processes events into `generation` until the feed ends (or forever for `Live`).
    /// `Ok(true)`: the feed ended; `Ok(false)`: the generation changed under us.
    async fn drive(
        &self,
        generation: u64,
        checkpoint: &mut Position,
        feed: Feed,
    ) -> Result<bool, ProjectionError> {
        let (mut rx, _reader) = self.spawn_reader(*checkpoint, feed);
        let max = self.options.batch_size.max(1);
        let mut pending_error = None;
        while let Some(first) = rx.recv().await {
            let mut batch = match first {
                Ok(b) => b,
                Err(StoreError::Closed) => return Ok(true),
                Err(e) => return Err(e.into()),
            };
            // Merge pages that are already waiting, without waiting for more.
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(Ok(more)) => batch.extend(more),
                    Ok(Err(e)) => {
                        pending_error = Some(e);
                        break;
                    }
                    Err(_) => break,
                }
            }
            if let Step::Restart = self.apply(generation, checkpoint, batch).await? {
                return Ok(false);
            }
            match pending_error.take() {
                None => {}
                Some(StoreError::Closed) => return Ok(true),
                Some(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    pub(crate) async fn catch_up(&self) -> Result<Position, ProjectionError> {
        loop {
            let (generation, mut checkpoint) = self.backend.active().await?;
            if self
                .drive(generation, &mut checkpoint, Feed::UntilHead)
                .await?
            {
                return Ok(checkpoint);
            }
        }
    }

    pub(crate) async fn run(&self) -> Result<(), ProjectionError> {
        loop {
            let (generation, mut checkpoint) = self.backend.active().await?;
            tracing::info!(
                projection = self.backend.name(),
                generation,
                checkpoint,
                "projection runner (re)starting"
            );
            match self.drive(generation, &mut checkpoint, Feed::Live).await {
                Ok(true) => return Ok(()),
                Ok(false) => continue,
                Err(e) => {
                    tracing::error!(projection = self.backend.name(), error = %e, "projection runner stopped");
                    return Err(e);
                }
            }
        }
    }

    pub(crate) async fn rebuild(&self) -> Result<RebuildReport, ProjectionError> {
        let generation = self.backend.create_generation().await?;
        tracing::info!(
            projection = self.backend.name(),
            generation,
            "rebuild started"
        );
        let mut checkpoint = 0;
        loop {
            if !self
                .drive(generation, &mut checkpoint, Feed::UntilHead)
                .await?
            {
                return Err(ProjectionError::GenerationRetired {
                    name: self.backend.name().to_string(),
                    generation,
                });
            }
            if let Some(replaced) = self.backend.try_switch(generation, checkpoint).await? {
                tracing::info!(
                    projection = self.backend.name(),
                    generation,
                    replaced,
                    position = checkpoint,
                    "rebuild switched"
                );
                return Ok(RebuildReport {
                    generation,
                    replaced,
                    position: checkpoint,
                });
            }
        }
    }

    pub(crate) async fn lag(&self) -> Result<ProjectionLag, ProjectionError> {
        let (generation, checkpoint) = self.backend.active().await?;
        let head = self.store.head_position().await?;
        let events = head.saturating_sub(checkpoint);
        let seconds = if events > 0 {
            self.store
                .read_all(checkpoint, 1, &LogFilter::All)
                .await?
                .first()
                .map_or(0.0, age_seconds)
        } else {
            0.0
        };
        Ok(ProjectionLag {
            name: self.backend.name().to_string(),
            generation,
            checkpoint,
            head,
            events,
            seconds,
        })
    }

    pub(crate) async fn replay_parked(
        &self,
        position: Position,
    ) -> Result<ReplayOutcome, ProjectionError> {
        let parked = self
            .backend
            .parked()
            .await?
            .into_iter()
            .find(|p| p.position == position)
            .ok_or_else(|| ProjectionError::NotParked {
                name: self.backend.name().to_string(),
                position,
            })?;
        let event = self
            .store
            .read_all(position.saturating_sub(1), 1, &LogFilter::All)
            .await?
            .into_iter()
            .next()
            .filter(|e| e.position == position && e.id == parked.event_id)
            .ok_or(ProjectionError::ParkedEventGone(position))?;
        self.backend.replay(parked, event).await
    }
}
