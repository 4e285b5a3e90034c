//! Turning raw records into typed values with an event time, and what happens when that fails.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::source::RawRecord;
use crate::Timestamp;

/// A decoder: raw record → (value, event time), or the reason it cannot be decoded.
///
/// Any `FnMut(&R) -> Result<(T, Timestamp), String>` closure is one; [`json_recorded_at`] and
/// [`json_time_field`] build the common ones.
pub trait Decode<R, T>: Send {
    /// Decodes one record.
    fn decode(&mut self, raw: &R) -> Result<(T, Timestamp), String>;
}

impl<R, T, F> Decode<R, T> for F
where
    F: FnMut(&R) -> Result<(T, Timestamp), String> + Send,
{
    fn decode(&mut self, raw: &R) -> Result<(T, Timestamp), String> {
        self(raw)
    }
}

/// Decodes the JSON payload into `T`; event time is the record's `recorded_at` (the
/// envelope's commit time, or the broker's publish time).
pub fn json_recorded_at<R: RawRecord, T: DeserializeOwned>(
) -> impl FnMut(&R) -> Result<(T, Timestamp), String> + Send + Clone {
    |raw: &R| {
        let value: T = serde_json::from_slice(raw.payload()).map_err(|e| e.to_string())?;
        let time = raw
            .recorded_at()
            .ok_or_else(|| "record carries no recorded-at time".to_string())?;
        Ok((value, time))
    }
}

/// Decodes the JSON payload into `T`; event time is read from the value by `time` (a payload
/// field, e.g. `|o: &Order| o.placed_at_ms`).
pub fn json_time_field<R: RawRecord, T: DeserializeOwned, F>(
    time: F,
) -> impl FnMut(&R) -> Result<(T, Timestamp), String> + Send + Clone
where
    F: Fn(&T) -> Timestamp + Send + Clone,
{
    move |raw: &R| {
        let value: T = serde_json::from_slice(raw.payload()).map_err(|e| e.to_string())?;
        let t = time(&value);
        Ok((value, t))
    }
}

/// An input record that could not be decoded, with where it came from. Dead letters go to the
/// job's dead-letter sink; they never stall the job and are never dropped silently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Source name.
    pub source: String,
    /// Partition of the source.
    pub partition: u32,
    /// Offset in that partition.
    pub offset: u64,
    /// The record's own id (event id or message id), if it has one.
    pub record_id: Option<String>,
    /// Why decoding failed.
    pub reason: String,
    /// The raw payload.
    pub payload: Vec<u8>,
}

/// A record that arrived after its window (and allowed lateness) closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Late<T> {
    /// The decoded record.
    pub record: T,
    /// Its event time.
    pub time: Timestamp,
}
