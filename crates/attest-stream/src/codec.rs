//! Compact binary encoding of operator state for checkpoints.
//!
//! State is encoded with [`postcard`] (serde, varint integers) behind a three-byte header:
//! a magic byte, a format version and a tag naming the operator kind, so that restoring a
//! snapshot into the wrong kind of operator is a typed error instead of garbage state.

use serde::{de::DeserializeOwned, Serialize};

use crate::StreamError;

const MAGIC: u8 = 0xA7;
const VERSION: u8 = 1;

/// Encodes `value` with a header naming the operator kind `tag`.
pub fn encode<T: Serialize>(tag: u8, value: &T) -> Result<Vec<u8>, StreamError> {
    let mut out = vec![MAGIC, VERSION, tag];
    let body = postcard::to_allocvec(value)
        .map_err(|e| StreamError::State(format!("encode operator state: {e}")))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a snapshot written by [`encode`] with the same `tag`.
pub fn decode<T: DeserializeOwned>(tag: u8, bytes: &[u8]) -> Result<T, StreamError> {
    match bytes {
        [MAGIC, VERSION, t, body @ ..] if *t == tag => postcard::from_bytes(body)
            .map_err(|e| StreamError::State(format!("decode operator state: {e}"))),
        [MAGIC, VERSION, t, ..] => Err(StreamError::State(format!(
            "snapshot belongs to another operator kind (tag {t}, expected {tag})"
        ))),
        [MAGIC, v, ..] => Err(StreamError::State(format!(
            "unsupported snapshot format version {v} (expected {VERSION})"
        ))),
        _ => Err(StreamError::State(
            "not an attest-stream operator snapshot (bad header)".to_string(),
        )),
    }
}

/// Operator kind tags used in snapshot headers.
pub(crate) mod tags {
    /// Tumbling/hopping windows in the pane-major layout (tag 1 was the earlier per-key
    /// layout; its snapshots are refused as another kind rather than misread).
    pub const ALIGNED: u8 = 6;
    pub const SLIDING: u8 = 2;
    pub const SESSION: u8 = 3;
    pub const INTERVAL_JOIN: u8 = 4;
    pub const TABLE_JOIN: u8 = 5;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_header_checks() {
        let bytes = encode(7, &(1u64, "x".to_string())).unwrap();
        let back: (u64, String) = decode(7, &bytes).unwrap();
        assert_eq!(back, (1, "x".to_string()));
        assert!(matches!(
            decode::<(u64, String)>(8, &bytes),
            Err(StreamError::State(_))
        ));
        assert!(matches!(
            decode::<(u64, String)>(7, &[1, 2]),
            Err(StreamError::State(_))
        ));
        let mut truncated = bytes.clone();
        truncated.truncate(4);
        assert!(decode::<(u64, String)>(7, &truncated).is_err());
    }
}
