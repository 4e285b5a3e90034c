//! Stream-table join.

use std::hash::Hash;

use rustc_hash::FxHashMap;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::codec::{self, tags};
use crate::operator::LateHint;
use crate::time::MIN_TIMESTAMP;
use crate::{Collector, Operator, StreamError, Timestamp};

/// Input of [`TableJoinOperator`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableJoinInput<K, S, T> {
    /// A stream record to enrich.
    Stream(K, S),
    /// A table update: the new value for the key.
    Table(K, T),
}

/// A stream record with the table value of its key at the time it was processed (`None` if
/// the table had no value for the key: a left join, nothing is dropped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enriched<K, S, T> {
    /// The key.
    pub key: K,
    /// The stream record.
    pub record: S,
    /// Event time of the stream record.
    pub time: Timestamp,
    /// The latest table value for the key, if any.
    pub table: Option<T>,
}

/// Stream-table join: enriches each stream record with the latest table value for its key.
///
/// "Latest" is by event time: a table update older than the value held is ignored (ties go
/// to the later arrival). Table values are cloned into each output; wrap large values in an
/// `Arc`. Nothing is ever late: the table has no windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableJoin;

impl TableJoin {
    /// The operator for keys `K`, stream records `S` and table values `T`.
    pub fn operator<K: Eq + Hash, S, T>() -> TableJoinOperator<K, S, T> {
        TableJoinOperator {
            table: FxHashMap::default(),
            watermark: MIN_TIMESTAMP,
            _stream: std::marker::PhantomData,
        }
    }
}

/// The stream-table join operator (see [`TableJoin`]).
pub struct TableJoinOperator<K: Eq + Hash, S, T> {
    table: FxHashMap<K, (Timestamp, T)>,
    watermark: Timestamp,
    _stream: std::marker::PhantomData<fn(S)>,
}

impl<K: Eq + Hash, S, T> std::fmt::Debug for TableJoinOperator<K, S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableJoinOperator")
            .field("keys", &self.table.len())
            .field("watermark", &self.watermark)
            .finish()
    }
}

impl<K: Eq + Hash, S, T> TableJoinOperator<K, S, T> {
    /// The table value held for `key`.
    pub fn get(&self, key: &K) -> Option<&T> {
        self.table.get(key).map(|(_, v)| v)
    }
}

impl<K: Eq + Hash, S, T> LateHint for TableJoinOperator<K, S, T> {
    fn may_be_late(&self, _time: Timestamp) -> bool {
        false
    }
}

#[derive(Serialize)]
struct SnapRef<'a, K, T> {
    watermark: i64,
    table: Vec<(&'a K, &'a (Timestamp, T))>,
}

#[derive(Deserialize)]
struct SnapOwned<K, T> {
    watermark: i64,
    table: Vec<(K, (Timestamp, T))>,
}

impl<K, S, T> Operator for TableJoinOperator<K, S, T>
where
    K: Eq + Hash + Clone + Send + Serialize + DeserializeOwned,
    S: Send,
    T: Clone + Send + Serialize + DeserializeOwned,
{
    type In = TableJoinInput<K, S, T>;
    type Out = Enriched<K, S, T>;

    fn on_record(
        &mut self,
        record: Self::In,
        time: Timestamp,
        out: &mut Collector<Self::Out, Self::In>,
    ) {
        match record {
            TableJoinInput::Stream(key, rec) => {
                let table = self.table.get(&key).map(|(_, v)| v.clone());
                out.emit(Enriched {
                    key,
                    record: rec,
                    time,
                    table,
                });
            }
            TableJoinInput::Table(key, value) => {
                use std::collections::hash_map::Entry;
                match self.table.entry(key) {
                    Entry::Occupied(mut e) => {
                        if time >= e.get().0 {
                            e.insert((time, value));
                        }
                    }
                    Entry::Vacant(e) => {
                        e.insert((time, value));
                    }
                }
            }
        }
    }

    fn on_watermark(&mut self, watermark: Timestamp, _out: &mut Collector<Self::Out, Self::In>) {
        self.watermark = self.watermark.max(watermark);
    }

    fn snapshot(&self) -> Result<Vec<u8>, StreamError> {
        codec::encode(
            tags::TABLE_JOIN,
            &SnapRef {
                watermark: self.watermark,
                table: self.table.iter().collect(),
            },
        )
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StreamError> {
        let snap: SnapOwned<K, T> = codec::decode(tags::TABLE_JOIN, snapshot)?;
        self.watermark = snap.watermark;
        self.table = snap.table.into_iter().collect();
        Ok(())
    }
}
