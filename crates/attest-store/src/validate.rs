//! Request checks every backend runs before touching storage, so each backend rejects bad
//! input with the same typed error.

use std::collections::HashSet;

use crate::{StoreError, StoreOptions, StreamAppend};

/// Rejects empty appends, a stream named twice, and events over the size limit.
pub fn check_appends(appends: &[StreamAppend], options: &StoreOptions) -> Result<(), StoreError> {
    if appends.is_empty() {
        return Err(StoreError::EmptyAppend { stream: None });
    }
    let mut seen = HashSet::with_capacity(appends.len());
    for a in appends {
        if a.events.is_empty() {
            return Err(StoreError::EmptyAppend {
                stream: Some(a.stream.clone()),
            });
        }
        if !seen.insert(a.stream.as_str()) {
            return Err(StoreError::DuplicateStreamInAppend {
                stream: a.stream.clone(),
            });
        }
        for e in &a.events {
            let size = e.size();
            if size > options.max_event_size {
                return Err(StoreError::EventTooLarge {
                    stream: a.stream.clone(),
                    event_id: e.id,
                    size,
                    limit: options.max_event_size,
                });
            }
            if e.content_type.is_empty() || e.content_type.len() > 255 {
                return Err(StoreError::InvalidArgument(format!(
                    "event {} has an empty or over-long content type",
                    e.id
                )));
            }
        }
    }
    Ok(())
}

/// The CRC-32 checksum stored beside each event, over payload bytes and content type.
pub fn checksum(content_type: &str, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(content_type.as_bytes());
    h.update(&[0]);
    h.update(payload);
    h.finalize()
}
