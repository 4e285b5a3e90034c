use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::{truncate, ValidationError};

/// Longest accepted stream id, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 200;
/// Longest accepted event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;
const MAX_CATEGORY_LEN: usize = 64;

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@' | '~')
}

/// The category of a stream: the part of its id before the first `-` (`loan` in `loan-42`).
///
/// An ASCII identifier: a letter, then letters, digits or `_`, at most 64 bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Category(Arc<str>);

impl Category {
    /// Validates and wraps a category name.
    pub fn new(category: impl AsRef<str>) -> Result<Self, ValidationError> {
        let c = category.as_ref();
        let reason = if c.is_empty() {
            Some("must not be empty")
        } else if c.len() > MAX_CATEGORY_LEN {
            Some("longer than 64 bytes")
        } else if !is_ident(c) {
            Some("must start with a letter and hold only ASCII letters, digits and '_'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(ValidationError::InvalidCategory {
                category: truncate(c),
                reason,
            }),
            None => Ok(Category(Arc::from(c))),
        }
    }

    /// The category as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Identifies one stream: `category-id`, for example `loan-42` or `user-7f3a`.
///
/// The category is an identifier (see [`Category`]); the id after the first `-` is one or more
/// of ASCII letters, digits and `_ - . : @ ~`. At most [`MAX_STREAM_ID_LEN`] bytes in all.
/// Cloning is cheap (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    full: Arc<str>,
    dash: usize,
}

impl StreamId {
    /// Validates and wraps a stream id.
    pub fn new(id: impl AsRef<str>) -> Result<Self, ValidationError> {
        let s = id.as_ref();
        let err = |reason| ValidationError::InvalidStreamId {
            id: truncate(s),
            reason,
        };
        if s.is_empty() {
            return Err(err("must not be empty"));
        }
        if s.len() > MAX_STREAM_ID_LEN {
            return Err(err("longer than 200 bytes"));
        }
        let Some(dash) = s.find('-') else {
            return Err(err("must be of the form category-id"));
        };
        let (cat, rest) = (&s[..dash], &s[dash + 1..]);
        if cat.is_empty() || cat.len() > MAX_CATEGORY_LEN || !is_ident(cat) {
            return Err(err(
                "category (before the first '-') must be an identifier of at most 64 bytes",
            ));
        }
        if rest.is_empty() {
            return Err(err("id after the category must not be empty"));
        }
        if !rest.chars().all(is_id_char) {
            return Err(err(
                "id may hold only ASCII letters, digits and '_', '-', '.', ':', '@', '~'",
            ));
        }
        Ok(StreamId {
            full: Arc::from(s),
            dash,
        })
    }

    /// Builds `category-id` from its two parts.
    pub fn from_parts(category: &Category, id: impl fmt::Display) -> Result<Self, ValidationError> {
        Self::new(format!("{}-{}", category.as_str(), id))
    }

    /// The whole id.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The category part (`loan` in `loan-42`).
    pub fn category(&self) -> &str {
        &self.full[..self.dash]
    }

    /// The id part (`42` in `loan-42`).
    pub fn id_part(&self) -> &str {
        &self.full[self.dash + 1..]
    }
}

/// Identifies one event, globally. UUIDv7 by default, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    /// A fresh UUIDv7.
    pub fn new() -> Self {
        EventId(Uuid::now_v7())
    }

    /// Wraps an existing UUID (for deterministic ids, e.g. derived from a command id).
    pub fn from_uuid(id: Uuid) -> Self {
        EventId(id)
    }

    /// Wraps 16 raw bytes. Used for deterministic ids, where a replay must produce the same
    /// id twice (for example a hash of the input position).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        EventId(Uuid::from_bytes(bytes))
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for EventId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(EventId)
            .map_err(|_| ValidationError::InvalidEventId(truncate(s)))
    }
}

/// The name of what happened, in the past tense of the domain: `LoanApplicationSubmitted`,
/// never `LoanUpdated`. An ASCII identifier that may contain `.` (for namespaces), at most
/// [`MAX_EVENT_TYPE_LEN`] bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(Arc<str>);

impl EventType {
    /// Validates and wraps an event type.
    pub fn new(t: impl AsRef<str>) -> Result<Self, ValidationError> {
        let s = t.as_ref();
        let err = |reason| ValidationError::InvalidEventType {
            event_type: truncate(s),
            reason,
        };
        if s.is_empty() {
            return Err(err("must not be empty"));
        }
        if s.len() > MAX_EVENT_TYPE_LEN {
            return Err(err("longer than 128 bytes"));
        }
        let mut chars = s.chars();
        let first_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic());
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            return Err(err(
                "must start with a letter and hold only ASCII letters, digits, '_' and '.'",
            ));
        }
        Ok(EventType(Arc::from(s)))
    }

    /// The type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.as_str())
            }
        }
        impl FromStr for $t {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$t>::new(s)
            }
        }
        impl TryFrom<&str> for $t {
            type Error = ValidationError;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                <$t>::new(s)
            }
        }
        impl TryFrom<String> for $t {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                <$t>::new(s)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}
string_newtype_impls!(StreamId);
string_newtype_impls!(EventType);
string_newtype_impls!(Category);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stream_id_parts() {
        let s = StreamId::new("loan-42-b").unwrap();
        assert_eq!(s.category(), "loan");
        assert_eq!(s.id_part(), "42-b");
    }

    #[test]
    fn stream_id_rejections() {
        for bad in [
            "", "loan", "-42", "loan-", "1oan-2", "lo an-2", "loan-a b", "lóan-1",
        ] {
            assert!(StreamId::new(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("loan-{}", "x".repeat(300));
        let e = StreamId::new(&long).unwrap_err();
        assert!(e.to_string().contains("longer than 200"));
    }

    #[test]
    fn event_type_rules() {
        assert!(EventType::new("LoanApplicationSubmitted").is_ok());
        assert!(EventType::new("lending.LoanDecisionMade").is_ok());
        assert!(EventType::new("").is_err());
        assert!(EventType::new("9Lives").is_err());
        assert!(EventType::new("x".repeat(129)).is_err());
    }

    #[test]
    fn event_ids_are_v7_and_ordered() {
        let a = EventId::new();
        let b = EventId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b);
        assert_eq!(a.to_string().parse::<EventId>().unwrap(), a);
    }

    proptest! {
        #[test]
        fn valid_stream_ids_roundtrip(cat in "[a-zA-Z][a-zA-Z0-9_]{0,20}", id in "[a-zA-Z0-9_.:@~-]{1,40}") {
            let s = StreamId::new(format!("{cat}-{id}")).unwrap();
            prop_assert_eq!(s.category(), cat.as_str());
            prop_assert_eq!(s.id_part(), id.as_str());
            let json = serde_json::to_string(&s).unwrap();
            let back: StreamId = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,300}") {
            let _ = StreamId::new(&s);
            let _ = EventType::new(&s);
        }
    }
}
