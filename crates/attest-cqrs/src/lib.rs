//! attest-cqrs
