//! SQLite backend (embedded default).
