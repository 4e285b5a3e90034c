//! SQLite backend (embedded default).
//!
//! One file (`events.db` by default) in WAL mode holds the log, the stream records, the head
//! position and the snapshots. One OS thread owns the write connection and folds concurrent
//! requests into group commits: it drains up to `max_group_commit` queued requests, runs each
//! in its own savepoint inside one transaction (a failing request rolls back alone), commits
//! once (one fsync when durable), publishes the new head and answers everyone. Reads run on a
//! small pool of read-only connections from `tokio::task::spawn_blocking`, so they never
//! block the writer nor a tokio worker.
//!
//! One process should write a given file at a time (the writer caches stream versions and
//! notices other connections' commits through `PRAGMA data_version`, so a second writer is
//! safe but its commits are not seen by this store's head watch).
//!
//! ```no_run
//! # async fn demo() -> Result<(), attest_store::StoreError> {
//! use attest_core::{ExpectedVersion, NewEvent};
//! use attest_store::{sqlite::SqliteStore, EventStore, StoreOptions};
//! let store = SqliteStore::open("/tmp/events.db", StoreOptions::default())?;
//! let ev = NewEvent::json("LoanApplicationSubmitted", &serde_json::json!({"amount": 1000}))?;
//! store.append("loan-1".parse()?, ExpectedVersion::NoStream, vec![ev]).await?;
//! store.close().await;
//! # Ok(()) }
//! ```

mod codec;
mod reader;
mod schema;
mod snapshots;
mod watcher;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use attest_core::{ExpectedVersion, Position, RecordedEvent, StreamId};
use tokio::sync::{mpsc, oneshot, watch};

pub use schema::{SqliteSetupError, SCHEMA_VERSION};
pub use snapshots::SqliteSnapshotStore;

use reader::{ReadConn, ReaderPool};
use writer::{Command, Request, Writer};

use crate::{
    validate, AppendResult, DeleteMode, Direction, EventStore, LogFilter, Result, StoreError,
    StoreOptions, StoreStats, StreamAppend, StreamFrom, StreamInfo, StreamMetadata,
};

/// File name used by [`SqliteStore::open_default`].
pub const DEFAULT_FILE: &str = "events.db";

/// Idle read-only connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;

/// The embedded event store: one SQLite file, one writer thread with group commit, pooled
/// readers.
pub struct SqliteStore {
    path: PathBuf,
    options: StoreOptions,
    tx: mpsc::UnboundedSender<Command>,
    head_rx: watch::Receiver<Position>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<ReaderPool>,
    closed: AtomicBool,
    /// Tells the cross-process commit watcher to stop.
    watcher_stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the store file at `path`, creating it and its schema if absent, and starts the
    /// writer thread. Fails with [`StoreError::Backend`] wrapping a [`SqliteSetupError`] if the
    /// file was written by a newer schema version.
    pub fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Arc<SqliteStore>> {
        let path = path.as_ref().to_path_buf();
        let mut conn = schema::open_rw(&path, options.durable)?;
        schema::ensure_schema(&mut conn, &path)?;
        let readers = Arc::new(ReaderPool::new(path.clone(), MAX_IDLE_READERS));
        let head = readers.with(ReadConn::head)?;
        let (head_tx, head_rx) = watch::channel(head);
        let head_tx = Arc::new(head_tx);
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer::new(conn, head_tx.clone(), options.max_group_commit);
        let handle = std::thread::Builder::new()
            .name("attest-sqlite-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::backend("sqlite", e))?;
        let watcher_stop = Arc::new(AtomicBool::new(false));
        watcher::spawn(path.clone(), head_tx, watcher_stop.clone())
            .map_err(|e| StoreError::backend("sqlite", e))?;
        tracing::info!(path = %path.display(), head, durable = options.durable, "sqlite event store opened");
        Ok(Arc::new(SqliteStore {
            path,
            options,
            tx,
            head_rx,
            writer: Mutex::new(Some(handle)),
            readers,
            closed: AtomicBool::new(false),
            watcher_stop,
        }))
    }

    /// Opens `<dir>/events.db`, creating `dir` if needed.
    pub fn open_default(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Arc<SqliteStore>> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| StoreError::backend("sqlite", e))?;
        Self::open(dir.join(DEFAULT_FILE), options)
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the writer after the requests already queued, waits for it, and drops the
    /// read connections. Later calls fail with [`StoreError::Closed`]. Idempotent.
    pub async fn close(&self) {
        let handle = self.begin_close();
        if let Some(h) = handle {
            if tokio::task::spawn_blocking(move || h.join()).await.is_err() {
                tracing::warn!("sqlite writer thread could not be joined");
            }
        }
        self.readers.clear();
    }

    fn begin_close(&self) -> Option<JoinHandle<()>> {
        self.closed.store(true, Ordering::SeqCst);
        self.watcher_stop.store(true, Ordering::Relaxed);
        // The writer may already be gone (then there is nothing to stop).
        let _ = self.tx.send(Command::Shutdown);
        self.writer.lock().ok().and_then(|mut w| w.take())
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    async fn send<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request) -> Result<T> {
        self.check_open()?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Request(make(reply)))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ReadConn) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.check_open()?;
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || pool.with(f))
            .await
            .map_err(|e| StoreError::backend("sqlite", e))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(h) = self.begin_close() {
            // The writer finishes the (at most one) group in flight and exits.
            if h.join().is_err() {
                tracing::warn!("sqlite writer thread panicked");
            }
        }
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<AppendResult> {
        validate::check_appends(&appends, &self.options)?;
        self.send(|reply| Request::Append { appends, reply }).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamFrom,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let stream = stream.clone();
        self.read(move |c| c.read_stream(&stream, from, direction, max_count))
            .await
    }

    async fn read_all(
        &self,
        after: Position,
        max_count: usize,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>> {
        let filter = filter.clone();
        self.read(move |c| c.read_all(after, max_count, &filter))
            .await
    }

    async fn stream_info(&self, stream: &StreamId) -> Result<Option<StreamInfo>> {
        let stream = stream.clone();
        self.read(move |c| c.stream_info(&stream)).await
    }

    async fn set_stream_metadata(&self, stream: &StreamId, metadata: StreamMetadata) -> Result<()> {
        let stream = stream.clone();
        self.send(|reply| Request::SetMetadata {
            stream,
            metadata,
            reply,
        })
        .await
    }

    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<()> {
        let stream = stream.clone();
        self.send(|reply| Request::Delete {
            stream,
            expected,
            mode,
            reply,
        })
        .await
    }

    async fn head_position(&self) -> Result<Position> {
        self.read(ReadConn::head).await
    }

    fn head_watch(&self) -> watch::Receiver<Position> {
        let mut rx = self.head_rx.clone();
        // Like `Sender::subscribe`: the current head counts as seen.
        rx.mark_unchanged();
        rx
    }

    async fn stats(&self) -> Result<StoreStats> {
        let (events, streams, head_position) = self.read(ReadConn::counts).await?;
        let path = self.path.clone();
        let size_bytes = tokio::task::spawn_blocking(move || reader::size_on_disk(&path))
            .await
            .map_err(|e| StoreError::backend("sqlite", e))?;
        Ok(StoreStats {
            backend: "sqlite".into(),
            events,
            streams,
            head_position,
            size_bytes,
        })
    }

    fn options(&self) -> &StoreOptions {
        &self.options
    }
}
