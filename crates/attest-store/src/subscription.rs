//! Catch-up-then-live subscriptions to the global log.
//!
//! A [`Subscription`] reads pages of the log after its checkpoint with
//! [`EventStore::read_all`]; when a page comes back empty it waits on the store's head watch
//! and reads again. Because the log is gap-free and `read_all` only returns committed events,
//! reading "everything after the last position I handed out" never skips an event, and the
//! hand-over from catch-up to live is the same code path as catch-up itself: there is no
//! window in which an event can fall between the two.
//!
//! Delivery is at-least-once relative to the subscriber's own checkpoint: persist
//! [`Subscription::checkpoint`] after handling an event, and resume from it.

use std::collections::VecDeque;
use std::sync::Arc;

use attest_core::{Position, RecordedEvent};
use futures::Stream;
use tokio::sync::watch;

use crate::{EventStore, LogFilter, StoreError};

/// Default number of events fetched per read.
pub const DEFAULT_PAGE: usize = 1024;

/// A subscription to the global log (or one category of it).
pub struct Subscription {
    store: Arc<dyn EventStore>,
    filter: LogFilter,
    checkpoint: Position,
    read_after: Position,
    buffer: VecDeque<RecordedEvent>,
    head: watch::Receiver<Position>,
    page: usize,
}

impl Subscription {
    /// Subscribes from `checkpoint`: the first event delivered is the first one with a position
    /// greater than `checkpoint` that matches `filter` (0 = from the beginning).
    pub fn new(store: Arc<dyn EventStore>, checkpoint: Position, filter: LogFilter) -> Self {
        let head = store.head_watch();
        Subscription {
            store,
            filter,
            checkpoint,
            read_after: checkpoint,
            buffer: VecDeque::new(),
            head,
            page: DEFAULT_PAGE,
        }
    }

    /// Sets how many events are fetched per read (at least 1).
    pub fn with_page_size(mut self, page: usize) -> Self {
        self.page = page.max(1);
        self
    }

    /// Position of the last event handed out (or the starting checkpoint).
    pub fn checkpoint(&self) -> Position {
        self.checkpoint
    }

    /// The next event, waiting for one to be committed if the subscription is caught up.
    ///
    /// Fails with [`StoreError::Closed`] when the store shuts down, or with the read error.
    pub async fn next(&mut self) -> Result<RecordedEvent, StoreError> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                self.checkpoint = e.position;
                return Ok(e);
            }
            // Mark the current head as seen *before* reading, so a commit that lands after the
            // read wakes us up instead of being missed.
            let head_seen = *self.head.borrow_and_update();
            if self.fill().await? {
                continue;
            }
            // Nothing after `read_after`. For filtered reads we may skip ahead to the head we
            // saw before reading: every position up to it was committed and has been scanned.
            if head_seen > self.read_after && self.filter != LogFilter::All {
                self.read_after = head_seen;
            }
            if self.head.changed().await.is_err() {
                return Err(StoreError::Closed);
            }
        }
    }

    /// Returns the next event if one is already committed, without waiting.
    pub async fn try_next(&mut self) -> Result<Option<RecordedEvent>, StoreError> {
        if self.buffer.is_empty() && !self.fill().await? {
            return Ok(None);
        }
        let e = self.buffer.pop_front();
        if let Some(e) = &e {
            self.checkpoint = e.position;
        }
        Ok(e)
    }

    async fn fill(&mut self) -> Result<bool, StoreError> {
        let page = self
            .store
            .read_all(self.read_after, self.page, &self.filter)
            .await?;
        if let Some(last) = page.last() {
            debug_assert!(last.position > self.read_after);
            self.read_after = last.position;
            self.buffer.extend(page);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Turns the subscription into a `Stream` of events.
    pub fn into_stream(self) -> impl Stream<Item = Result<RecordedEvent, StoreError>> + Send {
        futures::stream::unfold(self, |mut sub| async move {
            let item = sub.next().await;
            let stop = matches!(item, Err(StoreError::Closed));
            if stop {
                None
            } else {
                Some((item, sub))
            }
        })
    }
}
