//! The append path: group commit through one writer task per store instance, and the append
//! transaction itself — lock streams, classify retries, check expectations, take the position
//! range from the single sequencer row, write, commit. See `ORDERING.md`.
//!
//! Concurrent `append_many` calls of one instance queue on a channel; the writer task folds up
//! to `StoreOptions::max_group_commit` of them into one transaction. Every request is checked
//! on its own (against the stream state left by the requests before it in the same group), so
//! one failing request never fails another; the successful ones share one head-row lock and
//! one commit flush. If the group's write statement fails (an event id committed concurrently
//! by another process), each request is re-run alone so only the guilty one gets the error.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use attest_core::{EventId, Position, StreamId, Version};
use deadpool_postgres::{Object, Pool};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::errors::{append_write, pg, pool};
use super::listener::bump;
use super::read::{state_of, to_i64};
use super::schema::Sql;
use crate::validate::{check_appends, checksum};
use crate::{
    AppendResult, StoreError, StoreOptions, StreamAppend, StreamAppendResult, StreamState,
};

/// Pending requests the channel holds before callers wait to enqueue.
pub(crate) const QUEUE: usize = 4096;
/// Append transactions one store instance runs at once.
pub(crate) const LANES: usize = 2;

/// One queued append and where its answer goes.
pub(crate) struct Pending {
    appends: Vec<StreamAppend>,
    reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

/// Checks a request before it is queued (same typed errors as every backend).
fn validate(appends: &[StreamAppend], options: &StoreOptions) -> Result<(), StoreError> {
    check_appends(appends, options)?;
    let mut distinct = HashSet::new();
    for a in appends {
        for e in &a.events {
            // PostgreSQL text cannot hold NUL: refuse up front with a typed error.
            let schema_nul = e.schema.as_ref().is_some_and(|s| s.id.contains('\0'));
            if e.content_type.contains('\0') || schema_nul {
                return Err(StoreError::InvalidArgument(format!(
                    "event {} has a NUL character in its content type or schema id",
                    e.id
                )));
            }
            if !distinct.insert(e.id) {
                return Err(StoreError::IdempotencyConflict {
                    event_id: e.id,
                    existing_stream: None,
                });
            }
        }
    }
    Ok(())
}

/// Validates `appends`, queues them for the writer task and waits for the outcome.
pub(super) async fn append_many(
    queue: &mpsc::Sender<Pending>,
    options: &StoreOptions,
    appends: Vec<StreamAppend>,
) -> Result<AppendResult, StoreError> {
    validate(&appends, options)?;
    let (reply, answer) = oneshot::channel();
    queue
        .send(Pending { appends, reply })
        .await
        .map_err(|_| StoreError::Closed)?;
    answer.await.map_err(|_| StoreError::Closed)?
}

/// What the writer task needs.
pub(crate) struct Writer {
    pub pool: Pool,
    pub sql: Arc<Sql>,
    pub channel: String,
    pub head: Arc<watch::Sender<Position>>,
    pub max_group: usize,
}

impl Writer {
    /// Runs [`LANES`] group loops sharing the queue, until every sender is gone (or the task
    /// is aborted). While one lane holds the head row (write + commit), the others lock their
    /// streams and check their requests, so consecutive groups overlap.
    pub(crate) async fn run(self, queue: mpsc::Receiver<Pending>) {
        let this = Arc::new(self);
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let lanes: Vec<_> = (0..LANES)
            .map(|_| {
                let (this, queue) = (this.clone(), queue.clone());
                async move { this.lane(&queue).await }
            })
            .collect();
        futures::future::join_all(lanes).await;
    }

    async fn lane(&self, queue: &tokio::sync::Mutex<mpsc::Receiver<Pending>>) {
        loop {
            let group = {
                let mut queue = queue.lock().await;
                let Some(first) = queue.recv().await else {
                    return;
                };
                let mut group = vec![first];
                while group.len() < self.max_group {
                    match queue.try_recv() {
                        Ok(p) => group.push(p),
                        Err(_) => break,
                    }
                }
                group
            };
            self.run_group(group).await;
        }
    }

    async fn run_group(&self, group: Vec<Pending>) {
        let requests: Vec<&[StreamAppend]> = group.iter().map(|p| p.appends.as_slice()).collect();
        let outcomes = match self.transaction(&requests).await {
            Ok(outcomes) => outcomes,
            Err(e) if group.len() == 1 => vec![Outcome::Done(Err(e))],
            Err(e) => {
                tracing::debug!(error = %e, size = group.len(), "group write failed; re-running each append alone");
                (0..group.len()).map(|_| Outcome::Deferred).collect()
            }
        };
        for (p, outcome) in group.into_iter().zip(outcomes) {
            let result = match outcome {
                Outcome::Done(r) => r,
                Outcome::Planned(..) => Err(StoreError::backend(
                    super::errors::BACKEND,
                    "append planned but never finished",
                )),
                // Alone, a request can never be deferred again.
                Outcome::Deferred => match self.transaction(&[p.appends.as_slice()]).await {
                    Ok(mut o) => match o.pop() {
                        Some(Outcome::Done(r)) => r,
                        _ => Err(StoreError::backend(
                            super::errors::BACKEND,
                            "append outcome missing",
                        )),
                    },
                    Err(e) => Err(e),
                },
            };
            // The caller may have given up waiting; nothing to do then.
            let _ = p.reply.send(result);
        }
    }

    /// One transaction for `requests`: per-request outcomes, or an error that concerns the
    /// whole group (nothing was committed).
    async fn transaction(&self, requests: &[&[StreamAppend]]) -> Result<Vec<Outcome>, StoreError> {
        let mut names: Vec<&str> = requests
            .iter()
            .flat_map(|r| r.iter().map(|a| a.stream.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        let ids: Vec<Uuid> = requests
            .iter()
            .flat_map(|r| {
                r.iter()
                    .flat_map(|a| a.events.iter().map(|e| *e.id.as_uuid()))
            })
            .collect();

        let client = self.pool.get().await.map_err(pool)?;
        let lock = client
            .prepare_cached(&self.sql.lock_streams)
            .await
            .map_err(pg)?;
        let lookup = client
            .prepare_cached(&self.sql.lookup_ids)
            .await
            .map_err(pg)?;
        let write = client.prepare_cached(&self.sql.write).await.map_err(pg)?;
        let notify = client.prepare_cached(&self.sql.notify).await.map_err(pg)?;
        let mut tx = OpenTransaction::new(client);

        // Pipelined in one round trip: BEGIN, then the lock statement, then the lookup. The
        // lookup runs after the lock statement has returned on the server, so under READ
        // COMMITTED it sees every append that held any of these streams before us.
        let lock_params: [&(dyn ToSql + Sync); 1] = [&names];
        let lookup_params: [&(dyn ToSql + Sync); 1] = [&ids];
        let c = tx.client();
        let opened = futures::try_join!(
            c.batch_execute("BEGIN"),
            c.query(&lock, &lock_params),
            c.query(&lookup, &lookup_params)
        );
        let (_, locked, hits) = match opened {
            Ok(r) => r,
            Err(e) => return Err(tx.rollback_with(pg(e)).await),
        };
        let (streams, found) = match decode_locked(&locked, &hits) {
            Ok(r) => r,
            Err(e) => return Err(tx.rollback_with(e).await),
        };
        let mut streams = streams;

        let mut rows = Rows::default();
        let mut outcomes = Vec::with_capacity(requests.len());
        let mut in_group: HashSet<EventId> = HashSet::new();
        for request in requests {
            outcomes.push(plan(
                request,
                &mut streams,
                &found,
                &mut in_group,
                &mut rows,
            ));
        }

        if rows.ids.is_empty() {
            // Nothing to write: rolling back also removes every stream row we created.
            tx.rollback().await;
            return Ok(outcomes
                .into_iter()
                .map(Outcome::finish_without_write)
                .collect());
        }
        // Stream rows this transaction created for requests that failed: remove them, so a
        // failed append leaves nothing behind.
        let unused: Vec<&str> = streams
            .iter()
            .filter(|(_, s)| s.created && !s.written)
            .map(|(n, _)| n.as_str())
            .collect();
        if !unused.is_empty() {
            let params: [&(dyn ToSql + Sync); 1] = [&unused];
            if let Err(e) = tx.client().execute(&self.sql.drop_unused, &params).await {
                return Err(tx.rollback_with(pg(e)).await);
            }
        }
        let (touched, lasts): (Vec<&str>, Vec<i64>) = streams
            .iter()
            .filter(|(_, s)| s.written)
            .map(|(n, s)| (n.as_str(), to_i64(s.last.unwrap_or(0))))
            .unzip();
        let n = to_i64(rows.ids.len() as u64);
        let write_params: [&(dyn ToSql + Sync); 14] = [
            &n,
            &rows.ids,
            &rows.streams,
            &rows.categories,
            &rows.versions,
            &rows.types,
            &rows.schema_ids,
            &rows.schema_versions,
            &rows.content_types,
            &rows.payloads,
            &rows.metadata,
            &rows.checksums,
            &touched,
            &lasts,
        ];
        let notify_params: [&(dyn ToSql + Sync); 1] = [&self.channel];
        let first_id = rows.first_id.unwrap_or_default();
        // Pipelined in one round trip: the write (takes the head row), the NOTIFY and COMMIT,
        // so the head row is held for one round trip plus the commit flush. If the write fails
        // the server turns the COMMIT into a ROLLBACK; all three requests are sent before any
        // answer is awaited, so the transaction is over either way.
        let c = tx.client();
        let finished = futures::try_join!(
            c.query_one(&write, &write_params),
            c.execute(&notify, &notify_params),
            c.batch_execute("COMMIT")
        );
        tx.finished();
        let (row, _, ()) = finished.map_err(|e| append_write(e, first_id))?;
        let base: i64 = row.try_get(0).map_err(pg)?;

        let base = u64::try_from(base).unwrap_or(0);
        let last_position = base + rows.ids.len() as u64;
        bump(&self.head, last_position);
        tracing::debug!(
            first_position = base + 1,
            last_position,
            appends = requests.len(),
            "append group committed"
        );
        Ok(outcomes.into_iter().map(|o| o.finish(base)).collect())
    }
}

/// A pooled connection inside a transaction this module opened with a plain `BEGIN` (so the
/// statements around it can be pipelined). It must end with [`OpenTransaction::rollback`] or a
/// pipelined `COMMIT` ([`OpenTransaction::finished`]); if it is dropped in between (the append
/// future was cancelled), the connection is detached from the pool and closed, and the server
/// rolls the transaction back.
struct OpenTransaction {
    client: Option<Object>,
    open: bool,
}

impl OpenTransaction {
    fn new(client: Object) -> Self {
        OpenTransaction {
            client: Some(client),
            open: true,
        }
    }

    fn client(&self) -> &Object {
        // Only `Drop` takes the client out.
        self.client
            .as_ref()
            .unwrap_or_else(|| unreachable!("client taken before drop"))
    }

    async fn rollback(mut self) {
        if let Err(e) = self.client().batch_execute("ROLLBACK").await {
            tracing::warn!(error = %e, "rollback failed; closing the connection");
            return; // `Drop` detaches the connection.
        }
        self.open = false;
    }

    async fn rollback_with(self, e: StoreError) -> StoreError {
        self.rollback().await;
        e
    }

    fn finished(&mut self) {
        self.open = false;
    }
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        if self.open {
            if let Some(client) = self.client.take() {
                drop(Object::take(client));
            }
        }
    }
}

/// The locked stream rows of a group, by stream id.
type Slots = HashMap<String, StreamSlot>;

fn decode_locked(
    locked: &[tokio_postgres::Row],
    hits: &[tokio_postgres::Row],
) -> Result<(Slots, HashMap<Uuid, Found>), StoreError> {
    let mut streams: HashMap<String, StreamSlot> = HashMap::with_capacity(locked.len());
    for row in locked {
        let last: Option<i64> = row.try_get(1).map_err(pg)?;
        let state: i16 = row.try_get(2).map_err(pg)?;
        streams.insert(
            row.try_get(0).map_err(pg)?,
            StreamSlot {
                last: last.map(|v| u64::try_from(v).unwrap_or(0)),
                state: state_of(state)?,
                created: row.try_get(3).map_err(pg)?,
                written: false,
            },
        );
    }
    let mut found = HashMap::with_capacity(hits.len());
    for row in hits {
        let version: i64 = row.try_get(2).map_err(pg)?;
        let position: i64 = row.try_get(3).map_err(pg)?;
        found.insert(
            row.try_get::<_, Uuid>(0).map_err(pg)?,
            Found {
                stream: row.try_get(1).map_err(pg)?,
                version: u64::try_from(version).unwrap_or(0),
                position: u64::try_from(position).unwrap_or(0),
            },
        );
    }
    Ok((streams, found))
}

/// A locked stream row, as the group's requests see it so far.
struct StreamSlot {
    last: Option<Version>,
    state: StreamState,
    /// Created by this transaction's lock statement.
    created: bool,
    /// Receives events in this transaction.
    written: bool,
}

/// Where an already-stored event id is.
struct Found {
    stream: String,
    version: u64,
    position: u64,
}

/// One request's fate inside a group.
enum Outcome {
    /// Decided without needing the write (error, or recognised retry).
    Done(Result<AppendResult, StoreError>),
    /// To be written: results with positions relative to the group's base.
    Planned(Vec<StreamAppendResult>, u64, u64),
    /// Repeats ids of an earlier request of the same group: re-run alone afterwards.
    Deferred,
}

impl Outcome {
    fn finish(self, base: u64) -> Outcome {
        match self {
            Outcome::Planned(streams, lo, hi) => Outcome::Done(Ok(AppendResult {
                streams,
                first_position: base + lo,
                last_position: base + hi,
            })),
            other => other,
        }
    }

    fn finish_without_write(self) -> Outcome {
        match self {
            Outcome::Planned(..) => Outcome::Done(Err(StoreError::backend(
                super::errors::BACKEND,
                "planned append without a write",
            ))),
            other => other,
        }
    }
}

/// Column arrays of the rows to insert, for the whole group.
#[derive(Default)]
struct Rows<'a> {
    first_id: Option<EventId>,
    ids: Vec<Uuid>,
    streams: Vec<&'a str>,
    categories: Vec<&'a str>,
    versions: Vec<i64>,
    types: Vec<&'a str>,
    schema_ids: Vec<Option<&'a str>>,
    schema_versions: Vec<Option<i64>>,
    content_types: Vec<&'a str>,
    payloads: Vec<&'a [u8]>,
    metadata: Vec<Option<Vec<u8>>>,
    checksums: Vec<i64>,
}

/// Decides one request against the state left by the requests before it, adding its rows.
fn plan<'a>(
    request: &'a [StreamAppend],
    streams: &mut HashMap<String, StreamSlot>,
    found: &HashMap<Uuid, Found>,
    in_group: &mut HashSet<EventId>,
    rows: &mut Rows<'a>,
) -> Outcome {
    if request
        .iter()
        .flat_map(|a| &a.events)
        .any(|e| in_group.contains(&e.id))
    {
        return Outcome::Deferred;
    }
    let mut current = Vec::with_capacity(request.len());
    for a in request {
        let Some(slot) = streams.get(a.stream.as_str()) else {
            return Outcome::Done(Err(StoreError::backend(
                super::errors::BACKEND,
                format!("stream {} was not locked", a.stream),
            )));
        };
        if slot.state == StreamState::Tombstoned {
            return Outcome::Done(Err(StoreError::StreamDeleted {
                stream: a.stream.clone(),
            }));
        }
        current.push((slot.last, slot.state));
    }
    if request
        .iter()
        .flat_map(|a| &a.events)
        .any(|e| found.contains_key(e.id.as_uuid()))
    {
        return Outcome::Done(retry_or_conflict(request, found));
    }
    for (a, &(last, state)) in request.iter().zip(&current) {
        let actual = if state == StreamState::SoftDeleted {
            None
        } else {
            last
        };
        if !a.expected.accepts(actual) {
            return Outcome::Done(Err(StoreError::WrongExpectedVersion {
                stream: a.stream.clone(),
                expected: a.expected,
                actual,
            }));
        }
    }
    // Encode metadata first so a failure leaves `rows` untouched.
    let mut metadata = Vec::new();
    for e in request.iter().flat_map(|a| &a.events) {
        metadata.push(if e.metadata.is_empty() {
            None
        } else {
            match serde_json::to_vec(&e.metadata) {
                Ok(m) => Some(m),
                Err(err) => {
                    return Outcome::Done(Err(StoreError::InvalidArgument(format!(
                        "metadata of event {}: {err}",
                        e.id
                    ))))
                }
            }
        });
    }
    let lo = rows.ids.len() as u64 + 1;
    let mut results = Vec::with_capacity(request.len());
    let mut metadata = metadata.into_iter();
    for (a, &(last, _)) in request.iter().zip(&current) {
        let first = last.map_or(0, |v| v + 1);
        for (i, e) in a.events.iter().enumerate() {
            rows.first_id.get_or_insert(e.id);
            rows.ids.push(*e.id.as_uuid());
            rows.streams.push(a.stream.as_str());
            rows.categories.push(a.stream.category());
            rows.versions.push(to_i64(first + i as u64));
            rows.types.push(e.event_type.as_str());
            rows.schema_ids
                .push(e.schema.as_ref().map(|s| s.id.as_str()));
            rows.schema_versions
                .push(e.schema.as_ref().map(|s| i64::from(s.version)));
            rows.content_types.push(e.content_type.as_str());
            rows.payloads.push(e.payload.as_slice());
            rows.metadata.push(metadata.next().flatten());
            rows.checksums
                .push(i64::from(checksum(&e.content_type, &e.payload)));
            in_group.insert(e.id);
        }
        let last_version = first + a.events.len() as u64 - 1;
        if let Some(slot) = streams.get_mut(a.stream.as_str()) {
            slot.last = Some(last_version);
            slot.state = StreamState::Active;
            slot.written = true;
        }
        results.push(StreamAppendResult {
            stream: a.stream.clone(),
            first_version: first,
            last_version,
        });
    }
    Outcome::Planned(results, lo, rows.ids.len() as u64)
}

/// What one stream part of an append turns out to be.
enum Part {
    New,
    Retry(StreamAppendResult, u64, u64),
    Conflict(EventId, Option<StreamId>),
}

fn classify(a: &StreamAppend, found: &HashMap<Uuid, Found>) -> Part {
    let hits: Vec<Option<&Found>> = a.events.iter().map(|e| found.get(e.id.as_uuid())).collect();
    let Some(first_hit) = hits.iter().position(Option::is_some) else {
        return Part::New;
    };
    let conflict = || {
        let f = hits[first_hit].map(|f| StreamId::new(&f.stream).ok());
        Part::Conflict(a.events[first_hit].id, f.flatten())
    };
    if first_hit != 0 {
        return conflict();
    }
    let Some(Some(head)) = hits.first() else {
        return conflict();
    };
    let (mut lo, mut hi) = (head.position, head.position);
    for (i, h) in hits.iter().enumerate() {
        match h {
            Some(f) if f.stream == a.stream.as_str() && f.version == head.version + i as u64 => {
                lo = lo.min(f.position);
                hi = hi.max(f.position);
            }
            _ => return conflict(),
        }
    }
    let result = StreamAppendResult {
        stream: a.stream.clone(),
        first_version: head.version,
        last_version: head.version + a.events.len() as u64 - 1,
    };
    Part::Retry(result, lo, hi)
}

/// Some event ids of the request already exist: the whole request is a retry (every part
/// repeats an earlier append exactly), or it is a conflict.
fn retry_or_conflict(
    appends: &[StreamAppend],
    found: &HashMap<Uuid, Found>,
) -> Result<AppendResult, StoreError> {
    let parts: Vec<Part> = appends.iter().map(|a| classify(a, found)).collect();
    if let Some(Part::Conflict(event_id, existing_stream)) =
        parts.iter().find(|p| matches!(p, Part::Conflict(..)))
    {
        return Err(StoreError::IdempotencyConflict {
            event_id: *event_id,
            existing_stream: existing_stream.clone(),
        });
    }
    let mut streams = Vec::with_capacity(parts.len());
    let (mut lo, mut hi) = (u64::MAX, 0);
    for (a, p) in appends.iter().zip(parts) {
        match p {
            Part::Retry(r, first, last) => {
                lo = lo.min(first);
                hi = hi.max(last);
                streams.push(r);
            }
            // A mix of retried and new parts is not a retry of one earlier append.
            _ => {
                let retried = appends
                    .iter()
                    .find(|a| found.contains_key(a.events[0].id.as_uuid()))
                    .unwrap_or(a);
                return Err(StoreError::IdempotencyConflict {
                    event_id: retried.events[0].id,
                    existing_stream: Some(retried.stream.clone()),
                });
            }
        }
    }
    tracing::debug!(first_position = lo, "append recognised as a retry");
    Ok(AppendResult {
        streams,
        first_position: lo,
        last_position: hi,
    })
}
