//! PostgreSQL backend (scale-out).
