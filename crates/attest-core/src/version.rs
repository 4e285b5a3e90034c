use serde::{Deserialize, Serialize};

use crate::Version;

/// What the writer believes about the stream it appends to.
///
/// The store checks this belief atomically with the append; if it is wrong the append fails
/// with a conflict that carries the stream's actual version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(tag = "kind", content = "version", rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// No check: append whatever the stream holds.
    #[default]
    Any,
    /// The stream must not exist (or must have been soft-deleted with no events left).
    NoStream,
    /// The stream must exist and hold at least one event.
    StreamExists,
    /// The last event of the stream must have exactly this version.
    Exact(Version),
}

impl ExpectedVersion {
    /// Whether a stream whose current last version is `actual` (`None`: no stream) satisfies
    /// this expectation.
    pub fn accepts(self, actual: Option<Version>) -> bool {
        match (self, actual) {
            (ExpectedVersion::Any, _) => true,
            (ExpectedVersion::NoStream, None) => true,
            (ExpectedVersion::NoStream, Some(_)) => false,
            (ExpectedVersion::StreamExists, a) => a.is_some(),
            (ExpectedVersion::Exact(v), Some(a)) => v == a,
            (ExpectedVersion::Exact(_), None) => false,
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_table() {
        use ExpectedVersion::*;
        assert!(Any.accepts(None));
        assert!(Any.accepts(Some(3)));
        assert!(NoStream.accepts(None));
        assert!(!NoStream.accepts(Some(0)));
        assert!(!StreamExists.accepts(None));
        assert!(StreamExists.accepts(Some(0)));
        assert!(Exact(2).accepts(Some(2)));
        assert!(!Exact(2).accepts(Some(3)));
        assert!(!Exact(0).accepts(None));
    }
}
